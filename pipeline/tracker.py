"""IoU face tracker for one stream: carries faces between detection rounds and smooths each face's fake score.

The tracks are columns (one row per track, in id order); each step returns the faces on screen
as ``Faces``, the form every later stage and sink reads.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from engines.boxes import iou_matrix
from pipeline.messages import Faces
from pipeline.ranges import check_ranges, ranged


@dataclass(frozen=True)
class TrackerConfig:
    iou_match: float = ranged(0.3, 0, 1, open_lo=True)  # least IoU between a track's box and a detection to match
    max_missed: int = ranged(2, 0, 1000)  # detection rounds in a row a track survives unmatched; one more drops it
    ema_alpha: float = ranged(0.3, 0, 1, open_lo=True)  # weight of the newest classifier score in a track's average

    def __post_init__(self) -> None:
        check_ranges(self)


@dataclass(frozen=True)
class Track:
    """One face followed across the frames of one stream: a snapshot, for inspection (``FaceTracker.tracks``)."""

    track_id: int  # unique per stream, increasing, never reused
    box: tuple[float, float, float, float]  # x1, y1, x2, y2 in frame pixels, from the last matched detection
    det_score: float  # detector confidence of that detection
    score: float | None = None  # smoothed P(fake); None until classified once
    last_score: float | None = None  # newest raw classifier P(fake)
    age: int = 0  # frames (detected or carried) since the track was created
    hits: int = 1  # detection rounds it was matched, counting the one that created it
    missed: int = 0  # detection rounds since its last match; 0: on screen now
    since_classified: int = 0  # frames since its last classification (or its creation)


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


_INT_COLUMNS = ("id", "age", "hits", "missed", "since")


class FaceTracker:
    """Tracks of one stream. Call ``update`` on frames with detections, ``carry`` on the others, in frame order."""

    def __init__(self, cfg: TrackerConfig = TrackerConfig()) -> None:
        self.cfg = cfg
        self._next_id = 0
        self._cols: dict[str, np.ndarray] = {name: np.zeros(0, np.int64) for name in _INT_COLUMNS}
        self._cols |= {
            "box": np.zeros((0, 4), np.float32),
            "det": np.zeros(0, np.float32),
            "score": np.zeros(0, np.float64),
            "last": np.zeros(0, np.float64),
        }  # NaN: not scored

    @property
    def tracks(self) -> list[Track]:
        """Every live track, by id, including those unmatched in the latest rounds (``missed > 0``)."""
        c = self._cols
        return [
            Track(tid, tuple(box), det, _none(score), _none(last), age, hits, missed, since)
            for tid, box, det, score, last, age, hits, missed, since in zip(
                c["id"].tolist(),
                c["box"].tolist(),
                c["det"].tolist(),
                c["score"].tolist(),
                c["last"].tolist(),
                c["age"].tolist(),
                c["hits"].tolist(),
                c["missed"].tolist(),
                c["since"].tolist(),
            )
        ]

    @property
    def visible(self) -> Faces:
        """The faces matched or created in the latest detection round, with their current scores (none due)."""
        return self._faces(due_every=None)

    def update(self, xyxy: np.ndarray, det_score: np.ndarray, *, classify_every: int = 1) -> Faces:
        """A detection round on one frame: ``xyxy`` (n, 4) in frame pixels, ``det_score`` (n,).

        Matches detections to tracks greedily by IoU, moves matched tracks to their detection, starts a track
        for each unmatched detection, and drops tracks unmatched for more than ``max_missed`` rounds.
        Returns the faces on screen; ``due`` marks those to classify now (see ``carry``).
        """
        _check_every(classify_every)
        xyxy = np.asarray(xyxy, np.float32).reshape(-1, 4)  # (n, 4)
        det_score = np.asarray(det_score, np.float32).reshape(-1)  # (n,)
        if len(xyxy) != len(det_score):
            raise ValueError(f"xyxy has {len(xyxy)} boxes but det_score has {len(det_score)} scores")
        c = self._cols
        pairs = _greedy_match(iou_matrix(c["box"], xyxy), self.cfg.iou_match)
        rows = np.array([r for r, _ in pairs], np.int64)
        cols = np.array([k for _, k in pairs], np.int64)
        matched = np.zeros(len(c["id"]), bool)
        matched[rows] = True
        c["age"] += 1
        c["since"] += 1
        c["box"][rows], c["det"][rows] = xyxy[cols], det_score[cols]
        c["hits"][rows] += 1
        c["missed"][rows] = 0
        keep = matched | (c["missed"] < self.cfg.max_missed)
        c["missed"][~matched] += 1
        for name in c:
            c[name] = c[name][keep]
        new = np.setdiff1d(np.arange(len(xyxy)), cols)  # detections no track took, in detection order
        ids = np.arange(self._next_id, self._next_id + len(new))
        self._next_id += len(new)
        born = {
            "id": ids,
            "age": 0,
            "hits": 1,
            "missed": 0,
            "since": 0,
            "box": xyxy[new],
            "det": det_score[new],
            "score": np.nan,
            "last": np.nan,
        }
        for name, value in born.items():
            value = np.broadcast_to(value, (len(new), *c[name].shape[1:])).astype(c[name].dtype)
            c[name] = np.concatenate([c[name], value])
        return self._faces(due_every=classify_every)

    def carry(self, *, classify_every: int = 1) -> Faces:
        """A frame without detection: boxes stay, age and since_classified grow by one.

        Returns the faces on screen; ``due`` marks those never classified or classified ``classify_every``
        or more frames ago (1: every frame).
        """
        _check_every(classify_every)
        self._cols["age"] += 1
        self._cols["since"] += 1
        return self._faces(due_every=classify_every)

    def add_scores(self, track_ids: Sequence[int] | np.ndarray, p_fake: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Record classifier outputs ``p_fake`` (k,) in [0, 1] for ``track_ids`` (k): EMA update, clock reset.

        Returns the tracks' smoothed and raw scores (k,), (k,) after the update.
        """
        ids = np.asarray(track_ids, np.int64).reshape(-1)  # (k,)
        p_fake = np.asarray(p_fake, np.float64).reshape(-1)  # (k,)
        if len(ids) != len(p_fake):
            raise ValueError(f"{len(ids)} track ids but {len(p_fake)} scores")
        c = self._cols
        unknown = [int(i) for i in ids if i not in c["id"]]
        if unknown:
            raise ValueError(f"unknown track ids {unknown}; live ids are {c['id'].tolist()}")
        if not np.all((p_fake >= 0) & (p_fake <= 1)):
            raise ValueError(f"p_fake must lie in [0, 1], got {p_fake.tolist()}")
        rows = np.searchsorted(c["id"], ids)  # ids are sorted: tracks are kept in id order
        a, old = self.cfg.ema_alpha, c["score"][rows]
        c["score"][rows] = np.where(np.isnan(old), p_fake, a * p_fake + (1 - a) * old)
        c["last"][rows] = p_fake
        c["since"][rows] = 0
        return c["score"][rows], c["last"][rows]

    def _faces(self, *, due_every: int | None) -> Faces:
        c = self._cols
        on = c["missed"] == 0
        due = np.zeros(int(on.sum()), bool)
        if due_every is not None:
            due = np.isnan(c["score"][on]) | (c["since"][on] >= due_every)
        return Faces(
            c["box"][on], c["det"][on], np.zeros(int(on.sum())), c["id"][on], due, c["score"][on], c["last"][on]
        )


def _check_every(every: int) -> None:
    if every < 1:
        raise ValueError(f"classify_every must be >= 1 frame, got {every}")


def _none(value: float) -> float | None:
    return None if value != value else value  # NaN: not scored
