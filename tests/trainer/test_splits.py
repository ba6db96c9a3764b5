"""Splits: identity-disjoint train/val with the official test list as test; the paper's leaky frame split."""

from __future__ import annotations

import numpy as np
import pytest

from trainer.paper.celebdf import Video, parse_video_name, scan_tree
from trainer.paper.splits import TEST, TRAIN, VAL, people_overlap, plan_splits


def _people(videos: list[Video], plan, code: int) -> set[str]:
    return set().union(*(v.people for v in videos if plan.video_split.get(v.path) == code))


def _synthetic(n_people: int = 40, n_videos: int = 600, seed: int = 0) -> list[Video]:
    """Celeb-DF-like videos: reals of one person, fakes of two, YouTube reals, ~8% in the test list."""
    rng = np.random.default_rng(seed)
    names = []
    for k in range(n_videos):
        a, b = rng.choice(n_people, 2, replace=False)
        kind = rng.choice(3, p=[0.2, 0.7, 0.1])
        names.append(
            [f"Celeb-real/id{a}_{k:04d}.mp4", f"Celeb-synthesis/id{a}_id{b}_{k:04d}.mp4", f"YouTube-real/{k:05d}.mp4"][
                kind
            ]
        )
    return [Video(n, *parse_video_name(n), bool(rng.random() < 0.08)) for n in names]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_identity_split_keeps_every_person_on_one_side(seed: int):
    videos = _synthetic(seed=seed)
    plan = plan_splits(videos, protocol="identity", val_fraction=0.2, seed=seed)
    assert not _people(videos, plan, TRAIN) & _people(videos, plan, VAL)
    assert people_overlap(plan, videos)[("train", "val")] == set()
    # the official test list is the test set, whole
    assert {p for p, c in plan.video_split.items() if c == TEST} == {v.path for v in videos if v.official_test}
    # every non-test video is placed or listed as excluded with the reason, never both
    rest = {v.path for v in videos if not v.official_test}
    placed = {p for p, c in plan.video_split.items() if c != TEST}
    assert placed | set(plan.excluded) == rest and not placed & set(plan.excluded)
    for path, why in plan.excluded.items():
        v = next(v for v in videos if v.path == path)
        assert v.people & plan.val_people and v.people - plan.val_people
        assert " in val, " in why and why.endswith(" in train")
    # both labels on both sides, near the asked share
    for code in (TRAIN, VAL):
        assert {v.label for v in videos if plan.video_split.get(v.path) == code} == {0, 1}
    n_val = sum(c == VAL for c in plan.video_split.values())
    assert 0.1 <= n_val / len(rest) < 0.35  # at least half the asked share, people permitting
    again = plan_splits(videos, protocol="identity", val_fraction=0.2, seed=seed)
    assert again.video_split == plan.video_split  # deterministic


def test_identity_split_of_the_mini_tree(mini_celebdf):
    videos = scan_tree(mini_celebdf.root)
    plan = plan_splits(videos, protocol="identity", val_fraction=0.2, seed=0)
    assert not _people(videos, plan, TRAIN) & _people(videos, plan, VAL)
    # id0_id2 crosses the two swap pairs (id0/id1, id2/id3): wherever the line falls, it goes
    assert list(plan.excluded) == ["Celeb-synthesis/id0_id2_0000.mp4"]
    assert plan.val_people in ({"id0", "id1"}, {"id2", "id3"})
    codes = plan.split_of("Celeb-real/id0_0001.mp4", np.arange(5))
    assert codes.dtype == np.uint8 and codes.tolist() == [TEST] * 5
    with pytest.raises(KeyError, match="is not in this split plan"):
        plan.split_of("Celeb-synthesis/id0_id2_0000.mp4", np.arange(2))


def test_paper_split_draws_frames_at_random_and_leaks_videos():
    plan = plan_splits([], protocol="paper", val_fraction=0.2, test_fraction=0.2, seed=0)
    frames = np.arange(2000)
    codes = np.concatenate([plan.split_of(f"Celeb-real/id{k}_0000.mp4", frames) for k in range(5)])
    share = np.bincount(codes, minlength=3) / len(codes)
    np.testing.assert_allclose(share, [0.64, 0.16, 0.2], atol=0.02)  # 80/20, val = 20% of the 80
    one = plan.split_of("Celeb-real/id0_0000.mp4", np.arange(10))
    assert len(set(one.tolist())) > 1  # one video's frames on several sides: the paper's leakage
    np.testing.assert_array_equal(plan.split_of("Celeb-real/id0_0000.mp4", np.arange(10)), one)  # stable
    other_seed = plan_splits([], protocol="paper", seed=1).split_of("Celeb-real/id0_0000.mp4", np.arange(50))
    assert not np.array_equal(other_seed, plan.split_of("Celeb-real/id0_0000.mp4", np.arange(50)))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"protocol": "random"}, r"unknown split protocol 'random'; valid: \['identity', 'paper'\]"),
        ({"val_fraction": 1.0}, r"val_fraction must be in \[0, 1\), got 1.0"),
        ({"test_fraction": -0.1}, r"test_fraction must be in \[0, 1\), got -0.1"),
    ],
)
def test_bad_split_options(kwargs: dict, message: str):
    with pytest.raises(ValueError, match=message):
        plan_splits([], **kwargs)


def test_empty_cases():
    assert plan_splits([], protocol="identity").video_split == {}
    only_test = [Video("Celeb-real/id0_0000.mp4", 0, "id0", "", True)]
    assert plan_splits(only_test).video_split == {"Celeb-real/id0_0000.mp4": TEST}
    no_val = plan_splits(_synthetic(n_videos=50), val_fraction=0.0)
    assert VAL not in no_val.video_split.values() and not no_val.excluded
