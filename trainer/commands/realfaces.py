"""dfwatch-train realfaces: the classifier's face store from the real media in ../shared/data."""

from __future__ import annotations

import argparse
import logging
import sys
from dataclasses import dataclass
from pathlib import Path

from pipeline.flags import add_config_file, add_config_flags, config_from_args
from pipeline.ranges import check_ranges, ranged

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class RealFacesOptions:
    """`dfwatch-train realfaces`: what goes into the store (trainer.pack.realfaces.build_real_faces checks the
    box source and the tool names)."""

    media: Path = Path("../shared/data")  # the shared real-media folder
    out: Path = Path("runs/real_faces.h5")  # HDF5 store to write or resume
    crop_size: int = ranged(256, 8, 4096, unit="px")  # stored crop side (train at this or smaller)
    crop_margin: float = ranged(0.25, 0, 2)  # crop margin, fraction of the box side
    frames_per_clip: int = ranged(24, 1, 100_000)  # frames sampled from each clip
    min_face: int = ranged(64, 0, 10_000, unit="px")  # smallest face height kept
    boxes: str = "detector"  # face boxes from the shipped detector (the serving crop) or the MTCNN teacher
    detector: Path = Path("models/face_detector.onnx")  # face detector artifact for --boxes detector
    utkface: int | None = ranged(None, 0, 100_000)  # UTKFace photos to include; None = all, 0 = none
    dfdc: bool = False  # also store the labelled DFDC crops (the default pack keeps them for validation)
    # wild_swaps tools to train on (deepfacelive, lipsync, fewshot_gan); name them in the model card as seen; the
    # other tools stay held out
    tools: tuple[str, ...] = ()
    tool_frames: int = ranged(96, 1, 100_000)  # frames sampled from each --tools clip

    def __post_init__(self) -> None:
        check_ranges(self)


def cmd_realfaces(args: argparse.Namespace) -> int:
    from trainer.pack.realfaces import build_real_faces

    o = config_from_args(RealFacesOptions, args, file=args.config)
    summary = build_real_faces(
        o.media,
        o.out,
        crop_size=o.crop_size,
        margin=o.crop_margin,
        frames_per_clip=o.frames_per_clip,
        min_face=o.min_face,
        boxes=o.boxes,
        detector=o.detector,
        utkface=o.utkface,
        dfdc=o.dfdc,
        tools=o.tools,
        tool_frames=o.tool_frames,
    )
    for line in summary.skipped:
        logger.info("skipped %s", line)
    rows = ", ".join(f"{k} {v}" for k, v in sorted(summary.rows.items())) or "nothing new"
    print(f"realfaces: {o.out}: added {rows}; {len(summary.skipped)} sources without a usable face", file=sys.stderr)
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "realfaces", help="face-crop store of the real media (detector boxes; fakes come from --self-blend)"
    )
    add_config_flags(p, RealFacesOptions, choices={"boxes": ("detector", "teacher")})
    add_config_file(p, "the realfaces options")
    p.set_defaults(func=cmd_realfaces)
