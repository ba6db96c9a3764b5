"""A tiny, learnable face store for the model-side trainer tests (search, fit, evaluate, export).

Real crops are dark noise, fake crops bright noise with a pattern: a small CNN separates them
in a few epochs, so the tests can check that training learns, not only that it ran.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from trainer.store import FaceStoreWriter


def tiny_crops(n: int, *, fake: bool, size: int, rng: np.random.Generator) -> np.ndarray:
    """(n, size, size, 3) uint8: real = dark noise; fake = brighter noise with a checkerboard."""
    base = rng.normal(70.0, 25.0, (n, size, size, 3))
    if fake:
        yy, xx = np.mgrid[:size, :size]
        base += 90.0 + 40.0 * (((yy // 4) + (xx // 4)) % 2)[None, :, :, None]
    return np.clip(base, 0, 255).astype(np.uint8)


def write_tiny_store(
    path: Path,
    *,
    size: int = 32,
    frames: int = 4,
    videos: dict[str, int] | None = None,
    split_protocol: str = "identity",
    seed: int = 0,
) -> Path:
    """A store with ``videos[split]`` videos per split (half real, half fake), ``frames`` crops each."""
    videos = videos or {"train": 6, "val": 4, "test": 4}
    rng = np.random.default_rng(seed)
    build = dict(
        crop_size=size,
        crop_margin=0.25,
        whole_frames=False,
        source="tiny",
        frames_per_video=frames,
        detector_sha256="",
        split_protocol=split_protocol,
    )
    person = 0
    with FaceStoreWriter(path, **build) as w:
        for split, count in videos.items():
            for k in range(count):
                fake = k % 2 == 1
                folder, swap = ("Celeb-synthesis", f"_id{person + 1}") if fake else ("Celeb-real", "")
                name = f"{folder}/id{person}{swap}_{k:04d}.mp4"
                w.append(
                    tiny_crops(frames, fake=fake, size=size, rng=rng),
                    label=int(fake),
                    video=name,
                    identity=f"id{person}",
                    identity_src=f"id{person + 1}" if fake else "",
                    frame=np.arange(frames) * 5,
                    box=np.tile([0, 0, size, size], (frames, 1)),
                    det_score=0.9,
                    split=split,
                )
                w.finish_video(name, frames=frames, faces=frames)
                person += 2
    return path
