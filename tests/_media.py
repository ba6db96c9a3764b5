"""Test helpers: a clip remuxed (no re-encoding) into another container, and a folder served over plain HTTP."""

from __future__ import annotations

import functools
import http.server
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import av


def remux(clip: Path, out: Path, *, format: str, options: dict[str, str] | None = None) -> Path:
    """``clip``'s video packets into ``out`` as ``format`` ("mpegts", "hls" with hls_* options, ...)."""
    with av.open(str(clip)) as src, av.open(str(out), "w", format=format, options=options or {}) as dst:
        video = dst.add_stream_from_template(src.streams.video[0])
        for packet in src.demux(src.streams.video[0]):
            if packet.dts is not None:
                packet.stream = video
                dst.mux(packet)
    return out


def hls_playlist(clip: Path, folder: Path) -> Path:
    """``clip`` as a VOD HLS playlist of 1 s segments in ``folder``: index.m3u8, index0.ts, ..."""
    options = {"hls_time": "1", "hls_list_size": "0", "hls_playlist_type": "vod"}
    return remux(clip, folder / "index.m3u8", format="hls", options=options)


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:  # noqa: ANN002 - no access log lines in the test output
        pass


@contextmanager
def http_server(folder: Path, *, wrap=None) -> Iterator[str]:  # noqa: ANN001 - an ssl wrap function, or None
    """Serve ``folder`` on 127.0.0.1 (``wrap`` turns the socket into TLS); yield the base URL."""
    handler = functools.partial(_QuietHandler, directory=str(folder))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    if wrap is not None:
        server.socket = wrap(server.socket)
        server.handle_error = lambda *args: None  # type: ignore[method-assign]  # refused handshakes are the point
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"{'https' if wrap else 'http'}://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
