"""IoU face tracker for one stream: carries faces between detection rounds and smooths each face's fake score."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np


@dataclass(frozen=True)
class TrackerConfig:
    iou_match: float = 0.3  # least IoU between a track's box and a detection for the two to match, in (0, 1]
    max_missed: int = 2  # detection rounds in a row a track survives unmatched; one more drops it
    ema_alpha: float = 0.3  # weight of the newest classifier score in a track's moving average, in (0, 1]

    def __post_init__(self) -> None:
        if not 0 < self.iou_match <= 1:
            raise ValueError(f"iou_match must be in (0, 1], got {self.iou_match}")
        if self.max_missed < 0:
            raise ValueError(f"max_missed must be >= 0, got {self.max_missed}")
        if not 0 < self.ema_alpha <= 1:
            raise ValueError(f"ema_alpha must be in (0, 1], got {self.ema_alpha}")


@dataclass(frozen=True)
class Track:
    """One face followed across the frames of one stream: an immutable snapshot."""

    track_id: int  # unique per stream, increasing, never reused
    box: tuple[float, float, float, float]  # x1, y1, x2, y2 in frame pixels, from the last matched detection
    det_score: float  # detector confidence of that detection
    score: float | None = None  # smoothed P(fake); None until classified once
    last_score: float | None = None  # newest raw classifier P(fake)
    age: int = 0  # frames (detected or carried) since the track was created
    hits: int = 1  # detection rounds it was matched, counting the one that created it
    missed: int = 0  # detection rounds since its last match; 0: on screen now
    since_classified: int = 0  # frames since its last classification (or its creation)


def iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of each xyxy box in ``a`` (n, 4) with each in ``b`` (m, 4): (n, m) float32; 0 where the union is empty."""
    a = np.asarray(a, np.float32).reshape(-1, 4)  # (n, 4)
    b = np.asarray(b, np.float32).reshape(-1, 4)  # (m, 4)
    lt = np.maximum(a[:, None, :2], b[None, :, :2])  # (n, m, 2)
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])  # (n, m, 2)
    inter = np.clip(rb - lt, 0, None).prod(axis=2)  # (n, m)
    area_a = np.clip(a[:, 2:] - a[:, :2], 0, None).prod(axis=1)  # (n,)
    area_b = np.clip(b[:, 2:] - b[:, :2], 0, None).prod(axis=1)  # (m,)
    union = area_a[:, None] + area_b[None, :] - inter  # (n, m)
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)


def _greedy_match(iou: np.ndarray, threshold: float) -> list[tuple[int, int]]:
    """(row, col) pairs of ``iou`` (n, m) taken highest first, each row and column once, all >= threshold."""
    rows, cols = np.nonzero(iou >= threshold)  # (k,), (k,)
    order = np.argsort(-iou[rows, cols], kind="stable")  # (k,)
    used_rows: set[int] = set()
    used_cols: set[int] = set()
    pairs = []
    for r, c in zip(rows[order].tolist(), cols[order].tolist()):
        if r not in used_rows and c not in used_cols:
            used_rows.add(r)
            used_cols.add(c)
            pairs.append((r, c))
    return pairs


def _box(row: np.ndarray) -> tuple[float, float, float, float]:
    x1, y1, x2, y2 = (float(v) for v in row)
    return x1, y1, x2, y2


class FaceTracker:
    """Tracks of one stream. Call ``update`` on frames with detections, ``carry`` on the others, in frame order."""

    def __init__(self, cfg: TrackerConfig = TrackerConfig()) -> None:
        self.cfg = cfg
        self._tracks: dict[int, Track] = {}  # by id; insertion order is id order
        self._next_id = 0

    @property
    def tracks(self) -> list[Track]:
        """Every live track, by id, including those unmatched in the latest rounds (``missed > 0``)."""
        return list(self._tracks.values())

    @property
    def visible(self) -> list[Track]:
        """Tracks matched or created in the latest detection round, with their current scores."""
        return [t for t in self._tracks.values() if t.missed == 0]

    def update(self, xyxy: np.ndarray, det_score: np.ndarray) -> list[Track]:
        """A detection round on one frame: ``xyxy`` (n, 4) in frame pixels, ``det_score`` (n,).

        Matches detections to tracks greedily by IoU, moves matched tracks to their detection, starts a track
        for each unmatched detection, and drops tracks unmatched for more than ``max_missed`` rounds.
        Returns the tracks matched or created now (the faces on screen), as ``visible``.
        """
        xyxy = np.asarray(xyxy, np.float32).reshape(-1, 4)  # (n, 4)
        det_score = np.asarray(det_score, np.float32).reshape(-1)  # (n,)
        if len(xyxy) != len(det_score):
            raise ValueError(f"xyxy has {len(xyxy)} boxes but det_score has {len(det_score)} scores")
        ids = list(self._tracks)
        boxes = np.array([self._tracks[i].box for i in ids], np.float32).reshape(-1, 4)  # (t, 4)
        matched = {ids[r]: c for r, c in _greedy_match(iou_matrix(boxes, xyxy), self.cfg.iou_match)}
        for tid in ids:
            t = self._tracks[tid]
            step = {"age": t.age + 1, "since_classified": t.since_classified + 1}
            if tid in matched:
                c = matched[tid]
                box, score = _box(xyxy[c]), float(det_score[c])
                self._tracks[tid] = replace(t, box=box, det_score=score, hits=t.hits + 1, missed=0, **step)
            elif t.missed >= self.cfg.max_missed:
                del self._tracks[tid]
            else:
                self._tracks[tid] = replace(t, missed=t.missed + 1, **step)
        taken = set(matched.values())
        for c in range(len(xyxy)):
            if c not in taken:
                self._tracks[self._next_id] = Track(self._next_id, _box(xyxy[c]), float(det_score[c]))
                self._next_id += 1
        return self.visible

    def carry(self) -> list[Track]:
        """A frame without detection: boxes stay, age and since_classified grow by one. Returns ``visible``."""
        self._tracks = {
            tid: replace(t, age=t.age + 1, since_classified=t.since_classified + 1) for tid, t in self._tracks.items()
        }
        return self.visible

    def due_for_classification(self, every: int) -> list[int]:
        """Ids of visible tracks never classified, or classified ``every`` or more frames ago (1: every frame)."""
        if every < 1:
            raise ValueError(f"every must be >= 1 frame, got {every}")
        return [t.track_id for t in self.visible if t.score is None or t.since_classified >= every]

    def add_scores(self, track_ids: Sequence[int], p_fake: np.ndarray) -> None:
        """Record classifier outputs ``p_fake`` (k,) in [0, 1] for ``track_ids`` (k): EMA update, clock reset."""
        p_fake = np.asarray(p_fake, np.float64).reshape(-1)  # (k,)
        if len(track_ids) != len(p_fake):
            raise ValueError(f"{len(track_ids)} track ids but {len(p_fake)} scores")
        unknown = [i for i in track_ids if i not in self._tracks]
        if unknown:
            raise ValueError(f"unknown track ids {unknown}; live ids are {list(self._tracks)}")
        if not np.all((p_fake >= 0) & (p_fake <= 1)):
            raise ValueError(f"p_fake must lie in [0, 1], got {p_fake.tolist()}")
        a = self.cfg.ema_alpha
        for tid, p in zip(track_ids, p_fake.tolist()):
            t = self._tracks[tid]
            score = p if t.score is None else a * p + (1 - a) * t.score
            self._tracks[tid] = replace(t, score=score, last_score=p, since_classified=0)
