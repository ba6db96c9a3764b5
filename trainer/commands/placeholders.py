"""dfwatch-train placeholders: untrained networks so the service runs end to end before real weights."""

from __future__ import annotations

import argparse
import logging
import sys
from dataclasses import dataclass
from pathlib import Path

from pipeline.errors import ConfigError
from pipeline.flags import add_config_file, add_config_flags, config_from_args
from pipeline.ranges import check_ranges, ranged
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


DETECTOR_SIZES = (320, 416, 640)  # the detector input sides a placeholder is exported at


@dataclass(frozen=True)
class PlaceholderOptions:
    """`dfwatch-train placeholders`: where the untrained networks go and their shapes."""

    out: Path = Path("models")  # model directory
    detector_size: int = ranged(640, 320, 640, unit="px")  # detector input side: 320, 416 or 640
    classifier: str = "paper_cnn"  # registered classifier architecture
    classifier_size: int = ranged(256, 8, 4096, unit="px")  # classifier input side
    crop_margin: float = ranged(0.25, 0, 2)  # crop margin, fraction of the box side
    seed: int = 0  # torch seed for the untrained weights

    def __post_init__(self) -> None:
        check_ranges(self)
        if self.detector_size not in DETECTOR_SIZES:
            raise ConfigError(f"detector_size must be one of {list(DETECTOR_SIZES)}, got {self.detector_size}")


def cmd_placeholders(args: argparse.Namespace) -> int:
    """Export untrained detector and classifier networks, with manifests and model cards."""
    o = config_from_args(PlaceholderOptions, args, file=args.config)
    offline_ultralytics()
    import torch

    from engines.export import export_classifier, export_detector
    from trainer.models import create_model

    out = o.out
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(o.seed)
    det_path = out / "face_detector.onnx"
    det, det_diff = export_detector("yolov8n.yaml", det_path, input_size=o.detector_size, placeholder=True)
    logger.info("wrote %s (placeholder, max |onnx - torch| = %.2g px)", det_path, det_diff)
    cls_path = out / "deepfake_classifier.onnx"
    model = create_model(o.classifier, input_size=o.classifier_size).eval()
    cls, cls_diff = export_classifier(
        model,
        cls_path,
        name=o.classifier,
        input_size=o.classifier_size,
        crop_margin=o.crop_margin,
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
            seed=o.seed,
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
    add_config_flags(p, PlaceholderOptions, choices={"detector_size": DETECTOR_SIZES})
    add_config_file(p, "the placeholders options")
    p.set_defaults(func=cmd_placeholders)
