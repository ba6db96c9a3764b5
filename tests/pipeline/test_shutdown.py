"""What a stalled stdout, a reader that went away, stuck readers and a hung stage do to a running worker.

Real `dfwatch watch` processes, a private redis-server, real FIFOs and real video.
"""

from __future__ import annotations

import fcntl
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from pipeline.control import CONTROL_KEY
from tests._media import remux
from tests._redis import redis_server
from tests._rtsp import free_port

pytestmark = [pytest.mark.timeout(240)]

F_SETPIPE_SZ = 1031  # fcntl: set a pipe's buffer size (Linux)


def _watch(fast_models: Path, *args: str, stdout=subprocess.PIPE, stderr_path: Path) -> subprocess.Popen:
    cmd = [
        sys.executable,
        "-m",
        "pipeline.cli",
        "watch",
        *args,
        "--models",
        str(fast_models),
        "--det-conf",
        "0.001",
        "--max-faces",
        "1",
        *([] if "--metrics-port" in args else ["--metrics-port", "0"]),
    ]
    return subprocess.Popen(cmd, stdout=stdout, stderr=stderr_path.open("w"))


def _frames_in_redis(url: str, stream: str) -> list[int]:
    import redis

    with redis.Redis.from_url(url, decode_responses=True) as client:
        return [int(f["frame"]) for _, f in client.xrange(f"dfwatch:verdicts:{stream}")]


def test_a_reader_that_stops_reading_stdout_holds_up_nothing(fast_models: Path, demo_clip, tmp_path: Path):
    """stdout was written on the pipeline thread: a full pipe froze every stream, Redis included."""
    with redis_server() as server:
        proc = _watch(
            fast_models,
            f"clip={demo_clip.path}",
            f"again={demo_clip.path}",
            "--redis",
            server.url,
            stderr_path=tmp_path / "err.log",
        )
        fcntl.fcntl(proc.stdout.fileno(), F_SETPIPE_SZ, 4096)  # a one-page pipe: full after ~9 lines
        try:  # stdout is a pipe nobody reads
            code = proc.wait(timeout=120)
        finally:
            proc.kill()
        stderr = (tmp_path / "err.log").read_text()
        assert code == 0, stderr
        for stream in ("clip", "again"):
            assert _frames_in_redis(server.url, stream) == list(range(demo_clip.n_frames))
    assert "dfwatch summary" in stderr
    assert "verdict lines not written" in stderr and "sink stdout: " in stderr  # counted, not silently lost


def test_head_1_gets_its_line_and_everything_else_still_reaches_redis(fast_models: Path, demo_clip, tmp_path):
    """`dfwatch watch ... | head -1` exited 1 with no summary, and Redis held 1 of its verdicts."""
    with redis_server() as server:
        proc = _watch(fast_models, f"clip={demo_clip.path}", "--redis", server.url, stderr_path=tmp_path / "err.log")
        first = proc.stdout.readline()
        proc.stdout.close()  # what head does after its line
        code = proc.wait(timeout=120)
        stderr = (tmp_path / "err.log").read_text()
        assert json.loads(first)["frame"] == 0
        assert code == 0, stderr
        assert _frames_in_redis(server.url, "clip") == list(range(demo_clip.n_frames))
    assert "stdout was closed by its reader" in stderr and "dfwatch summary" in stderr
    assert "Traceback" not in stderr


def _stalled_fifo(path: Path, header: bytes, release: threading.Event) -> None:
    """A FIFO whose writer sends ``header`` and then nothing, holding the pipe open until ``release``."""
    os.mkfifo(path)

    def writer() -> None:
        with open(path, "wb") as w:
            w.write(header)
            w.flush()
            release.wait(120)

    threading.Thread(target=writer, daemon=True).start()


def _ts_bytes(demo_clip, tmp_path: Path) -> bytes:
    return remux(demo_clip.path, tmp_path / "clip.ts", format="mpegts").read_bytes()


def test_shutdown_is_bounded_with_four_stuck_readers(fast_models: Path, demo_clip, tmp_path: Path):
    """Four readers stuck in reads: shutdown took 10 s of drain plus 5 s per reader in turn (30.3 s)."""
    data, release = _ts_bytes(demo_clip, tmp_path), threading.Event()
    fifos = [tmp_path / f"feed{i}" for i in range(4)]
    for fifo in fifos:
        _stalled_fifo(fifo, data[: 2 * len(data) // 3], release)
    try:
        proc = _watch(
            fast_models,
            *(f"{f.name}={f}" for f in fifos),
            "--read-timeout",
            "120",
            "--open-timeout",
            "60",
            stdout=subprocess.DEVNULL,
            stderr_path=tmp_path / "err.log",
        )
        deadline = time.monotonic() + 90
        while (tmp_path / "err.log").read_text().count(" is up") < 4:  # each decoded a frame, then the writer stalled
            assert time.monotonic() < deadline and proc.poll() is None, (tmp_path / "err.log").read_text()
            time.sleep(0.2)
        time.sleep(2)
        start = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=60)
        took = time.monotonic() - start
    finally:
        release.set()
    stderr = (tmp_path / "err.log").read_text()
    assert code == 0, stderr
    assert took < 15, f"shutdown took {took:.1f} s"
    assert "its reader is stuck in a read; not waiting" in stderr and "dfwatch summary" in stderr


def test_a_stuck_stream_can_be_removed_and_its_id_taken_again(service, demo_clip, tmp_path: Path):
    """Re-adding the id of a stream whose reader was stuck did nothing: the old one never finished."""
    data, release = _ts_bytes(demo_clip, tmp_path), threading.Event()
    fifo = tmp_path / "feed"
    _stalled_fifo(fifo, data[: 2 * len(data) // 3], release)
    try:
        with redis_server() as server:
            client = server.client()
            client.hset(CONTROL_KEY, "cam", json.dumps({"url": str(fifo), "read_timeout": 300}))
            svc = service(
                "--control",
                "--redis",
                server.url,
                "--allow-dir",
                str(tmp_path),
                "--allow-dir",
                str(demo_clip.path.parent),
            )
            svc.wait_for(lambda: len(svc.of("cam")) >= 1, 60, "the FIFO's first frames")
            time.sleep(1)
            client.hset(CONTROL_KEY, "cam", json.dumps({"url": str(demo_clip.path), "loop": True, "pace": True}))
            stuck = len(svc.of("cam"))
            svc.wait_for(lambda: len(svc.of("cam")) >= stuck + 20, 30, "verdicts of the replacement")
            code, took = svc.stop()
    finally:
        release.set()
    assert code == 0 and took < 15
    assert "stream 'cam' removed" in svc.stderr and svc.stderr.count("stream 'cam' (") >= 2


def test_health_fails_when_the_stage_loop_is_stuck_though_metrics_answer(fast_models: Path, demo_clip):
    """The liveness probe read /metrics from another thread: it stayed green while the pipeline was frozen."""
    from engines import Classifier, Detector
    from pipeline.metrics import PrometheusObserver
    from pipeline.processor import BatchProcessor
    from pipeline.runner import Runner
    from pipeline.sinks import JsonLinesSink
    from pipeline.sources import SourceSpec

    class _Hangs(BatchProcessor):  # a hung inference (a GPU that stopped answering), after the first batches
        def __init__(self, *args, gate: threading.Event, **kwargs) -> None:
            super().__init__(*args, **kwargs)
            self.gate, self.calls = gate, 0

        def process(self, frames, *, taken=None):
            self.calls += 1
            if self.calls > 3:
                self.gate.wait(60)
            return super().process(frames, taken=taken)

    import io

    gate, port = threading.Event(), free_port()
    observer = PrometheusObserver()
    observer.serve("127.0.0.1", port)
    detector = Detector(fast_models / "face_detector.onnx")
    processor = _Hangs(detector, Classifier(fast_models / "deepfake_classifier.onnx"), observer, gate=gate)
    runner = Runner(
        [SourceSpec("clip", str(demo_clip.path), loop=True, pace=True)],
        processor,
        [JsonLinesSink(io.StringIO())],
        observer,
    )
    thread = threading.Thread(target=runner.run, daemon=True)
    thread.start()

    def health() -> subprocess.CompletedProcess:
        cmd = [
            sys.executable,
            "-m",
            "pipeline.cli",
            "health",
            "--url",
            f"http://127.0.0.1:{port}/metrics",
            "--max-age",
            "3",
        ]
        return subprocess.run(cmd, capture_output=True, text=True, timeout=60)

    try:
        deadline = time.monotonic() + 30
        while processor.calls < 1 and time.monotonic() < deadline:
            time.sleep(0.1)
        ok = health()
        while processor.calls <= 3 and time.monotonic() < deadline:
            time.sleep(0.1)
        time.sleep(4)
        stuck = health()
    finally:
        gate.set()
        runner.stop.set()
        thread.join(30)
        observer.close()
    assert ok.returncode == 0 and "healthy" in ok.stdout, ok.stderr
    assert stuck.returncode == 1 and "the stage loop last turned" in stuck.stderr, stuck.stderr
