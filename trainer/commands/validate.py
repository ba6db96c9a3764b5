"""dfwatch-train validate: measure a model pack on held-out real manipulated faces, as it serves them.

The face sets are scored by the ONNX artifacts directly (``--threads``); the videos go through the service in
process (pipeline.clips), as `dfwatch watch` serves them (``--detector``, ``--threads``).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from dataclasses import dataclass
from pathlib import Path

from pipeline.errors import ConfigError
from pipeline.flags import add_config_file, add_config_flags, config_from_args
from pipeline.ranges import check_ranges, ranged

logger = logging.getLogger(__name__)


REAL_SPLITS = ("test", "val")  # the held-out real_videos splits (val calibrates, test is reported)


@dataclass(frozen=True)
class ServiceOptions:
    """The pack and the media that validate and calibrate run through the service in process. ``threads`` and
    ``detector`` are the [models] fields of `dfwatch watch` the service runs may set (ModelsConfig checks them)."""

    models: Path = Path("models")  # model directory (classifier and detector)
    media: Path = Path("../shared/data")  # the shared real-media folder
    threads: int | None = ranged(None, 1, 1024)  # ONNX Runtime threads; None = all cores
    # detector artifact the service serves; None = as `dfwatch watch`: the OpenVINO INT8 detector in MODELS where it
    # opens, else MODELS/face_detector.onnx
    detector: Path | None = None


@dataclass(frozen=True)
class ValidateOptions(ServiceOptions):
    """`dfwatch-train validate`: the pack, the media and where the report goes."""

    out: Path = Path("runs/validate.json")  # JSON report (and .md beside it)
    cache: Path = Path("runs/realval-cache")  # cache of the detector's boxes
    # where clips made from the media (DeepFaceLive halves, broadcast variants) are kept
    work: Path = Path("runs/validate-work")
    real_split: str = "test"  # which held-out real_videos clips count false alerts
    skip_videos: bool = False  # face sets only (no full-service runs)

    def __post_init__(self) -> None:
        check_ranges(self)
        if self.real_split not in REAL_SPLITS:
            raise ConfigError(f"real_split must be one of {list(REAL_SPLITS)}, got {self.real_split!r}")


def cmd_validate(args: argparse.Namespace) -> int:
    from engines import Classifier, Detector
    from trainer.pack import holdout

    o = config_from_args(ValidateOptions, args, file=args.config)
    classifier = Classifier(o.models / "deepfake_classifier.onnx", threads=o.threads)
    detector = Detector(o.models / "face_detector.onnx", threads=o.threads)
    report: dict = {
        "classifier": str(o.models / "deepfake_classifier.onnx"),
        "classifier_sha256": classifier.manifest.sha256,
        "input_size": classifier.input_size,
        "thresholds": classifier.manifest.thresholds,
    }
    report["face_sets"] = holdout.face_sets(classifier, detector, o.media, cache=o.cache)
    for name, m in report["face_sets"].items():
        print(
            f"{name:16s} {m['faces']:4d} faces {m['clips']:4d} clips: face AUC {m['face_auc']} (size-matched "
            f"{m['face_auc_size_matched']}), clip AUC {m['clip_auc']}",
            file=sys.stderr,
        )
    if not o.skip_videos:
        report["video_sets"] = holdout.video_sets(
            o.models, o.media, split=o.real_split, work=o.work, detector=o.detector, threads=o.threads
        )
        report["alerts"] = holdout.alert_summary(report["video_sets"])
    o.out.parent.mkdir(parents=True, exist_ok=True)
    o.out.write_text(json.dumps(report, indent=1))
    if not o.skip_videos:
        markdown = holdout.report_markdown(report)
        o.out.with_suffix(".md").write_text(markdown)
        print(markdown, file=sys.stderr, end="")
    print(
        f"validate: wrote {o.out}" + ("" if o.skip_videos else f" and {o.out.with_suffix('.md')}"),
        file=sys.stderr,
    )
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "validate",
        help="measure the model pack on held-out real manipulated faces: AUC per set, alerts at the shipped "
        "thresholds through the full service",
    )
    add_config_flags(p, ValidateOptions, choices={"real_split": REAL_SPLITS})
    add_config_file(p, "the validate options")
    p.set_defaults(func=cmd_validate)
