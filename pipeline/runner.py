"""Threads, queues and lifecycle of a run.

Threads are started in two places only: here, and in pipeline.sink_worker (each sink's one writer thread).
Here: one reader thread per stream, filling a bounded queue (DROP_OLDEST for live feeds, WAIT for files), and
the loops run beside the stages (``beside``: the control hash's poller, pipeline.control). The stage loop, on
the caller's thread, takes frames round-robin across streams into batches (a live frame too late for its
latency budget is shed on the way, before any inference, unless it is its stream's newest), hands each batch to
the BatchProcessor, publishes its verdicts, and feeds the frame sinks through a SinkWorker each. Once a second
it tells the schedule how loaded the queues are. (prometheus_client serves /metrics from a thread of its own,
started in pipeline.metrics; ONNX Runtime's pools are not Python threads.)
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from pipeline.errors import SourceError, StreamLimitError
from pipeline.lograte import READER_PREFIX
from pipeline.messages import Frame, Verdict
from pipeline.observer import Observer
from pipeline.policy import SourcePolicy
from pipeline.processor import BatchProcessor
from pipeline.publish import Publisher
from pipeline.queues import BoundedQueue, ByteBudget, DropPolicy
from pipeline.ranges import check_ranges, ranged
from pipeline.sink_worker import SinkWorker, Writer
from pipeline.sinks import FrameSink, Sink
from pipeline.sources import SourceSpec
from pipeline.summary import RunStats
from pipeline.supervisor import LogEvents, stream_frames

logger = logging.getLogger(__name__)

ADAPT_INTERVAL = 1.0  # seconds between load reports to the schedule (each may change k or m by one step)
FLUSH_SECONDS = 5.0  # after the drain: readers, frame sinks and the loops beside together get this long to finish
DRAIN_QUIET = 0.5  # seconds with every queue empty after which a drain ends, though some reader has not finished


@dataclass(frozen=True)
class RunnerConfig:
    max_batch: int = ranged(8, 1, 256)  # frames per detector call, taken round-robin across streams
    max_wait_ms: float = ranged(5.0, 0, 1000, unit="ms")  # how long a batch that is not full waits for more frames
    queue_size: int = ranged(16, 1, 1000)  # frames buffered per stream between its reader and the stages
    # on shutdown, frames still queued after this long are dropped (and counted)
    drain_seconds: float = ranged(10.0, 0, 3600, unit="seconds")
    idle_wait: float = ranged(0.05, 0, 1, open_lo=True, unit="seconds")  # the stages' sleep when no stream has a frame
    # (frame, verdict) pairs queued per frame sink; live frames skip a full queue
    frame_sink_queue: int = ranged(32, 1, 1000)
    # decoded frames that files (not live feeds) may hold queued, all streams together; their readers wait beyond it
    file_queue_mb: float = ranged(256.0, 1, 100_000, unit="MB")

    def __post_init__(self) -> None:
        check_ranges(self)


def _frame_bytes(frame: Frame) -> int:
    return frame.image.nbytes  # a stream's queue holds its frames only


@dataclass
class _Stream:
    """Everything the runner keeps for one stream."""

    spec: SourceSpec
    queue: BoundedQueue[Frame]
    stop: threading.Event = field(default_factory=threading.Event)
    thread: threading.Thread | None = None
    shed: int = 0  # live frames shed for their latency budget
    taken: int = 0  # live frames taken for processing
    lost_reported: int = 0  # drops + sheds already reported to the schedule
    taken_reported: int = 0


class _SourceEvents(LogEvents):
    """Source supervisor callbacks -> logs and the observer; a removed stream's late reader touches no metric."""

    def __init__(self, observer: Observer, current: Callable[[SourceSpec], bool]) -> None:
        self.observer, self.current = observer, current

    def on_up(self, spec: SourceSpec) -> None:
        super().on_up(spec)
        if self.current(spec):
            self.observer.stream_up(spec.stream_id, True)

    def on_down(self, spec: SourceSpec, reason: str) -> None:
        super().on_down(spec, reason)
        if self.current(spec):  # else a stale 0 for a removed stream would keep the stream-down alert firing
            self.observer.stream_up(spec.stream_id, False)
            self.observer.stream_error(spec.stream_id)

    def on_reconnect(self, spec: SourceSpec, attempt: int, delay: float) -> None:
        super().on_reconnect(spec, attempt, delay)
        if self.current(spec):
            self.observer.reconnect(spec.stream_id)


class Runner:
    def __init__(
        self,
        specs: Sequence[SourceSpec],
        processor: BatchProcessor,
        sinks: Sequence[Sink],
        observer: Observer,
        *,
        config: RunnerConfig = RunnerConfig(),
        until_stopped: bool = False,
        frame_sinks: Sequence[FrameSink] = (),
        policy: SourcePolicy | None = None,
    ) -> None:
        """``until_stopped``: keep running when every stream has ended (streams come and go at run time).

        ``policy``: what FFmpeg may open for the streams (pipeline.policy); admitting them is the caller's job.

        ``observer`` should be the processor's own. ``frame_sinks`` get each published verdict with its frame
        (e.g. the annotated video), each from a SinkWorker's thread behind a bounded queue: frames of files wait
        for room, frames of live streams skip a full queue and are counted, so drawing never holds up a feed.
        """
        ids = [s.stream_id for s in specs]
        self.max_streams = (policy or SourcePolicy()).max_streams
        if len(ids) > self.max_streams:
            raise StreamLimitError(
                f"{len(ids)} streams given, more than [sources] max_streams = {self.max_streams} "
                "(raise it, or spread the streams over workers with shard)"
            )
        if len(set(ids)) != len(ids):
            dup = sorted({i for i in ids if ids.count(i) > 1})
            raise ValueError(f"stream ids must be unique, {dup} appear twice; name them with NAME=URL")
        self.processor, self.observer, self.config = processor, observer, config
        self.until_stopped, self.policy = until_stopped, policy
        self.stop = threading.Event()  # finish: stop sources, drain queues, flush sinks
        self.abort = threading.Event()  # finish now: drop what is queued
        self._halt = threading.Event()  # the loop is over: readers stop (set by run() itself, not a request)
        self.wake = threading.Event()
        self.events = _SourceEvents(observer, self._current)
        self.streams: dict[str, _Stream] = {}
        self._lock = threading.Lock()
        self._order: list[str] = []
        self.stats = RunStats([])
        self.publisher = Publisher(sinks, observer, self.stats)
        self.frame_sinks = list(frame_sinks)
        self._frame_workers: list[SinkWorker[tuple[Frame, Verdict]]] = []  # one per frame sink, from run()
        self._beside: list[tuple[str, Callable[[threading.Event], None]]] = []
        self._beside_stop = threading.Event()
        self._beside_threads: list[threading.Thread] = []
        self._file_bytes = ByteBudget(int(config.file_queue_mb * 1e6))
        self._adapted_at = time.monotonic()
        self._busy = 0.0  # seconds the stages worked since the last load report
        for spec in specs:
            self._register(spec)

    # -- streams -----------------------------------------------------------------------------
    def _register(self, spec: SourceSpec) -> _Stream:
        if spec.is_live:
            queue = BoundedQueue(self.config.queue_size, DropPolicy.DROP_OLDEST, wake=self.wake)
        else:  # files wait for room: bounded in frames per stream and in bytes for all of them
            queue = BoundedQueue(
                self.config.queue_size, DropPolicy.WAIT, wake=self.wake, budget=self._file_bytes, weigh=_frame_bytes
            )
        stream = _Stream(spec, queue)
        with self._lock:
            self.streams[spec.stream_id] = stream
            self._order.append(spec.stream_id)
        self.stats.add_stream(spec.stream_id)
        return stream

    def add_stream(self, spec: SourceSpec) -> None:
        """Start watching another stream while running (e.g. from the Redis control hash); StreamLimitError when
        the worker already watches ``[sources] max_streams``."""
        with self._lock:
            if spec.stream_id in self.streams:
                raise ValueError(f"stream id {spec.stream_id!r} is already watched")
            if len(self.streams) >= self.max_streams:  # removed streams count until their reader is gone
                raise StreamLimitError(
                    f"stream {spec.stream_id!r}: this worker already watches {len(self.streams)} "
                    f"streams, its [sources] max_streams"
                )
        stream = self._register(spec)
        self._start(stream)
        logger.info("stream %r (%s) added", spec.stream_id, spec.display)

    def remove_stream(self, stream_id: str) -> None:
        """Stop watching a stream; its queued frames are still processed.

        The queue closes now, not when the reader notices: a reader stuck in a read must not keep the
        stream (and its id) alive. What it still reads is dropped.
        """
        with self._lock:
            stream = self.streams.get(stream_id)
        if stream is None:
            raise KeyError(f"no stream {stream_id!r}; watched: {sorted(self.streams)}")
        stream.stop.set()
        stream.queue.close()
        logger.info("stream %r removed", stream_id)

    def _current(self, spec: SourceSpec) -> bool:
        """Whether ``spec`` is a stream being watched now (not one removed, whose reader may still run)."""
        with self._lock:
            stream = self.streams.get(spec.stream_id)
        return stream is not None and stream.spec is spec and not stream.stop.is_set()

    def _start(self, stream: _Stream) -> None:
        if stream.thread is not None:
            return
        name = f"{READER_PREFIX}{stream.spec.stream_id}"  # its log lines are bounded per stream (pipeline.lograte)
        stream.thread = threading.Thread(target=self._read, args=(stream,), name=name)
        stream.thread.daemon = True
        stream.thread.start()

    def _read(self, stream: _Stream) -> None:
        spec, sid, obs = stream.spec, stream.spec.stream_id, self.observer
        stop = _AnyEvent(self.stop, self._halt, stream.stop)
        ended = False
        try:
            frames = stream_frames(spec, stop, self.events, policy=self.policy, rgb=False)  # converted if processed
            for frame in frames:
                if stop.is_set():
                    break
                obs.frame_decoded(sid, frame.decode_seconds)
                lost = stream.queue.put(frame, stop)
                if lost:
                    obs.frames_dropped(sid, lost)
                obs.queue_depth(sid, len(stream.queue))
            ended = not stop.is_set()
        except SourceError as exc:
            if not self._current(spec):  # removed while stuck in a read: its end is no failure of the run
                logger.info("stream %r: the reader of the removed stream ended (%s)", sid, exc.reason)
                return
            logger.error("%s", exc, exc_info=logger.isEnabledFor(logging.DEBUG))
            obs.stream_error(sid)
            self.stats.streams[sid].error = exc.reason
        except Exception as exc:  # a reader never takes the others down
            logger.exception("stream %r (%s): reader crashed", sid, spec.display)
            if self._current(spec):
                self.stats.streams[sid].error = f"reader crashed: {exc}"
        finally:
            if not self._current(spec):
                pass  # removed: _reap forgets its series; a late write would leave a stale one behind
            elif ended and not spec.reconnects:  # a file that ended is not a feed that is down: no stream-down alert
                obs.stream_ended(sid)
            else:
                obs.stream_up(sid, False)
            stream.queue.close()

    # -- the stage loop ------------------------------------------------------------------------
    def beside(self, name: str, loop: Callable[[threading.Event], None]) -> None:
        """Run ``loop(stop)`` on a thread of its own while the stages run (the control hash's poller): started by
        run(), told to return by ``stop`` once the stage loop ended, waited for within FLUSH_SECONDS. ``loop``
        logs and contains its own failures."""
        self._beside.append((name, loop))

    def run(self) -> RunStats:
        """Process until every stream ended (or, with until_stopped, until ``stop``); then drain and flush.

        Whatever happens in the loop, the readers are stopped and the sinks flushed and closed: within
        drain_seconds + FLUSH_SECONDS of ``stop`` plus the sinks' own close bounds (a reader stuck in a read
        is left behind, not waited for).
        """
        self._frame_workers = [
            SinkWorker(_FrameWriter(sink), size=self.config.frame_sink_queue, policy=DropPolicy.SKIP, abort=self.abort)
            for sink in self.frame_sinks
        ]
        for name, loop in self._beside:
            thread = threading.Thread(target=loop, args=(self._beside_stop,), name=name, daemon=True)
            thread.start()
            self._beside_threads.append(thread)
        for stream in list(self.streams.values()):
            self._start(stream)
        try:
            self._loop()
        finally:
            self._finish()
        return self.stats

    def _loop(self) -> None:
        drain_deadline: float | None = None
        quiet_since: float | None = None  # draining: since when no queue held a frame
        while True:
            self.observer.beat()
            if self.stop.is_set() and drain_deadline is None:
                drain_deadline = time.monotonic() + self.config.drain_seconds
            if self.abort.is_set() or (drain_deadline is not None and time.monotonic() > drain_deadline):
                self._drop_queued()
                break
            self._reap()
            self._report_load()  # before taking frames: the queues' fill is the load signal
            frames = self._next_batch()
            if frames:
                self._process(frames)
                quiet_since = None
                continue
            if self._all_finished() and (not self.until_stopped or self.stop.is_set()):
                break
            if drain_deadline is not None:  # the queues are drained: a reader stuck in a read is not waited for
                quiet_since = quiet_since or time.monotonic()
                if time.monotonic() - quiet_since > DRAIN_QUIET:
                    break
            self.wake.wait(self.config.idle_wait)
            self.wake.clear()

    def _finish(self) -> None:
        """Stop the readers, flush and close every sink; readers, frame sinks and the loops beside get FLUSH_SECONDS
        in all.

        No verdict is made any more: the sinks close first (each within its own bound: RedisSink 5 s,
        StdoutSink 1 s) while the readers and frame sinks finish; then one deadline for all of them.
        """
        self._halt.set()  # the loop ended by itself, or raised: the readers stop all the same
        self._beside_stop.set()  # no stream is added or removed any more
        for worker in self._frame_workers:  # they finish their queues while the sinks close
            worker.finish()
        deadline = time.monotonic() + FLUSH_SECONDS
        self.publisher.close()
        for stream in list(self.streams.values()):
            if stream.thread is not None:
                stream.thread.join(timeout=max(0.0, deadline - time.monotonic()))
                if stream.thread.is_alive():
                    logger.warning("stream %r: its reader is stuck in a read; not waiting", stream.spec.stream_id)
            stream.queue.clear()  # a frame a reader put after the drain ended is dropped, and counted
            self.stats.streams[stream.spec.stream_id].dropped += stream.queue.dropped
        for sink, worker in zip(self.frame_sinks, self._frame_workers):
            timeout = max(0.5, deadline - time.monotonic())
            lost = worker.close(timeout)
            if worker.running:
                logger.error(
                    "%s sink: still busy after %.0f s at shutdown; %d frames not written",
                    sink.name,
                    timeout,
                    worker.health().unflushed,
                )
            else:
                try:
                    sink.close()
                except Exception:
                    logger.exception("%s sink: close failed", sink.name)
            if lost:
                self.stats.sink_failed(sink.name, lost)
        for thread in self._beside_threads:
            thread.join(timeout=max(0.5, deadline - time.monotonic()))
            if thread.is_alive():
                logger.warning("%s: still busy at shutdown; not waiting", thread.name)

    def _process(self, frames: list[Frame]) -> None:
        start = time.perf_counter()
        batch = self.processor.process(frames, taken=time.time())
        self.publisher.publish(batch.verdicts)
        self._busy += time.perf_counter() - start
        pairs = list(zip(batch.frames_as_converted, batch.verdicts))
        waits = [self.streams[f.stream_id].queue.policy is DropPolicy.WAIT for f in batch.frames]
        for sink, worker in zip(self.frame_sinks, self._frame_workers):
            # files wait for room; live frames skip a full queue, so drawing never holds up a feed
            skipped = sum(
                worker.put([pair], policy=DropPolicy.WAIT if wait else DropPolicy.SKIP)
                for pair, wait in zip(pairs, waits)
            )
            health = worker.health()
            if skipped:
                self.observer.sink_errors(sink.name, skipped)
                if health.dropped == skipped:
                    logger.warning(
                        "%s sink is behind: frames of live streams skip it while its queue (%d) is full; "
                        "counted in the summary",
                        sink.name,
                        worker.queue.size,
                    )
            self.observer.sink_state(sink.name, buffered=health.buffered, connected=health.connected)

    def _reap(self) -> None:
        """Forget streams that were removed and have nothing left to process."""
        with self._lock:
            gone = [sid for sid, s in self.streams.items() if s.stop.is_set() and s.queue.finished]
            for sid in gone:
                stream = self.streams.pop(sid)
                self._order.remove(sid)
                self.stats.streams[sid].dropped += stream.queue.dropped  # a re-added stream adds its own
        for sid in gone:  # release what the stream held everywhere: a service whose feeds come and go stays flat
            self.processor.forget(sid)
            self.publisher.forget(sid)
            self.observer.forget_stream(sid)
            self.stats.retire(sid)
            for worker in self._frame_workers:
                worker.forget_stream(sid)

    @property
    def stream_ids(self) -> list[str]:
        with self._lock:
            return list(self.streams)

    def _all_finished(self) -> bool:
        with self._lock:
            streams = list(self.streams.values())
        return all(s.queue.finished for s in streams)

    def _drop_queued(self) -> None:
        for stream in list(self.streams.values()):
            n = stream.queue.clear()
            if n:
                self.observer.frames_dropped(stream.spec.stream_id, n)
                logger.warning("stream %r: %d queued frames dropped at shutdown", stream.spec.stream_id, n)

    def _next_batch(self) -> list[Frame]:
        """Up to max_batch frames, one per stream per round, waiting at most max_wait_ms to fill the batch."""
        batch: list[Frame] = []
        deadline = None
        with self._lock:
            order = list(self._order)
            if order:
                self._order.append(self._order.pop(0))  # the next batch starts with the next stream
        while len(batch) < self.config.max_batch:
            took = False
            for sid in order:
                frame = self._take(self.streams[sid])
                if frame is not None:
                    batch.append(frame)
                    took = True
                    if len(batch) == self.config.max_batch:
                        break
            if took:
                continue
            if not batch or self.config.max_wait_ms <= 0:
                break
            deadline = deadline or time.monotonic() + self.config.max_wait_ms / 1000
            remaining = deadline - time.monotonic()
            if remaining <= 0 or self._all_finished():
                break
            self.wake.wait(remaining)
            self.wake.clear()
        return batch

    def _take(self, stream: _Stream) -> Frame | None:
        """The stream's next frame worth processing: a live frame too late for its latency budget is shed when a
        newer one of its stream waits (the newest is always processed, so every feed keeps getting verdicts)."""
        shed = 0
        late = self.processor.schedule.late
        while True:
            frame = stream.queue.get()
            if frame is None or not stream.spec.is_live or not len(stream.queue) or not late(frame, now=time.time()):
                break
            shed += 1
        if frame is not None and stream.spec.is_live:
            stream.taken += 1
        if shed:
            sid = stream.spec.stream_id
            stream.shed += shed
            self.stats.streams[sid].shed += shed
            self.stats.streams[sid].dropped += shed
            self.observer.frames_shed(sid, shed)
        return frame

    def _report_load(self) -> None:
        """Once every ADAPT_INTERVAL: the live queues' fill, frames they lost, how busy the stages were."""
        now = time.monotonic()
        elapsed = now - self._adapted_at
        if elapsed < ADAPT_INTERVAL:
            return
        with self._lock:  # add_stream may register one meanwhile (the control thread)
            live = [s for s in self.streams.values() if s.queue.policy is DropPolicy.DROP_OLDEST]
        fill, lost, taken = 0.0, 0, 0
        for s in live:
            fill = max(fill, s.queue.fill)
            lost += s.queue.dropped + s.shed - s.lost_reported
            taken += s.taken - s.taken_reported
            s.lost_reported, s.taken_reported = s.queue.dropped + s.shed, s.taken
        if live:
            self.processor.schedule.adapt(fill=fill, lost=lost, taken=taken, busy=min(1.0, self._busy / elapsed))
        self._adapted_at, self._busy = now, 0.0


class _FrameWriter(Writer[tuple[Frame, Verdict]]):
    """A FrameSink as its SinkWorker's writer: failures are counted per write, the next write goes on."""

    def __init__(self, sink: FrameSink) -> None:
        self.sink, self.name = sink, sink.name

    def write(self, items: list[tuple[Frame, Verdict]]) -> int | None:
        return self.sink.publish_frames(items)

    def forget(self, stream_id: str) -> None:
        self.sink.forget_stream(stream_id)


class _AnyEvent:
    """Set when any of the given events is set: the run's stop or one stream's removal."""

    def __init__(self, *events: threading.Event) -> None:
        self.events = events

    def is_set(self) -> bool:
        return any(e.is_set() for e in self.events)

    def wait(self, timeout: float | None = None) -> bool:
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self.is_set():
            left = 0.05 if deadline is None else min(0.05, deadline - time.monotonic())
            if left <= 0:
                return False
            time.sleep(left)
        return True
