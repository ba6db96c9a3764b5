"""dfwatch-train engines on a real model directory: verifies ONNX, builds torch variants, prints the summary."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from engines import Classifier, Detector
from engines.manifest import load_manifest
from engines.rebuild import tensorrt_available
from tests.engines.conftest import CLASSIFIER_SIZE, face_crops
from trainer.cli import main


def test_engines_verifies_onnx_and_builds_torch_variants(models_copy: Path, frames, capsys):
    args = ["engines", "--models", str(models_copy), "--torch", "--device", "cpu", "--torch-compile", "none"]
    assert main([*args, "--no-tensorrt", "--no-progress"]) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[0].split()[:4] == ["artifact", "format", "precision", "batch"]
    rows = {line.split()[0]: line.split() for line in table[1:]}
    assert set(rows) == {
        "deepfake_classifier.onnx",
        "face_detector.onnx",
        "deepfake_classifier.fp32.pt2",
        "face_detector.fp32.pt2",
    }
    assert rows["face_detector.onnx"][1:4] == ["onnx", "fp32", "1-64"]
    assert rows["face_detector.fp32.pt2"][1:4] == ["torch", "fp32", "1-64"]
    assert float(rows["face_detector.onnx"][7]) < 1e-2  # max |onnx - torch reference|, pixels
    manifest = load_manifest(models_copy / "face_detector.fp32.pt2")
    assert manifest.runtime == {"compile": None} and manifest.device == {"type": "cpu"}
    assert manifest.source_onnx_sha256 == load_manifest(models_copy / "face_detector.onnx").sha256
    crops = face_crops(frames, CLASSIFIER_SIZE)
    np.testing.assert_allclose(
        Classifier(models_copy / "deepfake_classifier.fp32.pt2")(crops),
        Classifier(models_copy / "deepfake_classifier.onnx")(crops),
        atol=1e-5,
    )
    assert len(Detector(models_copy / "face_detector.fp32.pt2", conf=0.001)(frames)) > 0
    # A second run keeps what is up to date (and re-verifies it); --force rebuilds.
    assert main([*args, "--no-tensorrt", "--no-progress"]) == 0
    kept = [line for line in capsys.readouterr().out.splitlines() if ".fp32.pt2" in line]
    assert len(kept) == 2 and all(line.endswith("up to date, kept") for line in kept)
    assert main([*args, "--no-tensorrt", "--no-progress", "--force"]) == 0
    rebuilt = [line for line in capsys.readouterr().out.splitlines() if ".fp32.pt2" in line]
    assert len(rebuilt) == 2 and not any("kept" in line for line in rebuilt)


def test_engines_without_a_torch_reference_says_how_to_get_one(models_copy: Path, capsys):
    (models_copy / "face_detector.pt2").unlink()
    assert main(["engines", "--models", str(models_copy), "--no-tensorrt", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "no torch reference .pt2 to compare" in out
    assert main(["engines", "--models", str(models_copy), "--torch", "--no-tensorrt", "--no-progress"]) == 1
    assert "face_detector.pt2 (the fp32 torch reference" in capsys.readouterr().err


def test_engines_refuses_a_model_directory_without_artifacts(tmp_path: Path, capsys):
    assert main(["engines", "--models", str(tmp_path), "--no-progress"]) == 1
    assert "holds no ONNX artifact with a manifest" in capsys.readouterr().err
    assert main(["engines", "--models", str(tmp_path / "nope"), "--no-progress"]) == 1
    assert "nope does not exist" in capsys.readouterr().err


def test_engines_int8_calibration_needs_tensorrt(models_copy: Path, capsys):
    args = ["engines", "--models", str(models_copy), "--no-tensorrt", "--int8-calib", "crops.h5"]
    assert main(args) == 1
    assert "--int8-calib is for TensorRT INT8 plans" in capsys.readouterr().err


def test_engines_demanding_tensorrt_where_it_is_missing_fails(models_copy: Path, capsys):
    missing = tensorrt_available()
    if missing is None:
        pytest.skip("TensorRT and a GPU are here: tests/engines/test_tensorrt.py builds plans")
    assert main(["engines", "--models", str(models_copy), "--tensorrt", "--no-progress"]) == 1
    assert f"--tensorrt was asked for, but {missing}" in capsys.readouterr().err


def test_calibration_crops_come_from_the_face_store(tmp_path: Path, frames):
    from trainer.commands.engines import calibration_crops
    from trainer.store import FaceStoreWriter

    crops = face_crops(frames, CLASSIFIER_SIZE)  # (4, 64, 64, 3)
    store = tmp_path / "crops.h5"
    options = dict(
        crop_size=CLASSIFIER_SIZE,
        crop_margin=0.25,
        whole_frames=False,
        source="test",
        frames_per_video=4,
        detector_sha256="0" * 64,
        split_protocol="identity",
    )
    with FaceStoreWriter(store, **options) as writer:
        writer.append(
            crops,
            label=0,
            video="v0",
            identity="id0",
            identity_src="id0",
            frame=np.arange(4),
            box=np.zeros((4, 4), np.float32),
            det_score=1.0,
            split="train",
        )
        writer.finish_video("v0", frames=4, faces=4)
    blocks = list(calibration_crops(store, limit=3)(CLASSIFIER_SIZE))
    got = np.concatenate(blocks)
    assert got.shape == (3, CLASSIFIER_SIZE, CLASSIFIER_SIZE, 3) and got.dtype == np.uint8
    np.testing.assert_array_equal(got, crops[[0, 1, 3]])  # evenly spread over the 4 training crops
    with pytest.raises(ValueError, match="holds 64px crops, the classifier takes 256px"):
        list(calibration_crops(store, limit=3)(256))


def test_calib_samples_reaches_the_int8_build(tmp_path: Path, monkeypatch):
    import engines.rebuild

    seen = {}
    monkeypatch.setattr(engines.rebuild, "rebuild", lambda models, **kw: seen.update(kw) or [])
    store = tmp_path / "crops.h5"
    args = ["engines", "--models", str(tmp_path), "--int8-calib", str(store), "--calib-samples", "1000"]
    assert main(args) == 1 and not seen  # no store: refused before anything is built
    store.touch()
    assert main(args) == 0
    assert seen["tensorrt"].calibration_limit == 1000  # not build_engine's default of 512
