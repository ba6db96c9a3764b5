"""Per-stream verdict: smooth the per-frame fake score and switch state with hysteresis."""

from __future__ import annotations

from dataclasses import dataclass

from pipeline.messages import VerdictState


@dataclass(frozen=True)
class VerdictConfig:
    ema_alpha: float = 0.3  # weight of the newest frame score in the exponential moving average
    enter_fake: float = 0.6  # smoothed score at or above which a stream turns FAKE
    leave_fake: float = 0.4  # smoothed score at or below which a FAKE stream turns REAL again
    min_face_frames: int = 3  # frames with faces needed before leaving UNKNOWN
    no_face_frames: int = 10  # consecutive frames without a face before NO_FACE

    def __post_init__(self) -> None:
        if not 0 < self.ema_alpha <= 1:
            raise ValueError(f"ema_alpha must be in (0, 1], got {self.ema_alpha}")
        if not 0 <= self.leave_fake <= self.enter_fake <= 1:
            raise ValueError(
                f"need 0 <= leave_fake <= enter_fake <= 1, got leave {self.leave_fake}, enter {self.enter_fake}"
            )


class StreamVerdict:
    """State machine of one stream: UNKNOWN -> REAL/FAKE/NO_FACE, with hysteresis between REAL and FAKE."""

    def __init__(self, cfg: VerdictConfig) -> None:
        self.cfg = cfg
        self.state = VerdictState.UNKNOWN
        self.score: float | None = None
        self._face_frames = 0
        self._faceless = 0

    def update(self, frame_score: float | None) -> tuple[VerdictState, bool]:
        """Feed one frame's highest P(fake) (None: no face); returns (state, changed)."""
        before = self.state
        cfg = self.cfg
        if frame_score is None:
            self._faceless += 1
            if self._faceless >= cfg.no_face_frames:
                self.state, self.score, self._face_frames = VerdictState.NO_FACE, None, 0
            return self.state, self.state is not before
        self._faceless = 0
        self._face_frames += 1
        self.score = (
            frame_score if self.score is None else cfg.ema_alpha * frame_score + (1 - cfg.ema_alpha) * self.score
        )
        if self.state is VerdictState.FAKE:
            if self.score <= cfg.leave_fake:
                self.state = VerdictState.REAL
        elif self._face_frames >= cfg.min_face_frames:
            self.state = VerdictState.FAKE if self.score >= cfg.enter_fake else VerdictState.REAL
        return self.state, self.state is not before
