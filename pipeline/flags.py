"""Command-line flags made from the config dataclasses: name, type, range, default and help come from the field.

Each field of a config section (``[runner] queue_size``) is also the flag ``--runner.queue_size=VALUE``
(dest ``"runner.queue_size"``, which ``cli.apply_flags`` lays over the TOML file), and the short flags
(``--det-conf``) are made by the same ``config_flag``: the help text is the comment written beside the field
and the default is the field's own, so neither can drift from the code.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import inspect
import re
import types
import typing
from pathlib import Path
from typing import Any

from pipeline.ranges import flag_type, range_of

_FIELD = re.compile(r"^    (\w+): [^#]*?(?:#\s*(.*))?$")  # a field of the class body, with its trailing comment
_COMMENT = re.compile(r"^    #\s?(.*)$")  # a comment line of the class body (the next field's help)


@functools.cache
def field_help(cls: type) -> dict[str, str]:
    """The comment beside each field of dataclass ``cls`` (trailing, else the comment lines just above it)."""
    out, above = {}, []
    for line in inspect.getsource(cls).splitlines():
        comment, field = _COMMENT.match(line), _FIELD.match(line)
        if comment:
            above.append(comment.group(1).strip())
        elif field:
            out[field.group(1)] = (field.group(2) or " ".join(above)).strip()
            above = []
        elif line.strip():
            above = []
    return out


def _scalar(hint: Any) -> Any:
    """The type a flag parses to: X of ``X | None``, else the hint."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        options = [o for o in typing.get_args(hint) if o is not type(None)]
        return options[0] if len(options) == 1 else None
    return hint


def _default_text(f: dataclasses.Field) -> str:
    if f.default is not dataclasses.MISSING:
        value = f.default
    elif f.default_factory is not dataclasses.MISSING:
        value = f.default_factory()
    else:
        return "required"
    if value is None:
        return "none"
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, tuple | list):
        return ",".join(str(v) for v in value) or "none"
    return f"{value:g}" if isinstance(value, float) else str(value)


def config_flag(
    group: Any,
    flag: str,
    cls: type,
    name: str,
    dest: str,
    *,
    metavar: str | None = None,
    choices: Any = None,
    note: str = "",
) -> None:
    """Add ``flag`` for field ``name`` of ``cls``, stored in ``dest``: its type, range, default and comment.

    ``note`` follows the default in the help ("(default adam, or the config's)")."""
    f = next(f for f in dataclasses.fields(cls) if f.name == name)
    hint = _scalar(typing.get_type_hints(cls)[name])
    if hint in (int, float):
        kind: Any = flag_type(cls, name)
        metavar = metavar or kind.metavar
    elif hint is bool:
        group.add_argument(
            flag, action=argparse.BooleanOptionalAction, dest=dest, default=None, help=_help(cls, f, note)
        )
        return
    elif hint in (str, Path):
        kind, metavar = hint, metavar or ("PATH" if hint is Path else "TEXT")
    elif isinstance(hint, type) and issubclass(hint, str):  # a str Enum
        kind, metavar = hint, metavar or "{" + ",".join(m.value for m in hint) + "}"
    else:
        raise TypeError(f"{cls.__name__}.{name}: no flag for a {hint}")
    if choices is not None:
        metavar = "{" + ",".join(choices) + "}"
    group.add_argument(
        flag, type=kind, dest=dest, metavar=metavar, default=None, choices=choices, help=_help(cls, f, note)
    )


def _help(cls: type, f: dataclasses.Field, note: str = "") -> str:
    declared = range_of(cls, f.name)
    text = field_help(cls).get(f.name, "")
    extra = (note and f", {note}") + (f"; in {declared}" if declared is not None else "")
    return f"{text} (default {_default_text(f)}{extra})".replace("%", "%%").lstrip()


def add_section_flags(parser: argparse.ArgumentParser, sections: dict[str, type], *, title: str) -> None:
    """``--SECTION.FIELD=VALUE`` for every scalar field of every section, one argument group per section."""
    for section, cls in sections.items():
        group = parser.add_argument_group(f"[{section}] ({title})")
        for f in dataclasses.fields(cls):
            hint = _scalar(typing.get_type_hints(cls)[f.name])
            if f.init and (hint in (int, float, bool, str, Path) or (isinstance(hint, type) and issubclass(hint, str))):
                config_flag(group, f"--{section}.{f.name}", cls, f.name, f"{section}.{f.name}")
