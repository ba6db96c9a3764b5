"""The synthetic demo clip: real decode with PyAV, ground-truth boxes, a face-only manipulation."""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np
import pytest

from pipeline import demo
from pipeline.demo import DemoClip, make_demo_clip

FPS = 25
SIZE = (640, 480)


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> DemoClip:
    return make_demo_clip(
        tmp_path_factory.mktemp("demo") / "clip.mp4", fps=FPS, real_seconds=1.0, fake_seconds=1.0, size=SIZE, seed=0
    )


def _decode(path: Path) -> list[np.ndarray]:
    with av.open(str(path)) as container:
        return [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]  # each (H, W, 3)


def _box_mask(box: np.ndarray, *, grow: float = 0.0) -> np.ndarray:
    """(H, W) bool, True inside `box` (xyxy) enlarged by `grow` of its size on every side."""
    x1, y1, x2, y2 = box
    dx, dy = grow * (x2 - x1), grow * (y2 - y1)
    xs, ys = np.arange(SIZE[0]), np.arange(SIZE[1])
    return ((ys[:, None] >= y1 - dy) & (ys[:, None] < y2 + dy)) & ((xs[None] >= x1 - dx) & (xs[None] < x2 + dx))


def test_clip_decodes_as_h264_with_declared_shape(clip: DemoClip) -> None:
    assert clip.n_frames == 2 * FPS and clip.fake_start == FPS and clip.size == SIZE and clip.fps == FPS
    with av.open(str(clip.path)) as container:
        stream = container.streams.video[0]
        assert stream.codec_context.name == "h264"
        assert (stream.width, stream.height) == SIZE
        assert stream.average_rate == FPS
        assert stream.codec_context.pix_fmt == "yuv420p"
        pts = [f.pts for f in container.decode(video=0)]
    assert pts == list(range(clip.n_frames))  # time base 1/fps, pts = frame index


def test_face_boxes_are_inside_the_frame_and_face_sized(clip: DemoClip) -> None:
    boxes = clip.face_boxes
    assert boxes.shape == (clip.n_frames, 4) and boxes.dtype == np.float32
    w, h = SIZE
    assert (boxes[:, 0] >= 0).all() and (boxes[:, 1] >= 0).all()
    assert (boxes[:, 2] <= w).all() and (boxes[:, 3] <= h).all()
    frac = (boxes[:, 3] - boxes[:, 1]) / h
    assert ((frac >= 0.2) & (frac <= 0.6)).all(), frac
    assert np.abs(np.diff(boxes, axis=0)).max() < 10  # a smooth camera, no jumps between frames


def test_manipulation_changes_the_face_and_nothing_else() -> None:
    mats = demo._camera_matrices(8, fps=FPS, size=SIZE, rng=np.random.default_rng(3))
    for m in mats[::3]:
        real = demo._render(m, size=SIZE, fake=False).astype(np.float32)
        fake = demo._render(m, size=SIZE, fake=True).astype(np.float32)
        diff = np.abs(real - fake).mean(axis=2)  # (H, W)
        box = demo._face_box(m)
        assert diff[_box_mask(box)].mean() > 8.0
        assert diff[~_box_mask(box, grow=0.3)].max() == 0.0


def test_the_file_is_real_before_fake_start_and_manipulated_after(clip: DemoClip) -> None:
    frames = _decode(clip.path)
    mats = demo._camera_matrices(clip.n_frames, fps=FPS, size=SIZE, rng=np.random.default_rng(0))  # as the clip
    for i in (0, clip.fake_start - 1, clip.fake_start, clip.n_frames - 1):
        inside = _box_mask(clip.face_boxes[i])
        decoded = frames[i].astype(np.float32)
        err_real = np.abs(decoded - demo._render(mats[i], size=SIZE, fake=False))[inside].mean()
        err_fake = np.abs(decoded - demo._render(mats[i], size=SIZE, fake=True))[inside].mean()
        if i < clip.fake_start:
            assert err_real < 4.0 < err_fake, (i, err_real, err_fake)
        else:
            assert err_fake < 4.0 < err_real, (i, err_real, err_fake)


def test_same_seed_gives_the_same_first_frame(tmp_path: Path) -> None:
    kwargs = dict(fps=FPS, real_seconds=0.4, fake_seconds=0.4, size=SIZE)
    a = _decode(make_demo_clip(tmp_path / "a.mp4", seed=7, **kwargs).path)[0]
    b = _decode(make_demo_clip(tmp_path / "b.mp4", seed=7, **kwargs).path)[0]
    c = _decode(make_demo_clip(tmp_path / "c.mp4", seed=8, **kwargs).path)[0]
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


def test_truncated_copy_still_decodes_its_first_frames(clip: DemoClip, tmp_path: Path) -> None:
    data = clip.path.read_bytes()
    assert data[4:8] == b"ftyp" and data.find(b"moov") < data.find(b"mdat")  # faststart: index before media
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(data[: int(len(data) * 0.4)])
    n = 0
    with av.open(str(cut)) as container:
        try:
            for _ in container.decode(video=0):
                n += 1
        except (av.error.InvalidDataError, av.FFmpegError):
            pass  # the cut-off tail
    assert 0 < n < clip.n_frames


@pytest.mark.parametrize("size", [(641, 480), (640, 31), (1600, 480)])
def test_bad_size_is_rejected(size: tuple[int, int], tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="size"):
        make_demo_clip(tmp_path / "x.mp4", size=size, real_seconds=0.1, fake_seconds=0.1)


def test_main_writes_a_clip_and_summarises(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "cli.mp4"
    assert demo.main([str(out), "--real-seconds", "0.2", "--fake-seconds", "0.2", "--size", "320x240"]) == 0
    assert len(_decode(out)) == 10 and _decode(out)[0].shape == (240, 320, 3)
    assert "10 frames" in capsys.readouterr().err
