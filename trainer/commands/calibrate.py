"""dfwatch-train calibrate: the model pack's verdict thresholds from held-out real clips and validation fakes.

Runs ``dfwatch watch`` on the ``real_videos`` clips of the ``val`` split (real footage no training
row came from, and not the ``test`` clips that `dfwatch-train validate` counts false alerts on),
as they are and under five broadcast conditions (trainer.conditions; written once into ``--work``),
and on the Celeb-DF hard segments' fakes (validation-only material), keeps the verdict lines in
``--work``, then lets ``dfwatch calibrate`` replay them and write the thresholds into the
classifier's manifest.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path


def cmd_calibrate(args: argparse.Namespace) -> int:
    from trainer import holdout

    real, fake = holdout.calibration_clips(args.media, None if args.no_broadcast else args.work)
    paths = {"real": args.work / "calibrate-real.jsonl", "fake": args.work / "calibrate-fake.jsonl"}
    for kind, videos in (("real", real), ("fake", fake)):
        print(f"calibrate: {len(videos)} {kind} clips through dfwatch watch", file=sys.stderr)
        holdout.pipeline_videos(args.models, videos, extra_args=args.watch_args, save=paths[kind])
    cmd = [
        sys.executable,
        "-m",
        "pipeline.cli",
        "calibrate",
        "--real",
        str(paths["real"]),
        "--fake",
        str(paths["fake"]),
        "--classifier",
        str(args.models / "deepfake_classifier.onnx"),
        "--margin",
        str(args.margin),
        *(["--dry-run"] if args.dry_run else []),
    ]
    return subprocess.run(cmd).returncode


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "calibrate",
        help="set the pack's verdict thresholds from held-out real clips (val split) and validation fakes",
        description=__doc__,
    )
    p.add_argument("--models", type=Path, default=Path("models"), help="model directory (classifier and detector)")
    p.add_argument("--media", type=Path, default=Path("../shared/data"), help="the shared real-media folder")
    p.add_argument("--work", type=Path, default=Path("runs/calibrate"), help="where the verdict lines are kept")
    p.add_argument("--margin", type=float, default=0.05, help="added above the reals' highest quiet threshold")
    p.add_argument("--dry-run", action="store_true", help="print the thresholds, leave the manifest alone")
    p.add_argument(
        "--no-broadcast",
        action="store_true",
        help="the val real clips only as they are, not also under the broadcast conditions",
    )
    p.add_argument(
        "--watch-args", nargs=argparse.REMAINDER, default=[], help="extra `dfwatch watch` flags (last on the line)"
    )
    p.set_defaults(func=cmd_calibrate)
