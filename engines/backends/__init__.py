"""Runtimes behind one small protocol; the artifact's manifest picks which one runs it."""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

import numpy as np

from engines.errors import EngineError
from engines.manifest import Manifest


class Backend(Protocol):
    """Runs one model: a float32 NCHW batch in, the model's output tensors out."""

    name: str  # e.g. "onnxruntime-cpu"

    def run(self, batch: np.ndarray) -> list[np.ndarray]: ...


def open_backend(artifact: Path, manifest: Manifest, *, threads: int | None = None) -> Backend:
    """Open the runtime that fits ``manifest.format``."""
    if manifest.format == "onnx":
        from engines.backends.ort import OrtBackend

        return OrtBackend(artifact, manifest, threads=threads)
    raise EngineError(
        f"{artifact}: format {manifest.format!r} has no backend in this build yet; "
        "use the ONNX artifact (format 'onnx')"
    )
