"""The columnar base of ``Detections`` and of the pipeline's ``Faces``: one row per face, one numpy array per column."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import Field, field, fields
from functools import cache
from typing import Any, Self

import numpy as np


def column(dtype: type, *, width: int | None = None) -> Any:
    """A dataclass field holding one column: ``(n,)`` of ``dtype``, or ``(n, width)`` with ``width``."""
    return field(metadata={"dtype": dtype, "width": width})


@cache
def _columns(cls: type) -> tuple[Field, ...]:
    return fields(cls)


class Columns:
    """Base of a frozen dataclass whose fields are all ``column(...)``s of one length.

    Validated once in ``__post_init__``: each column is cast to its dtype and shape, and all must
    have the same number of rows. Rows are selected with a boolean mask, an index array or a slice.
    """

    def __post_init__(self) -> None:
        columns = {}
        for f in _columns(type(self)):
            value = np.asarray(getattr(self, f.name), dtype=f.metadata["dtype"])
            width = f.metadata["width"]
            columns[f.name] = value.reshape(-1) if width is None else value.reshape(-1, width)
        lengths = {name: len(value) for name, value in columns.items()}
        if len(set(lengths.values())) > 1:
            raise ValueError(f"{type(self).__name__} columns differ in length: {lengths}")
        for name, value in columns.items():
            object.__setattr__(self, name, value)

    @classmethod
    def empty(cls) -> Self:
        """No rows."""
        return cls(
            **{
                f.name: np.zeros(0 if f.metadata["width"] is None else (0, f.metadata["width"]), f.metadata["dtype"])
                for f in _columns(cls)
            }
        )

    @classmethod
    def concatenate(cls, parts: Sequence[Self]) -> Self:
        """The rows of ``parts``, in order."""
        if not parts:
            return cls.empty()
        return cls(**{f.name: np.concatenate([getattr(p, f.name) for p in parts]) for f in _columns(cls)})

    def __len__(self) -> int:
        return len(getattr(self, _columns(type(self))[0].name))

    def __getitem__(self, index: np.ndarray | slice) -> Self:
        """Select rows by boolean mask, integer array or slice."""
        return type(self)(**{f.name: getattr(self, f.name)[index] for f in _columns(type(self))})
