"""Wires sources, stages, verdicts, sinks and the observer together: the only module with threads."""

from __future__ import annotations

import collections
import logging
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum

import numpy as np

from pipeline.errors import SinkError, SourceError
from pipeline.messages import Face, Frame, Verdict
from pipeline.metrics import Observer
from pipeline.sinks import Sink, encode
from pipeline.sources import SourceKind, SourceSpec, read_frames
from pipeline.stages import ClassifyStage, DetectStage
from pipeline.summary import RunStats
from pipeline.verdict import StreamVerdict, VerdictConfig

logger = logging.getLogger(__name__)


class DropPolicy(str, Enum):
    DROP_OLDEST = "drop_oldest"  # live feeds: a full queue drops its oldest frame, lag never grows
    WAIT = "wait"  # files: the reader waits, nothing is dropped


@dataclass(frozen=True)
class RunnerConfig:
    max_batch: int = 8  # frames per detector call, taken round-robin across streams
    queue_size: int = 16  # frames buffered per stream between its reader and the stages
    idle_wait: float = 0.05  # seconds the stages sleep when no stream has a frame


class FrameQueue:
    """A bounded per-stream queue with an explicit policy for when it is full."""

    def __init__(self, size: int, policy: DropPolicy, wake: threading.Event) -> None:
        self.frames: collections.deque[Frame] = collections.deque()
        self.size, self.policy, self.wake = size, policy, wake
        self.cond = threading.Condition()
        self.closed = False  # the reader has finished (end of stream or error)
        self.dropped = 0

    def put(self, frame: Frame, stop: threading.Event) -> None:
        with self.cond:
            if self.policy is DropPolicy.WAIT:
                while len(self.frames) >= self.size and not stop.is_set():
                    self.cond.wait(0.1)
            elif len(self.frames) >= self.size:
                self.frames.popleft()
                self.dropped += 1
            self.frames.append(frame)
        self.wake.set()

    def get(self) -> Frame | None:
        with self.cond:
            frame = self.frames.popleft() if self.frames else None
            self.cond.notify()
            return frame

    def close(self) -> None:
        with self.cond:
            self.closed = True
        self.wake.set()

    @property
    def finished(self) -> bool:
        with self.cond:
            return self.closed and not self.frames


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
        config: RunnerConfig = RunnerConfig(),
        placeholder_models: bool = False,
    ) -> None:
        ids = [s.stream_id for s in specs]
        if len(set(ids)) != len(ids):
            dup = sorted({i for i in ids if ids.count(i) > 1})
            raise ValueError(f"stream ids must be unique, {dup} appear twice; name them with NAME=URL")
        self.specs, self.detect, self.classify = list(specs), detect, classify
        self.sinks, self.observer, self.config = list(sinks), observer, config
        self.placeholder_models = placeholder_models
        self.stop = threading.Event()
        self.wake = threading.Event()
        self.queues = {
            s.stream_id: FrameQueue(
                config.queue_size, DropPolicy.WAIT if s.kind is SourceKind.FILE else DropPolicy.DROP_OLDEST, self.wake
            )
            for s in specs
        }
        self.verdicts = {s.stream_id: StreamVerdict(verdict) for s in specs}
        self.stats = RunStats([s.stream_id for s in specs])
        self._sink_failed: set[str] = set()

    def _read(self, spec: SourceSpec) -> None:
        queue, sid = self.queues[spec.stream_id], spec.stream_id
        try:
            for frame in read_frames(spec):
                if self.stop.is_set():
                    break
                self.observer.stream_up.labels(sid).set(1)
                self.observer.frames_decoded.labels(sid).inc()
                self.observer.observe_stage("decode", frame.decode_seconds)
                queue.put(frame, self.stop)
                self.observer.queue_depth.labels(sid).set(len(queue.frames))
        except SourceError as exc:
            logger.error("%s", exc, exc_info=logger.isEnabledFor(logging.DEBUG))
            self.observer.stream_errors.labels(sid).inc()
            self.stats.streams[sid].error = exc.reason
        except Exception as exc:  # a reader never takes the others down
            logger.exception("stream %r (%s): reader crashed", sid, spec.url)
            self.stats.streams[sid].error = f"reader crashed: {exc}"
        finally:
            self.observer.stream_up.labels(sid).set(0)
            queue.close()

    def _next_batch(self, order: list[str]) -> list[Frame]:
        """Up to max_batch frames, one per stream per round, starting after the last served stream."""
        batch: list[Frame] = []
        took = True
        while took and len(batch) < self.config.max_batch:
            took = False
            for sid in order:
                frame = self.queues[sid].get()
                if frame is not None:
                    batch.append(frame)
                    took = True
                    if len(batch) == self.config.max_batch:
                        break
        order.append(order.pop(0))
        return batch

    def run(self) -> RunStats:
        threads = [
            threading.Thread(target=self._read, args=(s,), name=f"src-{s.stream_id}", daemon=True) for s in self.specs
        ]
        for t in threads:
            t.start()
        order = [s.stream_id for s in self.specs]
        while True:
            batch = self._next_batch(order)
            if batch:
                self._process(batch)
                continue
            if all(q.finished for q in self.queues.values()):
                break
            self.wake.wait(self.config.idle_wait)
            self.wake.clear()
        for t in threads:
            t.join(timeout=5)
        for sid, q in self.queues.items():
            self.stats.streams[sid].dropped = q.dropped
        for sink in self.sinks:
            sink.close()
        return self.stats

    def _process(self, batch: list[Frame]) -> None:
        obs = self.observer
        dequeued = time.time()
        t0 = time.perf_counter()
        dets = self.detect.process(batch)
        t1 = time.perf_counter()
        p_fake = self.classify.process(batch, dets) if len(dets) else np.zeros(0, np.float32)
        t2 = time.perf_counter()
        obs.observe_stage("detect", t1 - t0)
        obs.observe_stage("classify", t2 - t1)
        verdicts = []
        for i, frame in enumerate(batch):
            rows = np.flatnonzero(dets.frame_index == i)
            faces = tuple(
                Face(tuple(float(v) for v in dets.xyxy[r]), float(dets.score[r]), float(p_fake[r])) for r in rows
            )
            frame_score = max((f.p_fake for f in faces), default=None)
            tracker = self.verdicts[frame.stream_id]
            state, changed = tracker.update(frame_score)
            queue_wait = max(0.0, dequeued - frame.capture_time)
            obs.observe_stage("queue", queue_wait)
            obs.faces.labels(frame.stream_id).inc(len(faces))
            if tracker.score is not None:
                obs.fake_score.labels(frame.stream_id).set(tracker.score)
            verdicts.append(
                Verdict(
                    stream_id=frame.stream_id,
                    frame_index=frame.index,
                    pts=frame.pts,
                    capture_time=frame.capture_time,
                    faces=faces,
                    frame_score=frame_score,
                    score=tracker.score,
                    state=state,
                    changed=changed,
                    latency={
                        "decode": frame.decode_seconds,
                        "queue": queue_wait,
                        "detect": t1 - t0,
                        "classify": t2 - t1,
                    },
                    placeholder_models=self.placeholder_models,
                )
            )
        self._publish(verdicts)

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
        published = time.time()
        for verdict, _ in records:
            self.observer.capture_to_publish.labels(verdict.stream_id).observe(published - verdict.capture_time)
            self.stats.record(verdict, published)
