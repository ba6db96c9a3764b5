"""dfwatch-train engines: rebuild every artifact in a model directory for this machine.

ONNX is re-verified always (against the fp32 torch reference ``NAME.pt2`` beside it), TensorRT
plans are built where TensorRT and a GPU are (``--tensorrt`` demands them, ``--no-tensorrt``
skips), torch variants where asked (``--torch``). The build logic is engines/rebuild.py; this
module reads the options and the INT8 calibration crops from the trainer's face store.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np

logger = logging.getLogger(__name__)

CALIB_BLOCK = 256


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

    device = args.device or ("cuda" if cuda_device() is not None else "cpu")
    torch_plan = None
    if args.torch:
        precision = args.torch_precision or ("fp16" if device == "cuda" else "fp32")
        mode = args.torch_compile or ("reduce-overhead" if device == "cuda" else "default")
        torch_plan = TorchPlan(precision=precision, compile_mode=None if mode == "none" else mode, device=device)
    if args.int8_calib is not None and args.tensorrt is False:
        raise ValueError("--int8-calib is for TensorRT INT8 plans; it cannot go with --no-tensorrt")
    if args.int8_calib is not None and not args.int8_calib.is_file():
        # Checked here: read later inside TensorRT's calibrator callback, the error would be lost in its log.
        raise ValueError(f"--int8-calib {args.int8_calib} does not exist (a face store from dfwatch-train dataset)")
    trt_plan = None
    if args.tensorrt is not False:
        calibration = calibration_crops(args.int8_calib, limit=args.calib_samples) if args.int8_calib else None
        trt_plan = TensorRTPlan(
            required=bool(args.tensorrt),
            precision=args.trt_precision,
            calibration=calibration,
            calibration_limit=args.calib_samples,
        )
    cpu_plan = None
    if args.openvino or args.int8:
        cpu_plan = CpuPlan(openvino=args.openvino)
        if args.int8:
            from trainer.pack.int8 import acceptance, calibration_images

            if not (args.media / "widerface").is_dir():
                raise ValueError(
                    f"--int8 calibrates and checks on the shared media: {args.media / 'widerface'} "
                    "is missing (--media DIR, the ../shared/data layout)"
                )
            cpu_plan = CpuPlan(
                openvino=args.openvino,
                calibration_limit=args.calib_samples,
                calibration=lambda m: calibration_images(args.media, m, limit=args.calib_samples),
                accept=acceptance(args.media),
            )
    rows = rebuild(
        args.models, tensorrt=trt_plan, torch=torch_plan, cpu=cpu_plan, force=args.force, progress=not args.no_progress
    )
    print(format_table(rows))
    built = [r for r in rows if r.size_bytes is not None]
    print(
        f"engines: {len(built)} artifacts verified or built in {args.models} ({sum(r.build_s for r in rows):.0f} s)",
        file=sys.stderr,
    )
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("engines", help="rebuild every artifact of a model directory for this machine")
    p.add_argument("--models", type=Path, default=Path("models"), help="model directory (default: models)")
    p.add_argument(
        "--tensorrt",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="TensorRT plans: default where TensorRT and a GPU are; --tensorrt fails without them",
    )
    p.add_argument("--trt-precision", choices=("fp16", "fp32"), default="fp16", help="TensorRT precision")
    p.add_argument("--int8-calib", type=Path, help="face store (HDF5) whose crops calibrate an INT8 classifier plan")
    p.add_argument("--calib-samples", type=int, default=512, help="crops used for INT8 calibration")
    p.add_argument("--torch", action="store_true", help="build torch variants NAME.<precision>.pt2")
    p.add_argument("--torch-precision", choices=("fp32", "fp16", "bf16"), help="default: fp16 on CUDA, fp32 on CPU")
    p.add_argument(
        "--torch-compile",
        choices=("none", "default", "reduce-overhead", "max-autotune"),
        help="torch.compile mode of the variant (default: reduce-overhead = CUDA graphs on CUDA, default on CPU)",
    )
    p.add_argument("--device", choices=("cpu", "cuda"), help="device for torch variants (default: cuda if present)")
    p.add_argument("--openvino", action="store_true", help="build OpenVINO fp32 artifacts NAME.fp32.xml (CPU)")
    p.add_argument(
        "--int8",
        action="store_true",
        help="build INT8 artifacts for CPU, NAME.int8.xml (OpenVINO NNCF) and NAME.int8.onnx (ONNX "
        "Runtime), calibrated on --media and kept only within 0.01 of fp32 on held-out data",
    )
    p.add_argument(
        "--media",
        type=Path,
        default=Path("../shared/data"),
        help="shared media for INT8 calibration and its check (default: ../shared/data)",
    )
    p.add_argument("--force", action="store_true", help="rebuild artifacts that are up to date too")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_engines)
