"""CPU backends beside ONNX Runtime: OpenVINO fp32 parity, and INT8 that serves only past its held-out check."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from engines import Classifier, Detector, ManifestMismatchError, load_manifest
from tests.conftest import ROOT, SHARED_DATA
from tests.engines.conftest import face_crops

openvino = pytest.importorskip("openvino", reason="OpenVINO is not installed (pip install openvino)")


def test_openvino_fp32_matches_onnx_runtime_on_real_frames(models_copy: Path, frames: np.ndarray):
    from engines.build_cpu import build_openvino

    det_xml = build_openvino(models_copy / "face_detector.onnx", precision="fp32")
    cls_xml = build_openvino(models_copy / "deepfake_classifier.onnx", precision="fp32")
    assert load_manifest(det_xml).format == "openvino" and (det_xml.with_suffix(".bin")).is_file()
    ort_det, ov_det = Detector(models_copy / "face_detector.onnx"), Detector(det_xml)
    assert ov_det.backend_name == "openvino-cpu-fp32"
    x, _ = ort_det.prepare(list(frames))  # (4, 3, S, S)
    ref, got = ort_det.infer(x), ov_det.infer(x)
    assert np.abs(got - ref).max() <= 1e-4 * max(1.0, np.abs(ref).max())  # fp32 tolerance of every backend
    crops = face_crops(frames, load_manifest(cls_xml).input_size)
    np.testing.assert_allclose(
        Classifier(cls_xml)(crops), Classifier(models_copy / "deepfake_classifier.onnx")(crops), atol=1e-5
    )


def test_openvino_weights_that_do_not_match_the_manifest_are_refused(models_copy: Path):
    from engines.build_cpu import build_openvino

    xml = build_openvino(models_copy / "deepfake_classifier.onnx", precision="fp32")
    weights = xml.with_suffix(".bin")
    weights.write_bytes(weights.read_bytes()[:-8])
    with pytest.raises(ManifestMismatchError, match="does not match the manifest"):
        Classifier(xml)


def test_int8_serves_only_with_an_accepted_check(models_copy: Path, frames: np.ndarray):
    from engines.build_cpu import build_ort_int8, gate_int8

    onnx = models_copy / "deepfake_classifier.onnx"
    size = load_manifest(onnx).input_size
    crops = face_crops(np.concatenate([frames] * 4), size)  # (16, S, S, 3)
    out = build_ort_int8(onnx, calibration=[crops])
    with pytest.raises(ManifestMismatchError, match="INT8 without an accepted accuracy check"):
        Classifier(out)
    result = gate_int8(out, onnx, lambda kind, fp32, int8: ("AUC", 0.80, 0.795))  # 0.005 lower: accepted
    assert result["accepted"] and load_manifest(out).runtime["accuracy"]["int8"] == 0.795
    assert Classifier(out)(crops).shape == (16,)
    out = build_ort_int8(onnx, calibration=[crops])
    result = gate_int8(out, onnx, lambda kind, fp32, int8: ("AUC", 0.80, 0.785))  # 0.015 lower: refused
    assert not result["accepted"] and not out.exists() and not Path(f"{out}.json").exists()
    assert onnx.exists()  # the fp32 source stays


@pytest.mark.timeout(900)
def test_int8_of_the_shipped_pack_is_kept_only_within_001_of_fp32(tmp_path: Path, capsys):
    """`dfwatch-train engines --openvino --int8` on the committed pack, calibrated and checked on the shared media."""
    pytest.importorskip("nncf", reason="NNCF is not installed (pip install nncf)")
    from trainer.cli import main

    for path in (ROOT / "models").glob("*.onnx*"):
        shutil.copy(path, tmp_path / path.name)
    code = main(
        [
            "engines",
            "--models",
            str(tmp_path),
            "--openvino",
            "--int8",
            "--calib-samples",
            "128",
            "--media",
            str(SHARED_DATA),
            "--no-tensorrt",
            "--no-progress",
        ]
    )
    table = capsys.readouterr().out
    assert code == 0
    int8 = [line for line in table.splitlines() if ".int8." in line]
    assert len(int8) == 4, table  # OpenVINO and ONNX Runtime, detector and classifier
    accepted = sorted(tmp_path.glob("*.int8.*.json"))
    assert accepted, f"no INT8 artifact passed its check:\n{table}"
    for manifest_file in accepted:
        check = json.loads(manifest_file.read_text())["runtime"]["accuracy"]
        assert check["accepted"] is True and check["fp32"] - check["int8"] <= 0.01, check
        assert manifest_file.name.removesuffix(".json") in table
    for line in int8:  # refused ones are named as such and removed
        name = line.split()[0]
        assert ("REFUSED" in line) != (tmp_path / name).exists(), line
    for manifest_file in accepted:  # what was accepted serves
        artifact = manifest_file.with_suffix("")
        kind = json.loads(manifest_file.read_text())["kind"]
        model = Detector(artifact) if kind == "detector" else Classifier(artifact)
        assert model.backend_name.endswith("int8")
