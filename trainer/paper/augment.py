"""Image augmentation (albumentations) for face crops, offline (stored copies) and on the fly.

An augmentation is a callable on one uint8 (H, W, 3) RGB image returning an image of the same
shape and dtype. It never sees a label: labels, splits and identities of augmented copies are
copied from their original by the dataset builder, never computed from the image.

Presets:

- ``none``: identity.
- ``paper``: the paper's set: horizontal and vertical flip, brightness/contrast, rotate and
  scale, Gaussian noise, CLAHE.
- ``broadcast``: ``paper`` plus JPEG recompression and downscaling, as broadcast feeds
  are recompressed and rescaled before dfwatch sees them.
- ``flip``: a horizontal flip, nothing else: for fine-tuning with capture simulation
  (trainer.pack.capture), which already draws the size and the codec; an upside-down face or a
  redrawn histogram is no view a feed shows.
- ``jpeg``: a horizontal flip and JPEG at quality 40-100 (half the crops), what SBI trains with
  besides the blend: for fine-tuning on self-blends without capture simulation.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import numpy as np

PRESETS = ("none", "paper", "broadcast", "flip", "jpeg")

Augment = Callable[[np.ndarray], np.ndarray]


def _paper(A: Any) -> list[Any]:
    import cv2

    return [
        A.HorizontalFlip(p=0.5),
        A.VerticalFlip(p=0.5),
        A.RandomBrightnessContrast(brightness_limit=0.2, contrast_limit=0.2, p=0.5),
        A.Affine(rotate=(-15, 15), scale=(0.9, 1.1), border_mode=cv2.BORDER_REFLECT_101, p=0.5),
        A.GaussNoise(std_range=(0.02, 0.06), p=0.3),
        A.CLAHE(clip_limit=2.0, p=0.2),
    ]


def _broadcast(A: Any) -> list[Any]:
    return [
        *_paper(A),
        A.ImageCompression(compression_type="jpeg", quality_range=(40, 90), p=0.5),
        A.Downscale(scale_range=(0.5, 0.9), p=0.3),
    ]


def _flip(A: Any) -> list[Any]:
    return [A.HorizontalFlip(p=0.5)]


def _jpeg(A: Any) -> list[Any]:  # what SBI trains with besides the blend: flips and JPEG at quality 40-100
    return [A.HorizontalFlip(p=0.5), A.ImageCompression(compression_type="jpeg", quality_range=(40, 100), p=0.5)]


class _Albumentations:
    """A seeded albumentations Compose behind the Augment protocol, checking shape and dtype."""

    def __init__(self, preset: str, transforms: list[Any], seed: int | None) -> None:
        import albumentations as A

        self.preset = preset
        self.seed = seed
        self._compose = A.Compose(transforms, seed=seed)
        self._pid = os.getpid()

    def __call__(self, image: np.ndarray) -> np.ndarray:
        if not isinstance(image, np.ndarray) or image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
            got = f"{image.dtype} {image.shape}" if isinstance(image, np.ndarray) else type(image).__name__
            raise ValueError(f"augmentation expects one uint8 (H, W, 3) RGB image, got {got}")
        if self.seed is None and os.getpid() != self._pid:
            # an unseeded copy in a forked DataLoader worker: draw fresh, not the parent's sequence
            self._compose.set_random_seed(int.from_bytes(os.urandom(4), "little"))
            self._pid = os.getpid()
        out = self._compose(image=image)["image"]
        return np.ascontiguousarray(out)

    def __repr__(self) -> str:
        return f"augment({self.preset!r})"


def _identity(image: np.ndarray) -> np.ndarray:
    return image


def build_augment(preset: str = "paper", *, seed: int | None = None) -> Augment:
    """The augmentation callable of a preset (see the module docstring).

    ``seed`` makes the sequence of augmentations repeatable; unseeded, each DataLoader worker
    process draws its own (a forked copy never repeats its parent's or a sibling's draws).
    Set NO_ALBUMENTATIONS_UPDATE=1 in the entry point: albumentations otherwise asks PyPI for
    a newer version when it is first imported.
    """
    if preset not in PRESETS:
        raise ValueError(f"unknown augmentation {preset!r}; valid: {list(PRESETS)}")
    if preset == "none":
        return _identity
    import albumentations as A

    transforms = {"paper": _paper, "broadcast": _broadcast, "flip": _flip, "jpeg": _jpeg}[preset](A)
    return _Albumentations(preset, transforms, seed)


def augment_batch(images: np.ndarray, augment: Augment) -> np.ndarray:
    """Apply ``augment`` to each of (n, H, W, 3) uint8 images; returns a new (n, H, W, 3) uint8 array."""
    out = np.empty_like(images)
    for k, img in enumerate(images):
        res = augment(img)
        if res.shape != img.shape or res.dtype != np.uint8:
            raise ValueError(f"augmentation changed {img.dtype} {img.shape} into {res.dtype} {res.shape}")
        out[k] = res
    return out
