"""MkDocs hook: the CLI reference (``cli.md``) generated from the typed configs.

Every key of every command comes from the dataclasses in ``neurofm/configs/schema.py`` (and
the layers' dataclasses they compose): name, type, default, and the comment written beside
the field, so the page cannot drift from what the commands accept.
"""

from __future__ import annotations

import dataclasses
import inspect
import re
import typing

MARKER = "<!-- cli-reference -->"
FIELD = re.compile(r"^\s+(\w+)\s*:\s*[^#=]+?(?:=\s*[^#]*?)?\s*(?:#\s*(?P<comment>.*))?$")


def _attributes(doc: str) -> dict[str, str]:
    """The NumPy-style ``Attributes`` section of a docstring: field name -> description."""
    found: dict[str, str] = {}
    lines = inspect.cleandoc(doc or "").splitlines()
    if "Attributes" not in lines:
        return found
    names, rest, body = [], "", []

    def flush() -> None:
        text = " ".join(body) or rest
        for name in names:
            found[name] = text

    for line in lines[lines.index("Attributes") + 2:]:
        if not line.strip():
            continue
        if not line.startswith(" "):
            if line.strip().endswith("---") or re.match(r"^[A-Z]\w+$", line.strip()):
                break
            flush()
            head, _, rest = line.partition(" : ")
            names, rest, body = [n.strip() for n in head.split(",")], rest.strip(), []
        else:
            body.append(line.strip())
    flush()
    return found


def _comments(cls: type) -> dict[str, str]:
    """Each field's description: the ``Attributes`` of the docstrings of ``cls`` and its
    bases, or the trailing ``# comment`` of its line in their source."""
    found: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        if not dataclasses.is_dataclass(klass):
            continue
        found.update(_attributes(klass.__doc__))
        try:
            source = inspect.getsource(klass)
        except (OSError, TypeError):
            continue
        for line in source.splitlines():
            match = FIELD.match(line)
            if match and match.group("comment"):
                found[match.group(1)] = match.group("comment").strip()
    return found


def _default(field: dataclasses.Field) -> str:
    if field.default is not dataclasses.MISSING:
        value = field.default
    elif field.default_factory is not dataclasses.MISSING:
        value = field.default_factory()
    else:
        return "required"
    if dataclasses.is_dataclass(value):
        return "(group)"
    text = repr(value)
    return "required" if text == "'???'" else f"`{text}`"


def _type(hint) -> str:
    text = getattr(hint, "__name__", None) if not typing.get_args(hint) else None
    text = text or str(hint).replace("typing.", "")
    return f"`{text}`".replace("|", "\\|")


def _rows(cls: type, prefix: str = "") -> list[str]:
    hints = typing.get_type_hints(cls)
    comments = _comments(cls)
    rows = []
    for field in dataclasses.fields(cls):
        hint = hints.get(field.name)
        if dataclasses.is_dataclass(hint):  # a nested group: model., data., trainer., optim.
            rows += _rows(hint, f"{prefix}{field.name}.")
            continue
        note = _markdown(comments.get(field.name, "")).replace("|", "\\|")
        rows.append(f"| `{prefix}{field.name}` | {_type(hint)} | {_default(field)} | {note} |")
    return rows


def _markdown(text: str) -> str:
    """Docstring reST (``code``, :func:`name`) as Markdown."""
    return re.sub(r":\w+:`~?([^`]+)`", r"`\1`", text.replace("``", "`"))


def _doc(cls: type) -> str:
    return _markdown(inspect.cleandoc(cls.__doc__ or "").split("\n\n")[0].replace("\n", " "))


def reference() -> str:
    from neurofm.configs.schema import SCHEMAS, TASKS

    parts = []
    for command, schema in SCHEMAS.items():
        parts += [f"## neurofm {command}", "", _doc(schema), "",
                  "| key | type | default | meaning |", "|---|---|---|---|", *_rows(schema), ""]
        if command == "finetune":
            for name, task in TASKS.items():
                parts += [f"### task={name}", "", _doc(task), "",
                          "| key | type | default | meaning |", "|---|---|---|---|",
                          *_rows(task, "task."), ""]
    return "\n".join(parts)


def on_page_markdown(markdown: str, page, config, files) -> str:
    if MARKER in markdown:
        return markdown.replace(MARKER, reference())
    return markdown
