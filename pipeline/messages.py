"""Messages passed between pipeline stages: frozen, stamped with stream, frame, pts and capture time."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import Any

import numpy as np

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
    image: np.ndarray = field(repr=False)  # (H, W, 3) uint8 RGB
    decode_seconds: float = 0.0  # seconds decoding and converting this frame, not waiting for data


@dataclass(frozen=True)
class Face:
    track_id: int  # the face track, stable across frames of one stream
    box: tuple[float, float, float, float]  # x1, y1, x2, y2 in frame pixels (carried between detections)
    det_score: float  # detector confidence of the track's last detection
    p_fake: float | None  # the track's smoothed probability that the face is fake; None before classified
    p_fake_last: float | None  # the newest raw classifier output for this track


@dataclass(frozen=True)
class Verdict:
    """What dfwatch says about one frame of one stream: the unit every sink publishes."""

    stream_id: StreamId
    frame_index: int
    pts: float | None
    capture_time: float
    faces: tuple[Face, ...]
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
            "faces": [
                {
                    "track": f.track_id,
                    "box": [round(v, 1) for v in f.box],
                    "det_score": round(f.det_score, 4),
                    "p_fake": _round(f.p_fake),
                    "p_fake_last": _round(f.p_fake_last),
                }
                for f in self.faces
            ],
            "score": _round(self.score),
            "verdict": self.state.value,
            "changed": self.changed,
            "detected": self.detected,
            "latency_ms": latency,
            "placeholder_models": self.placeholder_models,
        }


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 4)
