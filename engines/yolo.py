"""Pure converters from raw YOLOv8 detector output to boxes: decode and non-maximum suppression."""

from __future__ import annotations

import numpy as np

from engines.boxes import iou_matrix


def nms(xyxy: np.ndarray, score: np.ndarray, iou_threshold: float) -> np.ndarray:
    """Greedy non-maximum suppression; returns kept indices, highest score first."""
    order = np.argsort(-score, kind="stable")
    keep = []
    while order.size:
        i = order[0]
        keep.append(i)
        rest = order[1:]
        iou = iou_matrix(xyxy[i : i + 1], xyxy[rest])[0]  # (len(rest),)
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
