"""realmedia: the real media of ../shared/data as sources with fixed splits (by clip, by DFDC video)."""

from __future__ import annotations

from collections import Counter, defaultdict

import pytest

from tests.conftest import SHARED_DATA
from tests.trainer._realtree import CLIPS, DFDC, NEEDS_SHARED_DATA, make_real_tree
from trainer import realmedia
from trainer.realmedia import MediaError, clip_split


@NEEDS_SHARED_DATA
def test_real_videos_are_37_clips_of_36_people_split_18_9_10_and_the_split_never_changes():
    clips = realmedia.real_videos(SHARED_DATA)
    assert len(clips) == 37
    assert Counter(s.split for s in clips) == {"train": 18, "val": 9, "test": 10}
    assert {s.kind for s in clips} == {"video"} and {s.label for s in clips} == {0}
    assert len({s.identity for s in clips}) == 36 and all(s.identity.startswith("clip:") for s in clips)
    by_rel = {s.rel: s for s in clips}
    for rel, first in realmedia.SAME_PERSON.items():  # one person under two names: one identity, one split
        assert (by_rel[rel].identity, by_rel[rel].split) == (by_rel[first].identity, by_rel[first].split)
    people: dict[str, set[str]] = {}
    for s in clips:
        people.setdefault(s.identity, set()).add(s.split)
    assert all(len(splits) == 1 for splits in people.values())  # nobody on both sides of a split
    for s in clips:
        assert s.path == SHARED_DATA / s.rel and s.rel.startswith("real_videos/") and s.path.is_file()
        assert s.split == clip_split(s.rel)
    assert realmedia.real_videos(SHARED_DATA) == clips  # the same on every call


@NEEDS_SHARED_DATA
def test_a_clip_keeps_its_split_when_the_other_files_are_gone(tmp_path):
    full = {s.rel: s.split for s in realmedia.real_videos(SHARED_DATA)}
    few = realmedia.real_videos(make_real_tree(tmp_path))
    assert {s.rel: s.split for s in few} == CLIPS == {rel: full[rel] for rel in CLIPS}


@NEEDS_SHARED_DATA
def test_photos_are_all_train_with_their_folder_as_identity():
    photos = realmedia.photos(SHARED_DATA)
    assert len(photos) == 100
    assert {s.split for s in photos} == {"train"} and {s.kind for s in photos} == {"image"}
    for s in photos:
        assert s.rel.startswith("face_images/")
        assert s.identity == "photo:" + s.path.parent.relative_to(SHARED_DATA / "face_images").as_posix()


@NEEDS_SHARED_DATA
def test_dfdc_crops_hold_each_video_in_one_split_and_take_labels_from_their_folder():
    crops = realmedia.dfdc_crops(SHARED_DATA)
    assert len(crops) == 89
    splits: dict[str, set[str]] = defaultdict(set)
    for s in crops:
        folder = s.path.parent.name
        assert s.label == {"real": 0, "fake": 1}[folder]
        assert s.identity == "dfdc:" + s.path.stem.replace("-", "_").split("_")[0]
        splits[s.identity].add(s.split)
    assert all(len(v) == 1 for v in splits.values())
    assert {v for (v,) in splits.values()} == {"train", "test"}  # both splits hold videos
    assert Counter((s.split, s.label) for s in crops) == {
        ("train", 0): 23,
        ("train", 1): 22,
        ("test", 0): 22,
        ("test", 1): 22,
    }
    by_rel = {s.rel: (s.label, s.split) for s in crops}
    assert {rel: by_rel[rel] for rel in DFDC} == DFDC


@NEEDS_SHARED_DATA
def test_deeperforensics_labels_come_from_the_groundtruth_file():
    videos = realmedia.deeperforensics(SHARED_DATA)
    assert {s.path.stem: s.label for s in videos} == {"000000": 0, "000001": 1, "000002": 1, "000003": 0}
    assert {s.split for s in videos} == {"test"} and all(s.path.is_file() for s in videos)


@pytest.mark.parametrize(
    ("lister", "folder"),
    [
        (realmedia.real_videos, "real_videos"),
        (realmedia.photos, "face_images"),
        (realmedia.dfdc_crops, "labelled/dfdc_face_crops"),
        (realmedia.deeperforensics, "labelled/deeperforensics"),
    ],
)
def test_a_missing_folder_raises_media_error_naming_the_path(tmp_path, lister, folder):
    with pytest.raises(MediaError, match=str(tmp_path / folder)):
        lister(tmp_path)


def test_an_unreadable_groundtruth_file_raises_media_error(tmp_path):
    base = tmp_path / "labelled" / "deeperforensics"
    base.mkdir(parents=True)
    (base / "local_test_groundtruth.json").write_text("{not json")
    with pytest.raises(MediaError, match="local_test_groundtruth.json"):
        realmedia.deeperforensics(tmp_path)


def test_clip_split_sends_about_a_quarter_each_to_test_and_val():
    counts = Counter(clip_split(f"real_videos/x/clip_{i}.mp4") for i in range(4000))
    assert set(counts) == {"train", "val", "test"}
    assert abs(counts["test"] - 1000) < 100 and abs(counts["val"] - 1000) < 100
