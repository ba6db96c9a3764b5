"""Trainer fixtures: a miniature Celeb-DF v2 tree of generated clips and a face store built from it."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.trainer.minitree import MiniTree, make_mini_celebdf

# albumentations asks PyPI for a newer version when first imported unless told not to
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

MINI_STORE_ARGS = ("--all", "--whole-frames", "--frames", "6", "--crop-size", "64", "--no-progress")


@pytest.fixture(scope="session")
def mini_celebdf(tmp_path_factory: pytest.TempPathFactory) -> MiniTree:
    """15 clips (8 real, 7 fake; 4 in the test list) of 10 frames at 128x128, written once per session.

    Read only: tests that add or break videos copy ``mini_celebdf.root`` first.
    """
    return make_mini_celebdf(tmp_path_factory.mktemp("celebdf"))


@pytest.fixture(scope="session")
def mini_faces_h5(mini_celebdf: MiniTree, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A face store built from the mini tree by the real `dfwatch-train dataset` command.

    Whole frames (the paper's case 1) at 64x64, 6 frames per video, identity split, one
    augmented copy per train crop. Whole frames, because the placeholder detector is
    untrained: its boxes are noise, so crops cut with it would carry no face to learn from,
    while the drawn faces fill a large part of each 128x128 frame and the manipulation
    (colour shift + blur of the inner face) is learnable from the whole frame. Every step of
    the product path still runs (sampling, dedupe, split, augmentation, HDF5); the detector
    path is tested on its own in test_dataset.py. Read only.
    """
    from trainer.cli import main

    out = tmp_path_factory.mktemp("faces") / "faces.h5"
    assert main(["dataset", "--celebdf", str(mini_celebdf.root), "--out", str(out), *MINI_STORE_ARGS]) == 0
    return out
