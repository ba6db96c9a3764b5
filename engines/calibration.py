"""INT8 calibration input, shared by every builder (TensorRT, OpenVINO, ONNX Runtime): uint8 images in,
the network's preprocessed float32 batches out, exactly as the Detector or Classifier would feed them."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator

import numpy as np

from engines.errors import EngineBuildError
from engines.images import normalise

Preprocess = Callable[[list[np.ndarray]], np.ndarray]  # uint8 (H, W, 3) images -> (n, 3, S, S) float32


def detector_preprocess(size: int) -> Preprocess:
    """uint8 RGB images of any sizes -> letterboxed (n, 3, size, size) float32, as engines.Detector feeds them."""
    from engines.letterbox import letterbox_batch

    return lambda images: letterbox_batch(images, size)[0]


def calibration_batches(
    images: Iterable[np.ndarray], *, batch: int, preprocess: Preprocess, limit: int
) -> Iterator[np.ndarray]:
    """Group uint8 images (each (H, W, 3) or a block (n, H, W, 3)) into preprocessed full batches.

    Stops after ``limit`` images; a last partial batch is dropped (the calibrator's batch is fixed).
    """
    pending: list[np.ndarray] = []
    seen = 0
    for block in images:
        block = block[None] if block.ndim == 3 else block  # (n, H, W, 3)
        for image in block:
            if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
                raise EngineBuildError(f"calibration images must be uint8 (H, W, 3), got {image.dtype} {image.shape}")
            pending.append(image)
            seen += 1
            if len(pending) == batch:
                yield np.ascontiguousarray(preprocess(pending), dtype=np.float32)  # (batch, 3, S, S)
                pending = []
            if seen >= limit:
                return


def preprocess_for(kind: str, size: int) -> Preprocess:
    """The preprocessing of a detector (letterbox) or a classifier (its crops normalised) of input ``size``."""
    if kind == "classifier":
        return lambda crops: normalise(np.stack(crops))  # (n, 3, S, S)
    return detector_preprocess(size)
