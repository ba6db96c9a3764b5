"""CUDA paths of the torch and ONNX Runtime backends (marker ``gpu``; run by benchmarks/gpu_check.sh)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from engines import Classifier, Detector
from engines.build_torch import build_torch_variant
from engines.devices import cuda_device
from engines.letterbox import letterbox_batch
from tests.engines.conftest import CLASSIFIER_SIZE, DETECTOR_SIZE, face_crops

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(cuda_device() is None, reason="needs a CUDA GPU that torch can use"),
]


def _raw(detector: Detector, frames: np.ndarray) -> np.ndarray:
    batch, _ = letterbox_batch(list(frames), DETECTOR_SIZE)  # (N, 3, 320, 320)
    return detector.artifact.run(batch)[0]  # (N, 5, 2100)


def test_torch_cuda_detector_matches_onnx_runtime_cpu(small_models: Path, frames: np.ndarray):
    cuda = Detector(small_models / "face_detector.pt2", device="cuda", conf=0.001)
    assert cuda.backend_name == "torch-cuda-eager-fp32"
    cpu = Detector(small_models / "face_detector.onnx", device="cpu", conf=0.001)
    got, expected = _raw(cuda, frames), _raw(cpu, frames)
    assert np.abs(got[:, :4] - expected[:, :4]).max() < 0.5  # pixels of a 320 input (cuDNN may use TF32)
    assert np.abs(got[:, 4] - expected[:, 4]).max() < 2e-3  # face scores
    assert len(cuda(frames)) > 0


def test_torch_cuda_classifier_matches_onnx_runtime_cpu(small_models: Path, frames: np.ndarray):
    crops = face_crops(frames, CLASSIFIER_SIZE)
    expected = Classifier(small_models / "deepfake_classifier.onnx", device="cpu")(crops)
    got = Classifier(small_models / "deepfake_classifier.pt2", device="cuda")(crops)
    np.testing.assert_allclose(got, expected, atol=5e-3)


@pytest.mark.parametrize("precision, mode", [("fp16", "reduce-overhead"), ("bf16", "default")])
def test_compiled_half_precision_variants_are_close_to_fp32(models_copy: Path, frames, precision: str, mode: str):
    out, manifest, _ = build_torch_variant(
        models_copy / "deepfake_classifier.pt2", precision=precision, compile_mode=mode, device="cuda"
    )
    assert manifest.device == cuda_device().record() and manifest.runtime == {"compile": mode}
    crops = face_crops(frames, CLASSIFIER_SIZE)
    expected = Classifier(models_copy / "deepfake_classifier.onnx", device="cpu")(crops)
    variant = Classifier(out)
    assert variant.backend_name == f"torch-cuda-compiled-{mode}-{precision}"
    tol = 1e-2 if precision == "fp16" else 3e-2
    np.testing.assert_allclose(variant(crops), expected, atol=tol)
    # Batches of changing sizes in a row: padded buckets (and CUDA graph replays) never leak stale rows.
    for n in (1, 3, 4, 2, 4):
        np.testing.assert_allclose(variant(crops[:n]), expected[:n], atol=tol)


def test_compiled_fp16_detector_is_close_to_fp32(models_copy: Path, frames: np.ndarray):
    out, _, diff = build_torch_variant(
        models_copy / "face_detector.pt2", precision="fp16", compile_mode="reduce-overhead", device="cuda"
    )
    fp16 = Detector(out, conf=0.001)
    reference = Detector(models_copy / "face_detector.onnx", device="cpu", conf=0.001)
    got, expected = _raw(fp16, frames), _raw(reference, frames)
    assert np.abs(got[:, :4] - expected[:, :4]).max() < 2.0  # pixels of a 320 input (fp16 steps 0.25 px at 320)
    assert np.abs(got[:, 4] - expected[:, 4]).max() < 1e-2  # face scores
    assert diff < 2.0


def test_onnxruntime_cuda_matches_cpu(small_models: Path, frames: np.ndarray):
    import onnxruntime as ort

    if "CUDAExecutionProvider" not in ort.get_available_providers():
        pytest.skip(f"this onnxruntime has no CUDA provider ({ort.get_available_providers()})")
    cuda = Detector(small_models / "face_detector.onnx", device="cuda")
    assert cuda.backend_name == "onnxruntime-cuda"
    cpu = Detector(small_models / "face_detector.onnx", device="cpu")
    got, expected = _raw(cuda, frames), _raw(cpu, frames)
    assert np.abs(got[:, :4] - expected[:, :4]).max() < 0.5 and np.abs(got[:, 4] - expected[:, 4]).max() < 2e-3
