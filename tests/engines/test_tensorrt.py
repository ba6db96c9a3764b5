"""TensorRT plans: build from ONNX (FP16, INT8), parity with ONNX Runtime, the GPU check (marker ``tensorrt``)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from engines import Classifier, Detector, ManifestMismatchError
from engines.build_tensorrt import TIMING_CACHE, build_engine
from engines.devices import cuda_device
from engines.letterbox import letterbox_batch
from engines.manifest import load_manifest, write_manifest
from tests.engines.conftest import CLASSIFIER_SIZE, DETECTOR_SIZE, face_crops

try:
    import tensorrt

    _missing = None if cuda_device() is not None else "needs a CUDA GPU"
except ImportError:
    tensorrt, _missing = None, "needs TensorRT (import tensorrt failed)"

pytestmark = [pytest.mark.tensorrt, pytest.mark.skipif(_missing is not None, reason=_missing or "")]


def test_fp16_classifier_plan_matches_onnx_runtime(models_copy: Path, frames: np.ndarray):
    out, manifest = build_engine(models_copy / "deepfake_classifier.onnx", precision="fp16", batch_max=32)
    assert out.name == "deepfake_classifier.fp16.engine" and (models_copy / TIMING_CACHE).stat().st_size > 0
    assert manifest.device == cuda_device().record() and manifest.versions["tensorrt"] == tensorrt.__version__
    assert (manifest.batch_min, manifest.batch_max, manifest.precision) == (1, 32, "fp16")
    crops = face_crops(frames, CLASSIFIER_SIZE)
    plan = Classifier(out)
    assert plan.backend_name == "tensorrt-fp16"
    expected = Classifier(models_copy / "deepfake_classifier.onnx", device="cpu")(crops)
    np.testing.assert_allclose(plan(crops), expected, atol=1e-2)
    big = np.repeat(crops, 10, axis=0)  # 40 crops: chunks of the plan's batch_max 32
    np.testing.assert_allclose(plan(big), np.repeat(expected, 10), atol=1e-2)


def test_fp16_detector_plan_matches_onnx_runtime(models_copy: Path, frames: np.ndarray):
    out, _ = build_engine(models_copy / "face_detector.onnx", precision="fp16")
    plan = Detector(out, conf=0.001)
    reference = Detector(models_copy / "face_detector.onnx", device="cpu", conf=0.001)
    batch, _ = letterbox_batch(list(frames), DETECTOR_SIZE)
    got, expected = plan.artifact.run(batch)[0], reference.artifact.run(batch)[0]
    assert got.shape == expected.shape
    assert np.abs(got[:, :4] - expected[:, :4]).max() < 2.0  # pixels of a 320 input (fp16 steps 0.25 px at 320)
    assert np.abs(got[:, 4] - expected[:, 4]).max() < 1e-2  # face scores
    assert len(plan([])) == 0


def test_int8_classifier_plan_calibrated_on_face_crops(models_copy: Path, frames: np.ndarray):
    crops = face_crops(np.repeat(frames, 8, axis=0), CLASSIFIER_SIZE)  # 32 real crops
    out, manifest = build_engine(
        models_copy / "deepfake_classifier.onnx", precision="int8", calibration=[crops], calibration_batch=8
    )
    assert manifest.precision == "int8" and out.with_name(out.name + ".calib-cache").stat().st_size > 0
    expected = Classifier(models_copy / "deepfake_classifier.onnx", device="cpu")(crops[:4])
    np.testing.assert_allclose(Classifier(out)(crops[:4]), expected, atol=0.1)
    # A rebuild (--force, a re-export) calibrates again rather than reading the last build's cache.
    again, _ = build_engine(
        models_copy / "deepfake_classifier.onnx", precision="int8", calibration=[crops], calibration_batch=8
    )
    np.testing.assert_allclose(Classifier(again)(crops[:4]), expected, atol=0.1)


def test_a_plan_from_another_gpu_or_tensorrt_is_refused(models_copy: Path):
    out, manifest = build_engine(models_copy / "deepfake_classifier.onnx", precision="fp16", batch_max=8)
    write_manifest(out, dataclasses.replace(manifest, device={**manifest.device, "name": "NVIDIA A100"}))
    with pytest.raises(ManifestMismatchError, match=r"built for NVIDIA A100 .*dfwatch-train engines"):
        Classifier(out)
    versions = {**manifest.versions, "tensorrt": "9.0.0"}
    write_manifest(out, dataclasses.replace(manifest, versions=versions))
    with pytest.raises(ManifestMismatchError, match="built with TensorRT 9.0.0"):
        Classifier(out)
    assert load_manifest(out).precision == "fp16"
