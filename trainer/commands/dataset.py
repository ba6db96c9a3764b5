"""dfwatch-train dataset: a Celeb-DF v2 tree -> the face-crop HDF5 store the other stages train on."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
from pathlib import Path

logger = logging.getLogger(__name__)

EPILOG = """\
examples:
  dfwatch-train dataset --celebdf /data/Celeb-DF-v2 --out faces.h5            # paper subset, face crops (case 2)
  dfwatch-train dataset --celebdf /data/Celeb-DF-v2 --out frames.h5 --whole-frames --augment-copies 0  # case 1
  dfwatch-train dataset --celebdf /data/Celeb-DF-v2 --out paper.h5 --split paper  # the paper's 80/20 frame split

An interrupted build keeps every finished video: rerun the same command to resume it.
"""


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def cmd_dataset(args: argparse.Namespace) -> int:
    """Build (or resume) the store and print its summary; exit 130 when interrupted."""
    os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")  # albumentations asks PyPI at import otherwise
    from trainer.paper.dataset import DatasetConfig, build_dataset

    cfg = DatasetConfig(
        tree=args.celebdf,
        out=args.out,
        all_videos=args.all,
        n_real=args.real,
        n_fake=args.fake,
        test_fraction=args.test_fraction,
        frames=args.frames,
        whole_frames=args.whole_frames,
        split=args.split,
        val_fraction=args.val_fraction,
        augment_copies=args.augment_copies,
        augment=args.augment,
        augment_splits=tuple(args.augment_splits.split(",")),
        detector=args.detector,
        det_conf=args.det_conf,
        faces_per_frame=args.faces_per_frame,
        crop_size=args.crop_size,
        crop_margin=args.crop_margin,
        dedupe_hamming=args.dedupe_hamming,
        seed=args.seed,
        threads=args.threads,
        readers=args.readers,
    )
    previous = signal.signal(signal.SIGTERM, _interrupt)  # SIGTERM stops like Ctrl-C: finished videos are kept
    try:
        summary = build_dataset(cfg, progress=not args.no_progress)
    finally:
        signal.signal(signal.SIGTERM, previous)
    print(summary.format(), file=sys.stderr)
    return 130 if summary.interrupted else 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "dataset",
        help="Celeb-DF v2 tree -> face-crop HDF5 store (sample, detect, crop, dedupe, split, augment)",
        description=__doc__,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--celebdf",
        type=Path,
        required=True,
        metavar="TREE",
        help="Celeb-DF v2 root: Celeb-real/, Celeb-synthesis/, YouTube-real/, List_of_testing_videos.txt",
    )
    p.add_argument("--out", type=Path, required=True, help="HDF5 file to write; an existing one is resumed")
    sel = p.add_argument_group("videos")
    sel.add_argument("--all", action="store_true", help="every video instead of the paper's subset")
    sel.add_argument("--real", type=int, default=100, help="real videos in the subset (default 100, as the paper)")
    sel.add_argument("--fake", type=int, default=100, help="fake videos in the subset (default 100, as the paper)")
    sel.add_argument(
        "--test-fraction",
        type=float,
        default=0.2,
        help="identity split: share of the subset's videos (per label) taken from the official test "
        "list; paper split: share of frames drawn into test (default 0.2)",
    )
    sel.add_argument("--frames", type=int, default=10, help="frames sampled evenly per video (default 10)")
    spl = p.add_argument_group("splits")
    spl.add_argument(
        "--split",
        choices=("identity", "paper"),
        default="identity",
        help="identity: official test list = test, train/val disjoint by person (default); "
        "paper: random 80/20 frame split, as the paper (frames of one video on every side)",
    )
    spl.add_argument(
        "--val-fraction",
        type=float,
        default=0.2,
        help="share of the non-test videos (identity) or frames (paper) in validation (default 0.2)",
    )
    fac = p.add_argument_group("faces")
    fac.add_argument(
        "--whole-frames",
        action="store_true",
        help="no detection: whole frames resized to the crop size (the paper's case 1)",
    )
    fac.add_argument(
        "--detector",
        type=Path,
        default=Path("models/face_detector.onnx"),
        help="face detector artifact (default models/face_detector.onnx)",
    )
    fac.add_argument(
        "--det-conf", type=float, default=None, help="detector confidence threshold (default: the artifact manifest's)"
    )
    fac.add_argument("--faces-per-frame", type=int, default=1, help="most confident faces kept per frame (default 1)")
    fac.add_argument("--crop-size", type=int, default=256, help="stored crop side in pixels (default 256)")
    fac.add_argument(
        "--crop-margin",
        type=float,
        default=0.25,
        help="margin around the face box, fraction of its longer side (default 0.25, as the pipeline)",
    )
    fac.add_argument(
        "--dedupe-hamming",
        type=int,
        default=2,
        help="drop a crop within this many bits (of 64, dHash) of a kept crop of its video; -1 keeps all (default 2)",
    )
    fac.add_argument("--threads", type=int, default=None, help="detector threads (default: ONNX Runtime's)")
    fac.add_argument("--readers", type=int, default=2, help="threads decoding the next videos ahead (default 2)")
    aug = p.add_argument_group("offline augmentation")
    aug.add_argument(
        "--augment-copies",
        type=int,
        default=1,
        help="augmented copies stored per crop (default 1: the paper doubles the training faces; 0: none)",
    )
    aug.add_argument(
        "--augment",
        choices=("none", "paper", "broadcast"),
        default="paper",
        help="augmentation of the copies: paper (flips, brightness/contrast, rotate/scale, noise, CLAHE) "
        "or broadcast (paper + JPEG recompression + downscale) (default paper)",
    )
    aug.add_argument(
        "--augment-splits",
        default="train",
        help="comma-separated splits that get copies; a copy stays in its original's split (default train)",
    )
    p.add_argument("--seed", type=int, default=0, help="video subset, identity partition, frame draw, augmentation")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_dataset)
