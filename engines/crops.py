"""The one definition of a face crop, shared by the trainer (datasets) and the pipeline (serving)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import numpy as np

from engines.images import resize


class Boxes(Protocol):
    """Boxes of a batch of frames: ``engines.Detections``, or the pipeline's tracked faces."""

    xyxy: np.ndarray  # (n, 4) float32 in frame pixels
    frame_index: np.ndarray  # (n,) position of each box's frame in the batch


def square_box(xyxy: np.ndarray, margin: float) -> np.ndarray:
    """Square boxes (n, 4) centred on each box, side = longer side * (1 + 2 * margin)."""
    cx = (xyxy[:, 0] + xyxy[:, 2]) / 2
    cy = (xyxy[:, 1] + xyxy[:, 3]) / 2
    side = np.maximum(xyxy[:, 2] - xyxy[:, 0], xyxy[:, 3] - xyxy[:, 1]) * (1 + 2 * margin)
    half = side / 2
    return np.stack([cx - half, cy - half, cx + half, cy + half], axis=1)


def resize_square(image: np.ndarray, size: int) -> np.ndarray:
    """A square (s, s, 3) image resized to (size, size, 3) the way every crop is (``engines.images.resize``:
    area-averaged when it shrinks, bilinear when it grows). The trainer's simulated captures resize with this too."""
    return resize(image, size, size)


def crop_faces(frames: Sequence[np.ndarray], detections: Boxes, *, size: int, margin: float) -> np.ndarray:
    """Cut one square crop per detection and resize it to (size, size).

    The square is centred on the box with ``margin`` of the box's longer side added on every
    side. Parts of the square outside the frame are clipped (never read) and filled with black,
    so the face keeps its place and aspect ratio in the crop. Returns (n, size, size, 3) uint8.
    """
    crops = np.empty((len(detections), size, size, 3), dtype=np.uint8)
    squares = np.round(square_box(detections.xyxy, margin)).astype(np.int64)
    for k, ((x1, y1, x2, y2), fi) in enumerate(zip(squares, detections.frame_index)):
        frame = frames[fi]
        h, w = frame.shape[:2]
        side = max(int(x2 - x1), 1)
        # x and y round on their own, so y2 - y1 can differ from the side by a pixel: keep the square.
        x2, y2 = x1 + side, y1 + side
        cx1, cy1, cx2, cy2 = max(x1, 0), max(y1, 0), min(x2, w), min(y2, h)
        canvas = np.zeros((side, side, 3), dtype=np.uint8)
        if cx2 > cx1 and cy2 > cy1:
            canvas[cy1 - y1 : cy2 - y1, cx1 - x1 : cx2 - x1] = frame[cy1:cy2, cx1:cx2]
        crops[k] = resize_square(canvas, size)
    return crops
