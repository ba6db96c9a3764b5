"""Train / validation / test splits: honest by identity (default) or the paper's random frame split.

``identity``: the official test list is the test set; the other videos are split into train
and validation by person, so nobody (whose video it is, or whose face was swapped in) is on
both sides. A fake whose two people fall on different sides is left out and listed. (The
official test list itself shares people with the rest of Celeb-DF; that is the benchmark's
design and the summary says how many.)

``paper``: every frame is drawn at random: ``test_fraction`` to test, ``val_fraction`` of the
rest to validation, the others to train, so frames of one video land on every side (the
leakage the paper's 80/20 protocol has).
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from trainer.paper.celebdf import Video
from trainer.paper.config import PROTOCOLS
from trainer.store import SPLIT_CODES

logger = logging.getLogger(__name__)

TRAIN, VAL, TEST = (SPLIT_CODES[s] for s in ("train", "val", "test"))
_TRIES = 256  # random orders of people tried; the cheapest prefix of any is kept


@dataclass(frozen=True)
class SplitPlan:
    protocol: str  # "identity" or "paper"
    seed: int  # drives the identity partition and the paper's frame draw
    val_fraction: float  # identity: target share of non-test videos in val; paper: share of non-test frames
    test_fraction: float  # paper only: share of frames drawn into test
    video_split: Mapping[str, int] = field(default_factory=dict)  # identity: video path -> split code
    excluded: Mapping[str, str] = field(default_factory=dict)  # video path -> why it was left out
    val_people: frozenset[str] = frozenset()  # identity: the people on the validation side

    def split_of(self, video: str, frames: np.ndarray) -> np.ndarray:
        """Split codes (n,) uint8 of ``frames`` of ``video`` (0 = train, 1 = val, 2 = test)."""
        frames = np.asarray(frames, dtype=np.int64)
        if self.protocol == "identity":
            if video not in self.video_split:
                raise KeyError(f"video {video!r} is not in this split plan")
            return np.full(len(frames), self.video_split[video], dtype=np.uint8)
        u = np.array([_unit(self.seed, video, int(f)) for f in frames])  # (n,) in [0, 1)
        out = np.full(len(frames), TRAIN, dtype=np.uint8)
        out[u < self.test_fraction + (1 - self.test_fraction) * self.val_fraction] = VAL
        out[u < self.test_fraction] = TEST
        return out


def _unit(seed: int, video: str, frame: int) -> float:
    """A uniform number in [0, 1) fixed by (seed, video, frame): reruns and resumes draw the same."""
    digest = hashlib.blake2b(f"{seed}\0{video}\0{frame}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") / 2**64


def plan_splits(
    videos: Sequence[Video],
    *,
    protocol: str = "identity",
    val_fraction: float = 0.2,
    test_fraction: float = 0.2,
    seed: int = 0,
) -> SplitPlan:
    """Decide the split of every selected video (identity) or the rule for every frame (paper)."""
    if protocol not in PROTOCOLS:
        raise ValueError(f"unknown split protocol {protocol!r}; valid: {list(PROTOCOLS)}")
    for name, value in (("val_fraction", val_fraction), ("test_fraction", test_fraction)):
        if not 0 <= value < 1:
            raise ValueError(f"{name} must be in [0, 1), got {value}")
    if protocol == "paper":
        return SplitPlan("paper", seed, val_fraction, test_fraction)
    split = {v.path: TEST for v in videos if v.official_test}
    rest = [v for v in videos if not v.official_test]
    val_people = _choose_val_people(rest, val_fraction=val_fraction, seed=seed)
    excluded: dict[str, str] = {}
    for v in rest:
        inside = v.people & val_people
        if not inside:
            split[v.path] = TRAIN
        elif inside == v.people:
            split[v.path] = VAL
        else:
            val_side = ", ".join(sorted(inside))
            train_side = ", ".join(sorted(v.people - inside))
            excluded[v.path] = f"{val_side} in val, {train_side} in train"
    return SplitPlan("identity", seed, val_fraction, test_fraction, split, excluded, val_people)


def _choose_val_people(videos: Sequence[Video], *, val_fraction: float, seed: int) -> frozenset[str]:
    """The people whose videos make up validation: the best prefix of ``_TRIES`` random orders.

    People are added in random order; after each, the cost of "these people are validation"
    is updated: first, a label missing from either side; then validation holding less than
    half its share of the videos; then the videos left out (their
    people straddle the line) plus twice, per label, the distance of the validation count
    from ``val_fraction`` of that label's videos (so validation reaches its share of fakes,
    whose two people must both be inside, rather than filling up with people who only appear
    in real videos). The cheapest prefix over all orders wins.
    """
    if not videos or val_fraction == 0:
        return frozenset()
    people = sorted(set().union(*(v.people for v in videos)))
    videos_of: dict[str, list[int]] = {p: [] for p in people}
    for i, v in enumerate(videos):
        for p in v.people:
            videos_of[p].append(i)
    sizes = np.array([len(v.people) for v in videos])
    labels = np.array([v.label for v in videos])
    n_label = np.bincount(labels, minlength=2)  # (2,) videos per label
    target = val_fraction * n_label  # (2,)
    present = n_label > 0
    rng = np.random.default_rng(seed)
    best: tuple[tuple[int, int, float], int, np.ndarray] | None = None  # (cost, prefix length, order)
    for _ in range(_TRIES):
        order = rng.permutation(len(people))
        inside = np.zeros(len(videos), dtype=np.int64)  # chosen people per video
        n_val = np.zeros(2, dtype=np.int64)  # videos in validation per label
        n_out = np.zeros(2, dtype=np.int64)  # videos left out per label
        for k, j in enumerate(order, 1):
            for i in videos_of[people[j]]:
                inside[i] += 1
                if inside[i] == sizes[i]:
                    n_val[labels[i]] += 1
                    n_out[labels[i]] -= int(sizes[i] > 1)
                elif inside[i] == 1:
                    n_out[labels[i]] += 1
            n_train = n_label - n_val - n_out
            missing = int((present & (n_val == 0)).sum() + (present & (n_train == 0)).sum())
            short = int(n_val.sum() < 0.5 * target.sum())  # validation under half its share
            cost = (missing, short, float(n_out.sum() + 2 * np.abs(n_val - target).sum()))
            if best is None or cost < best[0]:
                best = (cost, k, order)
            if n_val.sum() >= 2 * target.sum():
                break
    assert best is not None
    _, k, order = best
    return frozenset(people[j] for j in order[:k])


def people_overlap(plan: SplitPlan, videos: Sequence[Video]) -> dict[tuple[str, str], set[str]]:
    """People shared between split pairs, e.g. {("train", "test"): {"id0", ...}} (identity protocol)."""
    names = {code: name for name, code in SPLIT_CODES.items()}
    people: dict[str, set[str]] = {name: set() for name in SPLIT_CODES}
    for v in videos:
        if v.path in plan.video_split:
            people[names[plan.video_split[v.path]]] |= v.people
    pairs = (("train", "val"), ("train", "test"), ("val", "test"))
    return {(a, b): people[a] & people[b] for a, b in pairs}
