"""Test helper: run tests/rtsp_server.py (GStreamer, system python) as a subprocess.

    from tests._rtsp import requires_rtsp, rtsp_server

    @requires_rtsp  # skips where the server cannot run; under CI=true it fails instead
    def test_x(tmp_path):
        with rtsp_server({"cam": clip}, loop=True) as base:
            url = f"{base}/cam"

The server needs PyGObject and the GStreamer RTSP server typelib, which live in
the *system* python (Debian: python3-gi, gir1.2-gst-rtsp-server-1.0,
gstreamer1.0-plugins-{base,good,bad}), not in the project's virtual env.
"""

from __future__ import annotations

import functools
import os
import selectors
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

SYSTEM_PYTHON = os.environ.get("DFWATCH_GST_PYTHON", "/usr/bin/python3")
SERVER_SCRIPT = Path(__file__).resolve().parent / "rtsp_server.py"
HOST = "127.0.0.1"

_PROBE = """
import gi
gi.require_version("Gst", "1.0")
gi.require_version("GstRtspServer", "1.0")
from gi.repository import Gst, GstRtspServer
Gst.init(None)
missing = [e for e in ("filesrc", "qtdemux", "h264parse", "rtph264pay")
           if Gst.ElementFactory.find(e) is None]
if missing:
    raise SystemExit("missing GStreamer elements: " + ", ".join(missing))
"""


# the Debian packages that the RTSP test server needs (.ci/run installs them; `make test` on a fresh machine skips)
GST_PACKAGES = (
    "python3-gi",
    "gir1.2-gst-rtsp-server-1.0",
    "gstreamer1.0-plugins-base",
    "gstreamer1.0-plugins-good",
    "gstreamer1.0-plugins-bad",
    "gstreamer1.0-plugins-ugly",
)


@functools.cache
def gst_rtsp_available() -> str | None:
    """None when the RTSP test server can run here, else why not (for skip reasons)."""
    if not os.path.exists(SYSTEM_PYTHON):
        return f"{SYSTEM_PYTHON} not found"
    try:
        proc = subprocess.run(
            [SYSTEM_PYTHON, "-c", _PROBE],
            capture_output=True,
            text=True,
            timeout=30,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"cannot run {SYSTEM_PYTHON}: {exc}"
    if proc.returncode != 0:
        lines = (proc.stderr or proc.stdout).strip().splitlines()
        last = lines[-1] if lines else f"exit status {proc.returncode}"
        return f"{SYSTEM_PYTHON} lacks gi/GstRtspServer 1.0: {last}"
    return None


def _requires_rtsp():
    import pytest

    why_not = gst_rtsp_available()
    if why_not is not None and os.environ.get("CI"):
        raise RuntimeError(f"CI must run the RTSP tests, but the GStreamer RTSP server cannot start: {why_not}")
    return pytest.mark.skipif(
        why_not is not None,
        reason=f"GStreamer RTSP server: {why_not}; to run these tests: "
        f"apt-get install {' '.join(GST_PACKAGES)} (as .ci/run does)",
    )


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on (right now)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        try:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)
        except ProcessLookupError:
            pass
    for f in (proc.stdout, proc.stderr):
        if f is not None:
            f.close()


@dataclass(frozen=True)
class RtspServer:
    url: str  # base URL 'rtsp://127.0.0.1:PORT'
    proc: subprocess.Popen  # the server process: kill() it, or SIGSTOP it to stall its clients

    @property
    def port(self) -> int:
        return int(self.url.rsplit(":", 1)[1])


@contextmanager
def rtsp_server(mounts: dict[str, Path], *, loop: bool = False, timeout: float = 10.0, port: int = 0) -> Iterator[str]:
    """Start tests/rtsp_server.py on 127.0.0.1; yield the base URL 'rtsp://127.0.0.1:PORT'.

    ``mounts`` maps mount names ("cam" or "/cam") to H.264 MP4 files; each is
    served at ``<base>/cam``.  With ``loop=True`` every file repeats forever.
    ``port=0`` picks a free port; give the port of a server that has gone to
    start another in its place.  The server is always terminated on exit
    (SIGTERM, then SIGKILL).
    """
    with rtsp_server_process(mounts, loop=loop, timeout=timeout, port=port) as server:
        yield server.url


@contextmanager
def rtsp_server_process(
    mounts: dict[str, Path], *, loop: bool = False, timeout: float = 10.0, port: int = 0
) -> Iterator[RtspServer]:
    """Like rtsp_server, but yield the RtspServer (URL and process), for tests that kill or pause it."""
    if not mounts:
        raise ValueError("rtsp_server needs at least one mount")
    cmd = [SYSTEM_PYTHON, "-u", str(SERVER_SCRIPT), "--port", str(port)]
    for name, path in mounts.items():
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"rtsp_server: no such file: {path}")
        cmd += ["--mount", f"/{name.lstrip('/')}={path.resolve()}"]
    if loop:
        cmd.append("--loop")

    # --port 0: the server binds a free port itself and reports it in its
    # READY line, so there is no window in which another process can take it.
    # stderr goes to a temp file, so a chatty server can never block on a
    # full pipe while the tests run.
    errfile = tempfile.TemporaryFile(mode="w+b")  # noqa: SIM115 (closed in the finally below)
    proc = subprocess.Popen(
        cmd,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=errfile,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )

    def server_stderr() -> str:
        errfile.seek(0)
        return errfile.read().decode(errors="replace").strip() or "(empty)"

    try:
        url = _wait_ready(proc, timeout, server_stderr)
        yield RtspServer(url, proc)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGCONT)  # a paused server would not see SIGTERM
        _stop(proc)
        errfile.close()


def _wait_ready(proc: subprocess.Popen, timeout: float, server_stderr) -> str:
    deadline = time.monotonic() + timeout
    buf = b""
    assert proc.stdout is not None
    fd = proc.stdout.fileno()
    with selectors.DefaultSelector() as sel:
        sel.register(fd, selectors.EVENT_READ)
        while True:
            nl = buf.find(b"\n")
            while nl >= 0:
                line, buf = buf[:nl].decode(errors="replace").strip(), buf[nl + 1 :]
                if line.startswith("READY "):
                    return line.split(None, 1)[1]
                nl = buf.find(b"\n")
            left = deadline - time.monotonic()
            if left <= 0:
                _stop(proc)
                raise RuntimeError(
                    f"RTSP test server did not print READY within {timeout:.1f} s.\n"
                    f"command: {' '.join(proc.args)}\nserver stderr:\n{server_stderr()}"
                )
            if not sel.select(left):
                continue
            chunk = os.read(fd, 4096)
            if not chunk:  # stdout closed: the server died
                try:
                    rc = proc.wait(timeout=2)
                except subprocess.TimeoutExpired:
                    rc = None
                raise RuntimeError(
                    f"RTSP test server exited (status {rc}) before READY.\n"
                    f"command: {' '.join(proc.args)}\nserver stderr:\n{server_stderr()}"
                )
            buf += chunk


if __name__ == "__main__":  # manual check: python tests/_rtsp.py clip.mp4
    print(gst_rtsp_available() or "GStreamer RTSP server available")
    if len(sys.argv) > 1:
        with rtsp_server({"cam": Path(sys.argv[1])}, loop=True) as base:
            print(f"{base}/cam  (Ctrl-C to stop)")
            try:
                while True:
                    time.sleep(1)
            except KeyboardInterrupt:
                pass


requires_rtsp = _requires_rtsp()  # skip where the server cannot run; CI (CI=true) fails instead
