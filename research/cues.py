"""Training-free cues of a face swap, measured on every held-out set of real manipulated faces as served.

A study (research/README.md): the baseline a trained model has to beat. Each cue scores a face crop
(higher = more likely swapped) from the fixed frequency statistics of ``trainer.models.spectral``
(grey pyramid, inner-face ellipse), with nothing learned:

- ``inner_sharpness``: minus the log mean |finest octave| of the inner face. A swapped face is
  rendered at the generator's resolution and pasted back, so it is often softer than the frame
  (the issue's "mean absolute Laplacian inside the face box", lower = fake). It also rises for
  any soft real face: out of focus, low bitrate, beauty filters, a small face upscaled.
- ``octave_slope``: minus the log ratio of the inner face's finest octave to the one below it. A
  generator's upscaled output has crisp mid frequencies and no finest octave, so it scores high;
  as a ratio it ignores the face's contrast (lighting, camera gain), which moves
  ``inner_sharpness``. Blur still raises it: a soft real face loses the finest octave first.
  The shipped classifier learnt this one (``models/deepfake_classifier.md``).
- ``mouth_detail``: the octave slope of an eye band minus the slope of the mouth: high when the mouth
  keeps more of its finest octave than the eyes of the same face do (a re-rendered or sharpened
  mouth: lip-sync, reenactment, some swaps). The reference is the same face, so the source's overall
  sharpness cancels. Measured: weak, but at 0.5 or above on every held-out set.

A cue behaves like an ``engines.Classifier`` for ``trainer.pack.holdout``: ``input_size``, ``crop_margin``,
and a call on uint8 (N, S, S, 3) RGB crops returning (N,) scores.

Run from the repository root: ``.venv/bin/python research/cues.py --help``.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipeline.errors import ConfigError
from pipeline.flags import add_config_flags, config_from_args
from pipeline.ranges import check_ranges, ranged
from trainer.errors import TrainerError

CUES = ("inner_sharpness", "octave_slope", "mouth_detail")
# eye band and mouth: rectangles (x0, x1, y0, y1) in face-box units from the crop's centre, y down
EYES = (-0.30, 0.30, -0.22, -0.02)
MOUTH = (-0.20, 0.20, 0.15, 0.36)


def rect_mask(size: int, margin: float, rect: tuple[float, float, float, float]):
    """(size, size) float torch mask of the rectangle ``rect`` = (x0, x1, y0, y1) in face-box units, y down."""
    from trainer.models.spectral import box_units

    c = box_units(size, margin)
    x0, x1, y0, y1 = rect
    return ((c[:, None] >= y0) & (c[:, None] <= y1) & (c[None, :] >= x0) & (c[None, :] <= x1)).float()


class Cue:
    def __init__(self, name: str, *, input_size: int = 256, crop_margin: float = 0.25) -> None:
        from trainer.models.spectral import BandStatistics

        if name not in CUES:
            raise TrainerError(f"unknown cue {name!r}; valid: {list(CUES)}")
        self.name, self.input_size, self.crop_margin = name, input_size, crop_margin
        regions = [rect_mask(input_size, crop_margin, r) for r in (EYES, MOUTH)] if name == "mouth_detail" else [None]
        # the inner face; or the eye band and the mouth
        self.stats = [BandStatistics(input_size, 2, crop_margin, inner=r).eval() for r in regions]

    def __call__(self, crops: np.ndarray) -> np.ndarray:
        import torch

        from trainer.models.spectral import octave_slopes

        with torch.inference_mode():
            x = torch.from_numpy(np.ascontiguousarray(crops)).permute(0, 3, 1, 2).float().div_(255.0)
            # (N, 4) per region: per octave, log mean |band| and log rms
            s = [stats(x).double() for stats in self.stats]
        if self.name == "mouth_detail":  # the eyes' octave slope minus the mouth's (finest over the next octave)
            eyes, mouth = (-octave_slopes(r, 2)[:, 0] for r in s)
            return (eyes - mouth).numpy()
        cue = s[0][:, 0] if self.name == "inner_sharpness" else octave_slopes(s[0], 2)[:, 0]
        return -cue.numpy()


@dataclass(frozen=True)
class CueStudy:
    """The options of one measurement (flags only)."""

    media: Path = Path("../shared/data")  # the shared real-media folder
    detector: Path = Path("models/face_detector.onnx")  # face detector artifact
    cues: tuple[str, ...] = CUES  # cues to measure
    sets: tuple[str, ...] = ()  # held-out sets (none: all)
    size: int = ranged(256, 16, 4096)  # crop side the cues are measured at (faces cut once)
    margin: float = ranged(0.25, 0, 2)  # crop margin, as the pack cuts faces
    cache: Path = Path("runs/realval-cache")  # where detector boxes are cached
    threads: int | None = ranged(None, 1, 1024)  # ONNX Runtime threads of the detector (none: its default)
    out: Path = Path("runs/cues.json")  # JSON report

    def __post_init__(self) -> None:
        check_ranges(self)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="research/cues.py",
        description="Training-free swap cues on every held-out set of real manipulated faces (trainer.pack.realval), "
        "faces cut as the service cuts them: the baseline a trained model has to beat.",
    )
    add_config_flags(p, CueStudy)
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    try:
        opts = config_from_args(CueStudy, parser.parse_args(argv))
    except ConfigError as exc:
        parser.error(str(exc))
    from engines import Detector
    from trainer.pack import holdout, realval

    sets = list(opts.sets or realval.SET_NAMES)
    names = opts.cues
    try:
        cues = {n: Cue(n, input_size=opts.size, crop_margin=opts.margin) for n in names}
    except TrainerError as exc:
        print(f"cues: {exc}", file=sys.stderr)
        return 2
    detector = Detector(opts.detector, threads=opts.threads)
    report: dict = {
        "input_size": opts.size,
        "crop_margin": opts.margin,
        "detector_sha256": detector.manifest.sha256,
        **holdout.score_sets(cues, detector, opts.media, cache=opts.cache, sets=sets),
    }

    def cell(m: dict) -> str:
        keys = ("face_auc", "face_auc_size_matched", "clip_auc")
        return " / ".join("-" if m[k] is None else f"{m[k]:.3f}" for k in keys)

    print(f"{'held-out set':16s} " + " ".join(f"{n:>25s}" for n in names), file=sys.stderr)
    for s in sets:
        print(f"{s:16s} " + " ".join(f"{cell(report[n][s]):>25s}" for n in names), file=sys.stderr)
    print("(face AUC / face AUC between faces of about the same size / clip AUC; higher score = fake)", file=sys.stderr)
    opts.out.parent.mkdir(parents=True, exist_ok=True)
    opts.out.write_text(json.dumps(report, indent=1))
    print(f"cues: wrote {opts.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
