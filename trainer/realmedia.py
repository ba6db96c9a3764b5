"""The real media under ``../shared/data`` as training sources, each with its fixed split.

``../shared/data`` (read-only, never copied into the repository) holds real talking-head clips,
still photos, a WIDER FACE subset and labelled DFDC / DeeperForensics material (its README).
This module lists them as ``Source`` rows and decides, once and for everyone, which of them
training may see: the detector's pseudo-labels and the classifier's real faces are drawn from
the ``train`` and ``val`` sources only, and both models are measured on the ``test`` sources.

Splits are by whole clip (one person per clip) from a hash of the clip's path, so they never
change when files are added. Photos are all ``train``: the same people appear in several of
them. WIDER FACE keeps its own ``train`` / ``val`` folders.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from trainer.errors import TrainerError

VIDEO_SUFFIXES = (".mp4", ".mov", ".mkv", ".avi", ".webm")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp")
# held-out clips are those whose path hashes into the first buckets
_TEST_BUCKETS, _VAL_BUCKETS, _BUCKETS = 1, 1, 4
# clips of one person under different names (checked by eye): they share the first clip's identity and split
SAME_PERSON = {
    "real_videos/video_retalking_examples/face_3.mp4": "real_videos/hdtf_sadtalker/WDA_AlexandriaOcasioCortez_000.mp4",
}


class MediaError(TrainerError):
    """The shared data folder is missing or lacks what a command needs."""


@dataclass(frozen=True)
class Source:
    path: Path  # absolute path of the video or image
    rel: str  # path relative to the data root ("real_videos/musetalk/sun.mp4")
    kind: str  # "video" or "image"
    identity: str  # who is in it: the clip for videos, the folder (or file) for photos
    split: str  # "train", "val" or "test"
    label: int = 0  # 1 = fake (labelled material only)


def read_rgb(path: Path) -> np.ndarray | None:
    """The image file at ``path`` as (H, W, 3) uint8 RGB (OpenCV decode); None where it cannot be read."""
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)  # (H, W, 3) BGR
    return None if image is None else cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def clip_split(rel: str) -> str:
    """The fixed split of a real clip: about 1 in 4 each for test and val, from a hash of its path
    (of the first clip of the same person, ``SAME_PERSON``)."""
    rel = SAME_PERSON.get(rel, rel)
    bucket = int(hashlib.sha1(rel.encode()).hexdigest(), 16) % _BUCKETS
    if bucket < _TEST_BUCKETS:
        return "test"
    return "val" if bucket < _TEST_BUCKETS + _VAL_BUCKETS else "train"


def _files(root: Path, suffixes: tuple[str, ...]) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in suffixes)


def _require(root: Path, folder: str) -> Path:
    path = root / folder
    if not path.is_dir():
        raise MediaError(f"{path} is missing; --media must point at the shared data folder (../shared/data)")
    return path


def real_videos(root: Path) -> list[Source]:
    """The real clips under ``real_videos/``, each its own identity, split by ``clip_split``."""
    out = []
    for p in _files(_require(root, "real_videos"), VIDEO_SUFFIXES):
        rel = p.relative_to(root).as_posix()
        person = SAME_PERSON.get(rel, rel).removeprefix("real_videos/").rsplit(".", 1)[0]
        out.append(Source(p, rel, "video", f"clip:{person}", clip_split(rel)))
    return out


def photos(root: Path) -> list[Source]:
    """The still photos under ``face_images/``: identity = their folder; all train."""
    out = []
    base = _require(root, "face_images")
    for p in _files(base, IMAGE_SUFFIXES):
        rel = p.relative_to(root).as_posix()
        out.append(Source(p, rel, "image", f"photo:{p.parent.relative_to(base).as_posix()}", "train"))
    return out


def dfdc_crops(root: Path) -> list[Source]:
    """The labelled DFDC face crops (``*/real``, ``*/fake``); identity = the DFDC video id in the file name.

    Half of the videos (by hash of the id) are held out as ``test``; the rest are ``train``.
    """
    out = []
    base = _require(root, "labelled/dfdc_face_crops")
    for p in _files(base, IMAGE_SUFFIXES):
        if p.parent.name not in ("real", "fake"):
            continue
        video = p.stem.replace("-", "_").split("_")[0]
        bucket = int(hashlib.sha1(video.encode()).hexdigest(), 16) % 2
        rel = p.relative_to(root).as_posix()
        out.append(
            Source(p, rel, "image", f"dfdc:{video}", "test" if bucket == 0 else "train", int(p.parent.name == "fake"))
        )
    return out


def utkface(root: Path, *, limit: int | None = None) -> list[Source]:
    """The aligned UTKFace photos under ``utkface/``: each file its own person (the data set does not
    name people); about 1 in 20 each for ``test`` and ``val`` by a hash of the file name.

    ``limit`` keeps the first ``limit`` files in hash order (an even, repeatable subsample).
    """
    out = []
    for p in _files(_require(root, "utkface"), IMAGE_SUFFIXES):
        bucket = int(hashlib.sha1(p.name.encode()).hexdigest(), 16) % 20
        split = "test" if bucket == 0 else "val" if bucket == 1 else "train"
        out.append(Source(p, p.relative_to(root).as_posix(), "image", f"utk:{p.stem}", split))
    if limit is not None:
        out = sorted(out, key=lambda s: hashlib.sha1(s.rel.encode()).hexdigest())[:limit]
    return out


def deeperforensics(root: Path) -> list[Source]:
    """The labelled DeeperForensics videos (all ``test``), labels from ``local_test_groundtruth.json``."""
    base = _require(root, "labelled/deeperforensics")
    truth_path = base / "local_test_groundtruth.json"
    try:
        truth = json.loads(truth_path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise MediaError(f"cannot read {truth_path}: {exc}") from exc
    return [
        Source(base / name, f"labelled/deeperforensics/{name}", "video", f"dfo:{name}", "test", int(label))
        for name, label in sorted(truth.items())
    ]
