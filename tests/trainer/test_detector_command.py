"""dfwatch-train detector end to end on a miniature real-media tree: dataset, one ultralytics epoch
(offline, untrained start), measurement at one serving size, export served by engines.Detector;
a rerun reuses the trained weights; nothing lands outside the test's folder."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import numpy as np

from tests.conftest import ROOT
from tests.trainer._realtree import NEEDS_SHARED_DATA, make_real_tree

pytestmark = NEEDS_SHARED_DATA

# where ultralytics writes or downloads when not given explicit paths: runs/ and weights in the
# repository (its settings' default under a git checkout), and the runs folder it uses under pytest
_REPO_STRAYS = ("runs", "weights", "yolov8n.pt", "yolo11n.pt", "yolo26n.pt", "Arial.ttf")


def _written_since(t0: float, paths: list[Path]) -> list[str]:
    """Files and folders under ``paths`` (or the paths themselves) modified at or after ``t0``."""
    found = []
    for p in paths:
        if p.exists():
            found += [str(q) for q in [p, *(p.rglob("*") if p.is_dir() else [])] if q.lstat().st_mtime >= t0]
    return found


def _json(value: object) -> str:
    """Canonical JSON text, to compare records that may hold NaN (precision with no detection)."""
    return json.dumps(value, sort_keys=True)


def _argv(media: Path, out: Path, export: Path) -> list[str]:
    return [
        "detector",
        "--media",
        str(media),
        "--out",
        str(out),
        "--imgsz",
        "64",
        "--epochs",
        "1",
        "--hours",
        "0",
        "--batch",
        "2",
        "--workers",
        "0",
        "--sizes",
        "320",
        "--frames-per-clip",
        "2",
        "--eval-frames",
        "2",
        "--threads",
        "1",
        "--export",
        str(export),
        "--no-torch-reference",
    ]


def test_train_measure_export_then_reuse(tmp_path, monkeypatch):
    import torch

    from engines import Detector, load_manifest
    from trainer.cli import main
    from trainer.detector import train as detector_train

    torch.set_num_threads(1)
    media = make_real_tree(tmp_path / "media")
    out, export = tmp_path / "run", tmp_path / "models" / "face_detector.onnx"
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    monkeypatch.delenv("YOLO_OFFLINE", raising=False)  # the command must set it
    monkeypatch.setenv("YOLO_CONFIG_DIR", str(tmp_path / "ultralytics"))  # ultralytics' settings, if first imported
    offline = {"set": None}
    real_train = detector_train.train_detector

    def train_offline(*args, **kwargs):
        offline["set"] = os.environ.get("YOLO_OFFLINE")
        return real_train(*args, **kwargs)

    monkeypatch.setattr(detector_train, "train_detector", train_offline)
    strays = [ROOT / name for name in _REPO_STRAYS]
    t0 = time.time() - 1  # file times may lag the clock by a little

    assert main(_argv(media, out, export)) == 0
    assert offline["set"] == "1"

    import ultralytics
    from ultralytics.utils import SETTINGS

    strays += [Path(SETTINGS[k]) for k in ("runs_dir", "weights_dir", "datasets_dir")]
    strays.append(Path(ultralytics.__file__).parents[1] / "tests")  # ultralytics' runs folder under pytest
    assert list(cwd.iterdir()) == []  # nothing written in the working directory
    assert _written_since(t0, strays) == []

    report = json.loads((out / "detector_report.json").read_text())
    assert report["serving_size"] == 320 and list(report["sizes"]) == ["320"]
    row = report["sizes"]["320"]
    assert {"map50", "map50_95", "wider_recall32", "clips_recall32", "ms_per_720p_frame"} <= set(row)
    assert 0 <= row["map50_95"] <= row["map50"] <= 1 and row["ms_per_720p_frame"] > 0
    assert row["wider_recall32"]["faces"] == 2  # WIDER val in the tree: 1 + 1 faces >= 32 px
    assert row["clips_recall32"]["faces"] == report["data"]["clip_eval_faces"] == 2  # the test clip, 2 frames
    assert report["data"] == {
        "wider_train": 3,
        "pseudo_images": 6,
        "pseudo_faces": 6,
        "dropped_doubtful": 0,
        "clip_eval_frames": 2,
        "clip_eval_faces": 2,
    }
    trained = json.loads((out / "train_summary.json").read_text())
    assert _json(report["training"]) == _json(trained) and trained["epochs_run"] == 1 and trained["seconds"] > 0
    assert trained["config"]["hours"] is None and trained["config"]["imgsz"] == 64  # --hours 0: no time budget
    assert Path(trained["weights"]) == out / "train" / "weights" / "best.pt"

    detector = Detector(export)
    assert detector.input_size == 320 and detector.conf == report["threshold"]
    found = detector([np.zeros((90, 160, 3), np.uint8)])
    assert found.xyxy.shape[1] == 4 and len(found) == len(found.frame_index)
    manifest = load_manifest(export, kind="detector")
    assert not manifest.placeholder and manifest.input_size == 320 and manifest.name == "yolov8n-face"
    assert manifest.training["seconds"] == trained["seconds"] and manifest.training["epochs"] == 1
    assert manifest.training["imgsz"] == 64 and _json(manifest.training["metrics"]) == _json(
        {"serving_size": 320, **row}
    )
    assert not export.with_suffix(".pt2").exists()  # --no-torch-reference

    # a rerun without --retrain reuses train_summary.json: training must not run again
    def no_training(*args, **kwargs):
        raise AssertionError("trained again although train_summary.json was there")

    monkeypatch.setattr(detector_train, "train_detector", no_training)
    summary_before = (out / "train_summary.json").read_bytes()
    weights_mtime = Path(trained["weights"]).stat().st_mtime_ns
    assert main(_argv(media, out, export)) == 0
    assert (out / "train_summary.json").read_bytes() == summary_before
    assert Path(trained["weights"]).stat().st_mtime_ns == weights_mtime
    assert _json(json.loads((out / "detector_report.json").read_text())["training"]) == _json(trained)
    assert list(cwd.iterdir()) == [] and _written_since(t0, strays) == []


def test_a_serving_size_that_is_not_measured_is_refused_before_any_work(tmp_path, capsys):
    from trainer.cli import main

    out = tmp_path / "run"
    argv = [
        "detector",
        "--media",
        str(tmp_path / "media"),
        "--out",
        str(out),
        "--sizes",
        "320",
        "--serving-size",
        "416",
    ]
    assert main(argv) == 1
    assert "--serving-size 416 is not among --sizes [320]" in capsys.readouterr().err
    assert not out.exists()
