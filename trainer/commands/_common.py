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
