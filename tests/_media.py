"""Test helpers: a clip remuxed (no re-encoding) into another container, a folder served over plain HTTP, and an
HTTP server whose answers a test scripts (``http_app``, counting the GETs)."""

from __future__ import annotations

import base64
import functools
import http.server
import socket
import threading
from collections import Counter
from collections.abc import Callable, Iterator
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
    basic: str | None = None  # "user:password" that every request must send (Basic authentication), or None
    refused: list[str]  # the paths of requests answered 401

    def log_message(self, *args) -> None:  # noqa: ANN002 - no access log lines in the test output
        pass

    def send_head(self):  # noqa: ANN201 - what SimpleHTTPRequestHandler returns
        expected = f"Basic {base64.b64encode(self.basic.encode()).decode()}" if self.basic else None
        if expected is not None and self.headers.get("Authorization") != expected:
            self.refused.append(self.path)
            self.send_response(401)
            self.send_header("WWW-Authenticate", 'Basic realm="camera"')
            self.send_header("Content-Length", "0")
            self.end_headers()
            return None
        return super().send_head()


@contextmanager
def http_server(folder: Path, *, wrap=None, basic: str | None = None) -> Iterator[str]:  # noqa: ANN001 - ssl wrap
    """Serve ``folder`` on 127.0.0.1 (``wrap`` turns the socket into TLS; ``basic`` "user:password" demands that
    login, Basic authentication, answering 401 otherwise); yield the base URL."""
    handler = functools.partial(
        type("_Handler", (_QuietHandler,), {"basic": basic, "refused": []}), directory=str(folder)
    )
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


@contextmanager
def http_app(respond: Callable[[str], tuple[int, dict[str, str], bytes]]) -> Iterator[tuple[str, Counter[str]]]:
    """Answer every GET on 127.0.0.1 with ``respond(path)`` -> (status, headers, body); yield the base URL and a
    Counter of the GETs by path. HTTP/1.1 kept alive and no Nagle delay: it answers as fast as a real server."""
    requests: Counter[str] = Counter()

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def setup(self) -> None:
            super().setup()
            self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

        def do_GET(self) -> None:  # noqa: N802 - http.server's name
            requests[self.path] += 1
            status, headers, body = respond(self.path)
            self.send_response(status)
            for name, value in (headers | {"Content-Length": str(len(body))}).items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args) -> None:  # noqa: ANN002 - no access log lines in the test output
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", requests
    finally:
        server.shutdown()
        server.server_close()


@contextmanager
def hostile_hls(segments: int = 300_000) -> Iterator[tuple[str, Counter[str]]]:
    """``http_app`` serving two HLS playlists that FFmpeg fetches from without end: ``/master.m3u8``, a master
    playlist whose one variant is itself, and ``/missing.m3u8``, ``segments`` segments that all answer 404."""
    master = b"#EXTM3U\n#EXT-X-STREAM-INF:BANDWIDTH=100000\nmaster.m3u8\n"
    entries = "".join(f"#EXTINF:1.0,\nmissing{i}.ts\n" for i in range(segments))
    missing = f"#EXTM3U\n#EXT-X-TARGETDURATION:1\n#EXT-X-PLAYLIST-TYPE:VOD\n{entries}#EXT-X-ENDLIST\n".encode()
    playlists = {"/master.m3u8": master, "/missing.m3u8": missing}

    def respond(path: str) -> tuple[int, dict[str, str], bytes]:
        if path in playlists:
            return 200, {"Content-Type": "application/vnd.apple.mpegurl"}, playlists[path]
        return 404, {}, b""

    with http_app(respond) as served:
        yield served
