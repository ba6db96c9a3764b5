"""ONNX Runtime backend: the embedded default (CPU), CUDA provider when present."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import onnxruntime as ort

from engines.errors import REBUILD_HINT, ModelLoadError
from engines.manifest import Manifest

logger = logging.getLogger(__name__)


class OrtBackend:
    def __init__(self, artifact: Path, manifest: Manifest, *, threads: int | None = None) -> None:
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if threads:
            options.intra_op_num_threads = threads
            options.inter_op_num_threads = 1
        available = ort.get_available_providers()
        providers = [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in available]
        try:
            self.session = ort.InferenceSession(str(artifact), options, providers=providers)
        except Exception as exc:  # onnxruntime raises its own untyped errors
            raise ModelLoadError(f"ONNX Runtime cannot load {artifact}: {exc}; {REBUILD_HINT}") from exc
        self.input_name = self.session.get_inputs()[0].name
        self.output_names = [o.name for o in self.session.get_outputs()]
        provider = self.session.get_providers()[0]
        self.name = "onnxruntime-" + ("cuda" if provider.startswith("CUDA") else "cpu")
        logger.debug("%s: %s on %s", manifest.kind, artifact, self.name)

    def run(self, batch: np.ndarray) -> list[np.ndarray]:
        return self.session.run(self.output_names, {self.input_name: batch})
