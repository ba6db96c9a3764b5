"""A miniature Celeb-DF v2 tree of generated clips, for tests of the whole trainer chain.

Same folders, file names and test-list format as the real dataset (``Celeb-real/idX_NNNN.mp4``,
``Celeb-synthesis/idX_idY_NNNN.mp4``, ``YouTube-real/NNNNN.mp4``,
``List_of_testing_videos.txt`` with 1 = real, 0 = fake). Each clip is a short H.264 video
(PyAV) of a drawn face that moves, turns a little and talks over a textured background; every
person has their own skin, hair, eyes and face shape. A fake ``idX_idY`` is X's clip with the
inner face of Y pasted over X's through a feathered mask, colour-shifted and blurred (as
pipeline/demo.py manipulates its photo), so the manipulation is visible and learnable.

Usage: ``python -m tests.trainer.minitree OUT_DIR``.
"""

from __future__ import annotations

import hashlib
import sys
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np

# 4 celebrities (id0..id3) + 2 YouTube people. id0/id1 and id2/id3 swap with each other;
# id0_id2 crosses the two pairs, so an identity split must leave it out.
REAL = (
    "Celeb-real/id0_0000.mp4",
    "Celeb-real/id0_0001.mp4",
    "Celeb-real/id1_0000.mp4",
    "Celeb-real/id2_0000.mp4",
    "Celeb-real/id3_0000.mp4",
    "Celeb-real/id3_0001.mp4",
    "YouTube-real/00000.mp4",
    "YouTube-real/00001.mp4",
)
FAKE = (
    "Celeb-synthesis/id0_id1_0000.mp4",
    "Celeb-synthesis/id1_id0_0000.mp4",
    "Celeb-synthesis/id1_id0_0001.mp4",
    "Celeb-synthesis/id2_id3_0000.mp4",
    "Celeb-synthesis/id2_id3_0001.mp4",
    "Celeb-synthesis/id3_id2_0000.mp4",
    "Celeb-synthesis/id0_id2_0000.mp4",
)
TEST = (
    "Celeb-real/id0_0001.mp4",
    "YouTube-real/00001.mp4",
    "Celeb-synthesis/id1_id0_0001.mp4",
    "Celeb-synthesis/id2_id3_0001.mp4",
)


@dataclass(frozen=True)
class MiniTree:
    root: Path
    videos: dict[str, int]  # relative path -> label (1 = fake, 0 = real)
    test: tuple[str, ...]  # the videos of List_of_testing_videos.txt
    fps: int
    n_frames: int  # frames per clip
    size: int  # square frame side in pixels
    face_boxes: dict[str, np.ndarray]  # relative path -> (n_frames, 4) float32 xyxy of the head


def _rng(*key: object) -> np.random.Generator:
    digest = hashlib.blake2b("/".join(map(str, key)).encode(), digest_size=8).digest()
    return np.random.default_rng(int.from_bytes(digest, "little"))


@dataclass(frozen=True)
class Look:
    """What a person looks like; drawn from a generator seeded by their name."""

    skin: tuple[int, int, int]
    hair: tuple[int, int, int]
    iris: tuple[int, int, int]
    aspect: float  # head height / width
    eye_gap: float  # eye distance / head width
    eye_size: float
    mouth: float  # mouth width / head width
    brow: float  # eyebrow thickness

    @classmethod
    def of(cls, person: str, seed: int) -> Look:
        r = _rng("look", person, seed)
        tone = r.uniform(0.35, 1.0)
        skin = tuple(int(v) for v in np.array([235, 190, 160]) * tone + r.integers(-15, 16, 3))
        hair = tuple(int(v) for v in r.integers(10, 200, 3))
        iris = tuple(int(v) for v in r.integers(20, 160, 3))
        return cls(
            np.clip(skin, 30, 255).tolist(),
            hair,
            iris,
            r.uniform(1.15, 1.45),
            r.uniform(0.34, 0.5),
            r.uniform(0.09, 0.14),
            r.uniform(0.3, 0.5),
            r.uniform(1.0, 3.0),
        )


def _background(size: int, rng: np.random.Generator) -> np.ndarray:
    """(size, size, 3) uint8: a colour gradient with a few soft rectangles (a room)."""
    c0, c1 = rng.integers(30, 225, (2, 3))
    t = np.linspace(0, 1, size)[:, None, None]  # (size, 1, 1)
    img = np.broadcast_to(c0 * (1 - t) + c1 * t, (size, size, 3)).astype(np.float32).copy()
    for _ in range(4):
        x1, y1 = rng.integers(0, size, 2)
        w, h = rng.integers(size // 8, size // 2, 2)
        cv2.rectangle(img, (int(x1), int(y1)), (int(x1 + w), int(y1 + h)), rng.integers(0, 255, 3).tolist(), -1)
    return cv2.GaussianBlur(img, (0, 0), 2.0).astype(np.uint8)


def _draw_face(img: np.ndarray, look: Look, cx: float, cy: float, w: float, talk: float, turn: float) -> None:
    """Draw a head (hair, face, eyes, brows, nose, mouth) in place, centred at (cx, cy), head width w."""
    h = w * look.aspect
    aa = cv2.LINE_AA
    c = (int(cx), int(cy))
    cv2.ellipse(img, (c[0], int(cy - 0.12 * h)), (int(0.56 * w), int(0.52 * h)), 0, 180, 360, look.hair, -1, aa)
    cv2.ellipse(img, c, (int(w / 2), int(h / 2)), 0, 0, 360, look.skin, -1, aa)
    ex = look.eye_gap * w / 2
    ey = cy - 0.1 * h
    er = max(look.eye_size * w, 2)
    for side in (-1, 1):
        x = cx + side * ex + turn * 0.08 * w
        cv2.ellipse(img, (int(x), int(ey)), (int(er), int(er * 0.6)), 0, 0, 360, (245, 245, 245), -1, aa)
        cv2.circle(img, (int(x + turn * er * 0.4), int(ey)), max(int(er * 0.45), 1), look.iris, -1, aa)
        cv2.line(
            img,
            (int(x - er), int(ey - 1.6 * er)),
            (int(x + er), int(ey - 1.8 * er)),
            look.hair,
            max(int(look.brow), 1),
            aa,
        )
    nx = cx + turn * 0.12 * w
    cv2.line(img, (int(nx), int(ey + er)), (int(nx - 0.04 * w), int(cy + 0.12 * h)), (90, 60, 50), 1, aa)
    mw = look.mouth * w / 2
    cv2.ellipse(
        img, (int(nx), int(cy + 0.27 * h)), (int(mw), max(int(talk * 0.09 * h), 1)), 0, 0, 360, (120, 30, 40), -1, aa
    )


def _inner_mask(size: int, cx: float, cy: float, w: float, aspect: float) -> np.ndarray:
    """(size, size, 1) float32 feathered ellipse over the inner face (brows to chin)."""
    mask = np.zeros((size, size), np.float32)
    cv2.ellipse(mask, (int(cx), int(cy + 0.04 * w * aspect)), (int(0.4 * w), int(0.4 * w * aspect)), 0, 0, 360, 1.0, -1)
    return cv2.GaussianBlur(mask, (0, 0), max(w / 24, 1.0))[..., None]


def _manipulate(face: np.ndarray) -> np.ndarray:
    """A swapped-in face as a face-swap model leaves it: hue and saturation shifted, blurred."""
    hsv = cv2.cvtColor(face, cv2.COLOR_RGB2HSV).astype(np.float32)
    hsv[..., 0] = (hsv[..., 0] + 8) % 180
    hsv[..., 1] = np.clip(hsv[..., 1] * 1.4 + 10, 0, 255)
    out = cv2.cvtColor(hsv.astype(np.uint8), cv2.COLOR_HSV2RGB)
    small = cv2.resize(out, (face.shape[1] // 3, face.shape[0] // 3), interpolation=cv2.INTER_AREA)
    return cv2.resize(small, (face.shape[1], face.shape[0]), interpolation=cv2.INTER_LINEAR)


def render_clip(
    rel: str, *, size: int, n_frames: int, fps: int, seed: int = 0, static: bool = False, face: bool = True
) -> tuple[np.ndarray, np.ndarray]:
    """Frames (n, size, size, 3) uint8 RGB and head boxes (n, 4) float32 of one tree video."""
    name = rel.split("/", 1)[1].removesuffix(".mp4")
    parts = name.split("_")
    if rel.startswith("YouTube-real/"):
        person, src = f"yt:{name}", ""
    else:
        person, src = parts[0], (parts[1] if rel.startswith("Celeb-synthesis/") else "")
    # a fake idX_idY_N uses the background and motion of X's real clip idX_N, as Celeb-DF does
    scene = f"{person}_{parts[-1]}"
    r = _rng("scene", scene, seed)
    bg = _background(size, r)
    freq, phase = r.uniform(0.3, 0.8, 4), r.uniform(0, 2 * np.pi, 4)
    t = np.zeros(n_frames) if static else np.arange(n_frames) / fps
    cx = size * (0.5 + 0.12 * np.sin(2 * np.pi * freq[0] * t + phase[0]))
    cy = size * (0.52 + 0.06 * np.sin(2 * np.pi * freq[1] * t + phase[1]))
    w = size * (0.42 + 0.04 * np.sin(2 * np.pi * freq[2] * t + phase[2]))
    turn = np.sin(2 * np.pi * freq[3] * t + phase[3])
    talk = 0.4 + 0.6 * np.abs(np.sin(2 * np.pi * 2.5 * t + phase[0]))
    look, src_look = Look.of(person, seed), (Look.of(src, seed) if src else None)
    noise_rng = _rng("noise", rel, seed)
    frames = np.empty((n_frames, size, size, 3), np.uint8)
    boxes = np.empty((n_frames, 4), np.float32)
    for i in range(n_frames):
        img = bg.copy()
        if face:
            _draw_face(img, look, cx[i], cy[i], w[i], talk[i], turn[i])
            if src_look is not None:
                swapped = bg.copy()
                _draw_face(swapped, src_look, cx[i], cy[i], w[i], talk[i], turn[i])
                mask = _inner_mask(size, cx[i], cy[i], w[i], look.aspect)
                img = (mask * _manipulate(swapped) + (1 - mask) * img).astype(np.uint8)
        h = w[i] * look.aspect
        boxes[i] = (cx[i] - 0.56 * w[i], cy[i] - 0.64 * h, cx[i] + 0.56 * w[i], cy[i] + 0.5 * h)
        if not static:
            img = np.clip(img + noise_rng.normal(0, 2.0, img.shape), 0, 255).astype(np.uint8)
        frames[i] = img
    return frames, boxes


def write_clip(path: Path, frames: np.ndarray, *, fps: int) -> None:
    """H.264 MP4 (yuv420p, crf 18, a keyframe every 5 frames, faststart) of (n, H, W, 3) uint8 RGB frames."""
    path.parent.mkdir(parents=True, exist_ok=True)
    # faststart: the index goes first, so a truncated copy still opens and decodes its first frames
    with av.open(str(path), mode="w", format="mp4", container_options={"movflags": "+faststart"}) as container:
        stream = container.add_stream("libx264", rate=fps, options={"crf": "18", "g": "5"})
        stream.height, stream.width = frames.shape[1:3]
        stream.pix_fmt = "yuv420p"
        for i, rgb in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
            frame.pts, frame.time_base = i, Fraction(1, fps)
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))


def write_zero_frame_clip(path: Path, *, size: int = 64, fps: int = 10) -> None:
    """An MP4 whose H.264 track never got a frame (players and PyAV see no video stream in it)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), mode="w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width = stream.height = size
        stream.pix_fmt = "yuv420p"
        container.start_encoding()  # header and index, no packet
        container.mux(stream.encode(None))


def write_test_list(root: Path, videos: dict[str, int], test: tuple[str, ...]) -> None:
    """The official format: '<1 = real | 0 = fake> <folder>/<file>.mp4', one per line."""
    lines = [f"{1 - videos[rel]} {rel}" for rel in test]
    (root / "List_of_testing_videos.txt").write_text("\n".join(lines) + "\n")


def make_mini_celebdf(
    root: str | Path, *, size: int = 128, seconds: float = 1.0, fps: int = 10, seed: int = 0
) -> MiniTree:
    """Write the miniature tree (8 real + 7 fake clips, 4 of them in the test list) under ``root``."""
    root = Path(root)
    n_frames = round(seconds * fps)
    videos = {rel: 0 for rel in REAL} | {rel: 1 for rel in FAKE}
    boxes = {}
    for rel in videos:
        frames, boxes[rel] = render_clip(rel, size=size, n_frames=n_frames, fps=fps, seed=seed)
        write_clip(root / rel, frames, fps=fps)
    write_test_list(root, videos, TEST)
    return MiniTree(root, videos, TEST, fps, n_frames, size, boxes)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m tests.trainer.minitree OUT_DIR", file=sys.stderr)
        return 2
    tree = make_mini_celebdf(args[0])
    print(f"{tree.root}: {len(tree.videos)} clips of {tree.n_frames} frames {tree.size}x{tree.size}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
