"""Pipeline fixtures: fast placeholder models and a helper that runs the real `dfwatch` CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def fast_models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Placeholders at small input sizes, so end-to-end runs take seconds on two cores."""
    from trainer.cli import main

    out = tmp_path_factory.mktemp("fast-models")
    assert main(["placeholders", "--out", str(out), "--detector-size", "320", "--classifier-size", "96"]) == 0
    return out


@dataclass
class Run:
    returncode: int
    stdout: str
    stderr: str

    @property
    def records(self) -> list[dict]:
        return [json.loads(line) for line in self.stdout.splitlines()]

    def summary_row(self, stream: str) -> dict[str, int]:
        """The stream's row of the closing summary table on stderr."""
        lines = self.stderr.splitlines()
        header = next(i for i, line in enumerate(lines) if line.startswith("stream "))
        row = next(line.split() for line in lines[header + 1 :] if line.split()[0] == stream)
        return {"frames": int(row[1]), "faces": int(row[2]), "drops": int(row[3])}

    @property
    def error_lines(self) -> list[str]:
        return [line for line in self.stderr.splitlines() if " ERROR: " in line]


@pytest.fixture()
def dfwatch(fast_models: Path):
    """Run `python -m pipeline.cli ARGS...` as a user would; placeholder faces made visible with a low threshold."""

    def run(*args: str, timeout: float = 120, models: bool = True) -> Run:
        extra = ["--models", str(fast_models), "--metrics-port", "0", "--det-conf", "0.001", "--max-faces", "2"]
        cmd = [sys.executable, "-m", "pipeline.cli", *args, *(extra if models and "watch" in args else [])]
        proc = subprocess.run(
            cmd, capture_output=True, text=True, timeout=timeout, env=os.environ | {"OMP_NUM_THREADS": "2"}
        )
        return Run(proc.returncode, proc.stdout, proc.stderr)

    return run


@pytest.fixture()
def service(fast_models: Path, tmp_path: Path):
    """Start `dfwatch watch ARGS...` in the background (tests/pipeline/_service.py); killed at the end."""
    from tests.pipeline._service import Service

    started: list[Service] = []

    def start(*args: str) -> Service:
        started.append(Service(list(args), fast_models, tmp_path))
        return started[-1]

    yield start
    for s in started:
        s.kill()
