"""Fixtures of the engines tests: small models (fast on CPU), real frames, and a writable copy."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest

DETECTOR_SIZE = 320
CLASSIFIER_SIZE = 64


@pytest.fixture(scope="session")
def small_models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Placeholder detector (320) and classifier (64) with their torch references, by the trainer's command.

    ``DFWATCH_TEST_SMALL_MODELS`` names a directory built the same way elsewhere (benchmarks/gpu_check.sh
    carries one to a GPU machine that lacks ultralytics).
    """
    prebuilt = os.environ.get("DFWATCH_TEST_SMALL_MODELS")
    if prebuilt:
        return Path(prebuilt)
    from trainer.cli import main

    out = tmp_path_factory.mktemp("small-models")
    args = ["--detector-size", str(DETECTOR_SIZE), "--classifier-size", str(CLASSIFIER_SIZE)]
    assert main(["placeholders", "--out", str(out), *args]) == 0
    return out


@pytest.fixture()
def models_copy(tmp_path: Path, small_models: Path) -> Path:
    """A writable copy of ``small_models`` for tests that change or add files."""
    for f in small_models.iterdir():
        if f.is_file():
            shutil.copy(f, tmp_path / f.name)
    return tmp_path


@pytest.fixture(scope="session")
def frames(request: pytest.FixtureRequest) -> np.ndarray:
    """Four real frames (4, H, W, 3) uint8 RGB of the real talking-head clip.

    ``DFWATCH_TEST_FRAMES`` names an .npy of frames decoded elsewhere (for a GPU machine without PyAV
    or ../shared/data).
    """
    saved = os.environ.get("DFWATCH_TEST_FRAMES")
    if saved:
        return np.load(saved)[:4]
    import av

    video = request.getfixturevalue("real_video")
    with av.open(str(video)) as container:
        decoded = [f.to_ndarray(format="rgb24") for _, f in zip(range(4), container.decode(video=0))]
    return np.stack(decoded)  # (4, H, W, 3)


def face_crops(frames: np.ndarray, size: int) -> np.ndarray:
    """Square crops (n, size, size, 3) around the middle of each frame (where the clip's face is)."""
    from engines import Detections, crop_faces

    h, w = frames.shape[1:3]
    n = len(frames)
    boxes = Detections([[w * 0.3, h * 0.2, w * 0.7, h * 0.8]] * n, [1.0] * n, list(range(n)))
    return crop_faces(list(frames), boxes, size=size, margin=0.25)
