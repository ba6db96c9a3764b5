"""Per-stream verdict from the faces' smoothed fake scores, with hysteresis and a minimum duration.

Scores are smoothed per face track (pipeline/tracker.py); the stream's frame score is the
highest smoothed score on screen. The verdict switches between REAL and FAKE only when that
score stays past the enter (or leave) threshold for ``confirm_frames`` frames in a row, so it
does not flicker.

The thresholds belong to the classifier whose scores they cut: ``dfwatch-train calibrate``
measures them for a model pack and writes them into the classifier's manifest
(``thresholds``: ``verdict_enter``, ``verdict_leave``, ``verdict_frames``). A field left unset
here takes that calibrated value (``VerdictConfig.resolved``), else ``FALLBACK``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace

from pipeline.messages import VerdictState
from pipeline.ranges import check_ranges, ranged

FALLBACK = {"enter_fake": 0.6, "leave_fake": 0.4, "confirm_frames": 5}  # for a classifier with no calibration
MANIFEST_KEYS = {"enter_fake": "verdict_enter", "leave_fake": "verdict_leave", "confirm_frames": "verdict_frames"}


@dataclass(frozen=True)
class VerdictConfig:
    # frame score at or above which a stream starts turning FAKE; None = calibrated
    enter_fake: float | None = ranged(None, 0, 1)
    # frame score at or below which a FAKE stream turns back REAL; None = calibrated
    leave_fake: float | None = ranged(None, 0, 1)
    # frames in a row past a threshold before the verdict switches; None = calibrated
    confirm_frames: int | None = ranged(None, 1, 10_000)
    min_face_frames: int = ranged(3, 1, 10_000)  # frames with faces needed before leaving UNKNOWN / NO_FACE
    no_face_frames: int = ranged(10, 1, 10_000)  # frames in a row without a face before NO_FACE

    def __post_init__(self) -> None:
        check_ranges(self)
        if self.enter_fake is not None and self.leave_fake is not None and self.leave_fake > self.enter_fake:
            raise ValueError(
                f"need 0 <= leave_fake <= enter_fake <= 1, got leave {self.leave_fake}, enter {self.enter_fake}"
            )

    def resolved(self, calibrated: Mapping[str, float] | None = None) -> VerdictConfig:
        """Every unset threshold filled: from ``calibrated`` (a classifier manifest's ``thresholds``), else
        ``FALLBACK``. A calibrated leave threshold above a set enter threshold is capped at it."""
        calibrated = calibrated or {}
        fill = {}
        for name, key in MANIFEST_KEYS.items():
            if getattr(self, name) is None:
                value = calibrated.get(key, FALLBACK[name])
                fill[name] = int(value) if name == "confirm_frames" else float(value)
        if "leave_fake" in fill and self.enter_fake is not None:
            fill["leave_fake"] = min(fill["leave_fake"], self.enter_fake)
        if "enter_fake" in fill and self.leave_fake is not None:
            fill["enter_fake"] = max(fill["enter_fake"], self.leave_fake)
        return replace(self, **fill)

    def source(self, calibrated: Mapping[str, float] | None) -> str:
        """Where the unset thresholds come from, for the start-up log line."""
        unset = [n for n in MANIFEST_KEYS if getattr(self, n) is None]
        if not unset:
            return "the configuration"
        if calibrated and all(MANIFEST_KEYS[n] in calibrated for n in unset):
            return "the classifier's calibration"
        return "the fallback (the classifier manifest has no calibration: run dfwatch-train calibrate)"


class StreamVerdict:
    """State machine of one stream: UNKNOWN -> REAL / FAKE / NO_FACE."""

    def __init__(self, cfg: VerdictConfig) -> None:
        self.cfg = cfg.resolved()  # unset thresholds: FALLBACK (callers resolve against the classifier first)
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
