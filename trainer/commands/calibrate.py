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
from dataclasses import dataclass
from pathlib import Path

from pipeline.flags import add_config_file, add_config_flags, config_from_args
from pipeline.ranges import check_ranges, ranged
from trainer.commands.validate import ServiceOptions


@dataclass(frozen=True)
class CalibrateOptions(ServiceOptions):
    """`dfwatch-train calibrate`: the pack, the media and the margin."""

    # where the broadcast variants of the real clips are written (kept for the next run)
    work: Path = Path("runs/calibrate")
    margin: float = ranged(0.05, 0, 1)  # added above the reals' highest quiet threshold
    dry_run: bool = False  # print the thresholds, leave the manifest alone
    broadcast: bool = True  # the val real clips also under the broadcast conditions, not only as they are

    def __post_init__(self) -> None:
        check_ranges(self)


def cmd_calibrate(args: argparse.Namespace) -> int:
    from pipeline.calibrate import calibrate, write_calibration
    from trainer.pack import holdout

    o = config_from_args(CalibrateOptions, args, file=args.config)
    real, fake = holdout.calibration_clips(o.media, o.work if o.broadcast else None)
    print(f"calibrate: {len(real)} real and {len(fake)} fake clips through the service", file=sys.stderr)
    run = holdout.pipeline_videos(o.models, [*real, *fake], detector=o.detector, threads=o.threads)
    result = calibrate(
        [run.frame_scores[str(p)] for p in real], [run.frame_scores[str(p)] for p in fake], margin=o.margin
    )
    for line in result.describe():
        print(line, file=sys.stderr)
    if not o.dry_run:
        provenance = {"real": [str(p) for p in real], "fake": [str(p) for p in fake], "margin": o.margin}
        for artifact in write_calibration(o.models / "deepfake_classifier.onnx", result, provenance=provenance):
            print(
                f"calibrate: wrote verdict_enter, verdict_leave, verdict_frames into {artifact}.json", file=sys.stderr
            )
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "calibrate",
        help="set the pack's verdict thresholds from held-out real clips (val split) and validation fakes",
        description=__doc__,
    )
    add_config_flags(p, CalibrateOptions)
    add_config_file(p, "the calibrate options")
    p.set_defaults(func=cmd_calibrate)
