"""The one bounded, threaded worker behind every sink: its buffer, drop policy, writer thread and shutdown.

A sink is two parts. What the pipeline calls (``publish``, on the stage loop) must never wait for a reader,
a server or a disk; the plain writing part, a Writer, does the waiting: its ``write`` talks to the descriptor,
the server or the files and raises when it fails. The SinkWorker between them owns a BoundedQueue (its
policy: DROP_OLDEST for stdout and Redis, SKIP or WAIT per frame for the frame sinks), the one thread that
calls the writer, what a failure does, and a close() bounded in time.

A failure of ``write`` is one of three kinds, as the writer declares them:

- ``retry_on`` ("not now": a lost connection): the items go back to the head of the queue in order, the
  oldest beyond the bound are dropped, and the write is retried after a jittered backoff (pipeline.backoff);
  the writer is told of the first failure of an outage and of the first success after it;
- ``fatal`` (the writer can never write again: a reader that went away): what is queued is dropped, what
  comes later is refused, both counted;
- anything else: the items of that write are lost and counted, the next write goes on.

A removed stream's marker (StreamRemoved) waits in the queue behind the stream's items and is handed to
``forget`` after them; it takes no room, is never dropped and never counted as an item.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Generic, Protocol, TypeVar

from pipeline.backoff import Backoff
from pipeline.messages import StreamRemoved
from pipeline.queues import BoundedQueue, DropPolicy, StopSignal

logger = logging.getLogger(__name__)

T = TypeVar("T")
GRACE = 0.5  # seconds close() still waits for the thread after interrupting a write stuck past the deadline


@dataclass(frozen=True)
class SinkHealth:
    """A sink's state at one moment, for the metrics and the summary; the counts only grow."""

    buffered: int = 0  # items waiting now, the write in progress included
    connected: bool | None = None  # False while writes are retried or once the writer broke; None: nothing to lose
    written: int = 0  # items written
    dropped: int = 0  # items lost to a full buffer, or refused once closed or once the writer broke
    failed: int = 0  # items whose write failed for good (not retried)
    unflushed: int = 0  # items still buffered when close() gave up
    failures: int = 0  # write attempts that failed, retried ones included
    rejected: int = 0  # commands the server refused for good (Redis); their writes are not retried

    @property
    def lost(self) -> int:
        """Items that never reached the sink's destination."""
        return self.dropped + self.failed + self.unflushed


class Interrupted(Exception):
    """Raised by ``Writer.write`` cut short by ``interrupt()``: the last ``unwritten`` items were not written."""

    def __init__(self, unwritten: int) -> None:
        super().__init__(f"{unwritten} items not written")
        self.unwritten = unwritten


class Writer(Protocol[T]):
    """The writing part of a sink, called from its SinkWorker's thread only (subclass it for the defaults)."""

    name: str
    retry_on: tuple[type[BaseException], ...] = ()  # failures that mean "not now": the items are retried
    fatal: tuple[type[BaseException], ...] = ()  # failures after which nothing can be written any more

    def write(self, items: list[T]) -> int | None:
        """Write ``items``; raise when that failed. Returns how many it skipped (written in part), or None."""
        ...

    def forget(self, stream_id: str) -> None:
        """A removed stream, after its items: release what is kept for it (default: nothing is kept)."""

    def interrupt(self) -> None:
        """close() gave up waiting: make a write stuck in a call return (raise), e.g. by breaking a socket."""

    def retrying(self, exc: BaseException, *, first: bool) -> None:
        """A write failed with a ``retry_on`` failure; ``first``: the first of an outage."""

    def written(self, n: int, *, outage: float | None) -> None:
        """A write of ``n`` items (0: a stream released) succeeded; ``outage``: seconds since the first failure
        of the outage it ends, or None."""

    def broke(self, exc: BaseException) -> None:
        """A ``fatal`` failure: the writer stops for good."""
        logger.error("%s sink: the writer stopped (%s)", self.name, exc, exc_info=exc)


class SinkWorker(Generic[T]):
    """Buffers items for one Writer and writes them from a thread of its own; never blocks ``put`` but for WAIT."""

    def __init__(
        self,
        writer: Writer[T],
        *,
        size: int,
        policy: DropPolicy,
        batch_size: int | None = None,
        backoff: tuple[float, float] = (0.2, 5.0),
        abort: StopSignal | None = None,
    ) -> None:
        """``size``: items buffered (beyond it ``policy`` applies); ``batch_size``: most items per write (None:
        all that wait). ``backoff``: first and longest wait between retries, in seconds. ``abort``: once set, a
        WAIT put stops waiting and what is queued is not written any more (counted as unflushed)."""
        self.writer, self.batch_size, self.abort = writer, batch_size, abort
        self.queue: BoundedQueue[T | StreamRemoved] = BoundedQueue(size, policy, marker=StreamRemoved)
        self._backoff = Backoff(*backoff)
        self._lock = threading.Lock()  # the counters; taken before queue.cond, never after
        self._inflight = 0  # items taken by the thread, not yet written
        self._written = self._failed = self._unflushed = self._failures = 0
        self._down_since: float | None = None  # monotonic time of the first failure of an outage
        self.error: str | None = None  # why the writer stopped for good
        self._failed_logged = False
        self._abandoned = False  # close() gave up on the thread, stuck in a write
        self._closing = threading.Event()  # no more items; cuts a backoff wait short
        self._deadline = math.inf  # monotonic time after which the thread takes no more items
        self._thread = threading.Thread(target=self._run, name=f"dfwatch-{writer.name}-sink", daemon=True)
        self._thread.start()

    def put(self, items: Sequence[T], *, policy: DropPolicy | None = None) -> int:
        """Queue ``items`` under ``policy`` (default: the queue's); returns how many were lost at once (dropped to
        make room, skipped, or refused: closed or broken). Only WAIT waits, for room or ``abort``."""
        return sum(self.queue.put(item, self.abort, policy=policy) for item in items)

    def forget_stream(self, stream_id: str) -> None:
        """After the items queued so far, the writer forgets the stream; never waits, never dropped."""
        if not self._closing.is_set():
            self.queue.put(StreamRemoved(stream_id), policy=DropPolicy.MARKER)

    @property
    def closed(self) -> bool:
        return self._closing.is_set()

    @property
    def running(self) -> bool:
        """The thread is still writing (after close(): it is stuck in a write)."""
        return self._thread.is_alive()

    def health(self) -> SinkHealth:
        can_fail = bool(self.writer.retry_on or self.writer.fatal)
        with self._lock, self.queue.cond:
            return SinkHealth(
                buffered=self.queue.pending + self._inflight,
                connected=(self._down_since is None and self.error is None) if can_fail else None,
                written=self._written,
                dropped=self.queue.dropped,
                failed=self._failed,
                unflushed=self._unflushed,
                failures=self._failures,
            )

    def finish(self) -> None:
        """No more items will come: the thread writes what is queued and stops (close() bounds the wait)."""
        self._closing.set()
        self.queue.close()

    def close(self, timeout: float) -> int:
        """Write what is queued for up to ``timeout`` seconds (GRACE more at worst: a write stuck past it is
        interrupted), then stop; what was not written is counted as unflushed. Returns the items lost in all."""
        if self._deadline == math.inf:
            self._deadline = time.monotonic() + timeout
        self.finish()
        self._thread.join(timeout)
        if self._thread.is_alive():
            self.writer.interrupt()
            self._thread.join(GRACE)
        with self._lock:
            self._unflushed += _count(self.queue.get_all(timeout=0))
            if self._thread.is_alive():  # stuck for good: its items are not written either
                self._abandoned = True
                self._unflushed += self._inflight
                self._inflight = 0
        return self.health().lost

    # The thread.

    def _run(self) -> None:
        while time.monotonic() < self._deadline and self.queue.wait():
            with self._lock:
                batch = self.queue.get_all(timeout=0, limit=self.batch_size)
                self._inflight = _count(batch)
            if self.abort is not None and self.abort.is_set():
                with self._lock:
                    self._unflushed += self._inflight
                    self._inflight = 0
                continue
            if not self._send(batch):
                return

    def _send(self, batch: list[T | StreamRemoved]) -> bool:
        """Write ``batch``: runs of items, each marker forgotten after the items before it. False: stop the thread."""
        start = 0
        while start < len(batch):
            marker = batch[start] if isinstance(batch[start], StreamRemoved) else None
            end = (
                start + 1
                if marker
                else next((i for i in range(start, len(batch)) if isinstance(batch[i], StreamRemoved)), len(batch))
            )
            items = batch[start:end]
            try:
                skipped = self.writer.forget(marker.stream_id) if marker else self.writer.write(items)
                failure = None
            except Exception as exc:
                failure = exc
            if self._abandoned:  # close() gave up on this write and counted it: nothing more to count
                return False
            if isinstance(failure, Interrupted):
                with self._lock:
                    self._written += len(items) - failure.unwritten
                    self._unflushed += self._inflight - len(items) + failure.unwritten
                    self._inflight = 0
                return False
            if isinstance(failure, self.writer.retry_on):
                self._retry(batch[start:], failure)
                return True
            if isinstance(failure, self.writer.fatal):
                self._break(batch[start:], failure)
                return False
            if failure is not None:  # a sink never takes the pipeline down: these items are lost, the next go on
                self._lose(items, marker, failure)
            else:
                self._done(0 if marker else len(items) - (skipped or 0), skipped or 0)
            start = end
        return True

    def _done(self, n: int, skipped: int) -> None:
        with self._lock:
            self._written += n
            self._failed += skipped
            self._inflight -= n + skipped
            outage = None if self._down_since is None else time.monotonic() - self._down_since
            self._down_since = None
        self._backoff.reset()
        self.writer.written(n, outage=outage)

    def _retry(self, rest: list[T | StreamRemoved], exc: BaseException) -> None:
        """Back at the head, in order; wait out the backoff (the shortest once closing; never past the deadline)."""
        with self._lock:
            self._inflight = 0
            self.queue.requeue(rest)
            self._failures += 1
            first = self._down_since is None
            if first:
                self._down_since = time.monotonic()
        self.writer.retrying(exc, first=first)
        left = max(0.0, self._deadline - time.monotonic())
        if self._closing.is_set():  # flushing before the deadline: retry at the shortest interval (the event is set)
            time.sleep(min(self._backoff.initial, left))
        else:  # close() cuts this wait short
            self._closing.wait(min(self._backoff.next_delay(), left))

    def _break(self, rest: list[T | StreamRemoved], exc: BaseException) -> None:
        with self._lock:
            self.error = str(exc) or type(exc).__name__
            self._inflight = 0
            self.queue.close()  # refuses (and counts) what comes
            self.queue.requeue(rest)
            self.queue.clear()
        self.writer.broke(exc)

    def _lose(self, items: list[T | StreamRemoved], marker: StreamRemoved | None, exc: Exception) -> None:
        if marker is not None:
            logger.error("%s sink: releasing stream %r failed", self.writer.name, marker.stream_id, exc_info=exc)
            return
        with self._lock:
            self._failed += len(items)
            self._inflight -= len(items)
            self._failures += 1
        if not self._failed_logged:
            self._failed_logged = True
            logger.error(
                "%s sink failed (%s); further failures are counted, not logged",
                self.writer.name,
                exc,
                exc_info=exc if logger.isEnabledFor(logging.DEBUG) else None,
            )


def _count(items: Sequence[object]) -> int:
    """How many of ``items`` are items (not markers of removed streams)."""
    return sum(not isinstance(item, StreamRemoved) for item in items)
