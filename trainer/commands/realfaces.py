"""dfwatch-train realfaces: the classifier's face store from the real media in ../shared/data."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

logger = logging.getLogger(__name__)


def cmd_realfaces(args: argparse.Namespace) -> int:
    from trainer.pack.realfaces import build_real_faces

    summary = build_real_faces(
        args.media,
        args.out,
        crop_size=args.crop_size,
        margin=args.crop_margin,
        frames_per_clip=args.frames_per_clip,
        min_face=args.min_face,
        boxes=args.boxes,
        detector=args.detector,
        utkface=args.utkface,
        dfdc=args.dfdc,
        tools=[t for t in args.tools.split(",") if t],
        tool_frames=args.tool_frames,
    )
    for line in summary.skipped:
        logger.info("skipped %s", line)
    rows = ", ".join(f"{k} {v}" for k, v in sorted(summary.rows.items())) or "nothing new"
    print(f"realfaces: {args.out}: added {rows}; {len(summary.skipped)} sources without a usable face", file=sys.stderr)
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "realfaces", help="face-crop store of the real media (detector boxes; fakes come from --self-blend)"
    )
    p.add_argument("--media", type=Path, default=Path("../shared/data"), help="the shared real-media folder")
    p.add_argument("--out", type=Path, default=Path("runs/real_faces.h5"), help="HDF5 store to write or resume")
    p.add_argument("--crop-size", type=int, default=256, help="stored crop side (train at this or smaller)")
    p.add_argument("--crop-margin", type=float, default=0.25, help="crop margin, fraction of the box side")
    p.add_argument("--frames-per-clip", type=int, default=24, help="frames sampled from each clip")
    p.add_argument("--min-face", type=int, default=64, help="smallest face height kept, px")
    p.add_argument(
        "--boxes",
        choices=["detector", "teacher"],
        default="detector",
        help="face boxes from the shipped detector (the serving crop) or the MTCNN teacher",
    )
    p.add_argument(
        "--detector",
        type=Path,
        default=Path("models/face_detector.onnx"),
        help="face detector artifact for --boxes detector",
    )
    p.add_argument(
        "--utkface", type=int, default=None, metavar="N", help="UTKFace photos to include (default: all; 0: none)"
    )
    p.add_argument(
        "--dfdc",
        action="store_true",
        help="also store the labelled DFDC crops (the default pack keeps them for validation)",
    )
    p.add_argument(
        "--tools",
        default="",
        metavar="LIST",
        help="comma list of wild_swaps tools to train on (deepfacelive, lipsync, fewshot_gan); "
        "name them in the model card as seen; the other tools stay held out",
    )
    p.add_argument("--tool-frames", type=int, default=96, help="frames sampled from each --tools clip (default: 96)")
    p.set_defaults(func=cmd_realfaces)
