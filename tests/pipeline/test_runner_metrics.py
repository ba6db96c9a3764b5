"""The runner in-process: what the observer exports matches what was processed; /metrics serves it."""

from __future__ import annotations

import io
import json
import socket
import urllib.request
from pathlib import Path

import pytest

from engines import Classifier, Detector
from pipeline.messages import VerdictState
from pipeline.metrics import PrometheusObserver
from pipeline.processor import BatchProcessor
from pipeline.queues import BoundedQueue, DropPolicy
from pipeline.runner import Runner
from pipeline.schedule import Schedule, ScheduleConfig
from pipeline.sinks import JsonLinesSink
from pipeline.sources import SourceKind, SourceSpec


def _value(observer: PrometheusObserver, name: str, labels: dict[str, str]) -> float:
    value = observer.registry.get_sample_value(name, labels)
    assert value is not None, f"{name}{labels} was not exported"
    return value


def test_runner_counts_and_latencies_match_the_run(fast_models: Path, demo_clip, real_video: Path):
    observer, out = PrometheusObserver(), io.StringIO()
    processor = BatchProcessor(
        Detector(fast_models / "face_detector.onnx", conf=0.001, max_det=1),
        Classifier(fast_models / "deepfake_classifier.onnx"),
        observer,
    )
    runner = Runner(
        [SourceSpec("demo", str(demo_clip.path)), SourceSpec("real", str(real_video))],
        processor,
        [JsonLinesSink(out)],
        observer,
    )
    stats = runner.run()
    records = [json.loads(line) for line in out.getvalue().splitlines()]
    n_demo = sum(r["stream"] == "demo" for r in records)
    n_real = len(records) - n_demo
    assert n_demo == demo_clip.n_frames and n_real > 0 and stats.failed == []
    assert _value(observer, "dfwatch_frames_decoded_total", {"stream": "demo"}) == n_demo
    assert _value(observer, "dfwatch_frames_decoded_total", {"stream": "real"}) == n_real
    assert _value(observer, "dfwatch_faces_total", {"stream": "demo"}) == n_demo  # max_det=1
    assert _value(observer, "dfwatch_capture_to_publish_seconds_count", {"stream": "demo"}) == n_demo
    assert _value(observer, "dfwatch_stage_seconds_count", {"stage": "decode"}) == len(records)
    assert _value(observer, "dfwatch_stage_seconds_count", {"stage": "queue"}) == len(records)
    batches = _value(observer, "dfwatch_stage_seconds_count", {"stage": "detect"})
    assert len(records) / 8 <= batches < len(records)  # batched across streams, at most max_batch frames
    # the file ended: no series at all, so a finished file never reads as a feed that is down (the alert's 0)
    assert observer.registry.get_sample_value("dfwatch_stream_up", {"stream": "demo"}) is None
    assert stats.streams["demo"].frames == n_demo
    last = next(r for r in reversed(records) if r["stream"] == "demo")["verdict"]
    exported = {s.value: _value(observer, "dfwatch_verdict", {"stream": "demo", "state": s}) for s in VerdictState}
    assert exported == {st.value: float(st.value == last) for st in VerdictState}  # one-hot: the last verdict


def test_duplicate_stream_ids_are_refused(fast_models: Path):
    with pytest.raises(ValueError, match=r"\['cam'\] appear twice"):
        Runner([SourceSpec("cam", "a.mp4"), SourceSpec("cam", "b.mp4")], None, [], PrometheusObserver())


def test_metrics_are_served_over_http_on_loopback():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    observer = PrometheusObserver()
    observer.stage("detect", 0.01)
    observer.serve("127.0.0.1", port)
    try:
        body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    finally:
        observer.close()
    assert 'dfwatch_stage_seconds_count{stage="detect"} 1.0' in body
    with pytest.raises(OSError):
        urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2)  # closed


def test_drop_oldest_keeps_the_newest_frames_and_counts_drops():
    import threading

    q = BoundedQueue(3, DropPolicy.DROP_OLDEST, wake=threading.Event())
    for i in range(5):
        q.put(i, threading.Event())
    assert list(q.items) == [2, 3, 4] and q.dropped == 2


def test_a_removed_stream_never_stalls_the_stage_loop_behind_a_stuck_frame_sink():
    import threading
    import time

    from pipeline.runner import _FrameWriter
    from pipeline.sink_worker import SinkWorker
    from pipeline.sinks import FrameSink

    release, calls = threading.Event(), []

    class StuckSink(FrameSink):  # a frame sink whose disk hangs: it takes one batch and blocks in it
        name = "stuck"

        def publish_frames(self, pairs):
            calls.append(("frames", len(pairs)))
            release.wait(10)

        def forget_stream(self, stream_id):
            calls.append(("forget", stream_id))

        def close(self):
            pass

    abort = threading.Event()
    worker = SinkWorker(_FrameWriter(StuckSink()), size=2, policy=DropPolicy.SKIP, abort=abort)
    worker.put([("f0", "v0")])  # taken by the thread, which then hangs in publish_frames
    deadline = time.monotonic() + 5
    while not calls and time.monotonic() < deadline:
        time.sleep(0.01)
    assert worker.put([("f1", "v1"), ("f2", "v2"), ("f3", "v3")]) == 1  # full: a live frame skips
    started = time.monotonic()
    worker.forget_stream("cam1")  # what the stage loop calls when a stream is removed
    assert time.monotonic() - started < 0.5  # it did not wait for room in the full queue
    release.set()
    assert worker.close(timeout=5) == 1  # the one skipped frame; nothing else lost
    assert calls == [("frames", 1), ("frames", 2), ("forget", "cam1")]  # the marker came after the stream's frames
    q = BoundedQueue(1, DropPolicy.SKIP)
    assert q.put("a") == 0 and q.put("marker", policy=DropPolicy.MARKER) == 0 and q.put("b") == 1
    assert list(q.items) == ["a", "marker"] and q.dropped == 1  # past the bound, never dropped


@pytest.mark.parametrize(
    "text, stream_id, url, kind",
    [
        ("cam1=rtsp://10.0.0.5:554/live", "cam1", "rtsp://10.0.0.5:554/live", SourceKind.LIVE),
        ("rtsp://host/stream/main", "main", "rtsp://host/stream/main", SourceKind.LIVE),
        ("/videos/news clip.mp4", "news_clip", "/videos/news clip.mp4", SourceKind.FILE),
        ("https://cdn.example/live/index.m3u8", "index", "https://cdn.example/live/index.m3u8", SourceKind.LIVE),
        ("rtsp://10.0.0.9", "10.0.0.9", "rtsp://10.0.0.9", SourceKind.LIVE),
    ],
)
def test_source_specs_parse_names_and_kinds(text, stream_id, url, kind):
    spec = SourceSpec.parse(text)
    assert (spec.stream_id, spec.url, spec.kind) == (stream_id, url, kind)


def test_under_load_detection_then_classification_thin_out_and_recover():
    observer = PrometheusObserver()
    schedule = Schedule(ScheduleConfig(max_detect_every=3, max_classify_every=2), observer)

    def adapt(fill: int) -> tuple[int, int]:  # fill: frames in a live queue of 10, what the runner reports
        schedule.adapt(fill=fill / 10, lost=0, busy=0.0)
        return schedule.detect_every, schedule.classify_every

    loaded = [adapt(8) for _ in range(4)]  # (k, m)
    assert loaded == [(2, 1), (3, 1), (3, 2), (3, 2)]  # k first, then m, each to its maximum
    assert adapt(3) == (3, 2)  # between the marks: no change
    relieved = [adapt(0) for _ in range(4)]
    assert relieved == [(3, 1), (2, 1), (1, 1), (1, 1)]  # m back first, then k
    assert _value(observer, "dfwatch_detect_every", {}) == 1
    assert _value(observer, "dfwatch_classify_every", {}) == 1
