"""A bound on the HTTP requests FFmpeg makes for one connection of an http(s) source, HLS included.

FFmpeg's HLS demuxer fetches what a playlist names as fast as the server answers, and no FFmpeg option
bounds it (FFmpeg 8.1, as PyAV 18 bundles it): a master playlist that lists itself is fetched again and
again until the open times out (39,229 GETs in 12 s from a server on 127.0.0.1), and a playlist of 300,000
segments that all answer 404 is walked one GET a segment (14,167 in 10 s); ``max_reload`` did not stop
the walk. FFmpeg says in its log each time it starts a request: ``Starting connection attempt`` (tcp) for
a new connection, ``Opening '...' for reading`` (http, https) for another request on a kept-alive one.

``RequestBudget`` counts those lines for the reader thread that opened the source, from PyAV's log
callback. Past ``limit`` requests without a decoded frame it holds that thread in the log call (FFmpeg
is about to send the next request) until the connection's open or read timeout has passed, so FFmpeg's
interrupt check ends the connection before the request goes out; ``read_frames`` then says why, and the
supervisor's backoff spaces the retries.

PyAV's log callback takes the GIL in FFmpeg's own threads, and PyAV frees a decoder with the GIL held
while it waits for the decoder's frame threads: a worker that logs a decode error then waits for the GIL
for ever (reproduced: a corrupt clip closed mid-stream, within 300 tries). ``release`` flushes the decoder
(the GIL released, the workers finish and log) before the container is closed; ``read_frames`` closes
every container through it.
"""

from __future__ import annotations

import logging
import threading
import time

import av
import av.logging

_lock = threading.Lock()
_installed = False
_budgets: dict[int, RequestBudget] = {}  # reader thread id -> the budget of the connection it reads


class RequestBudget:
    """At most ``limit`` HTTP requests without a decoded frame for the connection read by this thread.

    A context manager around opening and reading one connection (one connection per thread at a time, as
    the runner's readers do); ``limit`` None: no budget, nothing counted. ``hold``: seconds a thread past
    its budget is held, more than the timeout running at that moment (PyAV's open timeout while opening,
    its read timeout from each read), so FFmpeg's interrupt callback fires when it goes on.
    """

    def __init__(self, limit: int | None, hold: float) -> None:
        self.limit, self.hold = limit, hold
        self.requests = 0  # since the last decoded frame
        self.exceeded = False
        self._thread: int | None = None

    def __enter__(self) -> RequestBudget:
        if self.limit is None:
            return self
        _install()
        self._thread = threading.get_ident()
        _budgets[self._thread] = self
        return self

    def __exit__(self, *exc: object) -> None:
        if self._thread is not None and _budgets.get(self._thread) is self:
            del _budgets[self._thread]

    def frame(self) -> None:
        """A frame was decoded: the count starts again (a live stream makes a few requests per segment)."""
        self.requests = 0

    @property
    def reason(self) -> str:
        return (
            f"ended after {self.limit} HTTP requests without a frame ([sources] max_http_requests): an HLS "
            "playlist that lists itself, or whose segments all fail?"
        )

    def _request(self) -> None:
        self.requests += 1
        if self.limit is not None and self.requests > self.limit and not self.exceeded:
            self.exceeded = True
            time.sleep(self.hold)  # the GIL is released; FFmpeg's next interrupt check ends the connection


class _Counter(logging.Handler):
    """Counts FFmpeg's request lines of threads with a budget; drops every line (FFmpeg's log stays off)."""

    def handle(self, record: logging.LogRecord) -> bool:  # no handler lock: a held thread holds up nobody
        budget = _budgets.get(threading.get_ident())
        if budget is not None and _is_request(record.name, str(record.msg)):
            budget._request()
        return True

    def emit(self, record: logging.LogRecord) -> None:
        pass


def _is_request(logger: str, message: str) -> bool:
    if logger == "libav.tcp":
        return message.startswith("Starting connection attempt")  # each new connection (VERBOSE)
    return logger in ("libav.http", "libav.https") and message.startswith("Opening '")  # kept-alive (INFO)


def _install() -> None:
    """Route FFmpeg's log through PyAV to ``_Counter`` (once; PyAV leaves it off, dfwatch logs none of it)."""
    global _installed
    with _lock:
        if _installed:
            return
        libav = logging.getLogger("libav")  # PyAV logs as libav.<FFmpeg context>
        libav.setLevel(logging.DEBUG)  # PyAV's level for FFmpeg's VERBOSE
        libav.propagate = False  # none of FFmpeg's lines reach dfwatch's handlers, as before
        libav.addHandler(_Counter())
        av.logging.set_skip_repeated(False)  # the same request line twice is two requests
        av.logging.set_level(av.logging.VERBOSE)
        _installed = True


def release(container: av.container.InputContainer) -> None:
    """Close ``container`` after flushing its video decoder with the GIL released (see the module docstring)."""
    try:
        for stream in container.streams.video:
            stream.codec_context.flush_buffers()
    finally:
        container.close()
