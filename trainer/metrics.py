"""Binary classification metrics in numpy: the paper's table (accuracy, precision, recall, F1),
ROC curve and AUC, equal error rate, confusion matrix, and frame -> video score pooling.

Labels are 1 = fake (the positive class), 0 = real; scores are P(fake). A metric that is
undefined on the data (precision with no positive prediction, AUC with one class) is 0.0 for
the ratios, as scikit-learn's default, and None for AUC and EER.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from trainer.errors import MetricsError

REDUCTIONS = ("mean", "median", "max")


@dataclass(frozen=True)
class BinaryMetrics:
    n: int  # samples scored
    positives: int  # samples labelled fake
    threshold: float  # P(fake) at or above which a sample is called fake
    accuracy: float
    precision: float  # of the samples called fake, the fraction that are
    recall: float  # of the fake samples, the fraction called fake
    f1: float
    roc_auc: float | None  # None with only one class present
    eer: float | None  # equal error rate (false positive rate = false negative rate); None with one class
    eer_threshold: float | None  # score at the EER point
    confusion: list[list[int]]  # [[tn, fp], [fn, tp]]: rows true real/fake, columns called real/fake

    def to_dict(self) -> dict:
        return asdict(self)


def _check(labels: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    labels = np.asarray(labels).reshape(-1)
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    if labels.shape != scores.shape:
        raise MetricsError(f"labels ({labels.shape[0]}) and scores ({scores.shape[0]}) differ in length")
    if not np.isin(labels, (0, 1)).all():
        raise MetricsError(f"labels must be 0 (real) or 1 (fake), got {np.unique(labels).tolist()}")
    if np.isnan(scores).any():
        raise MetricsError(f"{int(np.isnan(scores).sum())} scores are NaN")
    return labels.astype(np.int64), scores


def confusion_matrix(labels: np.ndarray, predicted: np.ndarray) -> np.ndarray:
    """(2, 2) int64 counts [[tn, fp], [fn, tp]] of 0/1 ``predicted`` against 0/1 ``labels``."""
    labels, pred = _check(labels, predicted)
    out = np.zeros((2, 2), dtype=np.int64)
    np.add.at(out, (labels, pred.astype(np.int64)), 1)
    return out


def roc_curve(labels: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(fpr, tpr, thresholds): one point per distinct score, from (0, 0) at +inf down to (1, 1).

    A sample is called fake when its score >= threshold. Needs both classes present.
    """
    labels, scores = _check(labels, scores)
    pos = int(labels.sum())
    neg = len(labels) - pos
    if pos == 0 or neg == 0:
        raise MetricsError(f"a ROC curve needs real and fake samples, got {neg} real and {pos} fake")
    order = np.argsort(-scores, kind="mergesort")
    s, y = scores[order], labels[order]
    last_of_tie = np.r_[np.flatnonzero(np.diff(s)), len(s) - 1]  # (k,) end of each run of equal scores
    tp = np.cumsum(y)[last_of_tie]
    fp = (last_of_tie + 1) - tp
    fpr = np.r_[0.0, fp / neg]
    tpr = np.r_[0.0, tp / pos]
    thresholds = np.r_[np.inf, s[last_of_tie]]
    return fpr, tpr, thresholds


def roc_auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """Area under the ROC curve (trapezoids; a tie between a real and a fake counts one half)."""
    fpr, tpr, _ = roc_curve(labels, scores)
    return float(np.sum(np.diff(fpr) * (tpr[1:] + tpr[:-1]) / 2.0))


def equal_error_rate(labels: np.ndarray, scores: np.ndarray) -> tuple[float, float]:
    """(EER, threshold): where the false positive rate equals the false negative rate (1 - TPR),
    linearly interpolated between the two ROC points that straddle it."""
    fpr, tpr, thresholds = roc_curve(labels, scores)
    fnr = 1.0 - tpr
    diff = fpr - fnr  # rises from -1 at (0, 0) to +1 at (1, 1)
    i = int(np.flatnonzero(diff >= 0)[0])
    if diff[i] == 0 or i == 0:
        return float(fpr[i]), float(thresholds[i])
    w = -diff[i - 1] / (diff[i] - diff[i - 1])  # fraction of the way from point i-1 to point i
    eer = fpr[i - 1] + w * (fpr[i] - fpr[i - 1])
    return float(eer), float(thresholds[i])


def binary_metrics(labels: np.ndarray, scores: np.ndarray, *, threshold: float = 0.5) -> BinaryMetrics:
    """Every metric of the report for P(fake) ``scores`` against 0/1 ``labels``."""
    labels, scores = _check(labels, scores)
    if len(labels) == 0:
        raise MetricsError("no samples to score")
    pred = (scores >= threshold).astype(np.int64)
    (tn, fp), (fn, tp) = confusion_matrix(labels, pred).tolist()
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    both = 0 < labels.sum() < len(labels)
    auc = roc_auc(labels, scores) if both else None
    eer, eer_thr = equal_error_rate(labels, scores) if both else (None, None)
    return BinaryMetrics(
        n=len(labels),
        positives=int(labels.sum()),
        threshold=float(threshold),
        accuracy=(tn + tp) / len(labels),
        precision=float(precision),
        recall=float(recall),
        f1=float(f1),
        roc_auc=auc,
        eer=eer,
        eer_threshold=eer_thr,
        confusion=[[tn, fp], [fn, tp]],
    )


def pool_by_video(
    videos: np.ndarray, labels: np.ndarray, scores: np.ndarray, *, reduce: str = "mean"
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Frame scores -> one score per video (``reduce``: mean, median or max of its frames).

    Returns (videos (v,) sorted, labels (v,), scores (v,)). Every frame of a video must carry
    the same label.
    """
    if reduce not in REDUCTIONS:
        raise MetricsError(f"unknown video pooling {reduce!r}; valid: {list(REDUCTIONS)}")
    labels, scores = _check(labels, scores)
    videos = np.asarray(videos).reshape(-1)
    if len(videos) != len(labels):
        raise MetricsError(f"videos ({len(videos)}) and scores ({len(scores)}) differ in length")
    names, inverse = np.unique(videos, return_inverse=True)
    order = np.argsort(inverse, kind="stable")
    starts = np.r_[0, np.flatnonzero(np.diff(inverse[order])) + 1]  # (v,) first frame of each video
    fn = {"mean": np.mean, "median": np.median, "max": np.max}[reduce]
    pooled = np.array([fn(chunk) for chunk in np.split(scores[order], starts[1:])])
    lo = np.minimum.reduceat(labels[order], starts)
    hi = np.maximum.reduceat(labels[order], starts)
    if (lo != hi).any():
        raise MetricsError(f"videos with frames of both labels: {names[lo != hi][:5].tolist()}")
    return names, lo, pooled
