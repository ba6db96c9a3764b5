"""Command-line flags made from the config dataclasses: name, type, range, default and help come from the field.

Each field of a config section (``[runner] queue_size``) is also the flag ``--runner.queue_size=VALUE``
(dest ``"runner.queue_size"``, which ``cli.apply_flags`` lays over the TOML file), and the short flags
(``--det-conf``) are made by the same ``config_flag``: the help text is the comment written beside the field
and the default is the field's own, so neither can drift from the code.

A command whose options are one dataclass (each ``dfwatch-train`` command, each benchmark) gets all of them from
``add_config_flags`` (``--field-name``, dest the field's name) and builds the dataclass with ``config_from_args``:
a TOML file of its fields (``--config``) first, then every flag that was given.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import inspect
import re
import tomllib
import types
import typing
from pathlib import Path
from typing import Any

from pipeline.errors import ConfigError
from pipeline.ranges import flag_type, range_of

_FIELD = re.compile(r"^    (\w+): [^#]*?(?:#\s*(.*))?$")  # a field of the class body, with its trailing comment
_COMMENT = re.compile(r"^    #\s?(.*)$")  # a comment line of the class body (the next field's help)


@functools.cache
def field_help(cls: type) -> dict[str, str]:
    """The comment beside each field of dataclass ``cls`` (trailing, else the comment lines just above it), those of
    the fields it inherits from dataclass bases included."""
    out: dict[str, str] = {}
    for base in reversed(cls.__mro__[1:]):
        if dataclasses.is_dataclass(base):
            out |= field_help(base)
    above: list[str] = []
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


def _items(item: type) -> Any:
    """An argparse ``type`` for a ``tuple[item, ...]`` field: comma-separated values."""

    def parse(text: str) -> tuple:
        try:
            return tuple(item(v.strip()) for v in text.split(",") if v.strip())
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected comma-separated {item.__name__} values, got {text!r}") from None

    return parse


def _default_text(f: dataclasses.Field) -> str:
    if f.default is not dataclasses.MISSING:
        value = f.default
    elif f.default_factory is not dataclasses.MISSING:
        value = f.default_factory()
    else:
        return "required"
    if value is None or value == "":
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
    elif typing.get_origin(hint) is tuple and typing.get_args(hint)[0] in (str, int, float, Path):
        item = typing.get_args(hint)[0]
        kind, metavar = _items(item), metavar or ("A,B,..." if item in (str, Path) else "N,N,...")
    else:
        raise TypeError(f"{cls.__name__}.{name}: no flag for a {hint}")
    if choices is not None:
        metavar = "{" + ",".join(map(str, choices)) + "}"
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


def add_config_flags(
    parser: Any,
    cls: type,
    *,
    flags: dict[str, str] | None = None,
    choices: dict[str, Any] | None = None,
    metavars: dict[str, str] | None = None,
    skip: tuple[str, ...] = (),
) -> None:
    """A flag for every field of dataclass ``cls``: ``--field-name`` (or ``flags[field]``), dest the field's name.

    Type, range, default and help come from the field (``config_flag``); ``config_from_args`` builds ``cls``."""
    for f in dataclasses.fields(cls):
        if f.init and f.name not in skip:
            flag, choice, metavar = _flag(f.name, flags), (choices or {}).get(f.name), (metavars or {}).get(f.name)
            config_flag(parser, flag, cls, f.name, f.name, choices=choice, metavar=metavar)
    if flags:  # config_from_args names a missing field by its flag
        parser.set_defaults(_flag_names={**(parser.get_default("_flag_names") or {}), **flags})
    parser.set_defaults(_options=(*(parser.get_default("_options") or ()), cls))  # for check_options


def _flag(name: str, flags: dict[str, str] | None) -> str:
    return (flags or {}).get(name, "--" + name.replace("_", "-"))


def add_config_file(parser: Any, what: str) -> None:
    """``--config FILE.toml``: the fields of ``what`` as a flat TOML table (flags given on the line win)."""
    parser.add_argument(
        "--config", type=Path, default=None, metavar="TOML", help=f"{what} as a TOML table of its fields; flags win"
    )
    parser.set_defaults(_config_is_toml=True)


def check_options(args: argparse.Namespace) -> None:
    """Build every options dataclass whose flags ``args`` holds (and its ``--config`` file where that is TOML), as
    the command will: a missing required field, a value out of range or a bad file fails now, not when it runs."""
    for cls in getattr(args, "_options", ()):
        config_from_args(cls, args, file=args.config if getattr(args, "_config_is_toml", False) else None)


def config_from_args(cls: type, args: argparse.Namespace, *, file: Path | None = None, **fixed: Any) -> Any:
    """``cls`` from ``file`` (a TOML table of its fields), then every flag of ``add_config_flags`` that was given,
    then ``fixed``; an unknown key, a wrong type or a missing required field is a ``ConfigError`` naming it."""
    from pipeline.config import build  # the TOML reader of the service's config: same checks and messages

    table: dict[str, Any] = {}
    if file is not None:
        try:
            table = tomllib.loads(Path(file).read_text())
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise ConfigError(f"config {file}: {exc}") from exc
    where = f"config {file}" if file is not None else cls.__name__
    for f in dataclasses.fields(cls):
        value = getattr(args, f.name, None)
        if f.init and value is not None:
            table[f.name] = list(value) if isinstance(value, tuple) else value
    table.update({k: list(v) if isinstance(v, tuple) else v for k, v in fixed.items()})
    missing = [
        f.name
        for f in dataclasses.fields(cls)
        if f.init
        and f.name not in table
        and dataclasses.MISSING is f.default
        and dataclasses.MISSING is f.default_factory
    ]
    if missing:
        named = ", ".join(_flag(n, getattr(args, "_flag_names", None)) for n in missing)
        where_else = " or in the config file" if file is not None else ""
        raise ConfigError(f"{where}: {named} required (give it on the command line{where_else})")
    return build(cls, table, where)


def parse_options(
    cls: type, argv: list[str] | None, *, description: str | None, config_file: bool = True, **flag_options: Any
) -> Any:
    """A script's options: a parser of ``cls``'s flags (``flag_options`` as ``add_config_flags`` takes them) and,
    with ``config_file``, ``--config``; parsed, built, and refused as a usage error (exit 2) where they are bad."""
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_config_flags(parser, cls, **flag_options)
    if config_file:
        add_config_file(parser, "the run's settings")
    args = parser.parse_args(argv)
    try:
        return config_from_args(cls, args, file=args.config if config_file else None)
    except ConfigError as exc:
        parser.error(str(exc))
