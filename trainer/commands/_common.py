"""Helpers shared by dfwatch-train subcommands."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


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
