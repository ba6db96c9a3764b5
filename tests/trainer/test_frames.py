"""Even frame sampling with PyAV seeks: the right frames, and clear failures for broken videos."""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np
import pytest

from tests.trainer.minitree import render_clip, write_clip, write_zero_frame_clip
from trainer.paper.frames import NoFramesError, VideoReadError, sample_frames


def _decode_all(path: Path) -> list[np.ndarray]:
    with av.open(str(path)) as c:
        return [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]


@pytest.fixture(scope="module")
def long_gop_clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """40 frames, keyframe every 5: sampling must seek between keyframes and land on exact frames."""
    frames, _ = render_clip("Celeb-real/id0_0000.mp4", size=64, n_frames=40, fps=10)
    path = tmp_path_factory.mktemp("clips") / "clip.mp4"
    write_clip(path, frames, fps=10)
    return path


@pytest.mark.parametrize(("n", "expected"), [(4, [5, 15, 25, 35]), (10, [2, 6, 10, 14, 18, 22, 26, 30, 34, 38])])
def test_frames_are_spread_evenly_and_exact(long_gop_clip: Path, n: int, expected: list[int]):
    sampled = sample_frames(long_gop_clip, n)
    assert sampled.index.tolist() == expected and sampled.total == 40 and sampled.detail == ""
    every = _decode_all(long_gop_clip)
    for i, img in zip(sampled.index, sampled.images):
        np.testing.assert_array_equal(img, every[i])  # the frame the index names, not a neighbour
    assert sampled.images[0].shape == (64, 64, 3) and sampled.images[0].dtype == np.uint8


def test_more_frames_asked_than_the_video_has(long_gop_clip: Path):
    sampled = sample_frames(long_gop_clip, 100)
    assert sampled.index.tolist() == list(range(40))


def test_a_real_video(real_video: Path):
    sampled = sample_frames(real_video, 5)
    every = _decode_all(real_video)
    assert len(sampled) == 5 and sampled.total == len(every)
    assert sampled.index.tolist() == [int((k + 0.5) * len(every) / 5) for k in range(5)]
    for i, img in zip(sampled.index, sampled.images):
        np.testing.assert_array_equal(img, every[i])


def test_zero_frame_video(tmp_path: Path):
    path = tmp_path / "empty.mp4"
    write_zero_frame_clip(path)
    with pytest.raises(NoFramesError):
        sample_frames(path, 4)


def test_unreadable_video(tmp_path: Path):
    path = tmp_path / "junk.mp4"
    path.write_bytes(b"\x00\x01 not a video " * 64)
    with pytest.raises(VideoReadError, match="cannot open"):
        sample_frames(path, 4)
    with pytest.raises(VideoReadError, match="cannot open"):
        sample_frames(tmp_path / "missing.mp4", 4)


def test_truncated_video_keeps_what_decodes(long_gop_clip: Path, tmp_path: Path):
    data = long_gop_clip.read_bytes()  # faststart: the index comes first, as in most downloaded copies
    path = tmp_path / "cut.mp4"
    path.write_bytes(data[: len(data) // 2])
    sampled = sample_frames(path, 10)
    every = _decode_all(long_gop_clip)
    assert 0 < len(sampled) < 10 and sampled.total == 40
    assert sampled.index.tolist() == [2, 6, 10, 14, 18, 22, 26, 30, 34, 38][: len(sampled)]
    for i, img in zip(sampled.index, sampled.images):
        np.testing.assert_array_equal(img, every[i])
    assert "the video ends at frame" in sampled.detail and "of the 40 it claims" in sampled.detail
    path.write_bytes(data[:600])  # the index and hardly any picture data
    with pytest.raises(VideoReadError):
        sample_frames(path, 10)


def test_bad_count(long_gop_clip: Path):
    with pytest.raises(ValueError, match="frames per video must be >= 1, got 0"):
        sample_frames(long_gop_clip, 0)


def test_a_failing_seek_is_a_read_error(long_gop_clip: Path, monkeypatch: pytest.MonkeyPatch):
    """A container whose seek fails (damaged index) is a VideoReadError the builder skips, not a crash."""
    real_open = av.open

    class _NoSeek:
        def __init__(self, container):
            self._c = container

        def __enter__(self):
            self._c.__enter__()
            return self

        def __exit__(self, *exc):
            return self._c.__exit__(*exc)

        def __getattr__(self, name):
            return getattr(self._c, name)

        def seek(self, *args, **kwargs):
            raise av.FFmpegError(1, "Operation not permitted")

    monkeypatch.setattr(av, "open", lambda *a, **k: _NoSeek(real_open(*a, **k)))
    with pytest.raises(VideoReadError, match="decoding failed before frame"):
        sample_frames(long_gop_clip, 4)
