"""Per-stream verdict from the faces' smoothed fake scores, with hysteresis and a minimum duration.

Scores are smoothed per face track (pipeline/tracker.py); the stream's frame score is the
highest smoothed score on screen. The verdict switches between REAL and FAKE only when that
score stays past the enter (or leave) threshold for ``confirm_frames`` frames in a row, so it
does not flicker.
"""

from __future__ import annotations

from dataclasses import dataclass

from pipeline.messages import VerdictState


@dataclass(frozen=True)
class VerdictConfig:
    enter_fake: float = 0.6  # frame score at or above which a stream starts turning FAKE
    leave_fake: float = 0.4  # frame score at or below which a FAKE stream starts turning REAL
    confirm_frames: int = 5  # frames in a row past a threshold before the verdict switches
    min_face_frames: int = 3  # frames with faces needed before leaving UNKNOWN / NO_FACE
    no_face_frames: int = 10  # frames in a row without a face before NO_FACE

    def __post_init__(self) -> None:
        if not 0 <= self.leave_fake <= self.enter_fake <= 1:
            raise ValueError(
                f"need 0 <= leave_fake <= enter_fake <= 1, got leave {self.leave_fake}, enter {self.enter_fake}"
            )
        for name in ("confirm_frames", "min_face_frames", "no_face_frames"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")


class StreamVerdict:
    """State machine of one stream: UNKNOWN -> REAL / FAKE / NO_FACE."""

    def __init__(self, cfg: VerdictConfig) -> None:
        self.cfg = cfg
        self.state = VerdictState.UNKNOWN
        self.score: float | None = None  # the latest frame score
        self._face_frames = 0  # frames with a scored face since the last faceless stretch
        self._faceless = 0  # faceless frames in a row
        self._pending = 0  # frames in a row that argue for switching between REAL and FAKE

    def update(self, frame_score: float | None) -> tuple[VerdictState, bool]:
        """Feed one frame's highest smoothed P(fake) (None: no scored face); returns (state, changed)."""
        before, cfg = self.state, self.cfg
        if frame_score is None:
            self._faceless += 1
            self._pending = 0
            if self._faceless >= cfg.no_face_frames:
                self.state, self.score, self._face_frames = VerdictState.NO_FACE, None, 0
            return self.state, self.state is not before
        self._faceless = 0
        self._face_frames += 1
        self.score = frame_score
        if self.state in (VerdictState.UNKNOWN, VerdictState.NO_FACE):
            if self._face_frames >= cfg.min_face_frames:
                self.state = VerdictState.FAKE if frame_score >= cfg.enter_fake else VerdictState.REAL
        else:
            if self.state is VerdictState.FAKE:
                argues, target = frame_score <= cfg.leave_fake, VerdictState.REAL
            else:
                argues, target = frame_score >= cfg.enter_fake, VerdictState.FAKE
            self._pending = self._pending + 1 if argues else 0
            if self._pending >= cfg.confirm_frames:
                self.state, self._pending = target, 0
        return self.state, self.state is not before
