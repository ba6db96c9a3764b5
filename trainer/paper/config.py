"""DatasetConfig: what decides a face store's content, apart from the builder so the CLI reads it without h5py."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.ranges import out_of_range, range_of, ranged

PROTOCOLS = ("identity", "paper")  # split protocols: by person (honest), or the paper's random frame split


@dataclass(frozen=True)
class DatasetConfig:
    """Everything that decides the content of a store (all of it is recorded in the file)."""

    celebdf: Path  # Celeb-DF v2 root: Celeb-real/, Celeb-synthesis/, YouTube-real/, List_of_testing_videos.txt
    out: Path  # HDF5 file to write; an existing one is resumed
    all_videos: bool = False  # every video instead of the paper's subset
    n_real: int = 100  # real videos in the subset (Celeb-real + YouTube-real); the default is the paper's
    n_fake: int = 100  # fake videos in the subset (Celeb-synthesis); the default is the paper's
    # identity split: share of the subset's videos (per label) taken from the official test list;
    # paper split: share of frames drawn into test
    test_fraction: float = 0.2
    frames: int = ranged(10, 1, math.inf)  # frames sampled evenly per video
    whole_frames: bool = False  # no detection: whole frames resized to the crop size (the paper's case 1)
    # identity: official test list = test, train/val disjoint by person; paper: random 80/20 frame split, as the
    # paper (frames of one video on every side)
    split: str = "identity"
    val_fraction: float = 0.2  # share of the non-test videos (identity) or frames (paper) in validation
    # augmented copies stored per crop (1: the paper doubles the training faces; 0: none)
    augment_copies: int = ranged(1, 0, 255)
    # augmentation of the copies: paper (flips, brightness/contrast, rotate/scale, noise, CLAHE) or broadcast
    # (paper + JPEG recompression + downscale)
    augment: str = "paper"
    augment_splits: tuple[str, ...] = ("train",)  # splits that get copies; a copy stays in its original's split
    detector: Path = Path("models/face_detector.onnx")  # face detector artifact
    det_conf: float | None = None  # detector confidence threshold, in (0, 1); none = the artifact manifest's
    faces_per_frame: int = ranged(1, 1, math.inf)  # most confident faces kept per frame
    crop_size: int = ranged(256, 16, math.inf)  # stored crop side in pixels
    crop_margin: float = ranged(0.25, 0, math.inf)  # margin around the face box, fraction of its longer side
    # drop a crop within this many bits (of 64, dHash) of a kept crop of its video; -1 keeps all
    dedupe_hamming: int = 2
    seed: int = 0  # video subset, identity partition, frame draw, augmentation
    threads: int | None = None  # detector threads (ONNX Runtime intra-op); none = ONNX Runtime's
    readers: int = ranged(2, 1, math.inf)  # threads decoding the next videos ahead

    def __post_init__(self) -> None:
        problems = [f"{n} must be in {range_of(DatasetConfig, n)}, got {getattr(self, n)}" for n in out_of_range(self)]
        from trainer.paper.augment import PRESETS
        from trainer.store import SPLITS

        if self.augment not in PRESETS:
            problems.append(f"unknown augmentation {self.augment!r}; valid: {list(PRESETS)}")
        bad = [s for s in self.augment_splits if s not in SPLITS]
        if bad:
            problems.append(f"unknown augment splits {bad}; valid: {list(SPLITS)}")
        if self.det_conf is not None and not 0 < self.det_conf < 1:
            problems.append(f"det_conf must be in (0, 1), got {self.det_conf}")
        if problems:
            raise ValueError("; ".join(problems))

    def recorded(self) -> dict[str, Any]:
        """Options stored as attributes beyond the schema's own (a resume must repeat them)."""
        keep = (
            "all_videos",
            "n_real",
            "n_fake",
            "test_fraction",
            "val_fraction",
            "augment_copies",
            "augment",
            "faces_per_frame",
            "dedupe_hamming",
            "seed",
        )
        out = {k: getattr(self, k) for k in keep}
        out["augment_splits"] = ",".join(self.augment_splits)
        out["det_conf"] = -1.0 if self.det_conf is None or self.whole_frames else float(self.det_conf)
        return out
