"""The one bounded queue between threads, with an explicit policy for when it is full."""

from __future__ import annotations

import collections
import threading
from collections.abc import Callable
from enum import Enum
from typing import Generic, Protocol, TypeVar

T = TypeVar("T")


class DropPolicy(str, Enum):
    DROP_OLDEST = "drop_oldest"  # live feeds: a full queue drops its oldest item, lag never grows
    WAIT = "wait"  # files: the producer waits for room, nothing is dropped
    SKIP = "skip"  # a full queue refuses the new item (a live frame for a busy frame sink)
    MARKER = "marker"  # a control marker (a stream was removed): queued at once, past the bound if need be


class StopSignal(Protocol):
    def is_set(self) -> bool: ...


class ByteBudget:
    """Bytes held by several queues together (the files' decoded frames): a WAIT put waits while it is spent.

    Frames are bounded per queue in number, so 50 files at 1080p held 16 frames each (about 2.1 GB of
    process memory); sharing one budget bounds them in bytes for the process, whatever their resolution,
    while nothing is lost (readers wait). A queue may always hold one item, so no stream starves.
    """

    def __init__(self, limit: int) -> None:
        if limit < 1:
            raise ValueError(f"a byte budget is at least 1 byte, got {limit}")
        self.limit, self.used = limit, 0
        self._lock = threading.Lock()

    def spent(self) -> bool:
        return self.used >= self.limit

    def add(self, n: int) -> None:
        with self._lock:
            self.used += n


class BoundedQueue(Generic[T]):
    """A FIFO of at most ``size`` items between threads; ``put`` follows ``policy`` when it is full.

    ``wake`` (optional) is set after every put, for a consumer that watches several queues.
    ``dropped`` counts the items lost to the policy (and to ``clear``). Items of the type ``marker`` (a removed
    stream's StreamRemoved, in a sink's queue) are never dropped nor counted, and take no room.
    """

    def __init__(
        self,
        size: int,
        policy: DropPolicy,
        *,
        wake: threading.Event | None = None,
        budget: ByteBudget | None = None,
        weigh: Callable[[T], int] | None = None,
        marker: type | None = None,
    ) -> None:
        """``budget`` (with ``weigh``, an item's bytes): a WAIT put also waits while the shared budget is spent."""
        if size < 1:
            raise ValueError(f"a queue holds at least 1 item, got size {size}")
        if (budget is None) != (weigh is None):
            raise ValueError("a byte budget needs weigh, the bytes of an item")
        self.items: collections.deque[T] = collections.deque()
        self.size, self.policy, self.wake = size, policy, wake
        self.budget, self.weigh = budget, weigh
        self.cond = threading.Condition()
        self.closed = False  # the producer has finished
        self.dropped = 0
        self.marker = marker
        self.markers = 0  # markers queued

    def put(self, item: T, stop: StopSignal | None = None, *, policy: DropPolicy | None = None) -> int:
        """Queue ``item`` under ``policy`` (default: the queue's); returns the items lost (0 or 1).

        WAIT blocks until there is room or ``stop`` is set; then the item is queued beyond the bound. MARKER never
        waits and never drops: the item goes past the bound at once (markers are rare and tiny, and the thread
        that queues them must not stall). A closed queue takes nothing more (its stream was removed while the
        reader was stuck in a read): the item is lost.
        """
        policy = policy or self.policy
        lost = 0
        with self.cond:
            if policy is DropPolicy.WAIT:
                while self._full() and not self.closed and not (stop is not None and stop.is_set()):
                    self.cond.wait(0.1)  # also polls the shared budget, which other queues' consumers free
            if self.closed:
                lost = 0 if self._is_marker(item) else 1
                self.dropped += lost
                return lost
            if policy in (DropPolicy.DROP_OLDEST, DropPolicy.SKIP) and self.pending >= self.size:
                lost = 1
                if policy is DropPolicy.SKIP:
                    self.dropped += 1
                    return lost
                self._drop_oldest(1)
            self._admit([item])
            self.items.append(item)
            self.cond.notify_all()
        if self.wake is not None:
            self.wake.set()
        return lost

    def get(self) -> T | None:
        """The oldest item, or None at once when there is none."""
        with self.cond:
            item = self.items.popleft() if self.items else None
            self._release([] if item is None else [item])
            self.cond.notify_all()
            return item

    def get_all(self, timeout: float | None = None, *, limit: int | None = None) -> list[T]:
        """Every queued item (the ``limit`` oldest), waiting (up to ``timeout`` s) for one while the queue is open;
        [] once closed."""
        with self.cond:
            self.cond.wait_for(lambda: self.items or self.closed, timeout)
            n = len(self.items) if limit is None else min(limit, len(self.items))
            items = [self.items.popleft() for _ in range(n)]
            self._release(items)
            self.cond.notify_all()
            return items

    def wait(self, timeout: float | None = None) -> bool:
        """Wait (up to ``timeout`` s) until an item is queued or the queue is closed; whether one is queued."""
        with self.cond:
            self.cond.wait_for(lambda: self.items or self.closed, timeout)
            return bool(self.items)

    def requeue(self, items: list[T]) -> int:
        """Put ``items`` (taken with get_all) back at the head, in order: their write failed and is retried.

        The oldest items beyond ``size`` are dropped and counted (markers never); returns how many.
        """
        with self.cond:
            self._admit(items)
            self.items.extendleft(reversed(items))
            excess = max(0, self.pending - self.size)
            self._drop_oldest(excess)
            self.cond.notify_all()
            return excess

    def clear(self) -> int:
        """Drop everything queued; returns how many items were dropped (counted in ``dropped``; markers are not)."""
        with self.cond:
            n = self.pending
            self._release(list(self.items))
            self.items.clear()
            self.dropped += n
            self.cond.notify_all()
            return n

    def _full(self) -> bool:
        """No room: ``size`` items, or the shared byte budget spent while this queue holds one (under ``cond``)."""
        return self.pending >= self.size or bool(self.items and self.budget is not None and self.budget.spent())

    def _is_marker(self, item: T) -> bool:
        return self.marker is not None and isinstance(item, self.marker)

    def _drop_oldest(self, n: int) -> None:
        """Drop the ``n`` oldest items that are not markers; markers keep their place ahead (under ``cond``)."""
        markers = []
        while n > 0 and self.items:
            item = self.items.popleft()
            if self._is_marker(item):
                markers.append(item)
                continue
            self._release([item])
            self.dropped += 1
            n -= 1
        self.items.extendleft(reversed(markers))

    def _admit(self, items: list[T]) -> None:
        """``items`` enter the queue: their bytes are taken from the shared budget (under ``cond``)."""
        if self.marker is not None:
            self.markers += sum(isinstance(item, self.marker) for item in items)
        if self.budget is not None and items:
            self.budget.add(sum(self.weigh(item) for item in items))

    def _release(self, items: list[T]) -> None:
        """``items`` leave the queue: their bytes go back to the shared budget (under ``cond``)."""
        if self.marker is not None:
            self.markers -= sum(isinstance(item, self.marker) for item in items)
        if self.budget is not None and items:
            self.budget.add(-sum(self.weigh(item) for item in items))

    def close(self) -> None:
        """The producer is done: consumers take what is left, then see ``finished``."""
        with self.cond:
            self.closed = True
            self.cond.notify_all()
        if self.wake is not None:
            self.wake.set()

    @property
    def finished(self) -> bool:
        with self.cond:
            return self.closed and not self.items

    @property
    def pending(self) -> int:
        """Items that take room: all but markers."""
        return len(self.items) - self.markers

    @property
    def fill(self) -> float:
        return len(self.items) / self.size

    def __len__(self) -> int:
        return len(self.items)
