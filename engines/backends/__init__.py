"""Runtimes behind one small protocol; the artifact's manifest picks which one runs it."""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

import numpy as np

from engines.manifest import Manifest, check_source_onnx


class Backend(Protocol):
    """Runs one model: a float32 NCHW batch in, the model's output tensors (float32, on host) out."""

    name: str  # e.g. "onnxruntime-cpu", "torch-cuda-compiled-reduce-overhead-fp16", "tensorrt-fp16"

    def run(self, batch: np.ndarray) -> list[np.ndarray]: ...


def open_backend(
    artifact: Path, manifest: Manifest, *, threads: int | None = None, device: str | None = None
) -> Backend:
    """Open the runtime that fits ``manifest.format`` ("onnx", "openvino", "torch" or "tensorrt").

    ``device`` is "cpu", "cuda" or None (the artifact's own: ONNX Runtime takes CUDA when its
    CUDA provider is there; torch runs where its manifest says, the fp32 reference on CPU).
    Built artifacts must come from the ONNX beside them (``source_onnx_sha256``).
    """
    check_source_onnx(artifact, manifest)
    if manifest.format == "onnx":
        from engines.backends.openvino_backend import check_accepted

        check_accepted(artifact, manifest)  # an INT8 ONNX serves only with its accepted accuracy check
    if manifest.format == "torch":
        from engines.backends.torch_backend import TorchBackend

        return TorchBackend(artifact, manifest, device=device, threads=threads)
    if manifest.format == "openvino":
        from engines.backends.openvino_backend import OpenVINOBackend

        return OpenVINOBackend(artifact, manifest, threads=threads, device=device)
    if manifest.format == "tensorrt":
        from engines.backends.trt_backend import TensorRTBackend

        return TensorRTBackend(artifact, manifest, device=device, threads=threads)
    from engines.backends.ort import OrtBackend

    return OrtBackend(artifact, manifest, threads=threads, device=device)
