"""Build a TensorRT plan (``NAME.<precision>.engine``) from an ONNX artifact, with its manifest.

Written against the TensorRT 10 Python API, imported inside the functions (``import_tensorrt``
says what to do where it is missing). FP16 by default; INT8 with an entropy calibrator fed by
uint8 RGB images (the trainer's face crops: engines never reads the trainer's HDF5 itself). One
optimisation profile covers batch sizes ``batch_min..batch_max``; a timing cache file beside
the plans makes rebuilds on the same GPU fast. The manifest records the GPU name, its compute
capability and the TensorRT version, which loading checks (engines/devices.py).
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from engines.calibration import calibration_batches, preprocess_for
from engines.devices import cuda_device
from engines.errors import DeviceError, EngineBuildError
from engines.manifest import Manifest, load_manifest, sha256_file, write_manifest

logger = logging.getLogger(__name__)

PRECISIONS = ("fp32", "fp16", "int8")
TIMING_CACHE = "tensorrt.timing-cache"
WORKSPACE_BYTES = 4 << 30


def make_calibrator(trt: Any, batches: Iterator[np.ndarray], *, batch: int, cache: Path) -> Any:
    """An IInt8EntropyCalibrator2 over ``batches`` whose device buffer is a torch CUDA tensor."""
    import torch

    class Calibrator(trt.IInt8EntropyCalibrator2):
        def __init__(self) -> None:
            super().__init__()
            self.batches = batches
            self.buffer: torch.Tensor | None = None  # kept alive while TensorRT reads it
            self.count = 0

        def get_batch_size(self) -> int:
            return batch

        def get_batch(self, names: list[str]) -> list[int] | None:
            nxt = next(self.batches, None)
            if nxt is None:
                return None
            self.buffer = torch.from_numpy(nxt).to("cuda")  # (batch, 3, S, S) float32
            self.count += len(nxt)
            return [int(self.buffer.data_ptr())]

        def read_calibration_cache(self) -> bytes | None:
            return cache.read_bytes() if cache.is_file() else None

        def write_calibration_cache(self, data: Any) -> None:
            cache.write_bytes(bytes(data))

    return Calibrator()


def plan_path(onnx_path: Path, precision: str) -> Path:
    """Where the plan of ``onnx_path`` at ``precision`` goes: ``NAME.<precision>.engine`` beside it."""
    return onnx_path.with_name(f"{onnx_path.stem}.{precision}.engine")


def build_engine(
    onnx_path: Path,
    *,
    precision: str = "fp16",
    batch_min: int = 1,
    batch_opt: int | None = None,
    batch_max: int | None = None,
    calibration: Iterable[np.ndarray] | None = None,
    calibration_limit: int = 512,
    calibration_batch: int = 16,
    workspace_bytes: int = WORKSPACE_BYTES,
) -> tuple[Path, Manifest]:
    """Build ``NAME.<precision>.engine`` beside ``onnx_path`` for this machine's GPU.

    ``calibration`` (INT8 only, required then) yields uint8 RGB images, single or in blocks: face
    crops for a classifier, frames for a detector; they are preprocessed the way the Detector or
    Classifier would. Batch range defaults to the ONNX manifest's; ``batch_opt`` to the middle
    power of two (INT8: the calibration batch, the shape TensorRT calibrates at). The timing cache
    ``tensorrt.timing-cache`` beside the plan is read and updated.
    """
    from engines.backends.trt_backend import import_tensorrt
    from engines.export import framework_versions

    if precision not in PRECISIONS:
        raise EngineBuildError(f"TensorRT precision {precision!r} is not one of {list(PRECISIONS)}")
    if (precision == "int8") != (calibration is not None):
        raise EngineBuildError("INT8 needs calibration images, and only INT8 takes them")
    gpu = cuda_device()
    if gpu is None:
        raise DeviceError("building a TensorRT plan needs a CUDA GPU that torch can see; this machine has none")
    trt = import_tensorrt()
    source = load_manifest(onnx_path)
    if source.format != "onnx":
        raise EngineBuildError(f"{onnx_path} is a {source.format} artifact; TensorRT plans are built from ONNX")
    batch_max = batch_max or source.batch_max
    if precision == "int8":
        if not 1 <= calibration_batch <= batch_max:
            raise EngineBuildError(f"calibration batch {calibration_batch} must lie in 1..{batch_max}")
        # TensorRT calibrates at the opt shape of the first optimisation profile (a separate calibration profile,
        # set_calibration_profile, is deprecated since TensorRT 10.1): opt is the calibration batch.
        batch_opt = calibration_batch
    batch_opt = batch_opt or min(batch_max, max(batch_min, 1 << (batch_max.bit_length() // 2)))
    if not 1 <= batch_min <= batch_opt <= batch_max:
        raise EngineBuildError(
            f"batch sizes must satisfy 1 <= min <= opt <= max, got {batch_min}, {batch_opt}, {batch_max}"
        )
    out = plan_path(onnx_path, precision)
    cache_path = onnx_path.with_name(TIMING_CACHE)
    start = time.perf_counter()

    trt_logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(trt_logger)
    network = builder.create_network(0)  # TensorRT 10: explicit batch is the only mode
    parser = trt.OnnxParser(network, trt_logger)
    if not parser.parse(onnx_path.read_bytes()):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise EngineBuildError(f"TensorRT cannot parse {onnx_path}: {errors}")
    if network.num_inputs != 1:
        raise EngineBuildError(f"{onnx_path}: expected one input, the network has {network.num_inputs}")
    input_name = network.get_input(0).name
    size = source.input_size

    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, workspace_bytes)
    timing_cache = config.create_timing_cache(cache_path.read_bytes() if cache_path.is_file() else b"")
    config.set_timing_cache(timing_cache, ignore_mismatch=False)
    profile = builder.create_optimization_profile()
    profile.set_shape(input_name, (batch_min, 3, size, size), (batch_opt, 3, size, size), (batch_max, 3, size, size))
    config.add_optimization_profile(profile)
    calibrator = None
    if precision in ("fp16", "int8"):
        config.set_flag(trt.BuilderFlag.FP16)  # INT8 layers fall back to FP16, not FP32, where INT8 does not pay
    if precision == "int8":
        preprocess = preprocess_for(source.kind, size)
        batches = calibration_batches(
            calibration, batch=calibration_batch, preprocess=preprocess, limit=calibration_limit
        )
        config.set_flag(trt.BuilderFlag.INT8)
        calib_cache = out.with_name(out.name + ".calib-cache")
        # A cache from an earlier build would skip calibration: stale after a re-export or for other images.
        calib_cache.unlink(missing_ok=True)
        # Held in a local too: the config's reference alone does not keep the Python object alive.
        calibrator = make_calibrator(trt, batches, batch=calibration_batch, cache=calib_cache)
        config.int8_calibrator = calibrator

    plan = builder.build_serialized_network(network, config)
    if plan is None:
        raise EngineBuildError(f"TensorRT could not build {out} from {onnx_path} (its log above says why)")
    if calibrator is not None and calibrator.count == 0:
        raise EngineBuildError(f"INT8 calibration of {out} got no full batch of {calibration_batch} images")
    out.write_bytes(bytes(plan))
    cache_path.write_bytes(bytes(config.get_timing_cache().serialize()))
    versions = framework_versions()
    versions["tensorrt"] = trt.__version__
    manifest = dataclasses.replace(
        source,
        format="tensorrt",
        file=out.name,
        sha256=sha256_file(out),
        batch_min=batch_min,
        batch_max=batch_max,
        precision=precision,
        device=gpu.record(),
        runtime={"batch_opt": batch_opt, "timing_cache": cache_path.name},
        versions=versions,
    )
    write_manifest(out, manifest)
    logger.info("built %s in %.1f s on %s", out, time.perf_counter() - start, gpu.name)
    return out, manifest
