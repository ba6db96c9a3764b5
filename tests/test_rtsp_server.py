"""The RTSP test server (tests/rtsp_server.py via tests/_rtsp.py) works with PyAV as the client."""

from __future__ import annotations

import time
from pathlib import Path

import av
import numpy as np
import pytest

from tests._rtsp import free_port, requires_rtsp, rtsp_server

pytestmark = [pytest.mark.rtsp, pytest.mark.timeout(60), requires_rtsp]

W, H, FPS, N = 320, 240, 25, 50
OPEN_OPTIONS = {"rtsp_transport": "tcp", "timeout": "5000000"}  # socket timeout, microseconds


def make_clip(path: Path, frames: int = N) -> Path:
    """A small H.264 MP4 with a moving gradient."""
    x = np.arange(W, dtype=np.int32)[None, :]
    y = np.arange(H, dtype=np.int32)[:, None]
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=FPS)
        stream.width, stream.height, stream.pix_fmt = W, H, "yuv420p"
        for i in range(frames):
            img = np.empty((H, W, 3), np.uint8)
            img[..., 0] = (x + 4 * i) % 256
            img[..., 1] = (y + 2 * i) % 256
            img[..., 2] = (x + y + 8 * i) % 256
            for packet in stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return path


@pytest.fixture
def clip(tmp_path: Path) -> Path:
    return make_clip(tmp_path / "clip.mp4")


def open_rtsp(url: str):
    return av.open(url, options=OPEN_OPTIONS, timeout=(5, 5))


def read_frames(url: str, limit: int | None = None) -> list[av.VideoFrame]:
    frames = []
    with open_rtsp(url) as container:
        for frame in container.decode(video=0):
            frames.append(frame)
            if limit is not None and len(frames) >= limit:
                break
    return frames


def test_plays_clip_once(clip: Path):
    with rtsp_server({"cam": clip}) as base:
        assert base.startswith("rtsp://127.0.0.1:")
        frames = read_frames(f"{base}/cam")  # ends at the server's EOS
    assert N - 5 <= len(frames) <= N
    assert {(f.width, f.height) for f in frames} == {(W, H)}
    # Served with the clip's own timestamps: 50 frames at 25 fps span about 2 s of stream time.
    times = [f.time for f in frames if f.time is not None]
    assert max(times) - min(times) == pytest.approx((len(frames) - 1) / FPS, abs=0.1)


def test_loop_keeps_going_past_the_clip(clip: Path):
    with rtsp_server({"cam": clip}, loop=True) as base:
        frames = read_frames(f"{base}/cam", limit=80)
    assert len(frames) == 80
    assert {(f.width, f.height) for f in frames} == {(W, H)}
    # Timestamps keep increasing across the loop point, like a live feed.
    pts = [f.pts for f in frames if f.pts is not None]
    assert all(b > a for a, b in zip(pts, pts[1:]))


def test_loops_real_clip(real_video: Path):
    """The 16-frame shared clip (H.264 + AAC) plays once, and loops on request."""
    with rtsp_server({"cam": real_video}) as base:
        once = read_frames(f"{base}/cam")
    assert 12 <= len(once) <= 16
    with rtsp_server({"cam": real_video}, loop=True) as base:
        looped = read_frames(f"{base}/cam", limit=40)
    assert len(looped) == 40
    assert {(f.width, f.height) for f in once + looped} == {(512, 512)}


def test_several_mounts_and_clients(tmp_path: Path, clip: Path):
    other = make_clip(tmp_path / "other.mp4", frames=25)
    with rtsp_server({"/a": clip, "b": other}, loop=True) as base:
        with open_rtsp(f"{base}/a") as ca, open_rtsp(f"{base}/b") as cb:
            fa = next(iter(ca.decode(video=0)))
            fb = next(iter(cb.decode(video=0)))
        assert (fa.width, fa.height) == (fb.width, fb.height) == (W, H)


def test_unknown_mount_is_404(clip: Path):
    with rtsp_server({"cam": clip}) as base:
        t0 = time.monotonic()
        with pytest.raises(av.error.HTTPNotFoundError) as err:
            open_rtsp(f"{base}/nope")
        assert time.monotonic() - t0 < 3.0
    assert "404" in str(err.value)
    assert isinstance(err.value, av.error.FFmpegError)


def test_nothing_listening_is_connection_refused():
    url = f"rtsp://127.0.0.1:{free_port()}/cam"
    t0 = time.monotonic()
    with pytest.raises(ConnectionRefusedError) as err:  # av.error.ConnectionRefusedError
        open_rtsp(url)
    assert time.monotonic() - t0 < 3.0
    assert isinstance(err.value, av.error.ConnectionRefusedError)
    assert isinstance(err.value, av.error.FFmpegError)


def test_server_failure_is_reported(tmp_path: Path):
    bogus = tmp_path / "not_a_video.mp4"
    bogus.write_bytes(b"")
    with pytest.raises(FileNotFoundError), rtsp_server({"cam": tmp_path / "missing.mp4"}):
        pass
    # A server that cannot start: the error carries its stderr.
    with pytest.raises(RuntimeError, match="server stderr"), rtsp_server({"bad name with = sign": bogus}, timeout=10):
        pass
