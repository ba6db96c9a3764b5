"""Test helper: a throwaway redis-server of the test's own, on another port than the shared 6379 one.

    with redis_server() as server:       # or RedisServer(...).start() / .kill() / .start() again
        client = server.client()

Tests kill it (SIGKILL), stop it (SIGSTOP: a silent, half-open server) and start it again on the
same address, with or without persistence (``appendonly``: the data survives a restart).
"""

from __future__ import annotations

import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import redis

from tests._rtsp import free_port

REDIS_SERVER = shutil.which("redis-server")


class RedisServer:
    """A redis-server on 127.0.0.1 (or a unix socket) that a test can kill and start again on the same address."""

    def __init__(
        self, *, password: str | None = None, unix_socket: Path | None = None, appendonly: bool = False
    ) -> None:
        assert REDIS_SERVER, "redis-server is not on PATH (Debian: apt-get install redis-server)"
        self.port = 0 if unix_socket else free_port()
        self.password, self.unix_socket, self.appendonly = password, unix_socket, appendonly
        self.dir = Path(tempfile.mkdtemp(prefix="dfwatch-redis-"))  # its data, when appendonly
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        auth = f":{self.password}@" if self.password else ""
        if self.unix_socket:
            return f"unix://{auth}{self.unix_socket}"
        return f"redis://{auth}127.0.0.1:{self.port}/0"

    def client(self, **options) -> redis.Redis:
        return redis.Redis.from_url(self.url, **{"decode_responses": True, "socket_timeout": 5, **options})

    def start(self) -> None:
        cmd = [REDIS_SERVER, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--dir", str(self.dir)]
        cmd += ["--appendonly", "yes", "--appendfsync", "always"] if self.appendonly else ["--appendonly", "no"]
        cmd += ["--daemonize", "no"]
        if self.password:
            cmd += ["--requirepass", self.password]
        if self.unix_socket:
            cmd += ["--unixsocket", str(self.unix_socket)]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while True:
            try:
                with self.client() as c:
                    c.ping()
                return
            except redis.ConnectionError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"redis-server did not start ({cmd}, exit {self.proc.poll()})") from None
                time.sleep(0.02)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)  # a stopped server would not die of SIGKILL's aftermath cleanly
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)
        self.proc = None

    def pause(self) -> None:
        """SIGSTOP: the server holds its connections but answers nothing (a hung or half-open server)."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGCONT)

    def cleanup(self) -> None:
        self.kill()
        shutil.rmtree(self.dir, ignore_errors=True)


@contextmanager
def redis_server(**options) -> Iterator[RedisServer]:
    server = RedisServer(**options)
    server.start()
    try:
        yield server
    finally:
        server.cleanup()
