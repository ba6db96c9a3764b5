"""One timed pass of dfwatch's per-frame path over a clip, stage by stage. Used by latency.py.

The pass does what ``pipeline.runner`` does for a batch, with a clock between the steps:
decode (PyAV, ``pipeline.sources.read_frames``) -> letterbox -> detect (inference, box decode, NMS,
boxes back to frame pixels) -> track (IoU tracker, faces due for scoring) -> crop (``engines.crop_faces``)
-> classify -> verdict (score smoothing, hysteresis, the Verdict message) -> publish (JSON line, and the
Redis sink's own pipelined XADD / HSET / SADD round trip to a real Redis, synchronously).

A batch of B consecutive frames is spread round-robin over B streams, as the pipeline's batcher fills a
batch from B feeds: each stream has its own tracker and verdict, and the classifier scores the faces of
the whole batch in one call.
"""

from __future__ import annotations

import io
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from engines import Classifier, Detections, Detector, crop_faces
from engines.letterbox import letterbox_batch, unletterbox_boxes
from engines.yolo import decode_yolov8
from pipeline.messages import Face, Verdict
from pipeline.sinks import STATE_KEY, STREAM_KEY, STREAMS_KEY, JsonLinesSink, RedisSink, encode
from pipeline.sources import SourceSpec, read_frames
from pipeline.tracker import FaceTracker
from pipeline.verdict import StreamVerdict, VerdictConfig

STAGES = ("decode", "letterbox", "detect", "track", "crop", "classify", "verdict", "publish")
DETECTOR_PATH = ("decode", "letterbox", "detect")  # what ultralytics' predict does too: frames in, boxes out


@dataclass(frozen=True)
class Engines:
    """One backend's detector and classifier, split so that each stage can be timed alone."""

    backend: str  # the engines backend's name, e.g. "onnxruntime-cpu", "torch-cpu-eager-fp32", "tensorrt-fp16"
    input_size: int  # detector input side S
    detect_raw: Callable[[np.ndarray], np.ndarray]  # (N, 3, S, S) float32 in [0, 1] -> (N, 4 + 1, anchors)
    classify: Callable[[np.ndarray], np.ndarray]  # (n, C, C, 3) uint8 crops -> (n,) float32 P(fake)
    crop_size: int  # C
    crop_margin: float


def artifact_engines(detector: Detector, classifier: Classifier) -> Engines:
    """Engines from dfwatch artifacts, on the backend their manifests pick (ONNX Runtime, torch, TensorRT)."""
    return Engines(
        backend=detector.backend_name,
        input_size=detector.input_size,
        detect_raw=lambda batch: detector.artifact.run(batch)[0],
        classify=classifier,
        crop_size=classifier.input_size,
        crop_margin=classifier.crop_margin,
    )


def detect(raw: np.ndarray, infos: list, *, conf: float, iou: float, max_det: int) -> Detections:
    """Box decode + NMS + back to frame pixels: the second half of ``engines.Detector.__call__``."""
    parts = []
    for i, ((xyxy, score), info) in enumerate(zip(decode_yolov8(raw, conf=conf, iou=iou, max_det=max_det), infos)):
        parts.append(Detections(unletterbox_boxes(xyxy, info), score, np.full(len(score), i)))
    return Detections.concatenate(parts)


class RedisPublisher:
    """The publish stage against a real Redis: encode, one JSON line, the Redis sink's write, synchronously.

    ``RedisSink.publish`` only hands records to its writer thread; here the writer's own pipelined round
    trip (``RedisSink._write``) runs in the timed thread, so "publish" lasts until Redis has the verdicts.
    """

    def __init__(self, url: str | None) -> None:
        self.lines = JsonLinesSink(io.StringIO())
        self.sink = RedisSink(url) if url else None
        self.prefix = f"latency-bench-{uuid.uuid4().hex[:8]}"
        self.stream_ids: set[str] = set()

    def publish(self, verdicts: list[Verdict]) -> None:
        records = encode(verdicts)
        self.lines.out.seek(0)
        self.lines.out.truncate()
        self.lines.publish(records)
        if self.sink is not None:
            now = time.time()
            self.sink._write([(v, r, now) for v, r in records])
            self.stream_ids.update(v.stream_id for v in verdicts)

    def close(self) -> None:
        """Delete what the benchmark wrote and stop the sink."""
        if self.sink is None:
            return
        client = self.sink.client
        for sid in self.stream_ids:
            client.delete(STREAM_KEY.format(stream=sid), STATE_KEY.format(stream=sid))
        if self.stream_ids:
            client.srem(STREAMS_KEY, *self.stream_ids)
        self.sink.close()


def _percentiles(values: list[float]) -> dict[str, float]:
    p50, p95, p99 = np.percentile(values, [50, 95, 99])
    return {"p50": round(float(p50), 3), "p95": round(float(p95), 3), "p99": round(float(p99), 3)}


def timed_pass(
    clip: Path,
    engines: Engines,
    publisher: RedisPublisher,
    *,
    batch: int,
    frames: int,
    conf: float,
    iou: float,
    max_faces: int,
) -> dict:
    """Run ``frames`` frames of ``clip`` through every stage in batches of ``batch``; milliseconds per frame.

    The first batch warms up and is not counted. Returns per stage and end to end the p50 / p95 / p99 of
    (batch time / batch), and of the batch time itself (a frame waits for its whole batch).
    """
    decoder: Iterator = read_frames(SourceSpec.parse(f"bench={clip}"))
    streams = [f"{publisher.prefix}-b{batch}-{j}" for j in range(batch)]
    trackers = [FaceTracker() for _ in streams]
    verdicts_of = [StreamVerdict(VerdictConfig()) for _ in streams]
    ms: dict[str, list[float]] = {s: [] for s in (*STAGES, "detector_path", "end_to_end")}
    faces_per_frame: Counter = Counter()
    for k in range(frames // batch):
        t0 = time.perf_counter()
        batch_frames = [next(decoder) for _ in range(batch)]  # frame i of the batch belongs to stream i
        t1 = time.perf_counter()
        images = [f.image for f in batch_frames]
        net_in, infos = letterbox_batch(images, engines.input_size)  # (B, 3, S, S)
        t2 = time.perf_counter()
        dets = detect(engines.detect_raw(net_in), infos, conf=conf, iou=iou, max_det=max_faces)
        t3 = time.perf_counter()
        due = []  # (stream, track id, box)
        for j, tracker in enumerate(trackers):
            d = dets.for_frame(j)
            tracker.update(d.xyxy, d.score)
            boxes = {t.track_id: t.box for t in tracker.visible}
            due += [(j, tid, boxes[tid]) for tid in tracker.due_for_classification(1)]
        t4 = time.perf_counter()
        to_crop = Detections([b for _, _, b in due], np.ones(len(due)), [j for j, _, _ in due])
        crops = crop_faces(images, to_crop, size=engines.crop_size, margin=engines.crop_margin)  # (n, C, C, 3)
        t5 = time.perf_counter()
        p_fake = engines.classify(crops)  # (n,)
        t6 = time.perf_counter()
        verdicts = []
        for (j, tid, _), p in zip(due, p_fake.tolist()):
            trackers[j].add_scores([tid], np.array([p]))
        for j, (frame, tracker) in enumerate(zip(batch_frames, trackers)):
            faces = tuple(Face(t.track_id, t.box, t.det_score, t.score, t.last_score) for t in tracker.visible)
            score = max((f.p_fake for f in faces if f.p_fake is not None), default=None)
            state, changed = verdicts_of[j].update(score)
            verdicts.append(Verdict(streams[j], frame.index, frame.pts, frame.capture_time, faces, score, state,
                                    changed, True, {"decode": frame.decode_seconds}, True))  # fmt: skip
            faces_per_frame[len(faces)] += 1
        t7 = time.perf_counter()
        publisher.publish(verdicts)
        t8 = time.perf_counter()
        if k == 0:
            continue  # warm-up
        marks = (t0, t1, t2, t3, t4, t5, t6, t7, t8)
        for stage, a, b in zip(STAGES, marks, marks[1:]):
            ms[stage].append((b - a) * 1000)
        ms["detector_path"].append((t3 - t0) * 1000)
        ms["end_to_end"].append((t8 - t0) * 1000)
    decoder.close()
    per_frame = {name: _percentiles([v / batch for v in values]) for name, values in ms.items()}
    return {
        "batches_timed": len(ms["end_to_end"]),
        "frames_timed": len(ms["end_to_end"]) * batch,
        "per_frame_ms": per_frame,
        "batch_ms": {name: _percentiles(ms[name]) for name in ("detector_path", "end_to_end")},
        "faces_per_frame": {str(n): c for n, c in sorted(faces_per_frame.items())},
    }
