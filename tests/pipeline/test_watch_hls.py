"""`dfwatch watch` on an HLS stream served over HTTP from this machine."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests._media import hls_playlist, hostile_hls, http_server


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


def test_a_playlist_that_lists_itself_or_whose_segments_all_fail_is_cut_at_its_request_budget(
    dfwatch, demo_clip, hls_url
):
    """Both made thousands of GETs (4,746 and about 11,600 in 10 s); now each stops at [sources] max_http_requests
    (50) with one line that says why, and the healthy stream beside them decodes every frame."""
    with hostile_hls() as (base, requests):
        run = dfwatch(
            "watch",
            f"news={hls_url}",
            f"loop={base}/master.m3u8",
            f"gaps={base}/missing.m3u8",
            "--no-reconnect",
            "--open-timeout",
            "3",
        )
    master = requests["/master.m3u8"]
    missing = sum(n for path, n in requests.items() if path.startswith("/missing"))
    assert 0 < master <= 50 and 0 < missing <= 50, requests.most_common(3)
    for stream, ends in (("loop", ("after 50 HTTP requests", "Invalid data found")), ("gaps", ("after 50 HTTP",))):
        # FFmpeg does not always loop on the self-listing master: some runs it refuses it at the second fetch
        lines = [line for line in run.stderr.splitlines() if f"'{stream}'" in line and any(e in line for e in ends)]
        assert len(lines) == 1, run.stderr
    frames = [r["frame"] for r in run.records if r["stream"] == "news"]
    assert len(frames) + run.summary_row("news")["drops"] == demo_clip.n_frames, run.stderr
