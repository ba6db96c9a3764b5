"""Celeb-DF v2 trees: the real official test list, file-name identities, missing parts, video selection."""

from __future__ import annotations

import logging
import shutil
from collections import Counter
from pathlib import Path

import pytest

from tests.conftest import SHARED_DATA
from trainer.paper.celebdf import TreeError, Video, count_by, parse_video_name, read_test_list, scan_tree, select_videos

REAL_TEST_LIST = SHARED_DATA / "celebdf_meta" / "List_of_testing_videos.txt"


def test_the_real_official_test_list():
    assert REAL_TEST_LIST.is_file(), f"missing {REAL_TEST_LIST} (see ../shared/data/README.md)"
    test = read_test_list(REAL_TEST_LIST)
    assert len(test) == 518
    folders = Counter(path.split("/")[0] for path in test)
    assert folders == {"Celeb-real": 108, "YouTube-real": 70, "Celeb-synthesis": 340}
    # the file says 1 = real, 0 = fake; the store says 1 = fake
    assert test["YouTube-real/00170.mp4"] == 0
    assert {test[p] for p in test if p.startswith("Celeb-synthesis/")} == {1}
    assert {test[p] for p in test if not p.startswith("Celeb-synthesis/")} == {0}
    people = {parse_video_name(p)[1] for p in test} | {parse_video_name(p)[2] for p in test} - {""}
    assert len({p for p in people if p.startswith("id")}) == 56  # celebrities in the official test list
    assert len({p for p in people if p.startswith("yt:")}) == 70  # one person per YouTube-real video


@pytest.mark.parametrize(
    ("rel", "expected"),
    [
        ("Celeb-real/id0_0000.mp4", (0, "id0", "")),
        ("Celeb-synthesis/id0_id16_0000.mp4", (1, "id0", "id16")),
        ("Celeb-synthesis/id17_id2_0003.mp4", (1, "id17", "id2")),
        ("YouTube-real/00170.mp4", (0, "yt:00170", "")),
    ],
)
def test_identities_come_from_file_names(rel: str, expected: tuple[int, str, str]):
    assert parse_video_name(rel) == expected


@pytest.mark.parametrize(
    ("rel", "message"),
    [
        ("Celeb-real/id0_id1_0000.mp4", r"does not look like Celeb-real/id0_0000.mp4"),
        ("Celeb-synthesis/id0_0000.mp4", r"does not look like Celeb-synthesis/id0_id16_0000.mp4"),
        ("YouTube-real/abc.mp4", r"does not look like YouTube-real/00170.mp4"),
        ("FaceForensics/000.mp4", r"not in a Celeb-DF folder; valid folders: \['Celeb-real', 'Celeb-synthesis'"),
    ],
)
def test_unknown_name_forms_are_refused(rel: str, message: str):
    with pytest.raises(TreeError, match=message):
        parse_video_name(rel)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("1 Celeb-real/id0_0000.mp4\nreal Celeb-real/id1_0000.mp4\n", r"List.txt:2: expected '<1 = real \| 0 = fake>"),
        ("1 Celeb-synthesis/id0_id1_0000.mp4\n", r"List.txt:1: Celeb-synthesis/id0_id1_0000.mp4 is marked real"),
        ("0 YouTube-real/00001.mp4\n", r"List.txt:1: YouTube-real/00001.mp4 is marked fake"),
        ("\n\n", r"is empty"),
    ],
)
def test_malformed_test_lists_name_the_line(tmp_path: Path, text: str, message: str):
    path = tmp_path / "List.txt"
    path.write_text(text)
    with pytest.raises(TreeError, match=message):
        read_test_list(path)


def test_scan_the_mini_tree(mini_celebdf):
    videos = scan_tree(mini_celebdf.root)
    assert [v.path for v in videos] == sorted(mini_celebdf.videos)
    assert {v.path: v.label for v in videos} == mini_celebdf.videos
    assert {v.path for v in videos if v.official_test} == set(mini_celebdf.test)
    fake = next(v for v in videos if v.path == "Celeb-synthesis/id2_id3_0000.mp4")
    assert (fake.identity, fake.identity_src, fake.people) == ("id2", "id3", {"id2", "id3"})
    assert count_by(videos) == {"Celeb-real": 6, "Celeb-synthesis": 7, "YouTube-real": 2}


def test_missing_folders_and_list_are_named(mini_celebdf, tmp_path: Path):
    tree = tmp_path / "tree"
    shutil.copytree(mini_celebdf.root, tree)
    shutil.rmtree(tree / "YouTube-real")
    (tree / "List_of_testing_videos.txt").unlink()
    with pytest.raises(TreeError, match=r"missing YouTube-real/, List_of_testing_videos.txt \(expected Celeb-real/"):
        scan_tree(tree)
    with pytest.raises(TreeError, match="is not a directory"):
        scan_tree(tmp_path / "nowhere")


def test_test_list_videos_missing_from_the_tree(mini_celebdf, tmp_path: Path):
    tree = tmp_path / "tree"
    shutil.copytree(mini_celebdf.root, tree)
    (tree / "Celeb-real" / "id0_0001.mp4").unlink()
    with pytest.raises(TreeError, match=r"1 videos of List_of_testing_videos.txt are not in .*Celeb-real/id0_0001.mp4"):
        scan_tree(tree)


def _celebdf_like() -> list[Video]:
    """The real test list plus a synthetic remainder in Celeb-DF v2's proportions (890 real, 5639 fake)."""
    test = read_test_list(REAL_TEST_LIST)
    videos = [Video(p, label, *parse_video_name(p)[1:], True) for p, label in test.items()]
    names = [f"Celeb-real/id{i % 62}_{9000 + i:04d}.mp4" for i in range(590 - 108)]
    names += [f"YouTube-real/{90000 + i:05d}.mp4" for i in range(300 - 70)]
    names += [f"Celeb-synthesis/id{i % 62}_id{(i * 7 + 1) % 62}_{9000 + i:04d}.mp4" for i in range(5639 - 340)]
    videos += [Video(n, *parse_video_name(n), False) for n in names]
    return videos


def test_default_selection_is_the_papers_100_plus_100():
    videos = _celebdf_like()
    chosen = select_videos(videos, seed=0)
    labels = Counter(v.label for v in chosen)
    assert labels == {0: 100, 1: 100}
    assert Counter((v.label, v.official_test) for v in chosen) == {
        (0, True): 20,
        (0, False): 80,
        (1, True): 20,
        (1, False): 80,
    }
    assert len({v.path for v in chosen}) == 200
    assert select_videos(list(reversed(videos)), seed=0) == chosen  # deterministic, order-independent
    assert select_videos(videos, seed=1) != chosen
    assert len(select_videos(videos, all_videos=True)) == len(videos) == 6529


def test_a_small_tree_gives_all_it_has_and_says_so(mini_celebdf, caplog: pytest.LogCaptureFixture):
    videos = scan_tree(mini_celebdf.root)
    with caplog.at_level(logging.WARNING, logger="trainer.paper.celebdf"):
        chosen = select_videos(videos)
    assert len(chosen) == len(videos)
    assert "asked for 80 real videos outside the test list, the tree has 6: taking all of them" in caplog.text
    assert len(select_videos(videos, n_real=2, n_fake=2, test_fraction=0.5)) == 4
