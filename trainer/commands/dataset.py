"""dfwatch-train dataset: a Celeb-DF v2 tree -> the face-crop HDF5 store the other stages train on."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys

from pipeline.flags import add_config_file, add_config_flags, config_from_args

logger = logging.getLogger(__name__)

EPILOG = """\
examples:
  dfwatch-train dataset --celebdf /data/Celeb-DF-v2 --out faces.h5            # paper subset, face crops (case 2)
  dfwatch-train dataset --celebdf /data/Celeb-DF-v2 --out frames.h5 --whole-frames --augment-copies 0  # case 1
  dfwatch-train dataset --celebdf /data/Celeb-DF-v2 --out paper.h5 --split paper  # the paper's 80/20 frame split

An interrupted build keeps every finished video: rerun the same command to resume it.
"""


AUGMENTS = ("none", "paper", "broadcast")  # the presets offered for the offline copies


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def cmd_dataset(args: argparse.Namespace) -> int:
    """Build (or resume) the store and print its summary; exit 130 when interrupted."""
    os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")  # albumentations asks PyPI at import otherwise
    from trainer.paper.dataset import DatasetConfig, build_dataset

    cfg = config_from_args(DatasetConfig, args, file=args.config)
    previous = signal.signal(signal.SIGTERM, _interrupt)  # SIGTERM stops like Ctrl-C: finished videos are kept
    try:
        summary = build_dataset(cfg, progress=not args.no_progress)
    finally:
        signal.signal(signal.SIGTERM, previous)
    print(summary.format(), file=sys.stderr)
    return 130 if summary.interrupted else 0


def register(sub: argparse._SubParsersAction) -> None:
    from trainer.paper.config import PROTOCOLS, DatasetConfig

    p = sub.add_parser(
        "dataset",
        help="Celeb-DF v2 tree -> face-crop HDF5 store (sample, detect, crop, dedupe, split, augment)",
        description=__doc__,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_config_flags(
        p,
        DatasetConfig,
        flags={"all_videos": "--all", "n_real": "--real", "n_fake": "--fake"},
        choices={"split": PROTOCOLS, "augment": AUGMENTS},
    )
    add_config_file(p, "the dataset options")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_dataset)
