"""`dfwatch watch` on an HLS stream served over HTTP from this machine."""

from __future__ import annotations

import functools
import http.server
import threading
from pathlib import Path

import av
import pytest


@pytest.fixture()
def hls_url(demo_clip, tmp_path: Path):
    """The demo clip remuxed (no re-encoding) into a 1 s-segment HLS playlist, served on 127.0.0.1."""
    with av.open(str(demo_clip.path)) as src:
        options = {"hls_time": "1", "hls_list_size": "0", "hls_playlist_type": "vod"}
        with av.open(str(tmp_path / "index.m3u8"), "w", format="hls", options=options) as out:
            video = out.add_stream_from_template(src.streams.video[0])
            for packet in src.demux(src.streams.video[0]):
                if packet.dts is not None:
                    packet.stream = video
                    out.mux(packet)
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(tmp_path))
    handler.log_message = lambda *args: None  # type: ignore[method-assign]
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/index.m3u8"
    finally:
        server.shutdown()
        server.server_close()


def test_hls_stream_gives_verdicts_for_every_segment(dfwatch, demo_clip, hls_url):
    run = dfwatch("watch", f"news={hls_url}", "--no-reconnect")
    assert run.returncode == 0, run.stderr
    frames = [r["frame"] for r in run.records]
    assert frames == sorted(set(frames)) and frames[-1] == demo_clip.n_frames - 1  # both segments decoded
    assert len(frames) + run.summary_row("news")["drops"] == demo_clip.n_frames  # a live feed: drops are counted
    assert all(r["stream"] == "news" for r in run.records)
    assert "live stream ended after 50 frames" in run.stderr
