"""A miniature copy of ``../shared/data`` made of symlinks to a few real files, in the same layout.

The splits of trainer.realmedia hash each clip's path relative to the media root, so the
clips keep their relative paths here and land in the same split as in the full folder:
``driving_d1`` is a ``train`` clip, ``driving_d18`` a ``val`` clip and ``driving_d2`` a ``test``
clip (0.5 s, 0.5 s and 7 s; checked by the tests that use the tree). Nothing is copied: the
tree holds links into the read-only shared data, so it costs no disk and no time to build.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.conftest import SHARED_DATA

NEEDS_SHARED_DATA = pytest.mark.skipif(
    not (SHARED_DATA / "real_videos").is_dir(),
    reason=f"the real media are missing: {SHARED_DATA} (see ../shared/data/README.md)",
)

CLIPS = {  # rel path -> its split by realmedia.clip_split
    "real_videos/liveportrait_examples/driving_d1.mp4": "train",
    "real_videos/liveportrait_examples/driving_d18.mp4": "val",
    "real_videos/liveportrait_examples/driving_d2.mp4": "test",
}
PHOTOS = (
    "face_images/facenet_pytorch/test_images_aligned/angelina_jolie/1.png",
    "face_images/facenet_pytorch/test_images_aligned/kate_siegel/1.png",
)
# train: 3 faces (1 of them >= 64 px high); 1 face (>= 64 px); the one train image without a label file
WIDER_TRAIN = (
    "1_Handshaking_Handshaking_1_199.jpg",
    "1_Handshaking_Handshaking_1_288.jpg",
    "0_Parade_Parade_0_452.jpg",
)
# val: 1 face (>= 64 px); 5 faces (none >= 64 px, one >= 32 px)
WIDER_VAL = ("1_Handshaking_Handshaking_1_362.jpg", "1_Handshaking_Handshaking_1_664.jpg")
DFDC = {  # rel path -> (label, split by realmedia.dfdc_crops): real and fake crops of both sources
    "labelled/dfdc_face_crops/aaronchong888/fake/aagfhgtpmv-009-00.png": (1, "train"),
    "labelled/dfdc_face_crops/aaronchong888/real/abarnvbtwb-000-00.png": (0, "train"),
    "labelled/dfdc_face_crops/genconvit/fake/aabyjxwqyo_ppulbuhtsc_0.jpg": (1, "test"),
    "labelled/dfdc_face_crops/genconvit/real/aaapwqhxli_0.jpg": (0, "test"),
}


UTKFACE = (
    "utkface/13_0_0_20170103200856687.jpg",
    "utkface/27_1_2_20170116170004947.jpg",
    "utkface/68_0_2_20170111205006920.jpg",
)


def _link(root: Path, rel: str) -> None:
    dst = root / rel
    dst.parent.mkdir(parents=True, exist_ok=True)
    os.symlink(SHARED_DATA / rel, dst)


def make_real_tree(root: Path) -> Path:
    """Link the files above under ``root`` (WIDER images with their label files); returns ``root``."""
    rels = [*CLIPS, *PHOTOS, *DFDC, *UTKFACE]
    for split, names in (("train", WIDER_TRAIN), ("val", WIDER_VAL)):
        for name in names:
            rels.append(f"widerface/{split}/images/{name}")
            label = f"widerface/{split}/labels/{Path(name).stem}.txt"
            if (SHARED_DATA / label).is_file():
                rels.append(label)
    for rel in rels:
        _link(root, rel)
    return root
