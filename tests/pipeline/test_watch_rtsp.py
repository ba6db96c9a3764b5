"""`dfwatch watch` on a real RTSP server (GStreamer), next to a file and a dead URL."""

from __future__ import annotations

import pytest

from tests._rtsp import free_port, requires_rtsp, rtsp_server

pytestmark = [pytest.mark.rtsp, requires_rtsp]


def test_rtsp_stream_gives_verdicts_for_its_frames(dfwatch, demo_clip):
    with rtsp_server({"cam": demo_clip.path}) as base:
        run = dfwatch("watch", f"cam={base}/cam", "--read-timeout", "5", "--no-reconnect")
    assert run.returncode == 0, run.stderr
    frames = [r["frame"] for r in run.records]
    assert frames == sorted(set(frames)) and frames[-1] >= demo_clip.n_frames - 3  # in order, all decoded
    # A live feed that outruns the stages drops its oldest frames: what was not published was counted.
    decoded, dropped = frames[-1] + 1, run.summary_row("cam")["drops"]
    assert len(frames) + dropped == decoded
    assert all(r["stream"] == "cam" and len(r["faces"]) == 2 for r in run.records)
    assert "live stream ended" in run.stderr


def test_dead_rtsp_url_does_not_stop_a_live_one(dfwatch, demo_clip):
    dead = f"rtsp://127.0.0.1:{free_port()}/gone"
    with rtsp_server({"cam": demo_clip.path}) as base:
        run = dfwatch(
            "watch", f"cam={base}/cam", f"dead={dead}", f"nomount={base}/nope", "--open-timeout", "5", "--no-reconnect"
        )
    assert run.returncode == 1
    cam = [r["frame"] for r in run.records if r["stream"] == "cam"]
    assert cam[-1] >= demo_clip.n_frames - 3 and len(cam) + run.summary_row("cam")["drops"] == cam[-1] + 1
    errors = run.error_lines
    assert len(errors) == 2, run.stderr
    assert any("stream 'dead'" in e and "Connection refused" in e for e in errors)
    assert any("stream 'nomount'" in e and "404 Not Found" in e for e in errors)
    assert "Traceback" not in run.stderr
