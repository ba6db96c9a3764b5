"""The one definition of image normalisation and resizing, shared by detector, classifier, trainer and benchmarks."""

from __future__ import annotations

import cv2
import numpy as np


def normalise(images: np.ndarray) -> np.ndarray:
    """(n, H, W, 3) uint8 RGB -> (n, 3, H, W) float32 in [0, 1]: the input layout of every network here."""
    return images.transpose(0, 3, 1, 2).astype(np.float32) * np.float32(1.0 / 255.0)  # (n, 3, H, W)


def resize(image: np.ndarray, width: int, height: int) -> np.ndarray:
    """``image`` (H, W, C) resized to (height, width, C): area averaging when either side shrinks, else bilinear."""
    if image.shape[1] == width and image.shape[0] == height:
        return image
    shrink = image.shape[1] > width or image.shape[0] > height
    return cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)
