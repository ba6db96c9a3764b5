"""stream_frames against real failures: a real RTSP server killed, restarted, paused; real decode, no mocks."""

from __future__ import annotations

import re
import signal
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from pipeline.demo import make_demo_clip
from pipeline.errors import ConfigError, SourceError
from pipeline.sources import SourceSpec
from pipeline.supervisor import Backoff, stream_frames
from tests._rtsp import free_port, requires_rtsp, rtsp_server, rtsp_server_process

pytestmark = pytest.mark.timeout(60)


@pytest.fixture(scope="module")
def clips(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Short H.264 clips: 'small' 2 s 320x240, 'large' 2 s 640x480, 'second' 1 s 320x240; all 25 fps."""
    out = tmp_path_factory.mktemp("clips")
    return {
        "small": make_demo_clip(out / "small.mp4", real_seconds=1, fake_seconds=1, size=(320, 240)).path,
        "large": make_demo_clip(out / "large.mp4", real_seconds=1, fake_seconds=1, size=(640, 480)).path,
        "second": make_demo_clip(out / "second.mp4", real_seconds=1, fake_seconds=0, size=(320, 240)).path,
    }


@dataclass
class Recorder:
    """SourceEvents that records every call as (name, args, monotonic time)."""

    calls: list[tuple[str, tuple, float]] = field(default_factory=list)

    def on_up(self, spec: SourceSpec) -> None:
        self.calls.append(("up", (), time.monotonic()))

    def on_down(self, spec: SourceSpec, reason: str) -> None:
        self.calls.append(("down", (reason,), time.monotonic()))

    def on_reconnect(self, spec: SourceSpec, attempt: int, delay: float) -> None:
        self.calls.append(("reconnect", (attempt, delay), time.monotonic()))

    def on_format_change(self, spec: SourceSpec, old: tuple[int, int], new: tuple[int, int]) -> None:
        self.calls.append(("format", (old, new), time.monotonic()))

    def of(self, name: str) -> list[tuple]:
        return [args for n, args, _ in self.calls if n == name]

    def names(self) -> list[str]:
        return [n for n, _, _ in self.calls]

    def reasons(self) -> list[str]:
        return [reason for (reason,) in self.of("down")]

    def first(self, name: str) -> float:
        return next(t for n, _, t in self.calls if n == name)


@dataclass(frozen=True)
class Seen:
    index: int
    pts: float | None
    size: tuple[int, int]  # (W, H)
    at: float  # monotonic time of arrival


class Reader:
    """Consumes stream_frames in a thread, as the runner does; keeps what arrived, not the images."""

    def __init__(self, spec: SourceSpec) -> None:
        self.spec, self.stop, self.events = spec, threading.Event(), Recorder()
        self.frames: list[Seen] = []
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            for f in stream_frames(self.spec, self.stop, self.events):
                self.frames.append(Seen(f.index, f.pts, (f.image.shape[1], f.image.shape[0]), time.monotonic()))
        except BaseException as exc:  # noqa: BLE001 (re-raised in the test by wait_for/close)
            self.error = exc

    def wait_for(self, what: str, condition, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not condition():
            assert self.error is None, f"reader failed while waiting for {what}: {self.error!r}"
            assert time.monotonic() < deadline, f"no {what} within {timeout} s; events: {self.events.calls}"
            time.sleep(0.02)

    def close(self) -> None:
        self.stop.set()
        self.thread.join(timeout=15)
        assert not self.thread.is_alive(), "stream_frames did not end after stop"

    def __enter__(self) -> Reader:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def live(url: str, **options) -> SourceSpec:
    return SourceSpec("cam", url, **{"open_timeout": 5.0, "backoff_initial": 0.2, "backoff_max": 2.0, **options})


def assert_counts_on(frames: list[Seen]) -> None:
    assert [f.index for f in frames] == list(range(len(frames)))  # one stream: never restarts, never skips


def test_files_without_reconnect_fail_as_before(tmp_path: Path, clips: dict[str, Path]) -> None:
    events, stop = Recorder(), threading.Event()
    with pytest.raises(SourceError, match="cannot open: no such file"):
        next(stream_frames(SourceSpec("f", str(tmp_path / "gone.mp4")), stop, events))
    truncated = tmp_path / "half.mp4"
    truncated.write_bytes(clips["small"].read_bytes()[: clips["small"].stat().st_size // 2])
    got = []
    with pytest.raises(SourceError, match=r"truncated: decoded (\d+) of 50 frames the file declares") as err:
        got.extend(f.index for f in stream_frames(SourceSpec("f", str(truncated)), stop, events))
    assert got == list(range(int(re.search(r"decoded (\d+)", str(err.value))[1])))  # its frames came first
    assert events.names() == ["up"]  # nothing retried, nothing reported as down


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"loop": True}, "loop and pace apply to files only"),
        ({"backoff_initial": 5.0, "backoff_max": 1.0}, "backoff_max"),
        ({"stall_seconds": 0}, r"stream .cam.: stall_seconds must be in \(0, 3600\] seconds, got 0"),
        ({"read_timeout": float("inf")}, r"read_timeout must be in \(0, 3600\] seconds, got inf"),
        ({"open_timeout": float("nan")}, r"open_timeout must be in \(0, 3600\] seconds, got nan"),
        ({"backoff_max": 1e9}, r"backoff_max must be in \(0, 3600\] seconds, got 1000000000.0"),
        ({"rtsp_transport": "http"}, r"not one of \['tcp', 'udp'\]"),
    ],
)
def test_bad_options_are_refused_by_name(options: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        SourceSpec("cam", "rtsp://127.0.0.1/cam", **options)


def test_live_and_reconnect_defaults() -> None:
    cam, clip = SourceSpec("cam", "rtsp://h/cam"), SourceSpec("f", "a.mp4")
    assert (cam.is_live, cam.reconnects, cam.stall_timeout) == (True, True, cam.read_timeout)
    assert (clip.is_live, clip.reconnects) == (False, False)
    assert SourceSpec("f", "a.mp4", pace=True).is_live  # a paced file feeds the runner like a camera


def test_backoff_doubles_with_jitter_up_to_the_cap_and_resets() -> None:
    backoff = Backoff(0.5, 4.0)
    delays = [backoff.next_delay() for _ in range(6)]
    for n, d in enumerate(delays):
        cap = min(4.0, 0.5 * 2**n)
        assert cap / 2 <= d <= cap
    backoff.reset()
    assert backoff.next_delay() <= 0.5 and backoff.attempt == 1


def test_file_loop_and_pace_deliver_like_a_camera(clips: dict[str, Path]) -> None:
    spec = SourceSpec("f", str(clips["second"]), loop=True, pace=True)  # 25 frames, 25 fps
    frames: list[Seen] = []
    start = time.monotonic()
    for f in stream_frames(spec, threading.Event()):
        frames.append(Seen(f.index, f.pts, (f.image.shape[1], f.image.shape[0]), time.monotonic() - start))
        if len(frames) == 60:
            break
    assert_counts_on(frames)
    assert [f.pts for f in frames] == pytest.approx([(i % 25) / 25 for i in range(60)])  # pts restart per loop
    # Held to a schedule that runs on across the loop point: no frame early, the whole run about 60/25 s.
    assert all(f.at - frames[0].at >= f.index / 25 - 0.005 for f in frames)
    assert 2.0 <= frames[-1].at <= 3.2  # 60 frames at 25 fps: 2.36 s


def test_stop_ends_a_backoff_wait_at_once() -> None:
    spec = live(f"rtsp://127.0.0.1:{free_port()}/cam", backoff_initial=20.0, backoff_max=20.0)
    reader = Reader(spec)
    reader.wait_for("a reconnect wait", lambda: reader.events.of("reconnect"), timeout=10)
    assert "Connection refused" in reader.events.of("down")[0][0]
    asked = time.monotonic()
    reader.stop.set()
    reader.thread.join(timeout=2)
    assert not reader.thread.is_alive() and time.monotonic() - asked < 0.5
    assert reader.error is None and reader.events.of("reconnect") == [(1, pytest.approx(15, abs=5))]


@contextmanager
def silent_server() -> Iterator[int]:
    """A TCP server on 127.0.0.1 that accepts connections and never says a word; yields its port."""
    done, accepted = threading.Event(), []
    with socket.create_server(("127.0.0.1", 0)) as server:
        server.settimeout(0.05)

        def accept() -> None:
            while not done.is_set():
                with suppress(TimeoutError):
                    accepted.append(server.accept()[0])

        thread = threading.Thread(target=accept, daemon=True)
        thread.start()
        try:
            yield server.getsockname()[1]
        finally:
            done.set()
            thread.join(timeout=5)
            for conn in accepted:
                conn.close()


def test_stall_while_opening_is_a_timeout_and_retried() -> None:
    """The server accepts the connection and never answers: down within the timeout, then retried."""
    with silent_server() as port:
        start = time.monotonic()
        with Reader(live(f"rtsp://127.0.0.1:{port}/cam", open_timeout=1.0, stall_seconds=1.0)) as reader:
            reader.wait_for("a second attempt", lambda: len(reader.events.of("down")) >= 2, timeout=10)
    first, second = reader.events.reasons()[:2]
    assert "timed out after 1.0 s" in first and "timed out" in second
    assert reader.events.first("down") - start < 1.0 + 2.0
    assert reader.events.names()[:3] == ["down", "reconnect", "down"] and reader.frames == []


@pytest.mark.rtsp
@requires_rtsp
def test_stall_mid_stream_is_detected_and_the_stream_comes_back(clips: dict[str, Path]) -> None:
    """The server freezes (SIGSTOP) with the socket open: down within stall_seconds + 1 s; back after SIGCONT."""
    with (
        rtsp_server_process({"cam": clips["small"]}, loop=True) as server,
        Reader(live(f"{server.url}/cam", stall_seconds=1.5)) as reader,
    ):
        reader.wait_for("frames", lambda: len(reader.frames) >= 10, timeout=15)
        server.proc.send_signal(signal.SIGSTOP)
        try:
            reader.wait_for("the stall", lambda: reader.events.of("down"), timeout=10)
            last_frame = reader.frames[-1].at
        finally:
            server.proc.send_signal(signal.SIGCONT)
        n = len(reader.frames)
        reader.wait_for("frames after the stall", lambda: len(reader.frames) >= n + 10, timeout=15)
    (reason,) = reader.events.reasons()
    # "stalled: no frame for 1.5 s" from the read loop, or PyAV's read timeout if it fires first
    assert re.search(r"stalled .*no frame for 1\.5 s|no data for 1\.5 s \(read timeout\)", reason), reason
    assert reader.events.first("down") - last_frame <= 1.5 + 1.0
    assert reader.events.names() == ["up", "down", "reconnect", "up"]
    assert_counts_on(reader.frames)


@pytest.mark.rtsp
@requires_rtsp
def test_server_killed_and_restarted_on_the_same_port(clips: dict[str, Path]) -> None:
    with rtsp_server_process({"cam": clips["small"]}, loop=True) as server:
        reader = Reader(live(f"{server.url}/cam"))
        reader.wait_for("frames", lambda: len(reader.frames) >= 20, timeout=15)
        server.proc.kill()
        port = server.port
    with reader:
        reader.wait_for("the loss of the server", lambda: reader.events.of("down"), timeout=10)
        before = len(reader.frames)
        with rtsp_server({"cam": clips["small"]}, loop=True, port=port):
            reader.wait_for("frames after the restart", lambda: len(reader.frames) >= before + 20, timeout=15)
            reader.close()
    assert_counts_on(reader.frames)  # indices strictly increasing across the reconnect
    names = reader.events.names()
    assert names[0] == "up" and names[-1] == "up" and names.count("up") == 2
    assert names[1:-1] == ["down", "reconnect"] * ((len(names) - 2) // 2)  # each failed attempt: down, reconnect
    # pts are the container's: the new RTSP session's clock starts again (its first frame has none)
    restarted = [f.pts for f in reader.frames[before:] if f.pts is not None]
    assert restarted[0] < 0.5 < reader.frames[before - 1].pts


@pytest.mark.rtsp
@requires_rtsp
def test_unreachable_at_first_then_up(clips: dict[str, Path]) -> None:
    port = free_port()
    with Reader(live(f"rtsp://127.0.0.1:{port}/cam", backoff_initial=0.2, backoff_max=10.0)) as reader:
        time.sleep(2.0)
        with rtsp_server({"cam": clips["small"]}, loop=True, port=port):
            reader.wait_for("frames", lambda: len(reader.frames) >= 10, timeout=15)
            reader.close()
    attempts = reader.events.of("reconnect")
    assert len(attempts) >= 3 and [a for a, _ in attempts] == list(range(1, len(attempts) + 1))
    delays = [d for _, d in attempts]
    assert delays == sorted(delays) and delays[-1] > 2 * delays[0]  # equal jitter: the waits only grow
    assert all("Connection refused" in reason for reason in reader.events.reasons())
    assert reader.events.names()[-1] == "up" and reader.events.names().count("up") == 1
    assert_counts_on(reader.frames)


@pytest.mark.rtsp
@requires_rtsp
def test_resolution_change_after_reconnect(clips: dict[str, Path]) -> None:
    with rtsp_server_process({"cam": clips["small"]}, loop=True) as server:
        reader = Reader(live(f"{server.url}/cam"))
        reader.wait_for("frames", lambda: len(reader.frames) >= 10, timeout=15)
        port = server.port
    with reader, rtsp_server({"cam": clips["large"]}, loop=True, port=port):
        reader.wait_for("large frames", lambda: reader.frames[-1].size == (640, 480), timeout=15)
        n = len(reader.frames)
        reader.wait_for("more frames", lambda: len(reader.frames) >= n + 5, timeout=10)
        reader.close()
    assert reader.events.of("format") == [((320, 240), (640, 480))]
    sizes = [f.size for f in reader.frames]
    switch = sizes.index((640, 480))
    assert set(sizes[:switch]) == {(320, 240)} and set(sizes[switch:]) == {(640, 480)}
    assert_counts_on(reader.frames)


def test_fast_rgb_conversion_matches_swscale_on_real_footage(real_video: Path):
    """The planes + OpenCV path (what serving uses) against PyAV's own rgb24 conversion, frame by frame."""
    import av
    import numpy as np

    from pipeline.sources import to_rgb

    with av.open(str(real_video)) as container:
        frames = list(container.decode(video=0))[:8]
    assert frames and frames[0].format.name == "yuv420p"
    for frame in frames:
        ours, reference = to_rgb(frame).astype(int), frame.to_ndarray(format="rgb24").astype(int)
        assert ours.shape == reference.shape == (frame.height, frame.width, 3)
        diff = np.abs(ours - reference)  # rounding and chroma upsampling differ by a level or two
        assert diff.mean() < 2.0 and np.percentile(diff, 99) <= 4, (diff.mean(), np.percentile(diff, 99))


def test_frames_left_in_i420_convert_to_the_same_rgb_when_processed(real_video: Path):
    """The runner's readers keep the decoder's planes; a frame that is processed converts once, identically."""
    import numpy as np

    from pipeline.sources import read_frames

    spec = SourceSpec("clip", str(real_video))
    planes, converted = list(read_frames(spec, rgb=False))[:4], list(read_frames(spec))[:4]
    for lazy, eager in zip(planes, converted):
        assert lazy.pixel_format == "i420" and eager.pixel_format == "rgb24" and lazy.size == eager.size
        assert lazy.image.shape == (eager.image.shape[0] * 3 // 2, eager.image.shape[1])
        rgb = lazy.rgb()
        assert rgb.pixel_format == "rgb24" and rgb.rgb() is rgb and (rgb.index, rgb.pts) == (eager.index, eager.pts)
        np.testing.assert_array_equal(rgb.image, eager.image)


def _encode(frames, path: Path, codec: str, pix_fmt: str) -> Path:
    """RGB ``frames`` (H, W, 3) written with ``codec`` in ``pix_fmt``, as a camera or an editor would store them."""
    from fractions import Fraction

    import av

    with av.open(str(path), "w") as out:
        video = out.add_stream(codec, rate=25)
        (h, w), video.pix_fmt, video.time_base = frames[0].shape[:2], pix_fmt, Fraction(1, 25)
        video.width, video.height = w, h
        for i, image in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(image, format="rgb24").reformat(format=pix_fmt)
            frame.pts = i
            out.mux(video.encode(frame))
        out.mux(video.encode(None))
    return path


@pytest.mark.parametrize("pix_fmt", ["yuv420p", "yuv422p", "yuv444p", "yuv420p10le", "yuv422p10le", "yuv444p10le"])
def test_every_planar_yuv_format_takes_the_fast_path_and_matches_swscale(real_video: Path, tmp_path, pix_fmt, caplog):
    """4:2:2 / 4:4:4, 8- and 10-bit (contribution feeds, FaceForensics++ files) went through swscale: a 4:4:4
    720p feed fell out of real time. Real footage re-encoded in each format, against PyAV's own conversion."""
    import logging

    import av
    import numpy as np

    from pipeline.sources import to_i420, to_rgb

    with av.open(str(real_video)) as container:
        source = [f.to_ndarray(format="rgb24") for f, _ in zip(container.decode(video=0), range(6))]
    path = _encode(source, tmp_path / f"{pix_fmt}.mkv", "libx264", pix_fmt)
    caplog.set_level(logging.INFO, logger="pipeline.sources")
    with av.open(str(path)) as container:
        frames = list(container.decode(video=0))
    assert len(frames) == 6 and {f.format.name for f in frames} == {pix_fmt}
    for frame in frames:
        assert to_i420(frame) is not None
        ours, reference = to_rgb(frame).astype(int), frame.to_ndarray(format="rgb24").astype(int)
        assert ours.shape == reference.shape == (frame.height, frame.width, 3)
        diff = np.abs(ours - reference)  # chroma averaged to 4:2:0 differs only at sharp colour edges
        assert diff.mean() < 2.0 and np.percentile(diff, 99) <= 8, (diff.mean(), np.percentile(diff, 99))
    assert not [r for r in caplog.records if "swscale" in r.getMessage()]


def test_one_decoder_thread_gives_the_same_pixels_as_ffmpegs_own_threading(real_video: Path):
    """One decoder thread (the default: fewer threads and frame buffers with many streams) gives the pixels of
    FFmpeg's own threading (``decoder_threads = 0``)."""
    import numpy as np

    from pipeline.sources import read_frames

    threaded = list(read_frames(SourceSpec("clip", str(real_video), decoder_threads=0), rgb=False))[:12]
    single = list(read_frames(SourceSpec("clip", str(real_video)), rgb=False))[:12]
    assert len(single) == len(threaded) == 12
    for a, b in zip(single, threaded):
        assert (a.index, a.pts) == (b.index, b.pts)
        np.testing.assert_array_equal(a.image, b.image)


def test_only_frames_a_stage_looks_at_are_converted_and_the_verdicts_do_not_change(fast_models: Path, demo_clip):
    """I420 -> RGB for detected frames and frames with a face to score, not for frames the tracker carries past
    (issue 25's budget: 200 frames/s at 8 x 720p); the faces and scores are those of converting every frame."""
    import numpy as np

    from engines import Classifier, Detector
    from pipeline.processor import BatchProcessor
    from pipeline.schedule import ScheduleConfig
    from pipeline.sources import read_frames

    def run(rgb: bool):
        processor = BatchProcessor(
            Detector(fast_models / "face_detector.onnx", conf=0.001, max_det=1),
            Classifier(fast_models / "deepfake_classifier.onnx"),
            schedule=ScheduleConfig(detect_every=4, classify_every=3),
        )
        frames = list(read_frames(SourceSpec("demo", str(demo_clip.path)), rgb=rgb))[:24]
        batches = [processor.process(frames[i : i + 4]) for i in range(0, len(frames), 4)]  # one stream: 4 rounds
        return batches

    lazy, eager = run(rgb=False), run(rgb=True)
    converted = [f.pixel_format == "rgb24" for b in lazy for f in b.frames_as_converted]
    looked_at = [bool(b.detect[i]) or bool(b.faces.frame(i).due.any()) for b in lazy for i in range(len(b.frames))]
    assert converted == looked_at and 0 < sum(converted) < len(converted), (converted, looked_at)
    for a, b in zip(lazy, eager):
        np.testing.assert_allclose(a.faces.xyxy, b.faces.xyxy)
        np.testing.assert_array_equal(a.faces.p_fake, b.faces.p_fake)


def test_other_pixel_formats_take_swscale_and_say_so_once(tmp_path: Path, caplog):
    import logging

    import av
    import numpy as np

    from pipeline.sources import to_rgb

    images = [np.full((48, 64, 3), (40 * i, 90, 200), np.uint8) for i in range(3)]  # (H, W, 3)
    path = _encode(images, tmp_path / "yuvj.mkv", "mjpeg", "yuvj444p")  # full range: not on the fast path
    caplog.set_level(logging.INFO, logger="pipeline.sources")
    with av.open(str(path)) as container:
        for frame in container.decode(video=0):
            assert frame.format.name == "yuvj444p"
            np.testing.assert_array_equal(to_rgb(frame), frame.to_ndarray(format="rgb24"))
    assert sum("yuvj444p 64x48" in r.getMessage() for r in caplog.records) == 1


def _rotated_copy(src: Path, dst: Path, rotation: int) -> None:
    """``src``'s pixels stored turned so that a player applying the display matrix ``rotation`` (counterclockwise
    degrees, as FFmpeg's autorotate reads it: checked against the ffmpeg CLI when this was written) shows them
    upright again, as a phone or an editor stores a clip filmed sideways."""
    import av
    import numpy as np

    with av.open(str(src)) as inp, av.open(str(dst), "w") as out:
        stream = None
        for frame in inp.decode(video=0):
            turned = np.ascontiguousarray(np.rot90(frame.to_ndarray(format="rgb24"), -rotation // 90))
            if stream is None:
                stream = out.add_stream("libx264", rate=25)
                stream.width, stream.height, stream.pix_fmt = turned.shape[1], turned.shape[0], "yuv420p"
                stream.options = {"crf": "12"}
                stream.set_display_rotation(rotation)
            for packet in stream.encode(av.VideoFrame.from_ndarray(turned, format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)


@pytest.mark.parametrize("rotation", [90, 180, -90])
def test_a_clip_stored_sideways_is_decoded_upright_as_players_show_it(tmp_path: Path, clips, rotation):
    """A display matrix turns the frame for every player; dfwatch turns it too, in the RGB and the I420 path, or a
    fake uploaded sideways reaches the detector on its side (issue 23: it then scored REAL)."""
    import numpy as np

    from pipeline.sources import read_frames

    upright_clip, turned = tmp_path / "upright.mp4", tmp_path / f"turned{rotation}.mp4"
    _rotated_copy(clips["small"], upright_clip, 0)  # the same encoder settings, no rotation
    _rotated_copy(clips["small"], turned, rotation)
    reference = [f.image for f in read_frames(SourceSpec("a", str(upright_clip)))]
    rgb = list(read_frames(SourceSpec("b", str(turned))))
    planes = list(read_frames(SourceSpec("c", str(turned)), rgb=False))
    assert len(rgb) == len(planes) == len(reference) == 50
    for ref, eager, lazy in zip(reference, rgb, planes):
        assert eager.size == lazy.size == (320, 240)  # the upright sides, whatever the stored ones
        assert np.abs(eager.image.astype(int) - ref).mean() < 3  # the same picture (two H.264 encodes apart)
        np.testing.assert_array_equal(lazy.rgb().image, eager.image)  # the planes turned as the RGB frame
