"""How a face reaches the classifier in a broadcast feed, simulated on a stored crop: ``simulate_capture``.

A stored crop (the store's side, 256) stands for the scene. A feed shows the face at some
*native* size (a face 60 px high in a wide shot, 400 px in a close-up), compressed by a codec
(JPEG stills, H.264 video); serving then cuts the crop and resizes it once to the classifier's
input (``engines.crops.resize_square``). A face swap happens *in* the feed, before the codec:
its blend is made at the native size. So a fake is made here as swaps are:

    stored crop -> native size -> [blend, fakes only] -> codec -> input size

and a real crop goes through the same steps without the blend, so that size, sharpness and
compression say nothing about the label; only the blend does. A broadcast chain may also filter the
whole picture (``p_sharpen``, ``p_soften``: an unsharp mask, a blur or a denoiser, after the blend and
before the codec), so a sharp or a soft face is no label either.

Some material reaches the classifier cut out already: a face near the frame's edge, or footage
distributed as face crops on a black canvas (Celeb-DF segments, DFDC crops). ``crop_faces``
then pads with black. A capture may black out everything outside a rectangle around the face
box (``border``), after the swap and before the codec, as such a cut is made.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import dataclass

import cv2
import numpy as np

from engines.crops import resize_square

CODECS = ("none", "jpeg", "h264")


@dataclass(frozen=True)
class CaptureConfig:
    min_native: int = 96  # smallest native crop side, px (log-uniform between this and the stored side)
    p_full: float = 0.3  # probability that the face is shown at the stored side (no downscale)
    p_jpeg: float = 0.55  # probability of JPEG compression
    p_h264: float = 0.2  # probability of one H.264 intra frame (the rest: no codec)
    jpeg_quality: tuple[int, int] = (50, 95)  # broadcast-grade to heavily compressed stills
    h264_crf: tuple[int, int] = (20, 32)  # from near-transparent to a busy low-bitrate feed
    p_border: float = 0.4  # probability that everything outside a rectangle around the face box is black
    border_keep: tuple[float, float] = (0.0, 0.3)  # that rectangle's margin on each side, fraction of the box side
    p_sharpen: float = 0.0  # probability of a broadcast chain's unsharp mask over the whole picture (amount 0.3-1.2)
    p_soften: float = 0.0  # probability of a whole-picture blur or denoise (Gaussian sigma 0.5-1.2 px, or bilateral)

    def __post_init__(self) -> None:
        if self.min_native < 8:
            raise ValueError(f"min_native must be >= 8, got {self.min_native}")
        ps = (self.p_full, self.p_jpeg, self.p_h264, self.p_border, self.p_sharpen, self.p_soften)
        if (
            min(ps) < 0
            or self.p_jpeg + self.p_h264 > 1
            or self.p_sharpen + self.p_soften > 1
            or max(self.p_full, self.p_border) > 1
        ):
            raise ValueError(
                "capture probabilities must be >= 0, p_full and p_border <= 1, p_jpeg + p_h264 <= 1 and "
                "p_sharpen + p_soften <= 1"
            )


@dataclass(frozen=True)
class Capture:
    """One drawn capture: the native crop side, the codec with its quality (JPEG) or CRF (H.264), and the
    margins (left, top, right, bottom; fractions of the face box side) outside which the crop is black."""

    native: int
    codec: str
    quality: int = 0
    border: tuple[float, float, float, float] | None = None
    look: tuple[str, float] = ("none", 0.0)  # the chain's filter over the whole picture: sharpen / blur / denoise


def draw_capture(rng: np.random.Generator, stored: int, cfg: CaptureConfig = CaptureConfig()) -> Capture:
    """A random capture of a crop stored at side ``stored``."""
    if rng.random() < cfg.p_full or stored <= cfg.min_native:
        native = stored
    else:
        native = int(round(np.exp(rng.uniform(np.log(cfg.min_native), np.log(stored)))))
    native += native % 2  # H.264 wants even sides
    border = tuple(float(v) for v in rng.uniform(*cfg.border_keep, 4)) if rng.random() < cfg.p_border else None
    u = rng.random()
    if u < cfg.p_jpeg:
        codec, quality = "jpeg", int(rng.integers(cfg.jpeg_quality[0], cfg.jpeg_quality[1] + 1))
    elif u < cfg.p_jpeg + cfg.p_h264:
        codec, quality = "h264", int(rng.integers(cfg.h264_crf[0], cfg.h264_crf[1] + 1))
    else:
        codec, quality = "none", 0
    look: tuple[str, float] = ("none", 0.0)
    if cfg.p_sharpen or cfg.p_soften:  # drawn last: configs without a look draw what they always drew
        v = rng.random()
        if v < cfg.p_sharpen:
            look = ("sharpen", float(rng.uniform(0.3, 1.2)))
        elif v < cfg.p_sharpen + cfg.p_soften:
            look = ("blur", float(rng.uniform(0.5, 1.2))) if rng.random() < 0.6 else ("denoise", 0.0)
    return Capture(native, codec, quality, border, look)


def apply_look(image: np.ndarray, look: tuple[str, float]) -> np.ndarray:
    """``image`` (S, S, 3) uint8 after a broadcast chain's whole-picture filter (a new array; "none": as is)."""
    kind, amount = look
    if kind == "none":
        return image
    if kind == "sharpen":  # unsharp mask, radius about 1 px
        return cv2.addWeighted(image, 1.0 + amount, cv2.GaussianBlur(image, (0, 0), 1.0), -amount, 0)
    if kind == "blur":
        return cv2.GaussianBlur(image, (0, 0), amount)
    if kind == "denoise":
        return cv2.bilateralFilter(image, 5, 30, 5)
    raise ValueError(f"unknown look {kind!r}; valid: ['none', 'sharpen', 'blur', 'denoise']")


def black_outside(image: np.ndarray, border: tuple[float, float, float, float], *, margin: float) -> np.ndarray:
    """``image`` (S, S, 3), a crop of ``crop_faces`` with ``margin``, black outside the face box grown by ``border``
    (left, top, right, bottom, fractions of the box side): the face box is the centred square of side
    S / (1 + 2 margin). A new array."""
    s = image.shape[0]
    face = s / (1 + 2 * margin)
    lo = (s - face) / 2
    left, top, right, bottom = border
    x1, y1 = int(round(max(lo - left * face, 0))), int(round(max(lo - top * face, 0)))
    x2, y2 = int(round(min(lo + face + right * face, s))), int(round(min(lo + face + bottom * face, s)))
    out = np.zeros_like(image)
    out[y1:y2, x1:x2] = image[y1:y2, x1:x2]
    return out


def encode(image: np.ndarray, capture: Capture) -> np.ndarray:
    """``image`` (S, S, 3) uint8 RGB after the capture's codec (a new array; "none" returns it as is)."""
    if capture.codec == "none":
        return image
    if capture.codec == "jpeg":
        bgr = cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
        ok, buf = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, capture.quality])
        if not ok:
            raise ValueError(f"JPEG encoding failed for a {image.shape} image")
        return cv2.cvtColor(cv2.imdecode(buf, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
    if capture.codec == "h264":
        return _h264(image, capture.quality)
    raise ValueError(f"unknown codec {capture.codec!r}; valid: {list(CODECS)}")


def _h264(image: np.ndarray, crf: int) -> np.ndarray:
    """One frame through libx264 (yuv420p, intra) and back: H.264's blocking, ringing and deblocking."""
    import av

    h, w = image.shape[:2]
    src = image if h % 2 == 0 and w % 2 == 0 else cv2.resize(image, (w + w % 2, h + h % 2))
    buf = io.BytesIO()
    with av.open(buf, "w", format="h264") as out:
        stream = out.add_stream("libx264", rate=25)
        stream.width, stream.height, stream.pix_fmt = src.shape[1], src.shape[0], "yuv420p"
        stream.options = {"crf": str(crf), "preset": "veryfast", "tune": "zerolatency"}
        for packet in stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(src), format="rgb24")):
            out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    buf.seek(0)
    with av.open(buf, "r", format="h264") as inp:
        frame = next(inp.decode(video=0)).to_ndarray(format="rgb24")
    return frame if frame.shape[:2] == (h, w) else cv2.resize(frame, (w, h), interpolation=cv2.INTER_AREA)


def simulate_capture(
    image: np.ndarray,
    rng: np.random.Generator,
    *,
    size: int,
    cfg: CaptureConfig = CaptureConfig(),
    swap: Callable[[np.ndarray, np.random.Generator], np.ndarray] | None = None,
    capture: Capture | None = None,
    margin: float = 0.25,
) -> np.ndarray:
    """A stored crop (S, S, 3) uint8 (cut with crop ``margin``) as the classifier would see it at input ``size``:
    scaled to a native side, ``swap``-ed there (fakes: ``swap(native_crop, rng)``), cut out (``border``),
    encoded, resized to ``size``. ``capture`` fixes all of that but the swap (a fake shown as its real twin
    is); by default it is drawn from ``rng``."""
    if capture is None:
        capture = draw_capture(rng, image.shape[0], cfg)
    x = resize_square(image, capture.native)  # (n, n, 3)
    if swap is not None:
        x = swap(x, rng)
    x = apply_look(x, capture.look)  # the chain filters the picture the swap is part of
    if capture.border is not None:
        x = black_outside(x, capture.border, margin=margin)
    return resize_square(encode(x, capture), size)  # (size, size, 3)
