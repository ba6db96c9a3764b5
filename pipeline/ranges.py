"""One range per config field, declared beside the field and checked wherever its value comes from.

A numeric field of a config dataclass declares its range with ``ranged``::

    det_conf: float | None = ranged(None, 0, 1, open_lo=True)  # detector threshold; None = the manifest's

``check_ranges(self)`` in the dataclass's ``__post_init__`` then refuses a value out of range (``nan``
and ``inf`` included) for a TOML file, a control-hash entry and ``dataclasses.replace`` alike, and
``flag_type(cls, name)`` gives the command-line flag of that field the same check at parse time, so
``--det-conf nan`` is a usage error rather than a run with detection switched off.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import typing
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pipeline.errors import ConfigError

REQUIRED: Any = dataclasses.MISSING  # ``ranged(REQUIRED, ...)``: a field without a default


@dataclass(frozen=True)
class Range:
    """``lo <= value <= hi`` (``lo < value`` with ``open_lo``); ``unit`` only names it in messages."""

    lo: float
    hi: float
    open_lo: bool = False
    unit: str = ""

    def __contains__(self, value: object) -> bool:
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            return False
        return (self.lo < value if self.open_lo else self.lo <= value) and value <= self.hi

    def __str__(self) -> str:
        text = f"{'(' if self.open_lo else '['}{self.lo:g}, {self.hi:g}]"
        return f"{text} {self.unit}" if self.unit else text

    def check(self, name: str, value: object) -> None:
        """ConfigError ``NAME must be in [lo, hi], got VALUE`` unless ``value`` is in range (None always is)."""
        if value is not None and value not in self:
            raise ConfigError(f"{name} must be in {self}, got {value!r}")


def ranged(default: Any, lo: float, hi: float, *, open_lo: bool = False, unit: str = "") -> Any:
    """A dataclass field with ``default`` whose values must lie in ``[lo, hi]`` (``(lo, hi]`` with ``open_lo``)."""
    return dataclasses.field(default=default, metadata={"range": Range(lo, hi, open_lo, unit)})


def range_of(cls: type, name: str) -> Range | None:
    """The declared range of field ``name`` of dataclass ``cls`` (None: it declares none)."""
    return next((f.metadata.get("range") for f in dataclasses.fields(cls) if f.name == name), None)


def out_of_range(obj: Any) -> list[str]:
    """The fields of dataclass instance ``obj`` whose value is outside their declared range (None is never)."""
    out = []
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        if "range" in f.metadata and value is not None and value not in f.metadata["range"]:
            out.append(f.name)
    return out


def check_ranges(obj: Any, where: str = "") -> None:
    """ConfigError ``WHERE NAME must be in [lo, hi], got VALUE`` for the first field of ``obj`` out of its range."""
    for name in out_of_range(obj)[:1]:
        range_of(type(obj), name).check(f"{where}{name}", getattr(obj, name))  # type: ignore[union-attr]


def flag_type(cls: type, name: str) -> Callable[[str], Any]:
    """An argparse ``type`` for the flag of field ``name`` of ``cls``: its scalar type and declared range."""
    hint = typing.get_type_hints(cls)[name]
    scalar = next((t for t in (int, float) if t is hint or t in typing.get_args(hint)), None)
    if scalar is None:
        raise TypeError(f"{cls.__name__}.{name} is not a number field")
    return _number(scalar, range_of(cls, name))


def bounded(lo: float, hi: float, *, open_lo: bool = False, unit: str = "") -> Callable[[str], float]:
    """An argparse ``type`` for a number flag that belongs to no config field (``status --interval``)."""
    return _number(float, Range(lo, hi, open_lo, unit))


def _number(scalar: type, declared: Range | None) -> Callable[[str], Any]:
    def parse(text: str) -> Any:
        try:
            value = scalar(text)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"expected {'an integer' if scalar is int else 'a number'}, got {text!r}"
            ) from None
        if declared is not None and value not in declared:
            raise argparse.ArgumentTypeError(f"must be in {declared}, got {text!r}")
        return value

    parse.metavar = "N" if scalar is int else "X"  # type: ignore[attr-defined]
    return parse
