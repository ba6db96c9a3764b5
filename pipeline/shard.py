"""Split streams across N workers by rendezvous (highest-random-weight) hashing.

Worker ``i`` of ``N`` (``dfwatch watch --shard i/N``) keeps the streams whose name gives worker
``i`` the highest weight ``hash(worker, name)``. Every worker computes the same answer from the
name alone, with no coordination, and growing N to N + 1 moves only the streams the new worker
wins, about 1/(N + 1) of them; the others stay where they are.

    Shard.parse("1/3").owns("lobby")   # the same answer on every machine and in every process
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable
from dataclasses import dataclass

from pipeline.errors import ConfigError
from pipeline.ranges import REQUIRED, out_of_range, ranged

MAX_WORKERS = 4096  # a stream's owner is the highest of N hashes, so N bounds the work per stream id
_SHARD = re.compile(r"\s*(\d+)\s*/\s*(\d+)\s*")


def weight(worker: int, stream_id: str) -> int:
    """The rendezvous weight of ``stream_id`` for ``worker``: 64 bits of BLAKE2b, stable across processes."""
    digest = hashlib.blake2b(f"{worker}\x00{stream_id}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")


def owner(stream_id: str, count: int) -> int:
    """The worker (0 .. count - 1) that owns ``stream_id`` among ``count`` workers."""
    if count < 1:
        raise ConfigError(f"the number of workers must be at least 1, got {count}")
    return max(range(count), key=lambda worker: weight(worker, stream_id))


@dataclass(frozen=True)
class Shard:
    """Worker ``index`` of ``count`` (0-based, like a StatefulSet pod's ordinal)."""

    index: int = ranged(REQUIRED, 0, MAX_WORKERS - 1)  # this worker, below count
    count: int = ranged(REQUIRED, 1, MAX_WORKERS)  # workers; each stream id is hashed once per worker

    def __post_init__(self) -> None:
        if out_of_range(self) or self.index >= self.count:
            raise ConfigError(
                f"shard {self.index}/{self.count} is out of range: expected I/N with 1 <= N <= {MAX_WORKERS} and "
                f"0 <= I < N (I is this worker's 0-based index, N the number of workers), e.g. "
                f"0/{min(max(self.count, 1), MAX_WORKERS)}"
            )

    @classmethod
    def parse(cls, text: str) -> Shard:
        """``"i/N"`` (e.g. ``"2/5"``) into a Shard; raises ConfigError naming the bad value."""
        match = _SHARD.fullmatch(text) if isinstance(text, str) else None
        if match is None:
            raise ConfigError(
                f"shard {text!r} is not I/N: expected this worker's 0-based index and the number of workers, "
                "e.g. 0/3, 1/3 or 2/3 for three workers"
            )
        return cls(int(match[1]), int(match[2]))

    def owns(self, stream_id: str) -> bool:
        return owner(stream_id, self.count) == self.index

    def select(self, stream_ids: Iterable[str]) -> list[str]:
        """The ids this worker owns, in their given order."""
        return [sid for sid in stream_ids if self.owns(sid)]

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"
