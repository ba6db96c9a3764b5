"""dfwatch-train validate: measure a model pack on held-out real manipulated faces, as it serves them.

The face sets are scored by the ONNX artifacts directly (``--threads``); the videos go through the service in
process (pipeline.clips), as `dfwatch watch` serves them (``--detector``, ``--threads``).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

logger = logging.getLogger(__name__)


def cmd_validate(args: argparse.Namespace) -> int:
    from engines import Classifier, Detector
    from trainer.pack import holdout

    classifier = Classifier(args.models / "deepfake_classifier.onnx", threads=args.threads)
    detector = Detector(args.models / "face_detector.onnx", threads=args.threads)
    report: dict = {
        "classifier": str(args.models / "deepfake_classifier.onnx"),
        "classifier_sha256": classifier.manifest.sha256,
        "input_size": classifier.input_size,
        "thresholds": classifier.manifest.thresholds,
    }
    report["face_sets"] = holdout.face_sets(classifier, detector, args.media, cache=args.cache)
    for name, m in report["face_sets"].items():
        print(
            f"{name:16s} {m['faces']:4d} faces {m['clips']:4d} clips: face AUC {m['face_auc']} (size-matched "
            f"{m['face_auc_size_matched']}), clip AUC {m['clip_auc']}",
            file=sys.stderr,
        )
    if not args.skip_videos:
        report["video_sets"] = holdout.video_sets(
            args.models, args.media, split=args.real_split, work=args.work, detector=args.detector, threads=args.threads
        )
        report["alerts"] = holdout.alert_summary(report["video_sets"])
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1))
    if not args.skip_videos:
        markdown = holdout.report_markdown(report)
        args.out.with_suffix(".md").write_text(markdown)
        print(markdown, file=sys.stderr, end="")
    print(
        f"validate: wrote {args.out}" + ("" if args.skip_videos else f" and {args.out.with_suffix('.md')}"),
        file=sys.stderr,
    )
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "validate",
        help="measure the model pack on held-out real manipulated faces: AUC per set, alerts at the shipped "
        "thresholds through the full service",
    )
    p.add_argument("--models", type=Path, default=Path("models"), help="model directory (classifier and detector)")
    p.add_argument("--media", type=Path, default=Path("../shared/data"), help="the shared real-media folder")
    p.add_argument("--out", type=Path, default=Path("runs/validate.json"), help="JSON report (and .md beside it)")
    p.add_argument("--cache", type=Path, default=Path("runs/realval-cache"), help="cache of the detector's boxes")
    p.add_argument(
        "--work",
        type=Path,
        default=Path("runs/validate-work"),
        help="where clips made from the media (DeepFaceLive halves, broadcast variants) are kept",
    )
    p.add_argument(
        "--real-split",
        default="test",
        choices=("test", "val"),
        help="which held-out real_videos clips count false alerts (default: test)",
    )
    p.add_argument("--skip-videos", action="store_true", help="face sets only (no full-service runs)")
    add_service_args(p)
    p.set_defaults(func=cmd_validate)


def add_service_args(p: argparse.ArgumentParser) -> None:
    """The flags of the in-process service runs (validate's videos, calibrate's clips): the [models] fields of
    `dfwatch watch` they may set (pipeline.config.ModelsConfig checks them); everything else is watch's default."""
    p.add_argument("--threads", type=int, metavar="N", help="ONNX Runtime threads (default: all cores)")
    p.add_argument(
        "--detector",
        type=Path,
        metavar="PATH",
        help="detector artifact the service serves (default, as `dfwatch watch`: the OpenVINO INT8 detector in "
        "MODELS where it opens, else MODELS/face_detector.onnx)",
    )
