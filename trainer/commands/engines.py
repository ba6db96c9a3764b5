"""dfwatch-train engines: rebuild every artifact in a model directory for this machine.

ONNX is re-verified always (against the fp32 torch reference ``NAME.pt2`` beside it), TensorRT
plans are built where TensorRT and a GPU are (``--tensorrt`` demands them, ``--no-tensorrt``
skips), torch variants where asked (``--torch``). The build logic is engines/rebuild.py; this
module reads the options and the INT8 calibration crops from the trainer's face store.
"""

from __future__ import annotations

import argparse
import logging
import math
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipeline.errors import ConfigError
from pipeline.flags import add_config_file, add_config_flags, config_from_args
from pipeline.ranges import check_ranges, ranged

logger = logging.getLogger(__name__)

CALIB_BLOCK = 256
CHOICES = {
    "trt_precision": ("fp16", "fp32"),
    "torch_precision": ("fp32", "fp16", "bf16"),
    "torch_compile": ("none", "default", "reduce-overhead", "max-autotune"),
    "device": ("cpu", "cuda"),
}


@dataclass(frozen=True)
class EngineOptions:
    """`dfwatch-train engines`: which artifacts of which model directory are built, and how. ``--config`` is a TOML
    table of these fields."""

    models: Path = Path("models")  # model directory
    # TensorRT plans; none = where TensorRT and a GPU are, on = fail without them, off = none
    tensorrt: bool | None = None
    trt_precision: str = "fp16"  # TensorRT precision
    int8_calib: Path | None = None  # face store (HDF5) whose crops calibrate an INT8 classifier plan
    calib_samples: int = ranged(512, 1, math.inf)  # crops used for INT8 calibration
    torch: bool = False  # build torch variants NAME.<precision>.pt2
    torch_precision: str | None = None  # precision of the torch variants; none = fp16 on CUDA, fp32 on CPU
    # torch.compile mode of the variant ("none": eager); not given: reduce-overhead (CUDA graphs) on CUDA, default
    # on CPU
    torch_compile: str | None = None
    device: str | None = None  # device for torch variants; none = cuda if present
    openvino: bool = False  # build OpenVINO fp32 artifacts NAME.fp32.xml (CPU)
    # build INT8 artifacts for CPU, NAME.int8.xml (OpenVINO NNCF) and NAME.int8.onnx (ONNX Runtime), calibrated on
    # media and kept only within 0.01 of fp32 on held-out data
    int8: bool = False
    media: Path = Path("../shared/data")  # shared media for INT8 calibration and its check
    force: bool = False  # rebuild artifacts that are up to date too

    def __post_init__(self) -> None:
        check_ranges(self)
        for name, valid in CHOICES.items():
            if getattr(self, name) not in (*valid, None):
                raise ConfigError(f"{name} must be one of {list(valid)}, got {getattr(self, name)!r}")


def calibration_crops(path: Path, *, limit: int):
    """A function input_size -> iterator of uint8 crop blocks from the store's training split (evenly spread)."""

    def crops_for(input_size: int) -> Iterator[np.ndarray]:
        from trainer.store import FaceStore

        with FaceStore(path) as store:
            if store.crop_size != input_size:
                raise ValueError(
                    f"{path} holds {store.crop_size}px crops, the classifier takes {input_size}px; "
                    "calibrate with a store built at the classifier's input size"
                )
            rows = store.indices("train", originals_only=True)
            if len(rows) == 0:
                raise ValueError(f"{path} has no training crops to calibrate INT8 with")
            rows = rows[np.linspace(0, len(rows) - 1, min(limit, len(rows))).astype(np.int64)]
            for i in range(0, len(rows), CALIB_BLOCK):
                yield store.crops(rows[i : i + CALIB_BLOCK])  # (n, S, S, 3) uint8

    return crops_for


def cmd_engines(args: argparse.Namespace) -> int:
    """Verify and rebuild the artifacts of ``--models``; print the summary table."""
    from engines.devices import cuda_device
    from engines.rebuild import CpuPlan, TensorRTPlan, TorchPlan, format_table, rebuild

    o = config_from_args(EngineOptions, args, file=args.config)
    device = o.device or ("cuda" if cuda_device() is not None else "cpu")
    torch_plan = None
    if o.torch:
        precision = o.torch_precision or ("fp16" if device == "cuda" else "fp32")
        mode = o.torch_compile or ("reduce-overhead" if device == "cuda" else "default")
        torch_plan = TorchPlan(precision=precision, compile_mode=None if mode == "none" else mode, device=device)
    if o.int8_calib is not None and o.tensorrt is False:
        raise ValueError("--int8-calib is for TensorRT INT8 plans; it cannot go with --no-tensorrt")
    if o.int8_calib is not None and not o.int8_calib.is_file():
        # Checked here: read later inside TensorRT's calibrator callback, the error would be lost in its log.
        raise ValueError(f"--int8-calib {o.int8_calib} does not exist (a face store from dfwatch-train dataset)")
    trt_plan = None
    if o.tensorrt is not False:
        calibration = calibration_crops(o.int8_calib, limit=o.calib_samples) if o.int8_calib else None
        trt_plan = TensorRTPlan(
            required=bool(o.tensorrt),
            precision=o.trt_precision,
            calibration=calibration,
            calibration_limit=o.calib_samples,
        )
    cpu_plan = None
    if o.openvino or o.int8:
        cpu_plan = CpuPlan(openvino=o.openvino)
        if o.int8:
            from trainer.pack.int8 import acceptance, calibration_images

            if not (o.media / "widerface").is_dir():
                raise ValueError(
                    f"--int8 calibrates and checks on the shared media: {o.media / 'widerface'} "
                    "is missing (--media DIR, the ../shared/data layout)"
                )
            cpu_plan = CpuPlan(
                openvino=o.openvino,
                calibration_limit=o.calib_samples,
                calibration=lambda m: calibration_images(o.media, m, limit=o.calib_samples),
                accept=acceptance(o.media),
            )
    rows = rebuild(
        o.models, tensorrt=trt_plan, torch=torch_plan, cpu=cpu_plan, force=o.force, progress=not args.no_progress
    )
    print(format_table(rows))
    built = [r for r in rows if r.size_bytes is not None]
    print(
        f"engines: {len(built)} artifacts verified or built in {o.models} ({sum(r.build_s for r in rows):.0f} s)",
        file=sys.stderr,
    )
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("engines", help="rebuild every artifact of a model directory for this machine")
    add_config_flags(p, EngineOptions, choices=CHOICES)
    add_config_file(p, "the engines options")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_engines)
