"""A stream removed at run time leaves nothing behind: runner, sinks, frame sinks, metrics, Redis.

Per-stream state outlived its stream (run stats ~1.6 MB per id, the annotator's encoder and last frame,
the Redis sink's recent list, Prometheus series), and a removed id stayed in dfwatch:streams for ever.
A real Runner with the real Redis sink (a private redis-server) and the real annotator.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from engines import Classifier, Detector
from pipeline.annotate import AnnotateConfig, Annotator
from pipeline.metrics import PrometheusObserver
from pipeline.processor import BatchProcessor
from pipeline.runner import Runner
from pipeline.sinks import STATE_KEY, STREAM_KEY, STREAMS_KEY, RedisSink
from pipeline.sources import SourceSpec
from tests._redis import redis_server

pytestmark = [pytest.mark.timeout(180)]


def _wait(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"no {what} within {timeout} s"
        time.sleep(0.05)


def _labels(observer: PrometheusObserver) -> set[str]:
    return {s.labels.get("stream") for m in observer.registry.collect() for s in m.samples} - {None}


def test_a_removed_stream_is_released_everywhere(fast_models: Path, demo_clip, tmp_path: Path):
    with redis_server() as server:
        sink = RedisSink(server.url, ttl=3600)
        annotator = Annotator(AnnotateConfig(dir=tmp_path / "video"))
        observer = PrometheusObserver()
        processor = BatchProcessor(
            Detector(fast_models / "face_detector.onnx", conf=0.001, max_det=1),
            Classifier(fast_models / "deepfake_classifier.onnx"),
            observer,
        )
        runner = Runner([], processor, [sink], observer, until_stopped=True, frame_sinks=[annotator])
        thread = threading.Thread(target=runner.run, daemon=True)
        thread.start()
        client = server.client()
        try:
            for round_ in range(2):  # the same id comes back: it starts afresh and is released again
                runner.add_stream(SourceSpec("cam", str(demo_clip.path), loop=True, pace=True))
                runner.add_stream(SourceSpec("other", str(demo_clip.path), loop=True, pace=True))
                want = 10 * (round_ + 1)
                _wait(lambda: client.xlen(STREAM_KEY.format(stream="cam")) >= want, 60, "verdicts")  # noqa: B023
                _wait(lambda: "cam" in annotator.videos and "cam" in sink._recent, 30, "state of the stream")
                assert runner.stats.streams["cam"].latency_ms and "cam" in _labels(observer)
                runner.remove_stream("cam")
                runner.remove_stream("other")
                _wait(lambda: not runner.stream_ids, 30, "the streams reaped")
                _wait(lambda: "cam" not in annotator.videos, 30, "the annotator released the stream")
                _wait(lambda: not client.sismember(STREAMS_KEY, "cam"), 30, "the id out of dfwatch:streams")
                assert runner.stats.streams["cam"].latency_ms == {}  # counts kept for the summary, samples freed
                assert runner.stats.streams["cam"].frames > 0
                assert "cam" not in sink._recent and "cam" not in sink._rates
                assert "cam" not in _labels(observer) and "other" not in _labels(observer)
            for key in (STATE_KEY.format(stream="cam"), STREAM_KEY.format(stream="cam")):
                assert 0 < client.ttl(key) <= 3600  # its history stays until it expires
        finally:
            runner.stop.set()
            thread.join(30)
    assert (tmp_path / "video" / "cam.mp4").stat().st_size > 0  # its file was finished when it left
