"""Checks of user options, in MNE's ``_check_option`` style: the bad value, the valid
ones, and the spelling the user typed (``+meeg.montag=``), in one line."""

from __future__ import annotations

import difflib
import inspect
import re
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from neurofm.errors import ConfigError


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
    raise ConfigError(f"{name} must be one of {', '.join(map(repr, allowed))}; got {value!r}{hint}")


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


def respell(err: Exception, spelling: Mapping[str, str]) -> Exception:
    """Rewrite the option names in ``err``'s message as the user spells them on the command
    line (``window_s`` -> ``fmri_window_s``, ``montage`` -> ``+meeg.montage``), in place."""
    if not spelling or not err.args or not isinstance(err.args[0], str):
        return err
    names = sorted(spelling, key=len, reverse=True)
    pattern = re.compile(r"(?<![\w.+/])(" + "|".join(map(re.escape, names)) + r")(?![\w/])")
    err.args = (pattern.sub(lambda m: spelling[m.group(1)], err.args[0]), *err.args[1:])
    return err
