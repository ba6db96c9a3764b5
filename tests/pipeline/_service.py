"""Test helper: `dfwatch watch ...` as a running service (the pipeline tests' `service` fixture)."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest


class Service:
    """`dfwatch watch ...` in the background; stdout verdicts collected as they come."""

    def __init__(self, args: list[str], models: Path, tmp_path: Path) -> None:
        cmd = [
            sys.executable,
            "-m",
            "pipeline.cli",
            "watch",
            *args,
            "--models",
            str(models),
            "--det-conf",
            "0.001",
            "--max-faces",
            "1",
            *([] if "--metrics-port" in args else ["--metrics-port", "0"]),
        ]
        self.stderr_path = tmp_path / f"stderr-{time.monotonic_ns()}.log"
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=self.stderr_path.open("w"), text=True)
        self.records: list[dict] = []
        self.arrival: list[float] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            self.records.append(json.loads(line))
            self.arrival.append(time.monotonic())

    def of(self, stream: str) -> list[dict]:
        return [r for r in list(self.records) if r["stream"] == stream]

    def wait_for(self, predicate, timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while not predicate():
            if self.proc.poll() is not None:
                pytest.fail(f"dfwatch exited ({self.proc.returncode}) before {what}:\n{self.stderr}")
            if time.monotonic() > deadline:
                pytest.fail(f"no {what} within {timeout} s:\n{self.stderr}")
            time.sleep(0.1)

    def stop(self, timeout: float = 20) -> tuple[int, float]:
        start = time.monotonic()
        self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(timeout=timeout)
        self._reader.join(timeout=5)
        return code, time.monotonic() - start

    @property
    def stderr(self) -> str:
        return self.stderr_path.read_text()

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
