"""Synthetic demo clip: a virtual camera over scikit-image's astronaut photo, real then face-swapped.

Nothing is downloaded or committed: the clip is rendered at run time from `skimage.data.astronaut()`
(Eileen Collins, NASA, public domain). Usage: ``python -m pipeline.demo OUT.mp4``.
"""

from __future__ import annotations

import argparse
import functools
import logging
import re
import sys
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np

from pipeline.errors import ConfigError
from pipeline.flags import add_config_flags, config_from_args, field_help
from pipeline.ranges import check_ranges, ranged

logger = logging.getLogger(__name__)

ASTRONAUT_FACE_BOX = (181, 77, 265, 180)  # xyxy in source pixels, hairline to chin, cheek to cheek
_ZOOM_RANGE = (1.6, 2.05)  # face box height ~34%..47% of a 480-px frame
_MAX_ANGLE_DEG = 3.0
_NOISE_SIGMA = 2.5  # Gaussian sensor noise, uint8 levels


@dataclass(frozen=True)
class DemoClip:
    path: Path
    fps: int
    n_frames: int
    fake_start: int  # first frame index of the manipulated part
    face_boxes: np.ndarray  # (n_frames, 4) float32 xyxy of the face in output-frame pixels (ground truth)
    size: tuple[int, int]  # (width, height)


@functools.cache
def _sources() -> tuple[np.ndarray, np.ndarray]:
    """(real, fake) RGB source images, (512, 512, 3) uint8; fake has a blended-in altered face."""
    from skimage import data  # imported lazily: skimage import is slow

    real = np.ascontiguousarray(data.astronaut())
    x1, y1, x2, y2 = ASTRONAUT_FACE_BOX
    w, h = x2 - x1, y2 - y1
    mx, my = w // 4, h // 4  # work on a margin around the face so the warp never sees the crop edge
    px1, py1, px2, py2 = x1 - mx, y1 - my, x2 + mx, y2 + my
    patch = real[py1:py2, px1:px2]  # (ph, pw, 3)
    ph, pw = patch.shape[:2]

    hsv = cv2.cvtColor(patch, cv2.COLOR_RGB2HSV).astype(np.float32)
    hsv[..., 0] = (hsv[..., 0] + 5) % 180  # hue +10 degrees
    hsv[..., 1] = np.clip(hsv[..., 1] * 1.35, 0, 255)
    hsv[..., 2] = np.clip(hsv[..., 2] * 1.06, 0, 255)
    swapped = cv2.cvtColor(hsv.astype(np.uint8), cv2.COLOR_HSV2RGB)
    small = cv2.resize(swapped, (pw // 2, ph // 2), interpolation=cv2.INTER_AREA)
    swapped = cv2.resize(small, (pw, ph), interpolation=cv2.INTER_LINEAR)  # blurrier face
    m = cv2.getRotationMatrix2D((pw / 2, ph / 2), 0.0, 1.04)
    m[:, 2] += (2.0, 3.0)  # slightly scaled and misaligned, like a warped swap
    swapped = cv2.warpAffine(swapped, m, (pw, ph), borderMode=cv2.BORDER_REFLECT101)

    mask = np.zeros((ph, pw), np.float32)
    centre = (pw // 2, ph // 2)
    cv2.ellipse(mask, centre, (int(w * 0.46), int(h * 0.47)), 0, 0, 360, 1.0, thickness=-1)
    mask = cv2.GaussianBlur(mask, (0, 0), sigmaX=3.0)[..., None]  # (ph, pw, 1) feathered seam
    blended = mask * swapped.astype(np.float32) + (1 - mask) * patch.astype(np.float32)
    fake = real.copy()
    fake[py1:py2, px1:px2] = np.clip(np.rint(blended), 0, 255).astype(np.uint8)
    return real, fake


def _smooth(rng: np.random.Generator, t: np.ndarray) -> np.ndarray:
    """A smooth random signal in [-1, 1] over times `t` (seconds): two slow sinusoids."""
    freqs = rng.uniform(0.06, 0.22, size=2)  # Hz
    phases = rng.uniform(0, 2 * np.pi, size=2)
    return 0.6 * np.sin(2 * np.pi * freqs[0] * t + phases[0]) + 0.4 * np.sin(2 * np.pi * freqs[1] * t + phases[1])


def _camera_matrices(n_frames: int, *, fps: int, size: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """(n_frames, 2, 3) float64 affine maps source pixels -> output pixels; the view never leaves the photo."""
    w, h = size
    t = np.arange(n_frames) / fps
    zoom = np.interp(_smooth(rng, t), (-1, 1), _ZOOM_RANGE) * (h / 480)
    angle = np.deg2rad(_MAX_ANGLE_DEG * _smooth(rng, t))
    face_out = np.stack([w / 2 + 0.12 * w * _smooth(rng, t), 0.42 * h + 0.08 * h * _smooth(rng, t)], axis=1)
    x1, y1, x2, y2 = ASTRONAUT_FACE_BOX
    face_src = np.array([(x1 + x2) / 2, (y1 + y2) / 2])
    corners_out = np.array([[0, 0], [w, 0], [0, h], [w, h]], np.float64) - (w / 2, h / 2)  # (4, 2)
    mats = np.empty((n_frames, 2, 3))
    for i in range(n_frames):
        c, s = np.cos(angle[i]), np.sin(angle[i])
        rot = np.array([[c, -s], [s, c]])
        # source point = centre_src + rot^T @ (out - out_centre) / zoom; keep all 4 frame corners on the photo
        centre_src = face_src - rot.T @ (face_out[i] - (w / 2, h / 2)) / zoom[i]
        offsets = corners_out @ rot / zoom[i]  # (4, 2) == (rot.T @ corner).T / zoom
        lo, hi = -offsets.min(0), 511 - offsets.max(0)
        if (lo > hi).any():
            raise ValueError(f"size {size!r} is too wide for the 512x512 photo: need width/height <= ~1.6 (640x480)")
        centre_src = np.clip(centre_src, lo, hi)
        a = zoom[i] * rot
        mats[i, :, :2] = a
        mats[i, :, 2] = (w / 2, h / 2) - a @ centre_src
    return mats


def _face_box(matrix: np.ndarray) -> np.ndarray:
    """(4,) float32 axis-aligned xyxy bounds of ASTRONAUT_FACE_BOX under `matrix` (2, 3)."""
    x1, y1, x2, y2 = ASTRONAUT_FACE_BOX
    pts = np.array([[x1, y1, 1], [x2, y1, 1], [x1, y2, 1], [x2, y2, 1]], np.float64) @ matrix.T  # (4, 2)
    return np.concatenate([pts.min(0), pts.max(0)]).astype(np.float32)


def _render(matrix: np.ndarray, *, size: tuple[int, int], fake: bool) -> np.ndarray:
    """(height, width, 3) uint8 RGB view of the real or manipulated photo, without noise."""
    src = _sources()[1 if fake else 0]
    return cv2.warpAffine(src, matrix, size, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT101)


def make_demo_clip(
    path: str | Path,
    *,
    fps: int = 25,
    real_seconds: float = 4.0,
    fake_seconds: float = 4.0,
    size: tuple[int, int] = (640, 480),
    seed: int = 0,
) -> DemoClip:
    """Write an H.264 MP4 (faststart) whose face is real for `real_seconds`, then face-swapped.

    `size` is (width, height), both even (yuv420p). Same arguments give the same frames.
    """
    w, h = size
    if w % 2 or h % 2 or w < 64 or h < 64:
        raise ValueError(f"size must be (width, height), both even and >= 64; got {size!r}")
    if fps <= 0 or real_seconds < 0 or fake_seconds < 0:
        raise ValueError(f"need fps > 0 and non-negative durations; got {fps=}, {real_seconds=}, {fake_seconds=}")
    path = Path(path)
    rng = np.random.default_rng(seed)
    fake_start = round(real_seconds * fps)
    n_frames = fake_start + round(fake_seconds * fps)
    mats = _camera_matrices(n_frames, fps=fps, size=size, rng=rng)
    boxes = np.stack([_face_box(m) for m in mats]) if n_frames else np.zeros((0, 4), np.float32)  # (n, 4)
    if (boxes[:, :2] < 0).any() or (boxes[:, 2] > w).any() or (boxes[:, 3] > h).any():
        raise ValueError(f"size {size!r} leaves the face partly out of frame; use about 4:3")

    # faststart: the index (moov) goes before the media, so a truncated copy still decodes its first frames
    options = {"movflags": "+faststart", "video_track_timescale": str(fps)}  # file time base 1/fps
    with av.open(str(path), mode="w", format="mp4", container_options=options) as container:
        # A keyframe every second, so a late RTSP viewer of the looped clip starts fast.
        stream = container.add_stream("libx264", rate=fps, options={"crf": "23", "g": str(fps)})
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        stream.time_base = Fraction(1, fps)
        # one noise field, cropped at a random offset per frame: fresh-looking noise at a fraction of the cost
        noise = _NOISE_SIGMA * rng.standard_normal((h + 64, w + 64, 3), dtype=np.float32)  # (h+64, w+64, 3)
        for i, m in enumerate(mats):
            oy, ox = rng.integers(0, 65, size=2)
            img = _render(m, size=size, fake=i >= fake_start) + noise[oy : oy + h, ox : ox + w]  # (h, w, 3) float32
            rgb = np.clip(np.rint(img), 0, 255).astype(np.uint8)
            frame = av.VideoFrame.from_ndarray(rgb, format="rgb24").reformat(format="yuv420p")
            frame.pts, frame.time_base = i, Fraction(1, fps)
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))  # flush
    logger.debug("wrote %s: %d frames, fake from %d", path, n_frames, fake_start)
    return DemoClip(path=path, fps=fps, n_frames=n_frames, fake_start=fake_start, face_boxes=boxes, size=(w, h))


@dataclass(frozen=True)
class DemoOptions:
    """``python -m pipeline.demo``'s options: the clip ``make_demo_clip`` writes."""

    out: Path  # output .mp4 path
    fps: int = ranged(25, 1, 240)  # frames per second
    real_seconds: float = ranged(4.0, 0, 3600)  # seconds of the real face, first
    fake_seconds: float = ranged(4.0, 0, 3600)  # seconds of the swapped face, then
    size: str = "640x480"  # WIDTHxHEIGHT, both even
    seed: int = 0  # the camera's path and the noise

    def __post_init__(self) -> None:
        check_ranges(self)
        if not re.fullmatch(r"\d+x\d+", self.size.lower()):
            raise ConfigError(f"size must look like 640x480, got {self.size!r}")

    @property
    def frame_size(self) -> tuple[int, int]:
        """(width, height) of ``size``."""
        w, h = self.size.lower().split("x")
        return int(w), int(h)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipeline.demo", description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path, help=field_help(DemoOptions)["out"])
    add_config_flags(parser, DemoOptions, skip=("out",))
    try:
        opts = config_from_args(DemoOptions, parser.parse_args(argv))
    except ConfigError as exc:
        parser.error(str(exc))
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    w, h = opts.frame_size
    clip = make_demo_clip(
        opts.out,
        fps=opts.fps,
        real_seconds=opts.real_seconds,
        fake_seconds=opts.fake_seconds,
        size=(w, h),
        seed=opts.seed,
    )
    print(
        f"{clip.path}: {clip.n_frames} frames {w}x{h} @ {clip.fps} fps, fake from frame {clip.fake_start}, "
        f"{clip.path.stat().st_size / 1e6:.2f} MB",
        file=sys.stderr,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
