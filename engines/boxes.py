"""The one definition of box overlap (IoU), for the tracker, NMS and the detector's measurement."""

from __future__ import annotations

import numpy as np


def iou_matrix(a: np.ndarray, b: np.ndarray, *, dtype: type = np.float32) -> np.ndarray:
    """IoU of each xyxy box in ``a`` (n, 4) with each in ``b`` (m, 4): (n, m) ``dtype``; 0 where the union is empty."""
    a = np.asarray(a, dtype).reshape(-1, 4)  # (n, 4)
    b = np.asarray(b, dtype).reshape(-1, 4)  # (m, 4)
    lt = np.maximum(a[:, None, :2], b[None, :, :2])  # (n, m, 2)
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])  # (n, m, 2)
    inter = np.clip(rb - lt, 0, None).prod(axis=2)  # (n, m)
    area_a = np.clip(a[:, 2:] - a[:, :2], 0, None).prod(axis=1)  # (n,)
    area_b = np.clip(b[:, 2:] - b[:, :2], 0, None).prod(axis=1)  # (m,)
    union = area_a[:, None] + area_b[None, :] - inter  # (n, m)
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)
