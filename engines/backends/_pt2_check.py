"""Refuse a ``.pt2`` archive that would run pickled code when torch loads it.

``torch.export.load`` unpickles some payloads with ``weights_only=False`` (weights and constants
saved with ``use_pickle``, legacy ``.pt`` weight files, and sample inputs when the safe load
fails), so a model file could run code; the sha256 in its manifest only proves it is the file the
manifest names. dfwatch's own exports hold raw tensor bytes only. This check reads the archive
first and refuses any payload that is pickled and does not load with ``weights_only=True``.
"""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

import torch

from engines.errors import ModelLoadError, rebuild_hint


def check_pt2_archive(artifact: Path) -> None:
    """ModelLoadError naming the member when ``artifact`` holds a payload torch would unpickle unsafely."""
    try:
        archive = zipfile.ZipFile(artifact)
    except (OSError, zipfile.BadZipFile):
        return  # not an archive at all: nothing to unpickle; torch.export.load says what is wrong
    with archive:
        for info in archive.infolist():
            name = info.filename
            if name.endswith("_config.json"):  # weights / constants: which payloads are pickles
                try:
                    config = json.loads(archive.read(info)).get("config", {})
                except (ValueError, AttributeError) as exc:
                    raise ModelLoadError(f"{artifact}: {name} is not valid JSON ({exc})") from exc
                pickled = sorted(k for k, v in config.items() if isinstance(v, dict) and v.get("use_pickle"))
                if pickled:
                    hint = rebuild_hint(artifact, "torch")
                    raise ModelLoadError(f"{artifact}: {name} marks {pickled[:3]} as pickled; dfwatch loads only "
                                         f"raw tensor payloads (a pickle can run code); {hint}")
            elif name.endswith((".pt", ".pkl")) and info.file_size:  # torch.save output: must be plain data
                try:
                    torch.load(io.BytesIO(archive.read(info)), weights_only=True)
                except Exception as exc:
                    raise ModelLoadError(f"{artifact}: {name} is a pickle that does not load as plain data "
                                         f"({type(exc).__name__}); refused: it could run code") from exc
