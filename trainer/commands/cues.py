"""dfwatch-train cues: training-free cues (trainer.cues) on every held-out set of real manipulated faces."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def cmd_cues(args: argparse.Namespace) -> int:
    from engines import Detector
    from trainer import holdout, realval
    from trainer.cues import Cue

    sets = args.sets.split(",") if args.sets else list(realval.SET_NAMES)
    names = args.cues.split(",")
    detector = Detector(args.detector, threads=args.threads)
    cues = {n: Cue(n, input_size=args.size, crop_margin=args.margin) for n in names}
    report: dict = {
        "input_size": args.size,
        "crop_margin": args.margin,
        "detector_sha256": detector.manifest.sha256,
        **holdout.score_sets(cues, detector, args.media, cache=args.cache, sets=sets),
    }

    def cell(m: dict) -> str:
        keys = ("face_auc", "face_auc_size_matched", "clip_auc")
        return " / ".join("-" if m[k] is None else f"{m[k]:.3f}" for k in keys)

    print(f"{'held-out set':16s} " + " ".join(f"{n:>25s}" for n in names), file=sys.stderr)
    for s in sets:
        print(f"{s:16s} " + " ".join(f"{cell(report[n][s]):>25s}" for n in names), file=sys.stderr)
    print("(face AUC / face AUC between faces of about the same size / clip AUC; higher score = fake)", file=sys.stderr)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1))
    print(f"cues: wrote {args.out}", file=sys.stderr)
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    from trainer.cues import CUES

    p = sub.add_parser(
        "cues", help="training-free swap cues on the held-out real fakes: the baseline to beat", description=__doc__
    )
    p.add_argument("--media", type=Path, default=Path("../shared/data"), help="the shared real-media folder")
    p.add_argument("--detector", type=Path, default=Path("models/face_detector.onnx"), help="face detector artifact")
    p.add_argument("--cues", default=",".join(CUES), help=f"comma list of cues (default: {','.join(CUES)})")
    p.add_argument("--sets", default="", help="comma list of held-out sets (default: all)")
    p.add_argument("--size", type=int, default=256, help="crop side the cues are measured at (faces cut once)")
    p.add_argument("--margin", type=float, default=0.25, help="crop margin, as the pack cuts faces")
    p.add_argument("--cache", type=Path, default=Path("runs/realval-cache"), help="where detector boxes are cached")
    p.add_argument("--threads", type=int, default=None, help="ONNX Runtime threads of the detector")
    p.add_argument("--out", type=Path, default=Path("runs/cues.json"), help="JSON report")
    p.set_defaults(func=cmd_cues)
