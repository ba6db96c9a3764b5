"""pipeline.clips: files through the service in process (`dfwatch report`, `dfwatch-train validate` and
`calibrate`) get what `dfwatch watch` prints for them, frame by frame, with the committed model pack."""

from __future__ import annotations

import json
import logging
import os
import re
import subprocess
import sys

import av
import numpy as np
import pytest

from pipeline.clips import serve_files
from pipeline.config import ModelsConfig
from tests.conftest import ROOT

MODELS = ROOT / "models"


def _cli(*args: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "pipeline.cli", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=os.environ | {"OMP_NUM_THREADS": "2"})


def _served_detector(log: str) -> str:
    return re.search(r"detector (\S+) \(([^,]+), input (\d+)\)", log).group(0)


def test_in_process_run_says_what_dfwatch_watch_says(tmp_path, caplog):
    clip = tmp_path / "demo.mp4"
    assert _cli("demo", str(clip), "--seconds", "1").returncode == 0
    with av.open(str(clip)) as container:
        frames = sum(1 for _ in container.decode(video=0))
    watch = _cli("watch", str(clip), "--models", str(MODELS), "--metrics-port", "0")
    assert watch.returncode == 0, watch.stderr
    lines = [json.loads(line) for line in watch.stdout.splitlines()]

    caplog.set_level(logging.INFO)
    (run,) = serve_files([clip], ModelsConfig(dir=MODELS))
    assert _served_detector(caplog.text) == _served_detector(watch.stderr)  # the same detector, backend and size
    assert run.error is None and run.path == clip
    assert len(run.verdicts) == len(lines) == frames  # a file loses no frame, in process or not
    for verdict, line in zip(run.verdicts, lines):
        at = f"frame {line['frame']}"
        assert verdict.frame_index == line["frame"], at
        assert (verdict.state.value, verdict.changed, verdict.detected) == (
            line["verdict"],
            line["changed"],
            line["detected"],
        ), at
        assert (verdict.score is None) == (line["score"] is None), at
        if verdict.score is not None:
            assert verdict.score == pytest.approx(line["score"], abs=2e-4), at
        faces = verdict.faces.to_records()
        assert [f["track"] for f in faces] == [f["track"] for f in line["faces"]], at
        for got, printed in zip(faces, line["faces"]):
            assert got["box"] == pytest.approx(printed["box"], abs=0.2), at
            for key in ("p_fake", "p_fake_last"):
                assert (got[key] is None) == (printed[key] is None), at
                if got[key] is not None:
                    assert got[key] == pytest.approx(printed[key], abs=2e-4), at
    assert len(run.face_scores) > 0 and np.isfinite(run.face_scores).all()  # the pack found and scored the face
    fake = [line["frame"] for line in lines if line["verdict"] == "FAKE"]
    assert run.first_fake == (fake[0] if fake else None)
