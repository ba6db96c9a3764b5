"""dfwatch-train calibrate: the model pack's verdict thresholds from held-out real clips and validation fakes.

Runs the service in process (pipeline.clips, as `dfwatch watch` serves the pack) on the ``real_videos``
clips of the ``val`` split (real footage no training row came from, and not the ``test`` clips that
`dfwatch-train validate` counts false alerts on), as they are and under five broadcast conditions
(trainer.pack.conditions; written once into ``--work``), and on the Celeb-DF hard segments' fakes
(validation-only material); then sets the thresholds from their stream scores as `dfwatch calibrate`
does (pipeline.calibrate) and writes them into the classifier's manifest.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from trainer.commands.validate import add_service_args


def cmd_calibrate(args: argparse.Namespace) -> int:
    from pipeline.calibrate import calibrate, write_calibration
    from trainer.pack import holdout

    real, fake = holdout.calibration_clips(args.media, None if args.no_broadcast else args.work)
    print(f"calibrate: {len(real)} real and {len(fake)} fake clips through the service", file=sys.stderr)
    run = holdout.pipeline_videos(args.models, [*real, *fake], detector=args.detector, threads=args.threads)
    result = calibrate(
        [run.frame_scores[str(p)] for p in real], [run.frame_scores[str(p)] for p in fake], margin=args.margin
    )
    for line in result.describe():
        print(line, file=sys.stderr)
    if not args.dry_run:
        classifier = args.models / "deepfake_classifier.onnx"
        provenance = {"real": [str(p) for p in real], "fake": [str(p) for p in fake], "margin": args.margin}
        write_calibration(classifier, result, provenance=provenance)
        print(f"calibrate: wrote verdict_enter, verdict_leave, verdict_frames into {classifier}.json", file=sys.stderr)
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "calibrate",
        help="set the pack's verdict thresholds from held-out real clips (val split) and validation fakes",
        description=__doc__,
    )
    p.add_argument("--models", type=Path, default=Path("models"), help="model directory (classifier and detector)")
    p.add_argument("--media", type=Path, default=Path("../shared/data"), help="the shared real-media folder")
    p.add_argument(
        "--work",
        type=Path,
        default=Path("runs/calibrate"),
        help="where the broadcast variants of the real clips are written (kept for the next run)",
    )
    p.add_argument("--margin", type=float, default=0.05, help="added above the reals' highest quiet threshold")
    p.add_argument("--dry-run", action="store_true", help="print the thresholds, leave the manifest alone")
    p.add_argument(
        "--no-broadcast",
        action="store_true",
        help="the val real clips only as they are, not also under the broadcast conditions",
    )
    add_service_args(p)
    p.set_defaults(func=cmd_calibrate)
