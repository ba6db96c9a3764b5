"""Broadcast conditions: a real clip as a feed may deliver it, for counting false alerts (`dfwatch-train validate`,
`calibrate`).

A swap detector that reads fine detail also reads what a broadcast chain does to it: a low bitrate, a downscaled
contribution feed blown back up, a sharpening or denoising stage. A real face under any of these must stay REAL.
Each condition re-encodes every frame of a clip once (H.264 through PyAV) after an optional pixel operation:

- ``crf35``: heavy compression (a busy low-bitrate feed);
- ``crf18``: light compression after a 0.5x downscale and upscale (a standard-definition feed shown in HD);
- ``sharpen``: an unsharp mask (amount 1, sigma 1.5), as many broadcast chains sharpen;
- ``denoise``: a 5x5 bilateral filter (a temporal-noise reducer's look on skin);
- ``small``: the frame at 0.6x (a wide shot: smaller faces).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np

Op = Callable[[np.ndarray], np.ndarray]


def _rescale(factor: float, *, back: bool) -> Op:
    def op(img: np.ndarray) -> np.ndarray:
        h, w = img.shape[:2]
        small = cv2.resize(img, (max(2, round(w * factor)), max(2, round(h * factor))), interpolation=cv2.INTER_AREA)
        return cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR) if back else small

    return op


def _sharpen(img: np.ndarray) -> np.ndarray:
    blur = cv2.GaussianBlur(img, (0, 0), 1.5)
    return cv2.addWeighted(img, 2.0, blur, -1.0, 0)


def _denoise(img: np.ndarray) -> np.ndarray:
    return cv2.bilateralFilter(img, 5, 30, 5)


# name -> (pixel operation or None, H.264 CRF)
CONDITIONS: dict[str, tuple[Op | None, int]] = {
    "crf35": (None, 35),
    "crf18": (_rescale(0.5, back=True), 18),
    "sharpen": (_sharpen, 18),
    "denoise": (_denoise, 18),
    "small": (_rescale(0.6, back=False), 18),
}


def write_condition(src: Path, dst: Path, condition: str) -> Path:
    """``src`` under ``condition`` as an H.264 file ``dst`` at the same frame rate; returns ``dst``."""
    if condition not in CONDITIONS:
        raise ValueError(f"unknown broadcast condition {condition!r}; valid: {list(CONDITIONS)}")
    op, crf = CONDITIONS[condition]
    return rewrite(src, dst, op, crf=crf)


def rewrite(src: Path, dst: Path, op: Op | None, *, crf: int) -> Path:
    """Every frame of ``src`` through ``op`` (RGB in, RGB out; None: as is), cut to even sides and encoded as
    H.264 (yuv420p, ``crf``) into ``dst`` at the source's frame rate; returns ``dst``."""
    import av

    dst.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(src)) as inp, av.open(str(dst), "w") as out:
        vin = inp.streams.video[0]
        stream = None
        for frame in inp.decode(vin):
            img = frame.to_ndarray(format="rgb24")
            img = op(img) if op is not None else img
            img = np.ascontiguousarray(img[: img.shape[0] // 2 * 2, : img.shape[1] // 2 * 2])  # even for yuv420p
            if stream is None:
                stream = out.add_stream("libx264", rate=vin.average_rate or 25)
                stream.width, stream.height, stream.pix_fmt = img.shape[1], img.shape[0], "yuv420p"
                stream.options = {"crf": str(crf), "preset": "veryfast"}
            for packet in stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                out.mux(packet)
        if stream is not None:
            for packet in stream.encode():
                out.mux(packet)
    return dst


def variants(clips: list[Path], work: Path, *, conditions: tuple[str, ...] = tuple(CONDITIONS)) -> dict[Path, str]:
    """Every clip under every condition, written under ``work`` once (kept for a rerun): path -> "clip:condition"."""
    out = {}
    for clip in clips:
        for cond in conditions:
            dst = work / f"{clip.parent.name}__{clip.stem}__{cond}.mp4"
            if not dst.is_file() or dst.stat().st_size == 0:
                tmp = dst.with_name(dst.stem + ".tmp.mp4")
                write_condition(clip, tmp, cond)
                tmp.replace(dst)
            out[dst] = f"{clip.name}:{cond}"
    return out
