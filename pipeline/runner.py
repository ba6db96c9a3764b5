"""Wires sources, stages, trackers, verdicts, sinks and the observer together: the only module with threads.

One reader thread per stream fills a bounded queue (DROP_OLDEST for live feeds, WAIT for
files). The stage loop takes frames round-robin across streams into batches, runs the
detector on every k-th frame of each stream (k adapts under load), carries faces between
detections with a per-stream IoU tracker, classifies tracked faces every m-th frame, turns the
highest smoothed score on screen into the stream verdict, and publishes to every sink.
"""

from __future__ import annotations

import collections
import logging
import math
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from engines import Detections
from pipeline.errors import SinkError, SourceError
from pipeline.messages import Face, Frame, Verdict, VerdictState
from pipeline.metrics import Observer
from pipeline.policy import SourcePolicy
from pipeline.queues import DropPolicy, FrameQueue
from pipeline.sinks import FrameSink, Sink, encode
from pipeline.sources import SourceSpec
from pipeline.stages import ClassifyStage, DetectStage
from pipeline.summary import RunStats
from pipeline.supervisor import LogEvents, stream_frames
from pipeline.tracker import FaceTracker, TrackerConfig
from pipeline.verdict import StreamVerdict, VerdictConfig

logger = logging.getLogger(__name__)

ADAPT_INTERVAL = 1.0  # seconds between changes of detect-every-k under load
FLUSH_SECONDS = 5.0  # after the drain: readers, sinks and frame sinks together get this long to finish
DRAIN_QUIET = 0.5  # seconds with every queue empty after which a drain ends, though some reader has not finished


@dataclass(frozen=True)
class RunnerConfig:
    max_batch: int = 8  # frames per detector call, taken round-robin across streams
    max_wait_ms: float = 5.0  # how long a batch that is not full waits for more frames
    queue_size: int = 16  # frames buffered per stream between its reader and the stages
    detect_every: int = 1  # run the detector on every k-th frame of a stream; the tracker carries faces between
    max_detect_every: int = 4  # under load (live queues filling up) k grows up to this; detect_every: fixed
    classify_every: int = 1  # classify each tracked face every m-th frame it is on screen
    max_classify_every: int = 3  # once k is at its maximum, m grows up to this under load; classify_every: fixed
    drain_seconds: float = 10.0  # on shutdown, frames still queued after this long are dropped (and counted)
    idle_wait: float = 0.05  # seconds the stages sleep when no stream has a frame
    frame_sink_queue: int = 32  # (frame, verdict) pairs queued per frame sink; live frames skip a full queue

    def __post_init__(self) -> None:
        for name in ("max_batch", "queue_size", "detect_every", "classify_every", "frame_sink_queue"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        for name in ("max_wait_ms", "drain_seconds"):
            value = getattr(self, name)
            if not (value >= 0 and math.isfinite(value)):
                raise ValueError(f"{name} must be a finite number, 0 or more, got {value!r}")
        if not (self.idle_wait > 0 and math.isfinite(self.idle_wait)):
            raise ValueError(f"idle_wait must be a finite number of seconds above 0, got {self.idle_wait!r}")


@dataclass
class _Stream:
    """Everything the runner keeps for one stream."""

    spec: SourceSpec
    queue: FrameQueue
    tracker: FaceTracker
    verdict: StreamVerdict
    stop: threading.Event = field(default_factory=threading.Event)
    thread: threading.Thread | None = None
    processed: int = 0  # frames through the stages, for detect-every-k
    publish_times: collections.deque = field(default_factory=lambda: collections.deque(maxlen=50))
    exported_state: str | None = None  # the verdict state dfwatch_verdict shows, set again only when it changes


class _SourceEvents(LogEvents):
    """Source supervisor callbacks -> logs and metrics; a removed stream's late reader touches no metric."""

    def __init__(self, observer: Observer, current: Callable[[SourceSpec], bool]) -> None:
        self.observer, self.current = observer, current

    def on_up(self, spec: SourceSpec) -> None:
        super().on_up(spec)
        if self.current(spec):
            self.observer.stream_up.labels(spec.stream_id).set(1)

    def on_down(self, spec: SourceSpec, reason: str) -> None:
        super().on_down(spec, reason)
        if self.current(spec):  # else a stale 0 for a removed stream would keep the stream-down alert firing
            self.observer.stream_up.labels(spec.stream_id).set(0)
            self.observer.stream_errors.labels(spec.stream_id).inc()

    def on_reconnect(self, spec: SourceSpec, attempt: int, delay: float) -> None:
        super().on_reconnect(spec, attempt, delay)
        if self.current(spec):
            self.observer.reconnects.labels(spec.stream_id).inc()


class Runner:
    def __init__(
        self,
        specs: Sequence[SourceSpec],
        detect: DetectStage,
        classify: ClassifyStage,
        sinks: Sequence[Sink],
        observer: Observer,
        *,
        verdict: VerdictConfig = VerdictConfig(),
        tracker: TrackerConfig = TrackerConfig(),
        config: RunnerConfig = RunnerConfig(),
        placeholder_models: bool = False,
        until_stopped: bool = False,
        frame_sinks: Sequence[FrameSink] = (),
        policy: SourcePolicy | None = None,
    ) -> None:
        """``until_stopped``: keep running when every stream has ended (streams come and go at run time).

        ``policy``: what FFmpeg may open for the streams (pipeline.policy); admitting them is the caller's job.

        ``frame_sinks`` get each published verdict with its frame (e.g. the annotated video), each from a thread
        of its own behind a bounded queue: frames of files wait for room, frames of live streams skip a full
        queue and are counted, so drawing never holds up a live feed.
        """
        ids = [s.stream_id for s in specs]
        if len(set(ids)) != len(ids):
            dup = sorted({i for i in ids if ids.count(i) > 1})
            raise ValueError(f"stream ids must be unique, {dup} appear twice; name them with NAME=URL")
        self.detect, self.classify = detect, classify
        self.sinks, self.observer, self.config = list(sinks), observer, config
        self.verdict_config, self.tracker_config = verdict, tracker
        self.placeholder_models = placeholder_models
        self.until_stopped = until_stopped
        self.policy = policy
        self.stop = threading.Event()  # finish: stop sources, drain queues, flush sinks
        self.abort = threading.Event()  # finish now: drop what is queued
        self._halt = threading.Event()  # the loop is over: readers stop (set by run() itself, not a request)
        self.wake = threading.Event()
        self.events = _SourceEvents(observer, self._current)
        self.streams: dict[str, _Stream] = {}
        self._lock = threading.Lock()
        self._order: list[str] = []
        self.stats = RunStats([])
        self._sink_failed: set[str] = set()
        self.detect_every = config.detect_every  # current k and m: they adapt under load
        self.classify_every = config.classify_every
        self._adapted_at = 0.0
        self._frame_sinks = [_FrameSinkWorker(sink, config.frame_sink_queue, self.abort) for sink in frame_sinks]
        for spec in specs:
            self._register(spec)

    # -- streams -----------------------------------------------------------------------------
    def _register(self, spec: SourceSpec) -> _Stream:
        policy = DropPolicy.DROP_OLDEST if spec.is_live else DropPolicy.WAIT
        stream = _Stream(
            spec, FrameQueue(self.config.queue_size, policy, self.wake), FaceTracker(self.tracker_config),
            StreamVerdict(self.verdict_config),
        )  # fmt: skip
        with self._lock:
            self.streams[spec.stream_id] = stream
            self._order.append(spec.stream_id)
        self.stats.add_stream(spec.stream_id)
        return stream

    def add_stream(self, spec: SourceSpec) -> None:
        """Start watching another stream while running (e.g. from the Redis control hash)."""
        with self._lock:
            if spec.stream_id in self.streams:
                raise ValueError(f"stream id {spec.stream_id!r} is already watched")
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
        stream.thread = threading.Thread(target=self._read, args=(stream,), name=f"src-{stream.spec.stream_id}")
        stream.thread.daemon = True
        stream.thread.start()

    def _read(self, stream: _Stream) -> None:
        spec, sid, obs = stream.spec, stream.spec.stream_id, self.observer
        stop = _AnyEvent(self.stop, self._halt, stream.stop)
        ended = False
        try:
            for frame in stream_frames(spec, stop, self.events, policy=self.policy):
                if stop.is_set():
                    break
                obs.frames_decoded.labels(sid).inc()
                obs.observe_stage("decode", frame.decode_seconds)
                if stream.queue.put(frame, stop):
                    obs.frames_dropped.labels(sid).inc()
                obs.queue_depth.labels(sid).set(len(stream.queue.frames))
            ended = not stop.is_set()
        except SourceError as exc:
            if not self._current(spec):  # removed while stuck in a read: its end is no failure of the run
                logger.info("stream %r: the reader of the removed stream ended (%s)", sid, exc.reason)
                return
            logger.error("%s", exc, exc_info=logger.isEnabledFor(logging.DEBUG))
            obs.stream_errors.labels(sid).inc()
            self.stats.streams[sid].error = exc.reason
        except Exception as exc:  # a reader never takes the others down
            logger.exception("stream %r (%s): reader crashed", sid, spec.display)
            if self._current(spec):
                self.stats.streams[sid].error = f"reader crashed: {exc}"
        finally:
            if not self._current(spec):
                pass  # removed: _reap forgets its series; a late write would leave a stale one behind
            elif ended and not spec.reconnects:  # a file that ended is not a feed that is down: no stream-down alert
                obs.forget_stream_up(sid)
            else:
                obs.stream_up.labels(sid).set(0)
            stream.queue.close()

    # -- the stage loop ------------------------------------------------------------------------
    def run(self) -> RunStats:
        """Process until every stream ended (or, with until_stopped, until ``stop``); then drain and flush.

        Whatever happens in the loop, the readers are stopped and the sinks flushed and closed, within
        drain_seconds + FLUSH_SECONDS of ``stop`` (a reader stuck in a read is left behind, not waited for).
        """
        for worker in self._frame_sinks:
            worker.start()
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
            self._adapt_to_load()  # before taking frames: the queues' fill is the load signal
            batch = self._next_batch()
            if batch:
                self._process(batch)
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
        """Stop the readers, flush and close every sink; readers and frame sinks get FLUSH_SECONDS in all.

        No verdict is made any more: the sinks close first (each within its own bound: RedisSink 5 s,
        StdoutSink 1 s) while the readers and frame sinks finish; then one deadline for all of them.
        """
        self._halt.set()  # the loop ended by itself, or raised: the readers stop all the same
        for worker in self._frame_sinks:  # they finish their queues while the sinks close
            worker.finish()
        deadline = time.monotonic() + FLUSH_SECONDS
        for sink in self.sinks:
            try:
                sink.close()
            except Exception:  # one sink's failure never keeps the others from flushing
                logger.exception("%s sink: close failed", sink.name)
            lost = getattr(sink, "dropped", 0) + getattr(sink, "unflushed", 0)
            if lost:
                self.stats.sink_failures[sink.name] = self.stats.sink_failures.get(sink.name, 0) + lost
        for stream in list(self.streams.values()):
            if stream.thread is not None:
                stream.thread.join(timeout=max(0.0, deadline - time.monotonic()))
                if stream.thread.is_alive():
                    logger.warning("stream %r: its reader is stuck in a read; not waiting", stream.spec.stream_id)
            stream.queue.clear()  # a frame a reader put after the drain ended is dropped, and counted
            self.stats.streams[stream.spec.stream_id].dropped += stream.queue.dropped
        for worker in self._frame_sinks:
            lost = worker.close(timeout=max(0.5, deadline - time.monotonic()))
            if lost:
                self.stats.sink_failures[worker.sink.name] = self.stats.sink_failures.get(worker.sink.name, 0) + lost

    def _reap(self) -> None:
        """Forget streams that were removed and have nothing left to process."""
        with self._lock:
            gone = [sid for sid, s in self.streams.items() if s.stop.is_set() and s.queue.finished]
            for sid in gone:
                stream = self.streams.pop(sid)
                self._order.remove(sid)
                self.stats.streams[sid].dropped += stream.queue.dropped  # a re-added stream adds its own
        for sid in gone:  # release what the stream held everywhere: a service whose feeds come and go stays flat
            self.observer.forget_stream(sid)
            self.stats.retire(sid)
            for sink in self.sinks:
                forget = getattr(sink, "forget_stream", None)
                if forget is not None:
                    forget(sid)
            for worker in self._frame_sinks:
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
                self.observer.frames_dropped.labels(stream.spec.stream_id).inc(n)
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
                frame = self.streams[sid].queue.get()
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

    def _adapt_to_load(self) -> None:
        """Under load (live queues filling up) detect less often, then classify less often; undo once they empty.

        One step a second at most: k (detect every k-th frame) grows first, up to max_detect_every,
        then m (classify each face every m-th frame) up to max_classify_every; relief undoes m first.
        """
        cfg, now = self.config, time.monotonic()
        if now - self._adapted_at < ADAPT_INTERVAL:
            return
        self._adapted_at = now
        live = [s.queue.fill for s in self.streams.values() if s.queue.policy is DropPolicy.DROP_OLDEST]
        if not live:
            return
        fill, before = max(live), (self.detect_every, self.classify_every)
        if fill > 0.5:
            if self.detect_every < cfg.max_detect_every:
                self.detect_every += 1
            elif self.classify_every < cfg.max_classify_every:
                self.classify_every += 1
        elif fill < 0.1:
            if self.classify_every > cfg.classify_every:
                self.classify_every -= 1
            elif self.detect_every > cfg.detect_every:
                self.detect_every -= 1
        if (self.detect_every, self.classify_every) != before:
            self.observer.detect_every.set(self.detect_every)
            self.observer.classify_every.set(self.classify_every)
            logger.info("load: live queues %.0f%% full, detecting every %d frames, classifying faces every %d",
                        fill * 100, self.detect_every, self.classify_every)  # fmt: skip

    def _process(self, batch: list[Frame]) -> None:
        obs = self.observer
        dequeued = time.time()
        streams = [self.streams[f.stream_id] for f in batch]
        detect_rows = []  # positions in ``batch`` that run the detector
        for i, stream in enumerate(streams):
            if stream.processed % self.detect_every == 0:
                detect_rows.append(i)
            stream.processed += 1
        t0 = time.perf_counter()
        dets = self.detect.process([batch[i] for i in detect_rows]) if detect_rows else Detections.empty()
        detect_seconds = time.perf_counter() - t0
        if detect_rows:
            obs.observe_stage("detect", detect_seconds)
        det_of = {row: j for j, row in enumerate(detect_rows)}
        faces: dict[int, tuple[Face, ...]] = {}
        classify_seconds = 0.0
        for rnd in _rounds(batch):  # each stream at most once: tracks advance frame by frame
            due: list[tuple[int, int, tuple[float, float, float, float]]] = []  # (batch row, track id, box)
            for i in rnd:
                tracker = streams[i].tracker
                if i in det_of:
                    d = dets.for_frame(det_of[i])
                    tracker.update(d.xyxy, d.score)
                else:
                    tracker.carry()
                boxes = {t.track_id: t.box for t in tracker.visible}
                due += [(i, tid, boxes[tid]) for tid in tracker.due_for_classification(self.classify_every)]
            if due:
                t1 = time.perf_counter()
                rows = sorted({i for i, _, _ in due})
                local = {row: j for j, row in enumerate(rows)}
                crops = Detections([b for _, _, b in due], np.ones(len(due)), [local[i] for i, _, _ in due])
                p_fake = self.classify.process([batch[r] for r in rows], crops)
                for (i, tid, _), p in zip(due, p_fake.tolist()):
                    streams[i].tracker.add_scores([tid], np.array([p]))
                classify_seconds += time.perf_counter() - t1
            for i in rnd:
                faces[i] = tuple(
                    Face(t.track_id, t.box, t.det_score, t.score, t.last_score) for t in streams[i].tracker.visible
                )
        if classify_seconds:
            obs.observe_stage("classify", classify_seconds)
        verdicts = []
        for i, frame in enumerate(batch):
            stream = streams[i]
            score = max((f.p_fake for f in faces[i] if f.p_fake is not None), default=None)
            state, changed = stream.verdict.update(score)
            if state.value != stream.exported_state:
                obs.set_verdict(frame.stream_id, state.value, _STATES)
                stream.exported_state = state.value
            if changed and state is VerdictState.FAKE:
                logger.warning("ALERT stream %r turned FAKE at frame %d (pts %s, score %.2f)",
                               frame.stream_id, frame.index, frame.pts, score or 0.0)  # fmt: skip
                obs.alerts.labels(frame.stream_id).inc()
            queue_wait = max(0.0, dequeued - frame.capture_time)  # capture_time is stamped after decoding
            obs.observe_stage("queue", queue_wait)
            obs.faces.labels(frame.stream_id).inc(len(faces[i]) if i in det_of else 0)
            if score is not None:
                obs.fake_score.labels(frame.stream_id).set(score)
            verdicts.append(
                Verdict(
                    stream_id=frame.stream_id, frame_index=frame.index, pts=frame.pts,
                    capture_time=frame.capture_time, faces=faces[i], score=score, state=state, changed=changed,
                    detected=i in det_of,
                    latency={"decode": frame.decode_seconds, "queue": queue_wait,
                             "detect": detect_seconds if i in det_of else 0.0, "classify": classify_seconds},
                    placeholder_models=self.placeholder_models,
                )
            )  # fmt: skip
        self._publish(verdicts)
        for worker in self._frame_sinks:
            skipped = worker.put(batch, verdicts, wait=[s.queue.policy is DropPolicy.WAIT for s in streams])
            if skipped:
                obs.sink_errors.labels(worker.sink.name).inc(skipped)
            obs.sink_buffered.labels(worker.sink.name).set(worker.buffered)

    def _publish(self, verdicts: list[Verdict]) -> None:
        start = time.perf_counter()
        records = encode(verdicts)
        for sink in self.sinks:
            try:
                sink.publish(records)
            except SinkError as exc:
                self.observer.sink_errors.labels(sink.name).inc()
                if sink.name not in self._sink_failed:
                    logger.error("%s (further failures of this sink are counted, not logged)", exc)
                    self._sink_failed.add(sink.name)
                self.stats.sink_failures[sink.name] = self.stats.sink_failures.get(sink.name, 0) + len(records)
        self.observer.observe_stage("publish", time.perf_counter() - start)
        for sink in self.sinks:
            if hasattr(sink, "buffered"):
                self.observer.sink_buffered.labels(sink.name).set(sink.buffered)
                self.observer.sink_connected.labels(sink.name).set(1 if sink.connected else 0)
        published = time.time()
        for verdict, _ in records:
            stream = self.streams[verdict.stream_id]
            stream.publish_times.append(published)
            times = stream.publish_times
            if len(times) > 1 and times[-1] > times[0]:
                self.observer.fps.labels(verdict.stream_id).set((len(times) - 1) / (times[-1] - times[0]))
            self.observer.capture_to_publish.labels(verdict.stream_id).observe(published - verdict.capture_time)
            self.stats.record(verdict, published)


def _rounds(batch: Sequence[Frame]) -> list[list[int]]:
    """Split batch positions into rounds where each stream appears at most once, keeping frame order."""
    rounds: list[list[int]] = []
    seen: dict[str, int] = {}  # stream -> rounds it already has
    for i, frame in enumerate(batch):
        r = seen.get(frame.stream_id, 0)
        if r == len(rounds):
            rounds.append([])
        rounds[r].append(i)
        seen[frame.stream_id] = r + 1
    return rounds


_STATES = tuple(s.value for s in VerdictState)


class _FrameSinkWorker:
    """Feeds one FrameSink from a thread of its own through a bounded queue of (frame, verdict) pairs."""

    def __init__(self, sink: FrameSink, size: int, abort: threading.Event) -> None:
        self.sink, self.size, self.abort = sink, size, abort
        self.pairs: collections.deque[tuple[Frame, Verdict] | _Forget] = collections.deque()
        self.cond = threading.Condition()
        self.closed = False
        self.skipped = 0  # pairs of live streams that found the queue full
        self.failed = 0  # pairs the sink raised on
        self.thread = threading.Thread(target=self._run, name=f"sink-{sink.name}", daemon=True)

    def start(self) -> None:
        self.thread.start()

    @property
    def buffered(self) -> int:
        with self.cond:
            return len(self.pairs)

    def put(self, frames: Sequence[Frame], verdicts: Sequence[Verdict], *, wait: Sequence[bool]) -> int:
        """Queue the pairs; a pair whose ``wait`` is False is skipped when the queue is full. Returns skips."""
        skipped = 0
        with self.cond:
            for frame, verdict, may_wait in zip(frames, verdicts, wait):
                while may_wait and len(self.pairs) >= self.size and not self.abort.is_set():
                    self.cond.wait(0.1)
                if len(self.pairs) >= self.size:
                    skipped += 1
                    continue
                self.pairs.append((frame, verdict))
                self.cond.notify_all()  # now: the next pair may wait for room, which only the thread makes
        if skipped and not self.skipped:
            logger.warning("%s sink is behind: frames of live streams skip it while its queue (%d) is full; "
                           "counted in the summary", self.sink.name, self.size)  # fmt: skip
        self.skipped += skipped
        return skipped

    def forget_stream(self, stream_id: str) -> None:
        """After the pairs queued so far, let the sink release the stream (FrameSink.forget_stream, if it has one)."""
        if hasattr(self.sink, "forget_stream"):
            with self.cond:
                self.pairs.append(_Forget(stream_id))
                self.cond.notify_all()

    def finish(self) -> None:
        """No more pairs will come: the thread writes what is queued and stops (close() waits for it)."""
        with self.cond:
            self.closed = True
            self.cond.notify_all()

    def close(self, *, timeout: float) -> int:
        """Let the thread finish the queue (at most ``timeout`` s), close the sink; returns pairs not written."""
        self.finish()
        if self.thread.is_alive():
            self.thread.join(timeout)
        if self.thread.is_alive():
            logger.error("%s sink: still busy after %.0f s at shutdown; %d frames not written",
                         self.sink.name, timeout, self.buffered)  # fmt: skip
            with self.cond:
                self.failed += sum(not isinstance(p, _Forget) for p in self.pairs)
                self.pairs.clear()
        else:
            try:
                self.sink.close()
            except Exception:
                logger.exception("%s sink: close failed", self.sink.name)
        return self.skipped + self.failed + getattr(self.sink, "unwritten", 0)

    def _run(self) -> None:
        while True:
            with self.cond:
                while not self.pairs and not self.closed:
                    self.cond.wait()
                if not self.pairs:
                    return
                chunk = list(self.pairs)
                self.pairs.clear()
                self.cond.notify_all()
            while chunk:  # runs of pairs, each followed by at most one stream to forget
                cut = next((i for i, p in enumerate(chunk) if isinstance(p, _Forget)), len(chunk))
                pairs, forget, chunk = chunk[:cut], chunk[cut] if cut < len(chunk) else None, chunk[cut + 1 :]
                self._write(pairs)
                if forget is not None:
                    try:
                        self.sink.forget_stream(forget.stream_id)  # type: ignore[attr-defined]
                    except Exception:
                        logger.exception("%s sink: releasing stream %r failed", self.sink.name, forget.stream_id)

    def _write(self, pairs: list[tuple[Frame, Verdict]]) -> None:
        if not pairs:
            return
        if self.abort.is_set():
            self.failed += len(pairs)
            return
        try:
            self.sink.publish_frames(pairs)
        except Exception as exc:  # a sink never takes the pipeline down
            if not self.failed:
                logger.error("%s sink failed (%s); further failures are counted, not logged", self.sink.name,
                             exc, exc_info=logger.isEnabledFor(logging.DEBUG))  # fmt: skip
            self.failed += len(pairs)


@dataclass(frozen=True)
class _Forget:
    """Queued behind a removed stream's last pairs: the frame sink may release that stream."""

    stream_id: str


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
