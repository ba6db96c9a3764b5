"""The annotated video: drawn from the verdict messages, on the frames that went through, playable when killed."""

from __future__ import annotations

import io
import json
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import av
import numpy as np
import pytest

from engines import Classifier, Detector
from pipeline.annotate import VERDICT_COLOURS, AnnotateConfig, Annotator, banner_height, draw, score_colour
from pipeline.messages import Faces, Frame, Verdict, VerdictState
from pipeline.observer import NullObserver
from pipeline.processor import BatchProcessor
from pipeline.runner import Runner, RunnerConfig
from pipeline.schedule import ScheduleConfig
from pipeline.sinks import JsonLinesSink
from pipeline.sources import SourceSpec
from tests.pipeline._faces import faces as make_faces

TOLERANCE = 40  # uint8 levels: H.264 (crf 23, yuv420p) moves a drawn colour by ~10


def _decode(path: Path) -> list[av.VideoFrame]:
    with av.open(str(path)) as container:
        return list(container.decode(video=0))


def _edge_pixels(box: list[float], shape: tuple[int, ...]) -> list[tuple[int, int]]:
    """(y, x) on the box's bottom, left and right lines, away from corners, the label and the banner."""
    h, w = shape[:2]
    x1, y1, x2, y2 = (round(v) for v in box)
    top = max(y1, banner_height(h)) + 40  # below the label
    pts = [(y2, x) for x in range(x1 + 6, x2 - 5)] + [(y, x) for y in range(top, y2 - 5) for x in (x1, x2)]
    return [(y, x) for y, x in pts if banner_height(h) + 3 <= y < h and 0 <= x < w]


def _far(pixels: np.ndarray, colour: tuple[int, int, int]) -> np.ndarray:
    """(n,) largest channel difference of each pixel (n, 3) from ``colour``."""
    return np.abs(pixels.astype(int) - np.array(colour)).max(axis=1)


def _watch(dfwatch, fast_models: Path, *args: str):
    return dfwatch(
        "watch",
        *args,
        "--models",
        str(fast_models),
        "--metrics-port",
        "0",
        "--det-conf",
        "0.001",
        "--max-faces",
        "1",
        models=False,
    )


def test_annotated_video_has_one_frame_per_verdict_and_boxes_where_the_verdicts_say(
    dfwatch, fast_models: Path, demo_clip, tmp_path: Path
):
    out = tmp_path / "annotated"
    run = _watch(dfwatch, fast_models, f"cam.1={demo_clip.path}", "--annotate", str(out))
    assert run.returncode == 0, run.stderr
    records = run.records
    assert sorted(p.name for p in out.iterdir()) == ["cam.1.mp4"]  # no rotation, no probe file left
    annotated = _decode(out / "cam.1.mp4")
    assert len(annotated) == len(records) == demo_clip.n_frames
    # Times come from the source's pts: frame i of the video is verdict i.
    assert [f.time for f in annotated] == pytest.approx([r["pts"] - records[0]["pts"] for r in records], abs=1e-3)
    source = [f.to_ndarray(format="rgb24") for f in _decode(demo_clip.path)]
    checked = 0
    for record, frame, original in zip(records, annotated, source):
        image = frame.to_ndarray(format="rgb24")  # (480, 640, 3)
        assert image.shape == original.shape
        (face,) = record["faces"]
        pts = _edge_pixels(face["box"], image.shape)
        if len(pts) < 50:
            continue  # a box almost outside the frame
        ys, xs = np.array(pts).T
        colour = score_colour(face["p_fake"])
        assert np.median(_far(image[ys, xs], colour)) <= TOLERANCE, f"frame {record['frame']}: box not drawn"
        assert np.median(_far(original[ys, xs], colour)) > TOLERANCE  # ... and not already there
        banner = image[2 : banner_height(image.shape[0]) - 2].reshape(-1, 3)  # text is thin: the median is the fill
        assert np.median(_far(banner, VERDICT_COLOURS[VerdictState(record["verdict"])])) <= TOLERANCE
        checked += 1
    assert checked >= demo_clip.n_frames // 2
    assert "annotated video of 'cam.1'" in run.stderr and f"({len(records)} frames" in run.stderr


def test_a_killed_run_leaves_a_playable_file(fast_models: Path, demo_clip, tmp_path: Path):
    out = tmp_path / "annotated"
    config = tmp_path / "annotate.toml"
    config.write_text(f'[annotate]\ndir = "{out}"\nkeyframe_every = 5\n')  # a fragment every 5 frames
    cmd = [
        sys.executable,
        "-m",
        "pipeline.cli",
        "watch",
        f"live={demo_clip.path}",
        "--loop",
        "--pace",
        "--config",
        str(config),
        "--models",
        str(fast_models),
        "--metrics-port",
        "0",
        "--det-conf",
        "0.001",
        "--max-faces",
        "1",
    ]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    records: list[dict] = []
    reader = threading.Thread(target=lambda: records.extend(json.loads(line) for line in proc.stdout), daemon=True)
    reader.start()
    try:
        deadline = time.monotonic() + 90
        video = out / "live.mp4"
        while not (video.exists() and video.stat().st_size > 10_000):  # at least one fragment on disk
            assert proc.poll() is None and time.monotonic() < deadline, "no annotated fragment in time"
            time.sleep(0.1)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    reader.join(5)
    frames = _decode(out / "live.mp4")  # raises if the file is not playable
    assert len(frames) >= 5  # the fragment waited for (a keyframe every 5 frames) plays back
    assert len(frames) <= len(records)  # nothing beyond what was published
    times = [f.time for f in frames]
    assert times[0] == 0 and all(b > a for a, b in zip(times, times[1:]))  # playable from the start, in order
    assert all(f.width == 640 and f.height == 480 for f in frames)


def test_size_bound_rotates_to_the_previous_file(dfwatch, fast_models: Path, demo_clip, tmp_path: Path):
    out = tmp_path / "annotated"
    max_mb = 0.12  # the 50 annotated frames take about 0.17 MB
    run = _watch(
        dfwatch,
        fast_models,
        f"cam={demo_clip.path}",
        "--annotate",
        str(out),
        "--annotate-max-mb",
        "0.12",
        "--detect-every",
        "4",
    )
    assert run.returncode == 0, run.stderr
    current, previous = out / "cam.mp4", out / "cam.1.mp4"
    assert sorted(p.name for p in out.iterdir()) == ["cam.1.mp4", "cam.mp4"]
    rotations = run.stderr.count("size limit reached; kept as cam.1.mp4")
    assert rotations >= 2
    n_current = int(re.search(r"annotated video of 'cam': \S+ \((\d+) frames", run.stderr).group(1))
    assert len(_decode(current)) == n_current >= 1
    assert n_current + len(_decode(previous)) < demo_clip.n_frames  # the oldest footage is gone
    # Each file stops growing at the first frame past half the bound; a frame is at most a keyframe (~20 KB).
    assert current.stat().st_size + previous.stat().st_size <= max_mb * 1e6 + 2 * 30_000


def test_unwritable_directory_is_one_clear_error(dfwatch, fast_models: Path, demo_clip, tmp_path: Path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    run = _watch(dfwatch, fast_models, str(demo_clip.path), "--annotate", str(blocker / "videos"))
    assert run.returncode == 1 and run.records == []
    assert len(run.error_lines) == 1 and "Traceback" not in run.stderr
    assert f"cannot write the annotated video (--annotate DIR) in {blocker / 'videos'}" in run.error_lines[0]


def _alternating_sizes(path: Path, n: int, sizes: tuple[tuple[int, int], ...], grey: int) -> Path:
    """A real Matroska/MJPEG file whose frames alternate between ``sizes`` (each JPEG carries its own size), all
    filled with ``grey``: a source whose resolution changes at every frame."""
    from fractions import Fraction

    step = Fraction(1, 25)
    with av.open(str(path), "w", format="matroska") as out:
        stream = out.add_stream("mjpeg", rate=25)
        stream.width, stream.height, stream.pix_fmt = *sizes[0], "yuvj420p"
        encoders = []
        for w, h in sizes:
            encoder = av.CodecContext.create("mjpeg", "w")
            encoder.width, encoder.height, encoder.pix_fmt, encoder.time_base = w, h, "yuvj420p", step
            encoders.append(encoder)
        for i in range(n):
            w, h = sizes[i % len(sizes)]
            frame = av.VideoFrame.from_ndarray(np.full((h, w, 3), grey, np.uint8), format="rgb24")  # (h, w, 3)
            frame = frame.reformat(format="yuvj420p")
            frame.pts, frame.time_base = i, step
            for packet in encoders[i % len(sizes)].encode(frame):
                packet.stream, packet.pts, packet.dts, packet.time_base = stream, i, i, step
                out.mux(packet)
    with av.open(str(path)) as check:  # the decoder really sees the sizes alternate
        assert [(f.width, f.height) for f in check.decode(video=0)][:2] == list(sizes[:2])
    return path


def test_a_source_that_alternates_sizes_keeps_every_frame_scaled_into_one_file_said_once(
    dfwatch, fast_models: Path, tmp_path: Path
):
    """A source alternating 64x64 and 128x96 at every frame left 2 of 60 annotated frames on disk (each change
    rotated the file over the previous one) and logged a line per frame. Now the file keeps its first size and
    the frames of the other size are letterboxed into it, said once."""
    clip = _alternating_sizes(tmp_path / "alternating.mkv", 60, ((64, 64), (128, 96)), grey=120)
    out = tmp_path / "annotated"
    run = _watch(dfwatch, fast_models, f"cam={clip}", "--annotate", str(out))
    assert run.returncode == 0, run.stderr
    assert len(run.records) == 60
    assert sorted(p.name for p in out.iterdir()) == ["cam.mp4"]  # no rotation: nothing pushed out
    frames = [f.to_ndarray(format="rgb24") for f in _decode(out / "cam.mp4")]  # (64, 64, 3) each
    assert len(frames) == 60 and all(f.shape == (64, 64, 3) for f in frames)
    # 128x96 in 64x64: scaled by 1/2 to 64x48, black bars of 8 rows above and below; the 64x64 frames have none.
    bottom = [float(np.median(f[58:])) for f in frames]
    assert all(b < 30 for b in bottom[1::2]) and all(abs(b - 120) < 30 for b in bottom[0::2]), bottom
    lines = [line for line in run.stderr.splitlines() if "annotated video of 'cam'" in line]
    assert len(lines) == 2, lines  # the one note, and the closing line
    assert "a frame of 128x96 in a file of 64x64" in lines[0] and "said once" in lines[0]
    assert "(60 frames" in lines[1] and "30 frames of another size scaled in" in lines[1]


def test_bad_size_bound_is_named(dfwatch, fast_models: Path, demo_clip, tmp_path: Path):
    run = _watch(dfwatch, fast_models, str(demo_clip.path), "--annotate", str(tmp_path), "--annotate-max-mb", "0")
    assert run.returncode == 2 and "argument --annotate-max-mb: must be in (0, 1e+06] MB, got '0'" in run.stderr


@pytest.mark.parametrize(
    ("p_fake", "colour"),
    [(None, (160, 160, 160)), (0.0, (0, 200, 0)), (0.5, (230, 230, 0)), (1.0, (230, 0, 0)), (1.7, (230, 0, 0))],
)
def test_score_colour_runs_green_yellow_red(p_fake, colour):
    assert score_colour(p_fake) == colour


def _verdict(faces: tuple = (), state: VerdictState = VerdictState.FAKE) -> Verdict:
    faces = faces if isinstance(faces, Faces) else make_faces(*faces)
    return Verdict("s", 7, 0.28, 1_700_000_000.0, faces, 0.9, state, False, True, {}, placeholder_models=False)


def test_draw_puts_each_box_in_its_colour_and_leaves_the_input_alone():
    image = np.full((240, 320, 3), 40, np.uint8)  # (H, W, 3)
    faces = ((1, (20.0, 60.0, 120.0, 200.0), 0.9, 0.9, 0.95), (2, (180.0, 80.0, 300.0, 220.0), 0.8, None, None))
    out = draw(image, _verdict(faces))
    assert (image == 40).all() and out.shape == image.shape
    assert tuple(out[200, 70]) == score_colour(0.9)  # bottom edge of face 1
    assert tuple(out[150, 20]) == score_colour(0.9)  # its left edge
    assert tuple(out[220, 240]) == score_colour(None)  # face 2 is not scored yet: grey
    assert tuple(out[130, 70]) == (40, 40, 40)  # inside a box nothing is painted
    assert tuple(out[0, 160]) == VERDICT_COLOURS[VerdictState.FAKE]  # the banner


def test_config_refuses_bad_values_by_name():
    with pytest.raises(ValueError, match=r"annotate.crf must be in \[0, 51\], got 60"):
        AnnotateConfig(crf=60)
    with pytest.raises(ValueError, match=r"annotate.keyframe_every must be in \[1, 600\], got 0"):
        AnnotateConfig(keyframe_every=0)
    with pytest.raises(ValueError, match=r"keyframe_every must be in \[1, 600\], got 2147483648"):
        AnnotateConfig(keyframe_every=2**31)  # was a traceback from the encoder


class _Recorder:
    """FrameSink that keeps what it was given; ``gate`` (if set) holds its first call until opened."""

    name = "recorder"

    def __init__(self, gate: threading.Event | None = None) -> None:
        self.pairs: list[tuple[Frame, Verdict]] = []
        self.gate = gate

    def publish_frames(self, pairs) -> None:
        if self.gate is not None:
            self.gate.wait(60)
        self.pairs.extend(pairs)

    def close(self) -> None:
        pass


class _OpensGateOnClose(JsonLinesSink):
    def __init__(self, gate: threading.Event) -> None:
        super().__init__(io.StringIO())
        self.gate = gate

    def close(self) -> None:
        super().close()
        self.gate.set()  # the runner closes sinks after the last publish: every pair has been offered


def _runner(fast_models: Path, spec: SourceSpec, sinks, frame_sinks, *, queue: int) -> Runner:
    observer = NullObserver()
    processor = BatchProcessor(
        Detector(fast_models / "face_detector.onnx", conf=0.001, max_det=1),
        Classifier(fast_models / "deepfake_classifier.onnx"),
        observer,
        schedule=ScheduleConfig(detect_every=4),  # the tracker carries boxes in between
    )
    return Runner(
        [spec], processor, sinks, observer, config=RunnerConfig(frame_sink_queue=queue), frame_sinks=frame_sinks
    )


def test_frames_of_files_wait_for_the_frame_sink_and_arrive_in_order_with_their_verdicts(fast_models, demo_clip):
    out = io.StringIO()
    recorder = _Recorder()
    stats = _runner(fast_models, SourceSpec("f", str(demo_clip.path)), [JsonLinesSink(out)], [recorder], queue=2).run()
    records = [json.loads(line) for line in out.getvalue().splitlines()]
    assert [(f.index, v.frame_index) for f, v in recorder.pairs] == [(r["frame"], r["frame"]) for r in records]
    assert len(records) == demo_clip.n_frames and stats.sink_failures == {}
    for (frame, verdict), record in zip(recorder.pairs, records):  # the very messages the other sinks got
        assert frame.stream_id == verdict.stream_id == record["stream"]
        assert np.allclose(verdict.faces.xyxy, [f["box"] for f in record["faces"]], atol=0.051)


def test_a_slow_frame_sink_never_holds_up_a_live_stream(fast_models, demo_clip):
    gate = threading.Event()
    out = _OpensGateOnClose(gate)
    recorder = _Recorder(gate)  # stuck until every verdict has been published
    spec = SourceSpec("live", str(demo_clip.path), pace=True)
    stats = _runner(fast_models, spec, [out], [recorder], queue=2).run()
    published = len(out.out.getvalue().splitlines())
    assert published > 4  # the stages went on while the frame sink was stuck
    # It got the chunk it was stuck on (the first batch: 1 or 2 pairs, the queue holds 2) and the full queue
    # behind it, in publish order; every later live frame skipped the full queue.
    indexes = [frame.index for frame, _ in recorder.pairs]
    assert len(indexes) in (3, 4) and indexes[0] == 0 and indexes == sorted(set(indexes))
    assert all(frame.index == verdict.frame_index for frame, verdict in recorder.pairs)
    assert stats.sink_failures == {"recorder": published - len(recorder.pairs)}


class _SlowRecorder(_Recorder):
    def __init__(self) -> None:
        super().__init__()
        self.closed = False

    def publish_frames(self, pairs) -> None:
        time.sleep(0.02)
        super().publish_frames(pairs)

    def close(self) -> None:
        self.closed = True


def test_drain_seconds_zero_still_lets_a_frame_sink_finish_and_close(fast_models, demo_clip):
    recorder = _SlowRecorder()
    observer = NullObserver()
    processor = BatchProcessor(
        Detector(fast_models / "face_detector.onnx", conf=0.001, max_det=1),
        Classifier(fast_models / "deepfake_classifier.onnx"),
        observer,
    )
    runner = Runner(
        [SourceSpec("f", str(demo_clip.path))],
        processor,
        [],
        observer,
        config=RunnerConfig(frame_sink_queue=4, drain_seconds=0.0),
        frame_sinks=[recorder],
    )
    stats = runner.run()
    assert stats.sink_failures == {} and recorder.closed  # the annotated MP4 gets its last fragment
    assert len(recorder.pairs) == demo_clip.n_frames


def test_streams_whose_file_names_clash_each_get_a_file_of_their_own(tmp_path: Path):
    from dataclasses import replace

    from pipeline.annotate import Annotator

    # "cam" rotates into "cam.1.mp4", the file of stream "cam.1"; "a/b" and "a_b" are both "a_b.mp4"
    ids = ["cam", "cam.1", "a/b", "a_b"]
    annotator = Annotator(AnnotateConfig(dir=tmp_path / "out", max_mb=0.000001))  # rotate at every frame
    for i in range(3):
        image = np.full((64, 96, 3), 40, np.uint8)  # (H, W, 3)
        pairs = [
            (Frame(sid, i, i * 0.04, 1_700_000_000.0 + i * 0.04, image), replace(_verdict(()), stream_id=sid))
            for sid in ids
        ]
        annotator.publish_frames(pairs)
    annotator.close()
    paths = [p for v in annotator.videos.values() for p in (v.path, v.previous)]
    assert len(set(paths)) == len(paths) == 2 * len(ids)
    for video in annotator.videos.values():  # each stream's newest file holds its own last frame, intact
        assert len(_decode(video.path)) == 1


_FULL_DISK_CHILD = r"""
import sys, time
from pathlib import Path
import av, numpy as np
import pipeline.annotate as annotate
from pipeline.messages import Faces, Frame, Verdict, VerdictState

annotate.RETRY_SECONDS = 0.0  # retry at once: many failures and recoveries in a short run
out = Path(sys.argv[1])
sink = annotate.Annotator(annotate.AnnotateConfig(dir=out, keyframe_every=5, max_mb=100))
rng = np.random.default_rng(0)
raised = 0
for i in range(3000):
    if i % 300 == 0:
        (out / "filler").unlink(missing_ok=True)  # space comes back
    if i % 300 == 150:  # and the disk fills up again, behind the muxer's back
        with open(out / "filler", "wb") as fh:
            try:
                fh.write(b"\0" * 2_000_000)
            except OSError:
                pass
    image = rng.integers(0, 255, (240, 320, 3), dtype=np.uint8)  # noise: every frame costs disk
    frame = Frame("cam", i, i / 25, time.time(), image)
    verdict = Verdict("cam", i, i / 25, frame.capture_time, Faces.empty(), None, VerdictState.UNKNOWN, False, True,
                      {}, False)
    try:
        sink.publish_frames([(frame, verdict)])
    except OSError:  # what the sink did before: raise, and its runner thread logged and counted it
        raised += 1
unwritten = getattr(sink, "unwritten", 0) + raised
sink.close()
with av.open(str(out / "cam.mp4")) as c:
    decoded = sum(1 for _ in c.decode(video=0))
previous = out / "cam.1.mp4"  # the file that failed last: cut back to its last whole fragment, or removed
if previous.exists():
    with av.open(str(previous)) as c:
        sum(1 for _ in c.decode(video=0))  # raised on a torn fragment before
print("unwritten", unwritten, "decoded", decoded)
"""


def test_a_full_disk_stops_the_video_not_the_process(tmp_path: Path):
    """A full disk under --annotate segfaulted the process (rc 139, in the muxer after a write error): the service
    crash-looped while the disk stayed full. A real 1 MiB tmpfs fills and frees under the annotator."""
    import shutil

    disk = tmp_path / "disk"
    disk.mkdir()
    unshare = shutil.which("unshare")
    probe = subprocess.run([unshare, "-rm", "true"], capture_output=True) if unshare else None
    if probe is None or probe.returncode != 0:
        pytest.skip("cannot mount a tmpfs here (no unshare -rm); the full-disk test needs a real small filesystem")
    script = tmp_path / "child.py"
    script.write_text(_FULL_DISK_CHILD)
    cmd = [
        unshare,
        "-rm",
        "sh",
        "-c",
        'mount -t tmpfs -o size=1m tmpfs "$1" && exec "$2" "$3" "$1"',
        "sh",
        str(disk),
        sys.executable,
        str(script),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=240, cwd=Path(__file__).resolve().parents[2])
    assert proc.returncode == 0, f"rc {proc.returncode}\n{proc.stderr[-3000:]}"
    unwritten, decoded = (int(v) for v in proc.stdout.split()[1::2])
    assert unwritten > 0 and decoded > 0  # frames were skipped while full, and the video went on once it was not
    assert "No space left on device; its frames are skipped, a new file is tried" in proc.stderr


def _blank_frames(sink: Annotator, n: int) -> None:
    """``n`` black frames of stream "cam", each with an empty verdict."""
    image = np.zeros((120, 160, 3), np.uint8)
    for i in range(n):
        frame = Frame("cam", i, i / 25, time.time(), image)
        sink.publish_frames(
            [
                (
                    frame,
                    Verdict(
                        "cam",
                        i,
                        i / 25,
                        frame.capture_time,
                        Faces.empty(),
                        None,
                        VerdictState.UNKNOWN,
                        False,
                        True,
                        {},
                        False,
                    ),
                )
            ]
        )


def test_the_annotator_never_writes_through_a_symlink(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    import pipeline.annotate

    drawn = []
    monkeypatch.setattr(pipeline.annotate, "draw", lambda image, verdict: drawn.append(1) or image)
    target = tmp_path / "precious.txt"
    target.write_text("keep me")
    out = tmp_path / "annotated"
    out.mkdir()
    (out / "cam.mp4").symlink_to(target)  # planted where the annotator will write
    sink = Annotator(AnnotateConfig(dir=out))
    _blank_frames(sink, 3)
    sink.close()
    assert target.read_text() == "keep me" and (out / "cam.mp4").is_symlink()
    assert sink.unwritten == 3
    assert len(drawn) == 1  # only the frame that found the symlink; the two in the retry window were not drawn


def test_a_removed_stream_finishes_its_file_and_is_forgotten(tmp_path: Path):
    sink = Annotator(AnnotateConfig(dir=tmp_path))
    _blank_frames(sink, 10)
    sink.forget_stream("cam")
    assert sink.videos == {}  # its encoder and last frame are gone
    with av.open(str(tmp_path / "cam.mp4")) as c:  # and its file was finished, whole
        assert sum(1 for _ in c.decode(video=0)) == 10
    sink.close()
