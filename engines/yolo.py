"""Pure converters from raw YOLOv8 detector output to boxes: decode and non-maximum suppression."""

from __future__ import annotations

import numpy as np


def nms(xyxy: np.ndarray, score: np.ndarray, iou_threshold: float) -> np.ndarray:
    """Greedy non-maximum suppression; returns kept indices, highest score first."""
    order = np.argsort(-score, kind="stable")
    x1, y1, x2, y2 = xyxy.T
    area = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    keep = []
    while order.size:
        i = order[0]
        keep.append(i)
        rest = order[1:]
        w = np.clip(np.minimum(x2[i], x2[rest]) - np.maximum(x1[i], x1[rest]), 0, None)
        h = np.clip(np.minimum(y2[i], y2[rest]) - np.maximum(y1[i], y1[rest]), 0, None)
        inter = w * h
        iou = inter / np.maximum(area[i] + area[rest] - inter, 1e-9)
        order = rest[iou <= iou_threshold]
    return np.asarray(keep, dtype=np.int64)


def decode_yolov8(
    output: np.ndarray, *, conf: float, iou: float, max_det: int = 100, pre_nms_top_k: int = 1000
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Decode YOLOv8 output (N, 4 + classes, anchors) into per-image (xyxy (k, 4), score (k,)).

    Boxes are in network-input pixels. With several classes the best class score is used
    (dfwatch's detector has one class, "face").
    """
    if output.ndim != 3 or output.shape[1] < 5:
        raise ValueError(f"expected YOLOv8 output (N, 4 + classes, anchors), got shape {output.shape}")
    results = []
    for pred in output:  # (4 + C, A)
        scores = pred[4:].max(axis=0)  # (A,)
        candidates = np.flatnonzero(scores > conf)
        if candidates.size > pre_nms_top_k:
            candidates = candidates[np.argsort(-scores[candidates])[:pre_nms_top_k]]
        cx, cy, w, h = pred[:4, candidates]  # each (k,)
        xyxy = np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], axis=1).astype(np.float32)
        score = scores[candidates].astype(np.float32)
        keep = nms(xyxy, score, iou)[:max_det]
        results.append((xyxy[keep], score[keep]))
    return results
