"""Helpers shared by dfwatch-train subcommands."""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from argparse import Namespace
from pathlib import Path
from typing import Any


def offline_ultralytics() -> None:
    """ultralytics writes a settings file and may reach the network at import: stop both.

    Called by a command before it imports ultralytics (entry points own the environment).
    """
    os.environ.setdefault("YOLO_OFFLINE", "1")
    os.environ.setdefault("YOLO_CONFIG_DIR", str(Path(tempfile.gettempdir()) / "dfwatch-ultralytics"))


def machine() -> str:
    """What trained a model, for manifests and cards: CPU model, cores, and the CUDA GPU torch sees, if any."""
    import platform

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), cpu)
    except OSError:
        pass
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    gpu = ""
    try:
        import torch

        if torch.cuda.is_available():
            gpu = f", GPU {torch.cuda.get_device_name(0)}"
    except ImportError:
        pass
    return f"{cpu}, {cores} cores{gpu}"


def run_step(ns: Namespace, label: str) -> tuple[int, float]:
    """Run one parsed command of a chain (``all``'s stages, ``pack``'s steps): (its exit code, seconds).

    Ctrl-C is exit code 130; a failure says that the same command resumes the chain.
    """
    t0 = time.monotonic()
    try:
        code = ns.func(ns)
    except KeyboardInterrupt:
        code = 130
    if code != 0:
        print(f"{label} ended with exit code {code}; rerun the same command to resume", file=sys.stderr)
    return code, time.monotonic() - t0


def write_state(path: Path, state: dict[str, Any]) -> None:
    """A chain's state file, replaced whole (a kill leaves the old one or the new one, never half of it)."""
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(state, indent=2, default=str) + "\n")
    os.replace(tmp, path)
