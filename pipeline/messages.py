"""Messages passed between pipeline stages: frozen, stamped with stream, frame, pts and capture time.

Faces travel in one columnar form, ``Faces``, from the detector to the sinks; a verdict is turned
into its JSON record and line once, at publication (``Publication``), with one clock.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from enum import Enum
from typing import Any

import cv2
import numpy as np

from engines.columns import Columns, column

StreamId = str


class VerdictState(str, Enum):
    UNKNOWN = "UNKNOWN"  # not enough evidence yet
    NO_FACE = "NO_FACE"  # no face on screen for a while
    REAL = "REAL"
    FAKE = "FAKE"


@dataclass(frozen=True)
class Frame:
    stream_id: StreamId
    index: int  # 0-based frame number in the stream, counted by the decoder
    pts: float | None  # presentation time in seconds, from the container
    capture_time: float  # wall-clock time (time.time()) when the frame was decoded
    image: np.ndarray = field(repr=False)  # (H, W, 3) uint8 RGB; with pixel_format "i420": (H * 3/2, W) planes
    decode_seconds: float = 0.0  # seconds decoding and converting this frame, not waiting for data
    pixel_format: str = "rgb24"  # "rgb24", or "i420": the decoder's planes, converted only when processed

    @property
    def size(self) -> tuple[int, int]:
        """(width, height) in pixels."""
        h = self.image.shape[0] * 2 // 3 if self.pixel_format == "i420" else self.image.shape[0]
        return self.image.shape[1], h

    def rgb(self) -> Frame:
        """This frame with an RGB image: itself, or its I420 planes converted once (OpenCV, BT.601 limited range)."""
        if self.pixel_format == "rgb24":
            return self
        return replace(self, image=cv2.cvtColor(self.image, cv2.COLOR_YUV2RGB_I420), pixel_format="rgb24")


@dataclass(frozen=True)
class Faces(Columns):
    """Faces of a batch of frames, one row per face: born from the detector, completed by tracker and classifier.

    Validated once (``engines.columns``); select rows with a boolean mask or index array (``faces[faces.due]``).
    NaN in ``p_fake`` / ``p_fake_last`` means "not classified yet".
    """

    xyxy: np.ndarray = column(np.float32, width=4)  # (n, 4) x1, y1, x2, y2 frame pixels (carried between detections)
    det_score: np.ndarray = column(np.float32)  # (n,) detector confidence (of the track's last detection)
    frame_index: np.ndarray = column(np.int64)  # (n,) position of the face's frame in its batch
    track_id: np.ndarray = column(np.int64)  # (n,) face track, stable across a stream's frames; -1 before tracking
    due: np.ndarray = column(np.bool_)  # (n,) the classifier scored this face on this frame
    p_fake: np.ndarray = column(np.float32)  # (n,) the track's smoothed P(fake); NaN: not yet
    p_fake_last: np.ndarray = column(np.float32)  # (n,) the track's newest raw classifier output; NaN: not yet

    @classmethod
    def of(cls, xyxy: np.ndarray, det_score: np.ndarray, frame_index: np.ndarray, **columns: np.ndarray) -> Faces:
        """Faces of detector boxes: untracked, unscored, not due, unless ``columns`` say otherwise."""
        n = len(np.asarray(det_score).reshape(-1))
        defaults = {
            "track_id": np.full(n, -1),
            "due": np.zeros(n, bool),
            "p_fake": np.full(n, np.nan),
            "p_fake_last": np.full(n, np.nan),
        }
        return cls(xyxy, det_score, frame_index, **(defaults | columns))

    def frame(self, i: int) -> Faces:
        """The faces of frame ``i`` of the batch, as a one-frame batch (``frame_index`` 0)."""
        rows = self[self.frame_index == i]
        return rows if not len(rows) or i == 0 else replace(rows, frame_index=np.zeros(len(rows)))

    @property
    def score(self) -> float | None:
        """The frame score: the highest smoothed P(fake) of the scored faces; None when none is scored."""
        scored = self.p_fake[~np.isnan(self.p_fake)]
        return float(scored.max()) if len(scored) else None

    def to_records(self) -> list[dict[str, Any]]:
        """The faces as JSON-ready dicts, rounded as the verdict records carry them (None for NaN)."""
        return [
            {
                "track": t,
                "box": [round(v, 1) for v in box],
                "det_score": round(d, 4),
                "p_fake": _round(p),
                "p_fake_last": _round(last),
            }
            for t, box, d, p, last in zip(
                self.track_id.tolist(),
                self.xyxy.tolist(),
                self.det_score.tolist(),
                self.p_fake.tolist(),
                self.p_fake_last.tolist(),
            )
        ]


@dataclass(frozen=True)
class Verdict:
    """What dfwatch says about one frame of one stream: the unit every sink publishes."""

    stream_id: StreamId
    frame_index: int
    pts: float | None
    capture_time: float
    faces: Faces  # the faces on screen in this frame, a one-frame batch (frame_index 0)
    score: float | None  # stream fake score: highest smoothed p_fake on screen; None without a scored face
    state: VerdictState
    changed: bool  # state differs from the previous frame's
    detected: bool  # the detector ran on this frame (else faces were carried by the tracker)
    latency: dict[str, float]  # seconds per stage: decode, queue, detect, classify
    placeholder_models: bool

    def to_dict(self, *, publish_time: float) -> dict[str, Any]:
        latency = {k: round(v * 1000, 3) for k, v in self.latency.items()}
        latency["capture_to_publish"] = round((publish_time - self.capture_time) * 1000, 3)
        return {
            "stream": self.stream_id,
            "frame": self.frame_index,
            "pts": None if self.pts is None else round(self.pts, 6),
            "capture_time": round(self.capture_time, 6),
            "faces": self.faces.to_records(),
            "score": _round(self.score),
            "verdict": self.state.value,
            "changed": self.changed,
            "detected": self.detected,
            "latency_ms": latency,
            "placeholder_models": self.placeholder_models,
        }


@dataclass(frozen=True)
class Publication:
    """A verdict as published: one publish time, its JSON record and that record serialised once."""

    verdict: Verdict
    published: float  # time.time() when it was published: the one clock of every sink, metric and summary
    record: dict[str, Any] = field(repr=False)  # Verdict.to_dict at ``published``
    line: str = field(repr=False)  # ``record`` as compact JSON, without a newline

    @classmethod
    def of(cls, verdicts: Sequence[Verdict], *, published: float) -> list[Publication]:
        out = []
        for v in verdicts:
            record = v.to_dict(publish_time=published)
            out.append(cls(v, published, record, json.dumps(record, separators=(",", ":"))))
        return out

    @property
    def capture_to_publish(self) -> float:
        """Seconds from capture to publication."""
        return self.published - self.verdict.capture_time


def _round(value: float | None) -> float | None:
    return None if value is None or value != value else round(value, 4)  # NaN != NaN: not scored


@dataclass(frozen=True)
class Batch:
    """Frames of several streams going through the stages together; each stage returns it with its part added."""

    frames: tuple[Frame, ...]  # at most one per stream per round, in the order they were taken
    taken: float  # time.time() when the frames left their queues
    detect: np.ndarray  # (B,) bool: the detector runs on this frame (schedule)
    classify_every: int  # classify each tracked face every m-th frame it is on screen (schedule)
    faces: Faces = field(default_factory=Faces.empty)  # every face of the batch (detect, then track and score)
    verdicts: tuple[Verdict, ...] = ()  # one per frame, in frame order (decide)
    timings: dict[str, float] = field(default_factory=dict)  # seconds per step: letterbox, detect, track, ...
    _rgb: dict[int, Frame] = field(default_factory=dict, repr=False, compare=False)  # frames converted so far

    def image(self, i: int) -> np.ndarray:
        """Frame ``i``'s (H, W, 3) RGB image, its I420 planes converted on first use and kept for the batch: only the
        frames a stage looks at (detected, or with a face to score) are converted, not the frames tracked past."""
        frame = self._rgb.get(i)
        if frame is None:
            frame = self._rgb[i] = self.frames[i].rgb()
        return frame.image

    @property
    def frames_as_converted(self) -> tuple[Frame, ...]:
        """``frames``, each converted one in RGB (for a frame sink, which converts the rest itself)."""
        return tuple(self._rgb.get(i, f) for i, f in enumerate(self.frames))


@dataclass(frozen=True)
class StreamRemoved:
    """Queued to a sink behind a removed stream's last items: the sink may release what it keeps for the stream."""

    stream_id: str
