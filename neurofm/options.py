"""Checks of user options, in MNE's ``_check_option`` style: the bad value, the valid
ones, and the spelling the user typed (``+meeg.montag=``), in one line.

An option has one name in Python (``montage``) and the spelling of the command that sets it
(``+meeg.montage`` in ``neurofm prepare``, ``+tokenizer.montage`` in ``neurofm finetune``).
A command states its spellings once with :func:`spelled_as`; an error raised anywhere below
names the option with :func:`option_name` at the moment it is raised."""

from __future__ import annotations

import difflib
import inspect
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

from neurofm.errors import ConfigError

_SPELLING: ContextVar[Mapping[str, str] | None] = ContextVar("neurofm_option_spelling", default=None)


@contextmanager
def spelled_as(spelling: Mapping[str, str]) -> Iterator[None]:
    """Within the block, :func:`option_name` names options as ``spelling`` says (``{'montage':
    '+meeg.montage'}``): how the command being run spells them. Nested blocks add to it."""
    token = _SPELLING.set({**(_SPELLING.get() or {}), **spelling})
    try:
        yield
    finally:
        _SPELLING.reset(token)


def option_name(name: str) -> str:
    """How the user spells option ``name`` where it is set (see :func:`spelled_as`); in
    Python, ``name`` itself.

    >>> with spelled_as({"montage": "+meeg.montage"}):
    ...     option_name("montage"), option_name("sfreq")
    ('+meeg.montage', 'sfreq')
    """
    return (_SPELLING.get() or {}).get(name, name)


def check_option(name: str, value: Any, allowed: Iterable[Any]) -> Any:
    """Return ``value`` if it is one of ``allowed``, else a :class:`ConfigError`.

    >>> check_option("on_missing_positions", "dorp", ("raise", "drop"))
    Traceback (most recent call last):
    ...
    neurofm.errors.ConfigError: on_missing_positions must be one of 'raise', 'drop'; got 'dorp' (did you mean 'drop'?)
    """
    allowed = tuple(allowed)
    if value in allowed:
        return value
    hint = _did_you_mean(value, allowed)
    raise ConfigError(f"{option_name(name)} must be one of {', '.join(map(repr, allowed))}; got {value!r}{hint}")


def keyword_names(func: Callable, exclude: Iterable[str] = ()) -> list[str]:
    """The keyword arguments ``func`` takes (``**kwargs`` not counted), minus ``exclude``."""
    skip = set(exclude)
    return [p.name for p in inspect.signature(func).parameters.values()
            if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and p.name not in skip]


def check_keywords(options: Mapping[str, Any], valid: Iterable[str], spelled: str) -> dict[str, Any]:
    """Refuse keys of ``options`` that are not in ``valid``, naming them as the user spelled them.

    Parameters
    ----------
    options : mapping
        e.g. the ``meeg`` dict of ``neurofm prepare``.
    valid : iterable of str
        Accepted keys.
    spelled : str
        How the user writes a key, with ``{}`` for the key: ``'+meeg.{}='``.
    """
    valid = list(valid)
    unknown = [k for k in options if k not in valid]
    if unknown:
        key = unknown[0]
        raise ConfigError(f"unknown option {spelled.format(key)}{_did_you_mean(key, valid)}; valid: "
                          f"{', '.join(spelled.format(v).lstrip('+').rstrip('=') for v in valid)}")
    return dict(options)


def _did_you_mean(value: Any, allowed: Iterable[Any]) -> str:
    close = difflib.get_close_matches(str(value), [str(a) for a in allowed], n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""
