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
    ``dropped`` counts the items lost to the policy (and to ``clear``).
    """

    def __init__(
        self,
        size: int,
        policy: DropPolicy,
        *,
        wake: threading.Event | None = None,
        budget: ByteBudget | None = None,
        weigh: Callable[[T], int] | None = None,
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
            if self.closed:
                self.dropped += 1
                return 1
            if policy is DropPolicy.WAIT:
                while self._full() and not (stop is not None and stop.is_set()):
                    self.cond.wait(0.1)  # also polls the shared budget, which other queues' consumers free
            elif len(self.items) >= self.size and policy is not DropPolicy.MARKER:
                lost = 1
                if policy is DropPolicy.SKIP:
                    self.dropped += 1
                    return lost
                self._release([self.items.popleft()])
            self.dropped += lost
            self.items.append(item)
            if self.budget is not None:
                self.budget.add(self.weigh(item))
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

    def get_all(self, timeout: float | None = None) -> list[T]:
        """Every queued item, waiting (up to ``timeout`` s) for one while the queue is open; [] once closed."""
        with self.cond:
            self.cond.wait_for(lambda: self.items or self.closed, timeout)
            items = list(self.items)
            self.items.clear()
            self._release(items)
            self.cond.notify_all()
            return items

    def clear(self) -> int:
        """Drop everything queued; returns how many items were dropped (counted in ``dropped``)."""
        with self.cond:
            n = len(self.items)
            self._release(list(self.items))
            self.items.clear()
            self.dropped += n
            self.cond.notify_all()
            return n

    def _full(self) -> bool:
        """No room: ``size`` items, or the shared byte budget spent while this queue holds one (under ``cond``)."""
        return len(self.items) >= self.size or bool(self.items and self.budget is not None and self.budget.spent())

    def _release(self, items: list[T]) -> None:
        """Give the bytes of ``items``, leaving the queue, back to the shared budget (under ``cond``)."""
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
    def fill(self) -> float:
        return len(self.items) / self.size

    def __len__(self) -> int:
        return len(self.items)
