"""The stages after scheduling: detect -> track and score -> decide. Each takes a Batch and returns it completed.

They know no threads or queues; per-stream state (trackers, verdict state machines) lives in the
stage that owns it. ``pipeline.processor.BatchProcessor`` runs them in order.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import replace

import numpy as np

from engines import Classifier, Detector, crop_faces
from pipeline.messages import Batch, Faces, Frame, Verdict, VerdictState
from pipeline.observer import Observer
from pipeline.tracker import FaceTracker, TrackerConfig
from pipeline.verdict import StreamVerdict, VerdictConfig

logger = logging.getLogger(__name__)


class DetectStage:
    """Faces of the frames the schedule marked for detection, in frame pixels, untracked."""

    def __init__(self, detector: Detector, observer: Observer) -> None:
        self.detector, self.observer = detector, observer

    def process(self, batch: Batch) -> Batch:
        rows = np.flatnonzero(batch.detect)  # (d,) positions in the batch
        if not len(rows):
            return batch
        t0 = time.perf_counter()
        inputs, placed = self.detector.prepare([batch.image(i) for i in rows])  # (d, 3, S, S)
        t1 = time.perf_counter()
        found = self.detector.boxes(self.detector.infer(inputs), placed)
        t2 = time.perf_counter()
        for i, n in zip(rows.tolist(), np.bincount(found.frame_index, minlength=len(rows)).tolist()):
            self.observer.faces(batch.frames[i].stream_id, n)
        faces = Faces.of(found.xyxy, found.score, rows[found.frame_index])
        return replace(batch, faces=faces, timings=batch.timings | {"letterbox": t1 - t0, "detect": t2 - t1})

    def forget(self, stream_id: str) -> None:
        pass


class _Images:
    """``batch``'s RGB images by frame position, each converted when a crop first needs it (engines.crop_faces)."""

    def __init__(self, batch: Batch) -> None:
        self.batch = batch

    def __getitem__(self, i: int) -> np.ndarray:
        return self.batch.image(int(i))

    def __len__(self) -> int:
        return len(self.batch.frames)


class TrackStage:
    """Carries faces between detections per stream (IoU tracker) and scores the faces that are due.

    A batch may hold several frames of one stream: it is worked through in rounds with each stream at
    most once, so every tracker advances frame by frame, and the classifier runs once per round. Faces
    lower than the classifier's ``min_face`` are tracked but never scored (``due`` False, their track's
    score unchanged): the artifact says its cue does not hold for them, and a frame whose faces are all
    that small has no score (the verdict reads it as no face). A face that shrinks below it is published
    with no score while it stays that small, not with the score it had when larger; its track keeps that
    score and goes on from it if the face grows back.
    """

    def __init__(self, classifier: Classifier, cfg: TrackerConfig = TrackerConfig()) -> None:
        self.classifier, self.cfg = classifier, cfg
        self.trackers: dict[str, FaceTracker] = {}

    def process(self, batch: Batch) -> Batch:
        images = _Images(batch)
        spent = {"track": 0.0, "crop": 0.0, "classify": 0.0}
        parts = []
        for rnd in rounds(batch.frames):
            t0 = time.perf_counter()
            faces = Faces.concatenate([self._step(batch, i) for i in rnd])
            t1 = time.perf_counter()
            spent["track"] += t1 - t0
            if self.classifier.min_face:  # too small now: not scored, and no score from when it was larger
                small = (faces.xyxy[:, 3] - faces.xyxy[:, 1]) < self.classifier.min_face
                faces = replace(
                    faces,
                    due=faces.due & ~small,
                    p_fake=np.where(small, np.nan, faces.p_fake),
                    p_fake_last=np.where(small, np.nan, faces.p_fake_last),
                )
            due = np.flatnonzero(faces.due)  # (k,) rows of ``faces``
            if len(due):
                crops = crop_faces(
                    images, faces[due], size=self.classifier.input_size, margin=self.classifier.crop_margin
                )  # (k, S, S, 3)
                t2 = time.perf_counter()
                p_fake = self.classifier(crops)  # (k,)
                t3 = time.perf_counter()
                faces = self._scored(batch, faces, due, p_fake)
                spent["crop"] += t2 - t1
                spent["classify"] += t3 - t2
                spent["track"] += time.perf_counter() - t3
            parts.append(faces)
        faces = Faces.concatenate(parts)
        faces = faces[np.argsort(faces.frame_index, kind="stable")]  # frame order, whatever the rounds
        return replace(batch, faces=faces, timings=batch.timings | spent)

    def _step(self, batch: Batch, i: int) -> Faces:
        """Frame ``i`` through its stream's tracker: the faces on screen, ``due`` marking those to score now."""
        sid = batch.frames[i].stream_id
        tracker = self.trackers.get(sid)
        if tracker is None:
            tracker = self.trackers[sid] = FaceTracker(self.cfg)
        if batch.detect[i]:
            found = batch.faces.frame_index == i
            faces = tracker.update(
                batch.faces.xyxy[found], batch.faces.det_score[found], classify_every=batch.classify_every
            )
        else:
            faces = tracker.carry(classify_every=batch.classify_every)
        return replace(faces, frame_index=np.full(len(faces), i))

    def _scored(self, batch: Batch, faces: Faces, due: np.ndarray, p_fake: np.ndarray) -> Faces:
        """``faces`` with the classifier's ``p_fake`` (k,) for the ``due`` rows (k,) in their tracks' scores."""
        smoothed, last = faces.p_fake.copy(), faces.p_fake_last.copy()
        streams = np.array([batch.frames[i].stream_id for i in faces.frame_index[due].tolist()])
        for sid in np.unique(streams).tolist():  # each stream once per round: one frame, one tracker call
            rows = due[streams == sid]
            smoothed[rows], last[rows] = self.trackers[sid].add_scores(faces.track_id[rows], p_fake[streams == sid])
        return replace(faces, p_fake=smoothed, p_fake_last=last)

    def forget(self, stream_id: str) -> None:
        self.trackers.pop(stream_id, None)


class DecideStage:
    """Per frame, the stream's verdict from the highest smoothed score on screen (hysteresis in StreamVerdict)."""

    def __init__(self, cfg: VerdictConfig, observer: Observer, *, placeholder_models: bool) -> None:
        self.cfg, self.observer, self.placeholder_models = cfg, observer, placeholder_models
        self.verdicts: dict[str, StreamVerdict] = {}

    def process(self, batch: Batch) -> Batch:
        start, t = time.perf_counter(), batch.timings
        detect = t.get("letterbox", 0.0) + t.get("detect", 0.0)
        classify = t.get("crop", 0.0) + t.get("classify", 0.0)
        out = []
        for i, frame in enumerate(batch.frames):
            faces = batch.faces.frame(i)
            score = faces.score
            state, changed = self._verdict(frame.stream_id).update(score)
            alert = changed and state is VerdictState.FAKE
            if alert:
                logger.warning(
                    "ALERT stream %r turned FAKE at frame %d (pts %s, score %.2f)",
                    frame.stream_id,
                    frame.index,
                    frame.pts,
                    score or 0.0,
                )
            self.observer.verdict(frame.stream_id, state, score, alert=alert)
            detected = bool(batch.detect[i])
            latency = {
                "decode": frame.decode_seconds,
                "queue": max(0.0, batch.taken - frame.capture_time),
                "detect": detect if detected else 0.0,
                "classify": classify,
            }
            out.append(
                Verdict(
                    frame.stream_id,
                    frame.index,
                    frame.pts,
                    frame.capture_time,
                    faces,
                    score,
                    state,
                    changed,
                    detected,
                    latency,
                    self.placeholder_models,
                )
            )
        return replace(batch, verdicts=tuple(out), timings=t | {"decide": time.perf_counter() - start})

    def _verdict(self, stream_id: str) -> StreamVerdict:
        verdict = self.verdicts.get(stream_id)
        if verdict is None:
            verdict = self.verdicts[stream_id] = StreamVerdict(self.cfg)
        return verdict

    def forget(self, stream_id: str) -> None:
        self.verdicts.pop(stream_id, None)


def rounds(frames: Sequence[Frame]) -> list[list[int]]:
    """Split batch positions into rounds where each stream appears at most once, keeping frame order."""
    out: list[list[int]] = []
    seen: dict[str, int] = {}  # stream -> rounds it already has
    for i, frame in enumerate(frames):
        r = seen.get(frame.stream_id, 0)
        if r == len(out):
            out.append([])
        out[r].append(i)
        seen[frame.stream_id] = r + 1
    return out
