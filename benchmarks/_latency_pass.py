"""One timed pass of dfwatch's own batch processor over a clip, stage by stage. Used by latency.py.

The pass runs what `dfwatch watch` runs for a batch, ``pipeline.processor.BatchProcessor`` and
``pipeline.publish.Publisher``, and reads the stages' own timings: decode (PyAV,
``pipeline.sources.read_frames``) -> letterbox -> detect (inference, box decode, NMS, boxes back to
frame pixels) -> track (IoU tracker, faces due for scoring) -> crop (``engines.crop_faces``) -> classify
-> decide (smoothing, hysteresis, the Verdict message) -> publish (the JSON line, and the Redis sink's own
pipelined XADD / HSET / SADD round trip to a real Redis, waited for).

A batch of B consecutive frames is spread round-robin over B streams, as the runner fills a batch from B
feeds: each stream has its own tracker and verdict, and the classifier scores the faces of the whole
batch in one call. The detector runs on every frame and every face is classified on every frame.
"""

from __future__ import annotations

import io
import time
import uuid
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import replace
from pathlib import Path

from engines import Classifier, Detector
from pipeline.messages import Publication
from pipeline.observer import NullObserver
from pipeline.processor import BatchProcessor
from pipeline.publish import Publisher
from pipeline.sinks import STATE_KEY, STREAM_KEY, STREAMS_KEY, JsonLinesSink, RedisSink, Sink
from pipeline.sources import SourceSpec, read_frames
from pipeline.summary import RunStats, percentiles

STAGES = ("decode", "letterbox", "detect", "track", "crop", "classify", "decide", "publish")
DETECTOR_PATH = ("decode", "letterbox", "detect")  # what ultralytics' predict does too: frames in, boxes out


class SyncRedis(Sink):
    """The Redis sink's own pipelined write, done in the calling thread: "publish" lasts until Redis has it.

    (``RedisSink.publish`` only hands publications to its writer thread.)
    """

    name = "redis"

    def __init__(self, url: str) -> None:
        self.sink = RedisSink(url)
        self.prefix = f"latency-bench-{uuid.uuid4().hex[:8]}"
        self.stream_ids: set[str] = set()

    def publish(self, publications: Sequence[Publication]) -> None:
        self.sink.write(list(publications))
        self.stream_ids.update(p.verdict.stream_id for p in publications)

    def close(self) -> None:
        """Delete what the benchmark wrote and stop the sink."""
        client = self.sink.client
        for sid in self.stream_ids:
            client.delete(STREAM_KEY.format(stream=sid), STATE_KEY.format(stream=sid))
        if self.stream_ids:
            client.srem(STREAMS_KEY, *self.stream_ids)
        self.sink.close()


def _ms(values: list[float]) -> dict[str, float | None]:
    return {k: None if v is None else round(v, 3) for k, v in percentiles(values).items()}


def timed_pass(
    clip: Path, detector: Detector, classifier: Classifier, redis: SyncRedis | None, *, batch: int, frames: int
) -> dict:
    """Run ``frames`` frames of ``clip`` through the processor in batches of ``batch``; milliseconds per frame.

    The first batch warms up and is not counted. Returns per stage and end to end the p50 / p95 / p99 of
    (batch time / batch), and of the batch time itself (a frame waits for its whole batch).
    """
    decoder: Iterator = read_frames(SourceSpec.parse(f"bench={clip}"))
    prefix = redis.prefix if redis is not None else f"latency-bench-{uuid.uuid4().hex[:8]}"
    streams = [f"{prefix}-b{batch}-{j}" for j in range(batch)]
    processor = BatchProcessor(detector, classifier, NullObserver())
    lines = JsonLinesSink(io.StringIO())
    publisher = Publisher([lines] + ([redis] if redis is not None else []), NullObserver(), RunStats(streams))
    ms: dict[str, list[float]] = {s: [] for s in (*STAGES, "detector_path", "end_to_end")}
    faces_per_frame: Counter = Counter()
    for k in range(frames // batch):
        t0 = time.perf_counter()
        taken = [replace(next(decoder), stream_id=sid) for sid in streams]  # frame j of the batch: stream j
        t1 = time.perf_counter()
        done = processor.process(taken)
        t2 = time.perf_counter()
        lines.out.seek(0)
        lines.out.truncate()
        publisher.publish(done.verdicts)
        t3 = time.perf_counter()
        faces_per_frame.update(len(v.faces) for v in done.verdicts)
        if k == 0:
            continue  # warm-up
        spent = done.timings | {"decode": t1 - t0, "publish": t3 - t2}
        for stage in STAGES:
            ms[stage].append(spent[stage] * 1000)
        ms["detector_path"].append(sum(spent[s] for s in DETECTOR_PATH) * 1000)
        ms["end_to_end"].append((t3 - t0) * 1000)
    decoder.close()
    return {
        "batches_timed": len(ms["end_to_end"]),
        "frames_timed": len(ms["end_to_end"]) * batch,
        "per_frame_ms": {name: _ms([v / batch for v in values]) for name, values in ms.items()},
        "batch_ms": {name: _ms(ms[name]) for name in ("detector_path", "end_to_end")},
        "faces_per_frame": {str(n): c for n, c in sorted(faces_per_frame.items())},
    }
