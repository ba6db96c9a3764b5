"""Shared plumbing of Detector and Classifier: open a checked artifact, run it in chunks."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from engines.backends import Backend, open_backend
from engines.manifest import Manifest, load_manifest


class Artifact:
    """A model file with its verified manifest and an open backend."""

    def __init__(self, path: str | Path, *, kind: str, threads: int | None = None, device: str | None = None) -> None:
        self.path = Path(path)
        self.manifest: Manifest = load_manifest(self.path, kind=kind)
        self.backend: Backend = open_backend(self.path, self.manifest, threads=threads, device=device)

    def run(self, batch: np.ndarray) -> list[np.ndarray]:
        """Run (N, 3, S, S) float32 through the backend in chunks of at most batch_max."""
        step = self.manifest.batch_max
        if len(batch) <= step:
            return self.backend.run(batch)
        parts = [self.backend.run(batch[i : i + step]) for i in range(0, len(batch), step)]
        return [np.concatenate(outs) for outs in zip(*parts)]
