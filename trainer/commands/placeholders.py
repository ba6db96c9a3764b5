"""dfwatch-train placeholders: untrained networks so the service runs end to end before real weights."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from trainer.commands._common import offline_ultralytics

logger = logging.getLogger(__name__)

PLACEHOLDER_CARD = """# {file} (PLACEHOLDER)

**This is an untrained network.** Its outputs mean nothing: dfwatch runs end to end with it,
but every face score and verdict it produces is noise. It exists so the service, its tests
and its interfaces work before the trained default model pack lands.

- kind: {kind}; architecture: {name}; input {size}x{size}; format ONNX (opset 17), fp32
- built by: `dfwatch-train placeholders --out {out}` (weights from `torch.manual_seed({seed})`)
- manifest: `{file}.json` (sha256 of the file, thresholds, versions)
"""


def cmd_placeholders(args: argparse.Namespace) -> int:
    """Export untrained detector and classifier networks, with manifests and model cards."""
    offline_ultralytics()
    import torch

    from engines.export import export_classifier, export_detector
    from trainer.models import create_model

    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(args.seed)
    det_path = out / "face_detector.onnx"
    det, det_diff = export_detector("yolov8n.yaml", det_path, input_size=args.detector_size, placeholder=True)
    logger.info("wrote %s (placeholder, max |onnx - torch| = %.2g px)", det_path, det_diff)
    cls_path = out / "deepfake_classifier.onnx"
    model = create_model(args.classifier, input_size=args.classifier_size).eval()
    cls, cls_diff = export_classifier(
        model,
        cls_path,
        name=args.classifier,
        input_size=args.classifier_size,
        crop_margin=args.crop_margin,
        placeholder=True,
    )
    logger.info("wrote %s (placeholder, max |onnx - torch| = %.2g)", cls_path, cls_diff)
    for path, manifest in ((det_path, det), (cls_path, cls)):
        card = PLACEHOLDER_CARD.format(
            file=path.name,
            kind=manifest.kind,
            name=manifest.name,
            size=manifest.input_size,
            out=out,
            seed=args.seed,
        )
        path.with_suffix(".md").write_text(card)
    print(
        f"placeholders: {det_path} ({det_path.stat().st_size >> 10} KiB), "
        f"{cls_path} ({cls_path.stat().st_size >> 10} KiB); outputs are untrained noise",
        file=sys.stderr,
    )
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("placeholders", help="export untrained networks so the service runs end to end")
    p.add_argument("--out", type=Path, default=Path("models"), help="model directory (default: models)")
    p.add_argument("--detector-size", type=int, default=640, choices=(320, 416, 640), help="detector input side")
    p.add_argument("--classifier", default="paper_cnn", help="registered classifier architecture")
    p.add_argument("--classifier-size", type=int, default=256, help="classifier input side")
    p.add_argument("--crop-margin", type=float, default=0.25, help="crop margin, fraction of the box side")
    p.add_argument("--seed", type=int, default=0, help="torch seed for the untrained weights")
    p.set_defaults(func=cmd_placeholders)
