"""Near-duplicate crops: a 64-bit difference hash (dHash) per image, Hamming distance between them."""

from __future__ import annotations

import cv2
import numpy as np

_BITS = np.uint64(1) << np.arange(64, dtype=np.uint64)  # (64,) bit weights


def dhash(images: np.ndarray) -> np.ndarray:
    """64-bit dHash of (n, H, W, 3) uint8 RGB images -> (n,) uint64.

    Grey, shrunk to 9x8 (INTER_AREA), bit = "this pixel is brighter than its right-hand
    neighbour": robust to rescaling, recompression and small brightness changes.
    """
    out = np.zeros(len(images), dtype=np.uint64)
    for k, img in enumerate(images):
        grey = cv2.cvtColor(np.ascontiguousarray(img), cv2.COLOR_RGB2GRAY)
        small = cv2.resize(grey, (9, 8), interpolation=cv2.INTER_AREA).astype(np.int16)  # (8, 9)
        bits = (small[:, 1:] > small[:, :-1]).reshape(64)  # (64,)
        out[k] = np.bitwise_or.reduce(np.where(bits, _BITS, np.uint64(0)))
    return out


def hamming(a: np.ndarray | int, b: np.ndarray | int) -> np.ndarray:
    """Bitwise Hamming distance between uint64 hashes (broadcast)."""
    x = np.bitwise_xor(np.asarray(a, dtype=np.uint64), np.asarray(b, dtype=np.uint64))
    bytes_ = np.ascontiguousarray(np.atleast_1d(x)[..., None]).view(np.uint8)  # (..., 8)
    return np.unpackbits(bytes_, axis=-1).sum(-1, dtype=np.int64).reshape(x.shape)


def keep_distinct(hashes: np.ndarray, *, max_distance: int) -> np.ndarray:
    """Boolean mask (n,): keep a hash unless it lies within ``max_distance`` bits of one kept before it.

    Greedy in the given order (frame order), so the first of a run of near-identical frames
    stays. ``max_distance < 0`` keeps everything; 0 drops only identical hashes.
    """
    keep = np.ones(len(hashes), dtype=bool)
    if max_distance < 0:
        return keep
    kept: list[int] = []
    for i, h in enumerate(hashes):
        if kept and int(hamming(hashes[kept], h).min()) <= max_distance:
            keep[i] = False
        else:
            kept.append(i)
    return keep
