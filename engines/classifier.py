"""Deepfake classifier: square face crops in, probability that each face is fake out."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from engines._artifact import Artifact
from engines.errors import InputError, ManifestError
from engines.images import normalise


class Classifier:
    """Scores face crops made by ``engines.crop_faces`` with this artifact's size and margin.

    ``device`` ("cpu", "cuda" or None: the artifact's own) and ``threads`` go to the backend. ``min_face``
    (manifest ``preprocess.min_face``, 0 when absent): the smallest face box height in frame pixels the
    artifact is meant to score; the service leaves smaller faces unscored.
    """

    def __init__(self, path: str | Path, *, threads: int | None = None, device: str | None = None) -> None:
        self.artifact = Artifact(path, kind="classifier", threads=threads, device=device)
        self.manifest = self.artifact.manifest
        self.input_size = self.manifest.input_size
        self.crop_margin = float(self.manifest.preprocess["crop_margin"])
        self.threshold = float(self.manifest.thresholds["fake"])
        self.min_face = self.manifest.preprocess.get("min_face", 0)
        if not isinstance(self.min_face, int) or isinstance(self.min_face, bool) or self.min_face < 0:
            raise ManifestError(
                f"manifest of {path}: preprocess.min_face must be a whole number of pixels >= 0, got {self.min_face!r}"
            )

    @property
    def backend_name(self) -> str:
        return self.artifact.backend.name

    def __call__(self, crops: np.ndarray) -> np.ndarray:
        """Score (n, S, S, 3) uint8 RGB crops; returns (n,) float32 P(fake)."""
        s = self.input_size
        if not isinstance(crops, np.ndarray) or crops.dtype != np.uint8 or crops.shape[1:] != (s, s, 3):
            got = f"{crops.dtype} {crops.shape}" if isinstance(crops, np.ndarray) else type(crops).__name__
            raise InputError(f"Classifier expects uint8 RGB crops (n, {s}, {s}, 3), got {got}")
        if len(crops) == 0:
            return np.zeros(0, dtype=np.float32)
        prob = self.artifact.run(normalise(crops))[0]  # (n, 1)
        return prob.reshape(-1).astype(np.float32)
