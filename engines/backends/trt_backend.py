"""TensorRT backend: a serialized plan (``.engine``) run with ``execute_async_v3``.

Written against the TensorRT 10 Python API. Device buffers are torch CUDA tensors (torch owns the
CUDA context; no pycuda). The manifest is checked against this machine's GPU before TensorRT is
even imported, so a plan built on another GPU fails with a message that says how to rebuild.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from engines.backends._staging import HostStaging
from engines.devices import check_device_option, check_gpu_match, cuda_device
from engines.errors import BackendUnavailableError, DeviceError, ManifestMismatchError, ModelLoadError, rebuild_hint
from engines.manifest import Manifest

logger = logging.getLogger(__name__)


INSTALL_HINT = "pip install 'tensorrt>=10,<11'"  # TensorRT 11 drops BuilderFlag.FP16/INT8 and the calibrators


def import_tensorrt() -> Any:
    """``import tensorrt`` (version 10), or BackendUnavailableError that says what to use instead."""
    try:
        import tensorrt
    except ImportError as exc:
        raise BackendUnavailableError(
            f"TensorRT is not installed in this Python ({exc}); run the ONNX or torch artifact instead, "
            f"or install TensorRT 10 on the GPU machine: {INSTALL_HINT}"
        ) from exc
    check_tensorrt_version(tensorrt.__version__)
    return tensorrt


def check_tensorrt_version(version: str) -> None:
    """dfwatch's TensorRT code is written for TensorRT 10; BackendUnavailableError for any other major version."""
    major = version.split(".", 1)[0]
    if major != "10":
        raise BackendUnavailableError(
            f"TensorRT {version} is installed, dfwatch's TensorRT code is written for TensorRT 10 (11 removed "
            f"BuilderFlag.FP16/INT8 and the INT8 calibrators): {INSTALL_HINT}, or run the ONNX or torch artifact"
        )


def torch_dtype(trt: Any, dtype: Any) -> Any:
    import torch

    table = {
        trt.DataType.FLOAT: torch.float32,
        trt.DataType.HALF: torch.float16,
        trt.DataType.INT8: torch.int8,
        trt.DataType.INT32: torch.int32,
        trt.DataType.BOOL: torch.bool,
    }
    if hasattr(trt.DataType, "BF16"):
        table[trt.DataType.BF16] = torch.bfloat16
    if hasattr(trt.DataType, "INT64"):
        table[trt.DataType.INT64] = torch.int64
    return table[dtype]


class TensorRTBackend:
    def __init__(
        self, artifact: Path, manifest: Manifest, *, device: str | None = None, threads: int | None = None
    ) -> None:
        check_device_option(device)
        if device == "cpu":
            raise DeviceError(f"{artifact} is a TensorRT plan: it runs on CUDA only, not on device 'cpu'")
        check_gpu_match(manifest, artifact, cuda_device())
        trt = import_tensorrt()
        built_with = manifest.versions.get("tensorrt")
        if built_with is not None and built_with != trt.__version__:
            raise ManifestMismatchError(
                f"{artifact} was built with TensorRT {built_with}, this machine has {trt.__version__}; "
                f"{rebuild_hint(artifact, manifest.format)}"
            )
        import torch

        self.torch = torch
        self.trt = trt
        self.logger = trt.Logger(trt.Logger.WARNING)
        self.runtime = trt.Runtime(self.logger)
        self.engine = self.runtime.deserialize_cuda_engine(artifact.read_bytes())
        if self.engine is None:
            raise ModelLoadError(f"TensorRT cannot deserialize {artifact}; {rebuild_hint(artifact, manifest.format)}")
        self.context = self.engine.create_execution_context()
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        inputs = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        if len(inputs) != 1:
            raise ModelLoadError(f"{artifact}: expected one input tensor, the plan has {inputs}")
        self.input_name = inputs[0]
        self.output_names = [n for n in names if n not in inputs]
        self.input_dtype = torch_dtype(trt, self.engine.get_tensor_dtype(self.input_name))
        self.output_dtypes = [torch_dtype(trt, self.engine.get_tensor_dtype(n)) for n in self.output_names]
        self.stream = torch.cuda.Stream()
        self.staging = HostStaging()
        self.name = f"tensorrt-{manifest.precision}"
        logger.debug("%s: %s on %s (%s)", manifest.kind, artifact, self.name, torch.cuda.get_device_name())

    def run(self, batch: np.ndarray) -> list[np.ndarray]:
        torch = self.torch
        with torch.cuda.stream(self.stream):
            x = self.staging.to_device(batch, "cuda").to(self.input_dtype)  # (N, 3, S, S)
            self.context.set_input_shape(self.input_name, tuple(x.shape))
            self.context.set_tensor_address(self.input_name, x.data_ptr())
            outputs = []
            for name, dtype in zip(self.output_names, self.output_dtypes):
                shape = tuple(self.context.get_tensor_shape(name))  # resolved from the input shape
                out = torch.empty(shape, dtype=dtype, device="cuda")
                self.context.set_tensor_address(name, out.data_ptr())
                outputs.append(out)
            if not self.context.execute_async_v3(self.stream.cuda_stream):
                raise ModelLoadError(f"TensorRT execute_async_v3 failed for a batch of shape {tuple(x.shape)}")
            host = [o.float().cpu() for o in outputs]  # synchronises with the stream
        return [h.numpy() for h in host]
