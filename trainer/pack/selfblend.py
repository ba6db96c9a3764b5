"""Self-blended images (SBI): fake face crops made on the fly from real ones.

Shiohara & Yamasaki, "Detecting Deepfakes with Self-Blended Images" (CVPR 2022): a real face is
blended into itself after a source-side transform (colour, sharpness, resolution, a small shift
and scale), through a soft, deformed mask around the face. The fake keeps the identity and the
pose; what it carries is what a face swap leaves: a blending boundary, a colour and a
resolution mismatch between the inner face and its surroundings.

Crops come from ``engines.crop_faces``: the face box is centred and the crop's side is
``(1 + 2 * margin)`` times the box's longer side, so inside a crop of side S the face box is the
centred square of side ``S / (1 + 2 * margin)``; its aspect ratio is not stored, so the mask
assumes a box of width 0.8 and height 1.0 of that square.

``self_blend`` draws everything from the ``rng`` it is given (the same generator state gives the
same fake). ``SelfBlendDataset`` adds one self-blended fake per real crop of a ``FaceDataset``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import cv2
import numpy as np

from trainer.pack.capture import CaptureConfig, draw_capture, simulate_capture
from trainer.store import FaceDataset, ImageItems

REF_SIDE = 256  # pixel sizes below (blur kernels, morphology) are for a 256 crop and scale with the side
BLEND_RATIOS = (0.25, 0.5, 0.75, 1.0, 1.0, 1.0)  # mask multipliers, drawn uniformly (full blends twice as often)
FIXED_SEED = 0x5B1  # seeds the fixed fakes of val and test (with the fake's number)

_RGB_SHIFT = 20.0  # per-channel shift, uint8 levels
_HUE = 5.0  # hue shift, OpenCV units (180 = full circle): +-10 degrees
_SAT = 0.15  # saturation scale +-15 %
_VAL = 0.10  # value scale +-10 %
_BRIGHTNESS = 0.2  # brightness shift, fraction of 255
_CONTRAST = 0.2  # contrast scale about the mean
_SHIFT = 0.03  # translation, fraction of the face-box side
_SCALE = (0.95, 1.05)
_BOX_W = 0.8  # assumed face-box width / height
_ELASTIC_GRID = 4  # low-res displacement field, cells per side
_ELASTIC_AMP = (0.02, 0.06)  # displacement amplitude, fraction of the face-box side
_DOWN = (0.3, 1.0)  # source resolution: down to this fraction of the side and back up
P_SHARPEN = 0.5  # share of sources sharpened; the rest are blurred
_P_SMOOTH = 0.3  # probability of an edge-preserving smoothing of the source (a generated face's clean skin)
MASK_SHAPES = ("face", "lower", "hull")  # inner face ellipse; mouth and jaw (lip-sync, reenactment); a random hull
_MASK_P = (0.55, 0.2, 0.25)


def _odd(pixels_at_ref: float, size: int, *, least: int) -> int:
    """An odd kernel side: ``pixels_at_ref`` at a 256 crop, scaled to ``size``, at least ``least``."""
    k = max(int(round(pixels_at_ref * size / REF_SIDE)), least)
    return k if k % 2 else k + 1


def _check(img: np.ndarray) -> None:
    ok = isinstance(img, np.ndarray) and img.dtype == np.uint8 and img.ndim == 3
    if not ok or img.shape[0] != img.shape[1] or img.shape[2] != 3 or img.shape[0] < 8:
        got = f"{img.dtype} {img.shape}" if isinstance(img, np.ndarray) else type(img).__name__
        raise ValueError(f"self_blend expects one square uint8 (S, S, 3) RGB crop with S >= 8, got {got}")


def source_transform(
    img: np.ndarray, rng: np.random.Generator, *, margin: float, sharpen: float = P_SHARPEN
) -> np.ndarray:
    """The blend's source: ``img`` (S, S, 3) uint8 with colour, sharpness, resolution and a small
    shift/scale changed; a new (S, S, 3) uint8 array. ``sharpen`` is the chance of a sharpened source
    (else blurred); the draws do not depend on it, so only that choice changes with it."""
    s = img.shape[0]
    face = s / (1 + 2 * margin)
    levels = np.arange(256, dtype=np.float32)[:, None]  # (256, 1)

    # colour: per-channel shift, then hue / saturation / value, then brightness / contrast
    shift = rng.uniform(-_RGB_SHIFT, _RGB_SHIFT, 3).astype(np.float32)
    x = cv2.LUT(img, _lut(levels + shift))
    dh, ds, dv = rng.uniform(-_HUE, _HUE), rng.uniform(1 - _SAT, 1 + _SAT), rng.uniform(1 - _VAL, 1 + _VAL)
    hsv = cv2.cvtColor(x, cv2.COLOR_RGB2HSV)  # H in 0..179
    hue = np.mod(np.rint(levels[:, 0] + dh), 180)  # (256,); entries past 179 are never looked up
    hsv = cv2.LUT(hsv, _lut(np.stack([hue, levels[:, 0] * ds, levels[:, 0] * dv], axis=1)))
    x = cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)
    brightness, contrast = rng.uniform(-_BRIGHTNESS, _BRIGHTNESS), rng.uniform(-_CONTRAST, _CONTRAST)
    mean = float(np.mean(cv2.mean(x)[:3]))
    x = cv2.LUT(x, _lut((levels - mean) * (1 + contrast) + mean + 255.0 * brightness))

    # sharpen or blur
    if rng.random() < sharpen:
        alpha = rng.uniform(0.1, 0.4)
        kernel = np.full((3, 3), -alpha, np.float32)
        kernel[1, 1] = 1 + 8 * alpha  # identity + alpha * Laplacian-style high pass
        x = cv2.filter2D(x, -1, kernel, borderType=cv2.BORDER_REFLECT)
    else:
        sigma = max(rng.uniform(0.5, 1.5) * s / REF_SIDE, 0.4)
        x = cv2.GaussianBlur(x, (0, 0), sigma, borderType=cv2.BORDER_REFLECT)

    # a generated face's clean skin: the frame's noise and fine texture gone inside the blend
    if rng.random() < _P_SMOOTH:
        x = cv2.bilateralFilter(x, 5, float(rng.uniform(20, 60)), float(rng.uniform(2, 6) * s / REF_SIDE))

    # resolution mismatch: down to 30-100 % of the side and back up
    small = max(int(round(s * rng.uniform(*_DOWN))), 4)
    down = (cv2.INTER_AREA, cv2.INTER_LINEAR)[int(rng.integers(2))]
    up = (cv2.INTER_LINEAR, cv2.INTER_CUBIC)[int(rng.integers(2))]
    if small < s:
        x = cv2.resize(cv2.resize(x, (small, small), interpolation=down), (s, s), interpolation=up)

    # a small shift and scale about the centre
    tx, ty = rng.uniform(-_SHIFT, _SHIFT, 2) * face
    scale = rng.uniform(*_SCALE)
    c = (s - 1) / 2
    affine = np.array([[scale, 0, (1 - scale) * c + tx], [0, scale, (1 - scale) * c + ty]], np.float32)  # (2, 3)
    return cv2.warpAffine(x, affine, (s, s), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)


def _lut(table: np.ndarray) -> np.ndarray:
    """(256,) or (256, C) float levels -> a (1, 256, C) uint8 table for cv2.LUT."""
    return np.clip(np.rint(table), 0, 255).astype(np.uint8).reshape(1, 256, -1)


def blend_mask(size: int, rng: np.random.Generator, *, margin: float) -> np.ndarray:
    """The soft blend mask (S, S, 1) float32 in [0, 1]: 0 outside the face, up to the blend ratio inside.

    One of ``MASK_SHAPES``: ``face``, an ellipse in the face box (centre jitter +-5 % of the box
    side, semi-axes 0.35-0.5 x box width and 0.45-0.6 x box height, rotated +-15 degrees);
    ``lower``, a smaller ellipse over mouth and jaw, where lip-sync and reenactment paste;
    ``hull``, the convex hull of 8-12 points around the face centre. Then deformed by a smooth
    random displacement field, optionally eroded or dilated, blurred with an odd 5-31 px kernel
    (at a 256 crop), times a ratio of ``BLEND_RATIOS``.
    """
    face = size / (1 + 2 * margin)
    c = (size - 1) / 2
    mask = np.zeros((size, size), np.uint8)
    shape = MASK_SHAPES[int(rng.choice(len(MASK_SHAPES), p=_MASK_P))]
    if shape == "hull":
        n = int(rng.integers(8, 13))
        angles = np.sort(rng.uniform(0, 2 * np.pi, n))
        radius = rng.uniform(0.3, 0.5, n) * face  # (n,)
        pts = np.stack([c + radius * np.cos(angles) * _BOX_W, c + 0.05 * face + radius * np.sin(angles)], axis=1)
        cv2.fillConvexPoly(mask, cv2.convexHull(np.round(pts).astype(np.int32)), 255, cv2.LINE_AA)
    else:
        if shape == "face":
            cx, cy = c + rng.uniform(-0.05, 0.05, 2) * face
            ax, ay = rng.uniform(0.35, 0.5) * _BOX_W * face, rng.uniform(0.45, 0.6) * face  # semi-axes
        else:  # lower face: centre between nose tip and chin
            cx, cy = c + rng.uniform(-0.04, 0.04) * face, c + rng.uniform(0.15, 0.25) * face
            ax, ay = rng.uniform(0.3, 0.45) * _BOX_W * face, rng.uniform(0.2, 0.32) * face
        angle = rng.uniform(-15.0, 15.0)
        cv2.ellipse(mask, ((float(cx), float(cy)), (float(2 * ax), float(2 * ay)), float(angle)), 255, -1, cv2.LINE_AA)

    # elastic: a coarse random displacement field, upsampled smooth, pulls the outline around
    g = _ELASTIC_GRID
    amp = rng.uniform(*_ELASTIC_AMP) * face
    field = rng.uniform(-amp, amp, (2, g, g)).astype(np.float32)  # (2, g, g) x and y displacement
    dx = cv2.resize(field[0], (size, size), interpolation=cv2.INTER_CUBIC)  # (S, S)
    dy = cv2.resize(field[1], (size, size), interpolation=cv2.INTER_CUBIC)
    grid = np.arange(size, dtype=np.float32)
    mask = cv2.remap(mask, grid[None, :] + dx, grid[:, None] + dy, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)

    morph = int(rng.integers(3))  # 0 none, 1 erode, 2 dilate
    k = _odd(float(rng.integers(1, 6) * 2 + 1), size, least=1)  # 3..11 px at 256
    if morph and k > 1:
        element = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (k, k))
        mask = (cv2.erode if morph == 1 else cv2.dilate)(mask, element)

    k = _odd(float(rng.integers(2, 16) * 2 + 1), size, least=3)  # 5..31 px at 256
    soft = cv2.GaussianBlur(mask.astype(np.float32) * np.float32(1 / 255), (k, k), 0)  # (S, S)
    ratio = np.float32(BLEND_RATIOS[int(rng.integers(len(BLEND_RATIOS)))])
    return np.clip(soft * ratio, 0.0, 1.0)[:, :, None]  # (S, S, 1)


def self_blend(img: np.ndarray, rng: np.random.Generator, *, margin: float, sharpen: float = P_SHARPEN) -> np.ndarray:
    """A self-blended fake of the square face crop ``img`` (S, S, 3) uint8 RGB: same shape and dtype.

    ``margin`` is the store's ``crop_margin`` (it places the face box in the crop); ``sharpen`` the
    chance that the blended-in source is sharpened rather than blurred. Every random choice comes
    from ``rng``; ``img`` is not changed.
    """
    _check(img)
    if not margin >= 0:
        raise ValueError(f"margin must be >= 0 (the store's crop_margin), got {margin}")
    if not 0.0 <= sharpen <= 1.0:
        raise ValueError(f"sharpen is a chance in [0, 1], got {sharpen}")
    source = source_transform(img, rng, margin=margin, sharpen=sharpen)
    mask = blend_mask(img.shape[0], rng, margin=margin)  # (S, S, 1)
    out = img.astype(np.float32)
    out += mask * (source.astype(np.float32) - out)  # mask * source + (1 - mask) * img
    return np.rint(out).astype(np.uint8)


class SelfBlendDataset(ImageItems):
    """A ``FaceDataset`` plus one self-blended fake (label 1) per real row of it.

    Items ``0 .. len(base) - 1`` are the base's own (real 0, store fakes 1); item ``len(base) + k``
    is a fake made from the k-th real row. Without ``capture`` the raw crop is blended, then the
    base's augmentation and resize run on it, as on any crop. With ``capture``
    (trainer.pack.capture) every item, real or fake, is shown at a drawn native size and codec and
    resized once to ``size``, the fakes blended at the native size; a fake is shown exactly as
    its real twin (same native size and codec), so the blend is all that tells them apart
    (``PairSampler`` puts the two in one batch). Then ``augment`` runs (the base must then
    neither augment nor resize). ``sharpen`` is ``self_blend``'s. ``labels`` lists every item's
    label in index order.

    ``fixed`` (default: every split but "train") makes item k the same on every read (seeded by
    ``FIXED_SEED`` and k), so validation loss compares across epochs; otherwise item ``i`` is
    drawn from ``seed`` and i (make_loader passes a seed per epoch, so a resumed run draws what
    an uninterrupted one would, with or without DataLoader workers).
    """

    def __init__(
        self,
        base: FaceDataset,
        *,
        margin: float,
        seed: int = 0,
        fixed: bool | None = None,
        capture: CaptureConfig | None = None,
        size: int | None = None,
        augment: Callable[[np.ndarray], np.ndarray] | None = None,
        sharpen: float = P_SHARPEN,
    ) -> None:
        if not margin >= 0:
            raise ValueError(f"margin must be >= 0 (the store's crop_margin), got {margin}")
        if capture is not None and (size is None or base.augment is not None or base.input_size is not None):
            raise ValueError(
                "with capture, give the input size here and leave augmentation and resizing to this "
                "dataset (the base must have augment=None, input_size=None)"
            )
        self.base = base
        self.margin = float(margin)
        self.seed = int(seed)
        self.fixed = base.split != "train" if fixed is None else fixed
        self.capture, self.size, self.augment, self.sharpen = capture, size, augment, float(sharpen)
        self.real = np.flatnonzero(base.labels == 0)  # (n_real,) positions in base
        self.labels = np.concatenate([base.labels, np.ones(len(self.real), np.float32)])  # (n + n_real,)

    def __len__(self) -> int:
        return len(self.labels)

    def _rng(self, i: int) -> np.random.Generator:
        k = i - len(self.base)  # fake number; negative for the base's own rows (drawn only with capture)
        key = ([FIXED_SEED, k] if k >= 0 else [FIXED_SEED, 0, i]) if self.fixed else [self.seed % 2**64, i]
        return np.random.default_rng(key)

    def _swap(self, img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        return self_blend(img, rng, margin=self.margin, sharpen=self.sharpen)

    def image(self, i: int) -> np.ndarray:
        """Item i as uint8 (S', S', 3) RGB after blending (fakes), capture, augmentation and resizing."""
        i = int(i)
        if not 0 <= i < len(self):
            raise IndexError(f"item {i} out of range 0..{len(self) - 1}")
        n = len(self.base)
        if self.capture is None:
            if i < n:
                return self.base.image(i)
            fake = self._swap(self.base.raw_crop(int(self.real[i - n])), self._rng(i))
            return self.base.finish(fake)
        row = i if i < n else int(self.real[i - n])
        raw = self.base.raw_crop(row)
        twin = draw_capture(self._rng(row), raw.shape[0], self.capture)  # the real row's capture, for both
        img = simulate_capture(
            raw,
            self._rng(i),
            size=self.size,
            cfg=self.capture,
            swap=None if i < n else self._swap,
            capture=twin,
            margin=self.margin,
        )
        return img if self.augment is None else self.augment(img)


class PairSampler:
    """Indices of a ``SelfBlendDataset`` as (real, its fake) pairs in random order: ``pairs`` of them (None:
    every real row once), drawn without replacement from ``generator``. Rows with no fake of their own (the
    store's fakes; only when ``pairs`` is None) travel two by two, an odd one last, so with an even batch
    size each pair lands in one batch.
    """

    def __init__(self, dataset: SelfBlendDataset, *, pairs: int | None = None, generator: Any = None) -> None:
        self.dataset, self.generator = dataset, generator
        n_real = len(dataset.real)
        self.pairs = n_real if pairs is None else min(int(pairs), n_real)
        fakes = np.flatnonzero(dataset.base.labels != 0)  # the store's own fakes
        self.alone = fakes if pairs is None else np.zeros(0, np.int64)

    def __len__(self) -> int:
        return 2 * self.pairs + len(self.alone)

    def __iter__(self) -> Any:
        import torch

        n = len(self.dataset.base)
        units = [[int(self.dataset.real[k]), n + k] for k in range(len(self.dataset.real))]
        units = [units[int(j)] for j in torch.randperm(len(units), generator=self.generator)[: self.pairs]]
        alone = [int(a) for a in self.alone[torch.randperm(len(self.alone), generator=self.generator).numpy()]]
        units += [alone[j : j + 2] for j in range(0, len(alone) - len(alone) % 2, 2)]
        for j in torch.randperm(len(units), generator=self.generator).tolist():
            yield from units[j]
        if len(alone) % 2:
            yield alone[-1]
