"""A bound on the log lines one stream can write: a flapping or hostile feed cannot flood the log.

Every stream reads in a thread of its own, named ``src-<stream id>`` (pipeline.runner), so the lines it
causes (opened, down, reconnecting, FFmpeg's complaints) are counted per reader thread: at most
``burst`` lines per ``window`` seconds each. What is held back is counted, and the stream's next line
that passes says how many of its lines were held back. Lines of other threads (the stage loop, the
control plane, the sinks) are never held back: they log once per change already.
"""

from __future__ import annotations

import logging
import threading
import time

READER_PREFIX = "src-"  # pipeline.runner names each stream's reader thread src-<stream id>
BURST = 20  # lines per stream per window
WINDOW = 60.0  # seconds


class StreamLogLimit(logging.Filter):
    """A handler filter: each reader thread's records pass ``burst`` at a time per ``window`` seconds."""

    def __init__(self, burst: int = BURST, window: float = WINDOW, clock=time.monotonic) -> None:
        super().__init__()
        self.burst, self.window, self.clock = burst, window, clock
        self._lock = threading.Lock()
        self._windows: dict[str, list[float | int]] = {}  # thread name -> [window start, passed, held back]

    def filter(self, record: logging.LogRecord) -> bool:
        name = record.threadName or ""
        if not name.startswith(READER_PREFIX):
            return True
        now = self.clock()
        with self._lock:
            start, passed, held = self._windows.get(name) or (now, 0, 0)
            if now - start >= self.window:
                start, passed = now, 0
            if passed >= self.burst:
                self._windows[name] = [start, passed, held + 1]
                return False
            if name not in self._windows and len(self._windows) >= 1024:  # streams come and go: drop the quiet
                self._windows = {k: v for k, v in self._windows.items() if now - v[0] < self.window}
            self._windows[name] = [start, passed + 1, 0]
        if held:
            note = f"{held} earlier lines of this stream held back: at most {self.burst} per {self.window:g} s"
            record.msg, record.args = f"{record.getMessage()} ({note})", None
        return True
