"""Verdict thresholds from measured stream scores (behind `dfwatch calibrate` and `dfwatch-train calibrate`).

The service's stream score (the highest smoothed face score on screen, per frame) does not
depend on the verdict thresholds, so the scores of one run (real footage, and fakes if there
are any) are enough: verdict lines recorded by ``dfwatch watch`` (``read_series``), or the
verdicts of an in-process run (pipeline.clips). Every candidate setting is replayed on them
with the service's own state machine (``StreamVerdict``). For each ``confirm_frames`` candidate
the enter threshold is the lowest one at which no real stream ever turns FAKE, plus
``margin``; the candidate that then catches the most fake streams wins (ties: fewer frames, a
faster alert). The result goes into the classifier's manifest, where `dfwatch watch` reads it
(``VerdictConfig.resolved``).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from pipeline.errors import ConfigError
from pipeline.messages import VerdictState
from pipeline.verdict import StreamVerdict, VerdictConfig

logger = logging.getLogger(__name__)

FRAME_CHOICES = (5, 8, 12)
MARGIN = 0.05  # added to the highest enter threshold that any calibration real clip reaches
LEAVE_GAP = 0.15  # leave FAKE this far below the enter threshold (hysteresis)


@dataclass(frozen=True)
class Calibration:
    enter_fake: float
    leave_fake: float
    confirm_frames: int
    real_clips: int
    fake_clips: int
    fakes_caught: int
    candidates: list[dict[str, Any]]  # per confirm_frames: its enter threshold and the fakes it catches

    def describe(self) -> list[str]:
        """What the calibration found, as the lines `dfwatch calibrate` prints: one per candidate, then the choice."""
        lines = [
            f"confirm_frames {c['confirm_frames']:2d}: reals stay quiet from {c['quiet_enter']:.3f}; enter "
            f"{c['enter_fake']:.3f} catches {c['fakes_caught']} of {self.fake_clips} fakes"
            for c in self.candidates
        ]
        lines.append(
            f"calibrate: FAKE at {self.enter_fake:.3f} for {self.confirm_frames} frames in a row, REAL again at "
            f"{self.leave_fake:.3f}: {self.real_clips} real streams stay quiet, {self.fakes_caught} of "
            f"{self.fake_clips} fake streams caught"
        )
        return lines

    def thresholds(self) -> dict[str, float]:
        """The manifest ``thresholds`` entries that `dfwatch watch` reads (pipeline.verdict.MANIFEST_KEYS)."""
        return {
            "verdict_enter": round(self.enter_fake, 4),
            "verdict_leave": round(self.leave_fake, 4),
            "verdict_frames": self.confirm_frames,
        }


def ever_fake(series: Sequence[float | None], cfg: VerdictConfig) -> bool:
    """Whether the service's verdict, fed ``series`` (one stream score or None per frame), ever turns FAKE."""
    verdict = StreamVerdict(cfg)
    return any(verdict.update(score)[0] is VerdictState.FAKE for score in series)


def lowest_quiet_enter(series: Sequence[float | None], frames: int, *, tol: float = 1e-4) -> float:
    """The lowest enter threshold at which ``series`` never turns FAKE with ``frames`` in a row (bisection;
    alerting only gets rarer as the threshold rises). 0 when it never alerts at all."""

    def alerts(enter: float) -> bool:
        return ever_fake(series, VerdictConfig(enter_fake=enter, leave_fake=0.0, confirm_frames=frames))

    if not alerts(1e-6):
        return 0.0
    lo, hi = 1e-6, 1.0 + 1e-6  # alerts(lo), not alerts(hi): scores are <= 1
    while hi - lo > tol:
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if alerts(mid) else (lo, mid)
    return hi


def calibrate(
    real: Sequence[Sequence[float | None]],
    fake: Sequence[Sequence[float | None]],
    *,
    frame_choices: Sequence[int] = FRAME_CHOICES,
    margin: float = MARGIN,
    leave_gap: float = LEAVE_GAP,
) -> Calibration:
    """Thresholds from the stream-score series of real and fake calibration clips (module docstring)."""
    if not real:
        raise ValueError("calibration needs at least one real clip")
    candidates = []
    for frames in frame_choices:
        quiet = max(lowest_quiet_enter(s, frames) for s in real)
        enter = min(quiet + margin, 0.99)
        cfg = VerdictConfig(enter_fake=enter, leave_fake=max(enter - leave_gap, 0.0), confirm_frames=frames)
        caught = sum(ever_fake(s, cfg) for s in fake)
        candidates.append(
            {
                "confirm_frames": frames,
                "quiet_enter": round(quiet, 4),
                "enter_fake": round(enter, 4),
                "fakes_caught": int(caught),
            }
        )
    best = max(candidates, key=lambda c: (c["fakes_caught"], -c["confirm_frames"]))
    enter = best["enter_fake"]
    return Calibration(
        enter_fake=enter,
        leave_fake=round(max(enter - leave_gap, 0.0), 4),
        confirm_frames=best["confirm_frames"],
        real_clips=len(real),
        fake_clips=len(fake),
        fakes_caught=best["fakes_caught"],
        candidates=candidates,
    )


def read_series(lines: Iterable[str], *, where: str = "verdicts") -> dict[str, list[float | None]]:
    """Per stream, its stream score on each frame (None: no scored face) from ``dfwatch watch`` JSON lines."""
    series: dict[str, list[float | None]] = {}
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            msg = json.loads(line)
            stream, score = str(msg["stream"]), msg["score"]
        except (json.JSONDecodeError, KeyError, TypeError) as exc:
            raise ConfigError(f"{where} line {n}: not a dfwatch verdict line ({exc})") from None
        series.setdefault(stream, []).append(None if score is None else float(score))
    return series


def write_calibration(classifier: Path, calibration: Calibration, *, provenance: dict[str, Any]) -> list[Path]:
    """Put the calibrated thresholds into the manifest of ``classifier`` and of every other build of the same network
    beside it (its torch reference, engines: the manifests that name the same source ONNX), so whichever build
    serves it alerts alike; the artifacts and their sha256 stay as they are. Returns the artifacts written."""
    from engines.manifest import load_manifest, write_manifest

    source = load_manifest(classifier, kind="classifier").source_onnx_sha256
    builds = [classifier] + [
        p
        for p in sorted(classifier.parent.glob(f"{classifier.name.split('.')[0]}.*"))
        if p != classifier
        and p.with_name(p.name + ".json").is_file()
        and load_manifest(p, verify=False).source_onnx_sha256 == source
    ]
    for artifact in builds:
        manifest = load_manifest(artifact, kind="classifier")
        training = dict(manifest.training or {})
        training["calibration"] = {**provenance, **asdict(calibration)}
        thresholds = {**manifest.thresholds, **calibration.thresholds()}
        write_manifest(artifact, replace(manifest, thresholds=thresholds, training=training))
    return builds
