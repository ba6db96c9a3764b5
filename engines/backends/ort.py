"""ONNX Runtime backend: the embedded default (CPU), CUDA provider when present.

``device=None`` takes the CUDA provider when this onnxruntime build has one and CPU otherwise;
``"cpu"`` forces CPU; ``"cuda"`` fails unless the CUDA provider is there. When the CUDA provider
is listed but the session still lands on CPU (missing CUDA/cuDNN libraries), that fallback is
logged once per process, with the reason. On CUDA, outputs are bound to device memory with IO
binding (one copy in, one copy out, no per-call output allocation through the Python layer);
on CPU plain ``session.run`` is as fast and stays.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import onnxruntime as ort

from engines.devices import check_device_option
from engines.errors import REBUILD_HINT, DeviceError, ModelLoadError
from engines.manifest import Manifest

logger = logging.getLogger(__name__)

CUDA = "CUDAExecutionProvider"
CPU = "CPUExecutionProvider"
_fallback_logged = False


def providers_for(device: str | None, available: list[str]) -> list[str]:
    """Execution providers to ask for, in order of preference."""
    check_device_option(device)
    if device == "cpu":
        return [CPU]
    if device == "cuda":
        if CUDA not in available:
            raise DeviceError(
                f"device 'cuda' was asked for, but this onnxruntime has no {CUDA} (providers: {available}); "
                "install onnxruntime-gpu or use device='cpu'"
            )
        return [CUDA, CPU]
    return [p for p in (CUDA, CPU) if p in available]


class OrtBackend:
    def __init__(
        self, artifact: Path, manifest: Manifest, *, threads: int | None = None, device: str | None = None
    ) -> None:
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        # No busy-waiting between calls: its threads share the cores with the decoders and the other stages.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.add_session_config_entry("session.inter_op.allow_spinning", "0")
        if threads:
            options.intra_op_num_threads = threads
            options.inter_op_num_threads = 1
        providers = providers_for(device, ort.get_available_providers())
        try:
            self.session = ort.InferenceSession(str(artifact), options, providers=providers)
        except Exception as exc:  # onnxruntime raises its own untyped errors
            raise ModelLoadError(f"ONNX Runtime cannot load {artifact}: {exc}; {REBUILD_HINT}") from exc
        self.input_name = self.session.get_inputs()[0].name
        self.output_names = [o.name for o in self.session.get_outputs()]
        self.cuda = self.session.get_providers()[0] == CUDA
        if CUDA in providers and not self.cuda:
            if device == "cuda":
                raise DeviceError(f"ONNX Runtime could not start {CUDA} for {artifact} (see its log above)")
            _log_fallback_once(artifact)
        self.name = (
            "onnxruntime-"
            + ("cuda" if self.cuda else "cpu")
            + ("" if manifest.precision == "fp32" else f"-{manifest.precision}")
        )
        logger.debug("%s: %s on %s", manifest.kind, artifact, self.name)

    def run(self, batch: np.ndarray) -> list[np.ndarray]:
        if not self.cuda:
            return self.session.run(self.output_names, {self.input_name: batch})
        binding = self.session.io_binding()
        binding.bind_cpu_input(self.input_name, np.ascontiguousarray(batch))
        for name in self.output_names:
            binding.bind_output(name, "cuda")
        self.session.run_with_iobinding(binding)
        return binding.copy_outputs_to_cpu()


def _log_fallback_once(artifact: Path) -> None:
    global _fallback_logged
    if not _fallback_logged:
        _fallback_logged = True
        logger.warning(
            "ONNX Runtime lists %s but could not start it for %s (CUDA or cuDNN libraries missing or not "
            "matching this onnxruntime build; its own log says which): running on CPU",
            CUDA,
            artifact,
        )
