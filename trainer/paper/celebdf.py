"""Celeb-DF v2 on disk: the tree, its official test list, identities from file names, video selection.

A tree holds ``Celeb-real/idX_NNNN.mp4`` (real videos of celebrity X),
``Celeb-synthesis/idX_idY_NNNN.mp4`` (X's video with Y's face swapped in),
``YouTube-real/NNNNN.mp4`` (real videos of other people) and ``List_of_testing_videos.txt``
(lines ``<label> <folder>/<file>.mp4`` where **1 = real, 0 = fake**; converted here to the
store's 1 = fake).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from trainer.errors import TreeError

logger = logging.getLogger(__name__)

FOLDERS = ("Celeb-real", "Celeb-synthesis", "YouTube-real")
TEST_LIST = "List_of_testing_videos.txt"
_PATTERNS = {
    "Celeb-real": re.compile(r"(id\d+)_(\d+)\.mp4"),
    "Celeb-synthesis": re.compile(r"(id\d+)_(id\d+)_(\d+)\.mp4"),
    "YouTube-real": re.compile(r"(\d+)\.mp4"),
}
_EXAMPLES = {"Celeb-real": "id0_0000.mp4", "Celeb-synthesis": "id0_id16_0000.mp4", "YouTube-real": "00170.mp4"}


@dataclass(frozen=True)
class Video:
    path: str  # relative to the tree, "Celeb-synthesis/id0_id16_0000.mp4"
    label: int  # 1 = fake, 0 = real
    identity: str  # whose video it is: "id0"; YouTube-real: "yt:00170"
    identity_src: str  # the swapped-in person of a fake ("id16"); "" for real videos
    official_test: bool  # listed in List_of_testing_videos.txt

    @property
    def people(self) -> frozenset[str]:
        """Everyone whose face or video this is: {identity, identity_src}."""
        return frozenset(p for p in (self.identity, self.identity_src) if p)


def parse_video_name(rel: str) -> tuple[int, str, str]:
    """``"Celeb-synthesis/id0_id16_0000.mp4"`` -> (label 1 = fake, identity "id0", identity_src "id16")."""
    folder, _, name = rel.partition("/")
    pattern = _PATTERNS.get(folder)
    if pattern is None:
        raise TreeError(f"video {rel!r} is not in a Celeb-DF folder; valid folders: {list(FOLDERS)}")
    m = pattern.fullmatch(name)
    if m is None:
        raise TreeError(f"video {rel!r} does not look like {folder}/{_EXAMPLES[folder]}")
    if folder == "Celeb-real":
        return 0, m.group(1), ""
    if folder == "Celeb-synthesis":
        return 1, m.group(1), m.group(2)
    return 0, f"yt:{m.group(1)}", ""


def read_test_list(path: str | Path) -> dict[str, int]:
    """The official test list as {relative path: label} with the store's labels (1 = fake, 0 = real).

    The file's own labels are 1 = real, 0 = fake; a label that disagrees with the video's
    folder (a real video marked fake, or the reverse) is an error naming the line.
    """
    path = Path(path)
    try:
        lines = path.read_text().splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise TreeError(f"cannot read the test list {path} ({exc})") from exc
    out: dict[str, int] = {}
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        parts = line.split()
        if len(parts) != 2 or parts[0] not in ("0", "1"):
            raise TreeError(f"{path}:{n}: expected '<1 = real | 0 = fake> <folder>/<file>.mp4', got {line!r}")
        label = 1 - int(parts[0])  # the file says 1 = real; the store says 1 = fake
        folder_label, _, _ = parse_video_name(parts[1])
        if label != folder_label:
            said = "real" if parts[0] == "1" else "fake"
            raise TreeError(f"{path}:{n}: {parts[1]} is marked {said} but its folder says otherwise")
        out[parts[1]] = label
    if not out:
        raise TreeError(f"the test list {path} is empty")
    return out


def scan_tree(root: str | Path) -> list[Video]:
    """Every video of a Celeb-DF v2 tree, sorted by path, with labels, identities and test membership.

    Raises TreeError naming every missing folder or file, any file of unknown name form, and
    any test-list video that is not in the tree.
    """
    root = Path(root)
    if not root.is_dir():
        raise TreeError(f"Celeb-DF tree {root} is not a directory")
    missing = [f"{f}/" for f in FOLDERS if not (root / f).is_dir()]
    if not (root / TEST_LIST).is_file():
        missing.append(TEST_LIST)
    if missing:
        raise TreeError(
            f"{root} is not a complete Celeb-DF v2 tree: missing {', '.join(missing)} "
            f"(expected {', '.join(f + '/' for f in FOLDERS)} and {TEST_LIST})"
        )
    test = read_test_list(root / TEST_LIST)
    videos = []
    for folder in FOLDERS:
        for file in sorted((root / folder).glob("*.mp4")):
            rel = f"{folder}/{file.name}"
            label, identity, src = parse_video_name(rel)
            videos.append(Video(rel, label, identity, src, rel in test))
    present = {v.path for v in videos}
    absent = sorted(set(test) - present)
    if absent:
        raise TreeError(
            f"{len(absent)} videos of {TEST_LIST} are not in {root}, e.g. {absent[:5]}; is the copy complete?"
        )
    if not videos:
        raise TreeError(f"{root} holds no .mp4 videos in {list(FOLDERS)}")
    return videos


def select_videos(
    videos: Sequence[Video],
    *,
    n_real: int = 100,
    n_fake: int = 100,
    all_videos: bool = False,
    test_fraction: float = 0.2,
    seed: int = 0,
) -> list[Video]:
    """The paper's subset (default 100 real + 100 fake videos) or, with ``all_videos``, all of them.

    Of each label, ``round(n * test_fraction)`` videos come from the official test list and
    the rest from outside it, so the honest protocol has a test set of the same balance.
    Deterministic for a seed and independent of listing order. When a pool is smaller than
    asked, all of it is taken and a warning says so.
    """
    if all_videos:
        return sorted(videos, key=lambda v: v.path)
    if not 0 <= test_fraction <= 1:
        raise ValueError(f"test_fraction must be in [0, 1], got {test_fraction}")
    rng = np.random.default_rng(seed)
    chosen: list[Video] = []
    for label, n in ((0, n_real), (1, n_fake)):
        if n < 0:
            raise ValueError(f"number of {'fake' if label else 'real'} videos must be >= 0, got {n}")
        n_test = round(n * test_fraction)
        for official, want in ((True, n_test), (False, n - n_test)):
            pool = sorted((v for v in videos if v.label == label and v.official_test == official), key=lambda v: v.path)
            if want > len(pool):
                kind = f"{'fake' if label else 'real'} videos {'in' if official else 'outside'} the test list"
                logger.warning("asked for %d %s, the tree has %d: taking all of them", want, kind, len(pool))
                want = len(pool)
            picks = rng.choice(len(pool), size=want, replace=False) if want else []
            chosen += [pool[i] for i in sorted(picks)]
    return sorted(chosen, key=lambda v: v.path)


def count_by(videos: Iterable[Video]) -> dict[str, int]:
    """Counts per folder, e.g. {"Celeb-real": 108, "Celeb-synthesis": 340, "YouTube-real": 70}."""
    counts = dict.fromkeys(FOLDERS, 0)
    for v in videos:
        counts[v.path.split("/", 1)[0]] += 1
    return counts
