"""Letterbox: fit frames of any size into the detector's square input, and map boxes back."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from engines.images import normalise, resize

PAD_VALUE = 114  # grey, as the YOLOv8 detector was trained with


@dataclass(frozen=True)
class LetterboxInfo:
    """How one frame was placed in the square input: input = frame * scale + (pad_x, pad_y)."""

    scale: float
    pad_x: float
    pad_y: float
    width: int  # source frame width
    height: int  # source frame height


def letterbox(
    frame: np.ndarray, size: int | tuple[int, int], *, pad: int = PAD_VALUE
) -> tuple[np.ndarray, LetterboxInfo]:
    """Resize ``frame`` (H, W, 3) uint8 keeping its aspect ratio and pad it with ``pad`` to (size, size, 3), or to
    (height, width, 3) for ``size`` = (width, height)."""
    out_w, out_h = (size, size) if isinstance(size, int) else size
    h, w = frame.shape[:2]
    scale = min(out_h / h, out_w / w)
    new_w, new_h = min(out_w, max(1, round(w * scale))), min(out_h, max(1, round(h * scale)))
    frame = resize(frame, new_w, new_h)
    pad_x, pad_y = (out_w - new_w) / 2, (out_h - new_h) / 2
    top, left = int(round(pad_y - 0.1)), int(round(pad_x - 0.1))
    out = np.full((out_h, out_w, 3), pad, dtype=np.uint8)
    out[top : top + new_h, left : left + new_w] = frame
    return out, LetterboxInfo(scale, float(left), float(top), w, h)


def letterbox_batch(frames: Sequence[np.ndarray], size: int) -> tuple[np.ndarray, list[LetterboxInfo]]:
    """Letterbox each frame and stack into the network input (N, 3, size, size) float32 in [0, 1]."""
    boxed = np.empty((len(frames), size, size, 3), dtype=np.uint8)
    infos = []
    for i, frame in enumerate(frames):
        boxed[i], info = letterbox(frame, size)  # (size, size, 3)
        infos.append(info)
    return normalise(boxed), infos  # (N, 3, size, size)


def unletterbox_boxes(xyxy: np.ndarray, info: LetterboxInfo) -> np.ndarray:
    """Map (n, 4) boxes from network-input pixels back to source-frame pixels, clipped to the frame."""
    out = np.empty_like(xyxy)
    out[:, [0, 2]] = (xyxy[:, [0, 2]] - info.pad_x) / info.scale
    out[:, [1, 3]] = (xyxy[:, [1, 3]] - info.pad_y) / info.scale
    out[:, [0, 2]] = np.clip(out[:, [0, 2]], 0, info.width)
    out[:, [1, 3]] = np.clip(out[:, [1, 3]], 0, info.height)
    return out
