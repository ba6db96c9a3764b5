"""dfwatch as a running service: faults in one feed, streams added at run time, shutdown while busy."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pipeline.control import CONTROL_KEY
from tests._rtsp import requires_rtsp, rtsp_server
from tests.conftest import REDIS_URL

pytestmark = [pytest.mark.timeout(120)]


def test_shutdown_while_busy_drains_flushes_and_exits_0(service, demo_clip, redis_client, stream_id):
    svc = service(f"{stream_id}={demo_clip.path}", "--loop", "--pace", "--redis", REDIS_URL)
    try:
        svc.wait_for(lambda: len(svc.records) >= 20, 60, "20 verdicts")
        code, took = svc.stop()
        assert code == 0, svc.stderr
        assert took < 15  # drain bound 10 s + flush
        frames = [r["frame"] for r in svc.records]
        assert frames == sorted(frames) and len(frames) >= 20
        entries = redis_client.xrange(f"dfwatch:verdicts:{stream_id}")
        assert [json.loads(f["json"]) for _, f in entries] == svc.records  # every published verdict flushed
        assert "SIGTERM: stopping sources" in svc.stderr and "dfwatch summary" in svc.stderr
    finally:
        redis_client.delete(f"dfwatch:verdicts:{stream_id}", f"dfwatch:state:{stream_id}")
        redis_client.srem("dfwatch:streams", stream_id)


@requires_rtsp
def test_rtsp_server_killed_and_restarted_the_stream_returns_and_others_never_stall(service, demo_clip, tmp_path):
    with rtsp_server({"cam": demo_clip.path}, loop=True) as base:
        port = int(base.rsplit(":", 1)[1])
        svc = service(f"cam={base}/cam", f"file={demo_clip.path}", "--loop", "--pace", "--read-timeout", "2")
        svc.wait_for(lambda: len(svc.of("cam")) >= 10, 60, "verdicts from the RTSP stream")
    outage_start = time.monotonic()
    before = len(svc.of("cam"))
    time.sleep(3)  # the server is gone: the file stream must keep flowing
    with rtsp_server({"cam": demo_clip.path}, loop=True, port=port):
        svc.wait_for(lambda: len(svc.of("cam")) >= before + 10, 60, "verdicts after the RTSP server came back")
    code, _ = svc.stop()
    assert code == 0
    cam = [r["frame"] for r in svc.of("cam")]
    assert cam == sorted(set(cam))  # frame numbers keep counting across the reconnect
    file_times = [t for t, r in zip(svc.arrival, svc.records) if r["stream"] == "file" and t > outage_start]
    gaps = [b - a for a, b in zip(file_times, file_times[1:])]
    assert file_times and max(gaps) < 1.5, f"the file stream stalled for {max(gaps):.1f} s during the outage"
    stderr = svc.stderr
    assert "stream 'cam'" in stderr and "is down" in stderr and "reconnect attempt" in stderr
    assert stderr.count("stream 'cam' (") >= 2  # up, down, up again


def test_streams_are_added_and_removed_through_the_redis_control_hash(service, demo_clip, redis_client, stream_id):
    value = json.dumps({"url": str(demo_clip.path), "loop": True, "pace": True})
    redis_client.hset(CONTROL_KEY, stream_id, value)
    svc = service("--control", "--redis", REDIS_URL, "--allow-dir", str(demo_clip.path.parent))  # files: allowed
    try:
        svc.wait_for(lambda: len(svc.of(stream_id)) >= 10, 60, "verdicts of the stream added through Redis")
        redis_client.hdel(CONTROL_KEY, stream_id)
        time.sleep(4)  # two polls
        count = len(svc.of(stream_id))
        time.sleep(2)
        assert len(svc.of(stream_id)) == count  # removed: no more verdicts
        assert f"stream {stream_id!r} removed" in svc.stderr
        code, _ = svc.stop()
        assert code == 0
    finally:
        redis_client.hdel(CONTROL_KEY, stream_id)
        redis_client.delete(f"dfwatch:verdicts:{stream_id}", f"dfwatch:state:{stream_id}")
        redis_client.srem("dfwatch:streams", stream_id)


def test_control_without_redis_is_a_clear_error(fast_models: Path):
    proc = subprocess.run(
        [sys.executable, "-m", "pipeline.cli", "watch", "--control", "--models", str(fast_models)],
        capture_output=True,
        text=True,
        timeout=60,
        env=os.environ,
    )
    assert proc.returncode == 1 and "--control needs a Redis URL" in proc.stderr
