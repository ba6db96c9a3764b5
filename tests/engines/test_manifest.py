"""Artifacts are checked against their manifests; every mismatch is a clear EngineError."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from engines import Classifier, Detector, ManifestError, ManifestMismatchError, ModelLoadError, ModelNotFoundError
from engines.manifest import load_manifest, manifest_path, sha256_file


@pytest.fixture()
def models(tmp_path: Path, model_dir: Path) -> Path:
    for f in model_dir.iterdir():
        shutil.copy(f, tmp_path / f.name)
    return tmp_path


def _edit_manifest(artifact: Path, **changes) -> None:
    path = manifest_path(artifact)
    raw = json.loads(path.read_text())
    raw.update(changes)
    path.write_text(json.dumps(raw))


def test_placeholder_manifests_describe_their_files(model_dir: Path):
    det = load_manifest(model_dir / "face_detector.onnx", kind="detector")
    cls = load_manifest(model_dir / "deepfake_classifier.onnx", kind="classifier")
    assert det.placeholder and cls.placeholder
    assert det.sha256 == sha256_file(model_dir / "face_detector.onnx") == det.source_onnx_sha256
    assert (det.input_size, det.class_names, det.thresholds) == (640, ["face"], {"confidence": 0.25, "iou": 0.45})
    assert (cls.input_size, cls.class_names, cls.preprocess["crop_margin"]) == (256, ["fake"], 0.25)
    assert det.batch_min == 1 and det.batch_max >= 8 and det.precision == "fp32"
    assert {"torch", "onnx", "onnxruntime", "ultralytics"} <= det.versions.keys()
    assert (model_dir / "face_detector.md").read_text().startswith("# face_detector.onnx (PLACEHOLDER)")


def test_missing_artifact_says_how_to_rebuild(tmp_path: Path):
    with pytest.raises(ModelNotFoundError, match=r"nothing\.onnx does not exist.*dfwatch-train"):
        Detector(tmp_path / "nothing.onnx")


def test_missing_manifest(models: Path):
    manifest_path(models / "face_detector.onnx").unlink()
    with pytest.raises(ModelNotFoundError, match="has no manifest"):
        Detector(models / "face_detector.onnx")


def test_truncated_artifact_does_not_match_its_manifest(models: Path):
    path = models / "face_detector.onnx"
    path.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(ManifestMismatchError, match=r"changed or truncated.*git checkout models/.*re-export"):
        Detector(path)


def test_wrong_kind_is_refused(models: Path):
    with pytest.raises(ManifestError, match="is a detector artifact, expected a classifier"):
        Classifier(models / "face_detector.onnx")


@pytest.mark.parametrize(
    "content, message",
    [
        ("{not json", "not valid JSON"),
        ("[1, 2]", "must hold a JSON object"),
        ('{"kind": "detector"}', "lacks fields"),
    ],
)
def test_unreadable_manifests(models: Path, content: str, message: str):
    manifest_path(models / "face_detector.onnx").write_text(content)
    with pytest.raises(ManifestError, match=message):
        Detector(models / "face_detector.onnx")


@pytest.mark.parametrize(
    "changes, error, message",
    [
        ({"kind": "tracker"}, ManifestError, r"kind 'tracker' is not one of \['detector', 'classifier'\]"),
        ({"format": "coreml"}, ManifestError, r"format 'coreml' is not one of"),
        ({"schema": 99}, ManifestError, "has schema 99"),
        ({"colour": "rgb"}, ManifestError, r"unknown fields \['colour'\]"),
        ({"file": "other.onnx"}, ManifestMismatchError, "describes 'other.onnx'"),
        # types are checked at load: a string batch_max failed later, with a raw TypeError deep in a backend
        ({"batch_max": "8"}, ManifestError, r"field 'batch_max' must be int, got '8'"),
        ({"placeholder": "no"}, ManifestError, r"field 'placeholder' must be bool, got 'no'"),
        ({"thresholds": [0.5]}, ManifestError, r"field 'thresholds' must be dict, got \[0.5\]"),
        ({"input_size": True}, ManifestError, r"field 'input_size' must be int, got True"),
        ({"device": "cuda"}, ManifestError, r"field 'device' must be dict or null, got 'cuda'"),
        ({"batch_min": 4, "batch_max": 2}, ManifestError, r"needs 1 <= batch_min <= batch_max"),
    ],
)
def test_manifest_fields_are_validated(models: Path, changes, error, message):
    _edit_manifest(models / "face_detector.onnx", **changes)
    with pytest.raises(error, match=message):
        Detector(models / "face_detector.onnx")


def test_a_file_that_is_not_onnx_but_matches_its_manifest_fails_to_load(models: Path):
    path = models / "face_detector.onnx"
    path.write_bytes(b"this is not an onnx model")
    _edit_manifest(path, sha256=sha256_file(path))
    with pytest.raises(ModelLoadError, match="ONNX Runtime cannot load"):
        Detector(path)
