"""`dfwatch watch` on an HLS stream served over HTTP from this machine."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests._media import hls_playlist, http_server


@pytest.fixture()
def hls_url(demo_clip, tmp_path: Path):
    """The demo clip remuxed (no re-encoding) into a 1 s-segment HLS playlist, served on 127.0.0.1."""
    hls_playlist(demo_clip.path, tmp_path)
    with http_server(tmp_path) as base:
        yield f"{base}/index.m3u8"


def test_hls_stream_gives_verdicts_for_every_segment(dfwatch, demo_clip, hls_url):
    run = dfwatch("watch", f"news={hls_url}", "--no-reconnect")
    assert run.returncode == 0, run.stderr
    frames = [r["frame"] for r in run.records]
    assert frames == sorted(set(frames)) and frames[-1] == demo_clip.n_frames - 1  # both segments decoded
    assert len(frames) + run.summary_row("news")["drops"] == demo_clip.n_frames  # a live feed: drops are counted
    assert all(r["stream"] == "news" for r in run.records)
    assert "live stream ended after 50 frames" in run.stderr
