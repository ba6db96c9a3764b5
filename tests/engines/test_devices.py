"""Device rules that need no GPU: the device option, GPU-bound manifests, ONNX Runtime providers, INT8 batching."""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

import numpy as np
import pytest

from engines import Classifier, Detector, ManifestMismatchError
from engines.backends.ort import CPU, CUDA, providers_for
from engines.build_tensorrt import build_engine
from engines.calibration import calibration_batches, preprocess_for
from engines.devices import CudaDevice, check_gpu_match, cuda_device
from engines.errors import DeviceError, EngineBuildError
from engines.manifest import load_manifest, sha256_file, write_manifest

H200 = {"type": "cuda", "name": "NVIDIA H200", "capability": "9.0"}
no_cuda = pytest.mark.skipif(cuda_device() is not None, reason="these check the refusals of a machine without CUDA")


def _artifact_like(models: Path, name: str, *, fmt: str, precision: str, device: dict | None) -> Path:
    """A hand-written artifact + manifest: the classifier's torch reference re-labelled."""
    src = models / "deepfake_classifier.pt2"
    path = models / name
    shutil.copy(src, path)
    manifest = dataclasses.replace(
        load_manifest(src), format=fmt, file=name, sha256=sha256_file(path), precision=precision, device=device
    )
    write_manifest(path, manifest)
    return path


@no_cuda
def test_a_tensorrt_plan_built_for_an_h200_is_refused_here_with_how_to_rebuild(models_copy: Path):
    plan = _artifact_like(models_copy, "deepfake_classifier.fp16.engine", fmt="tensorrt", precision="fp16", device=H200)
    with pytest.raises(ManifestMismatchError) as info:
        Classifier(plan)
    message = str(info.value)
    assert "built for NVIDIA H200 (compute capability 9.0)" in message and "no CUDA GPU" in message
    assert f"dfwatch-train engines --models {models_copy}" in message


def test_a_plan_for_another_gpu_names_both_gpus(models_copy: Path):
    plan = _artifact_like(models_copy, "deepfake_classifier.fp16.engine", fmt="tensorrt", precision="fp16", device=H200)
    manifest = load_manifest(plan)
    check_gpu_match(manifest, plan, CudaDevice("NVIDIA H200", "9.0"))  # the same GPU passes
    with pytest.raises(ManifestMismatchError, match=r"built for NVIDIA H200 .*this machine has NVIDIA A100.*8\.0"):
        check_gpu_match(manifest, plan, CudaDevice("NVIDIA A100-SXM4-80GB", "8.0"))
    unrecorded = dataclasses.replace(manifest, device=None)
    with pytest.raises(ManifestMismatchError, match="does not record the GPU"):
        check_gpu_match(unrecorded, plan, CudaDevice("NVIDIA H200", "9.0"))


@no_cuda
def test_a_torch_variant_built_for_cuda_is_refused_without_a_gpu(models_copy: Path):
    variant = _artifact_like(models_copy, "deepfake_classifier.fp16.pt2", fmt="torch", precision="fp16", device=H200)
    with pytest.raises(ManifestMismatchError, match=r"built for CUDA \(NVIDIA H200.*dfwatch-train engines"):
        Classifier(variant)
    with pytest.raises(ManifestMismatchError, match="not for device 'cpu'"):
        Classifier(variant, device="cpu")


@no_cuda
def test_asking_for_cuda_without_one_fails_clearly(small_models: Path):
    with pytest.raises(DeviceError, match="torch sees no CUDA GPU here; use device='cpu'"):
        Classifier(small_models / "deepfake_classifier.pt2", device="cuda")
    with pytest.raises(DeviceError, match=r"has no CUDAExecutionProvider .*install onnxruntime-gpu"):
        Classifier(small_models / "deepfake_classifier.onnx", device="cuda")


@pytest.mark.parametrize("artifact", ["face_detector.onnx", "face_detector.pt2"])
def test_an_unknown_device_lists_the_valid_ones(small_models: Path, artifact: str):
    with pytest.raises(DeviceError, match=r"device 'gpu0' is not one of \['cpu', 'cuda'\]"):
        Detector(small_models / artifact, device="gpu0")


@pytest.mark.parametrize(
    "device, available, expected",
    [
        (None, [CPU], [CPU]),
        (None, [CUDA, CPU], [CUDA, CPU]),
        (None, ["AzureExecutionProvider", CPU], [CPU]),
        ("cpu", [CUDA, CPU], [CPU]),
        ("cuda", [CUDA, CPU], [CUDA, CPU]),
    ],
)
def test_onnxruntime_providers(device, available, expected):
    assert providers_for(device, available) == expected


@no_cuda
def test_building_a_tensorrt_plan_needs_a_gpu(small_models: Path):
    with pytest.raises(DeviceError, match="needs a CUDA GPU"):
        build_engine(small_models / "deepfake_classifier.onnx")
    with pytest.raises(EngineBuildError, match="INT8 needs calibration images"):
        build_engine(small_models / "deepfake_classifier.onnx", precision="int8")
    with pytest.raises(EngineBuildError, match=r"precision 'fp8' is not one of \['fp32', 'fp16', 'int8'\]"):
        build_engine(small_models / "deepfake_classifier.onnx", precision="fp8")


def test_calibration_batches_group_preprocess_and_stop_at_the_limit():
    normalise = preprocess_for("classifier", 4)
    crops = (np.arange(7 * 4 * 4 * 3) % 256).astype(np.uint8).reshape(7, 4, 4, 3)
    blocks = [crops[:3], crops[3], crops[4:]]  # a block, a single crop, a block
    batches = list(calibration_batches(blocks, batch=2, preprocess=normalise, limit=100))
    assert [b.shape for b in batches] == [(2, 3, 4, 4)] * 3  # 7 crops: 3 full batches, the 7th dropped
    np.testing.assert_allclose(batches[1][1], crops[3].transpose(2, 0, 1) / 255.0, rtol=1e-6)  # crop 3, CHW
    limited = list(calibration_batches([crops], batch=2, preprocess=normalise, limit=4))
    assert len(limited) == 2
    with pytest.raises(EngineBuildError, match=r"uint8 \(H, W, 3\), got float32"):
        list(calibration_batches([crops.astype(np.float32)], batch=2, preprocess=normalise, limit=9))


def test_a_missing_tensorrt_says_what_to_use_instead():
    from engines.backends.trt_backend import import_tensorrt
    from engines.errors import BackendUnavailableError

    try:
        import tensorrt  # noqa: F401
    except ImportError:
        with pytest.raises(BackendUnavailableError, match="TensorRT is not installed.*ONNX or torch artifact"):
            import_tensorrt()
    else:
        pytest.skip("TensorRT is installed here: tests/engines/test_tensorrt.py covers it")


@pytest.mark.parametrize("version, ok", [("10.0.1", True), ("10.13.3.9", True), ("11.0.0", False), ("8.6.1", False)])
def test_only_tensorrt_10_is_taken(version: str, ok: bool):
    from engines.backends.trt_backend import INSTALL_HINT, check_tensorrt_version
    from engines.errors import BackendUnavailableError

    assert INSTALL_HINT == "pip install 'tensorrt>=10,<11'"
    if ok:
        check_tensorrt_version(version)
    else:
        with pytest.raises(BackendUnavailableError, match=rf"TensorRT {version} is installed.*tensorrt>=10,<11"):
            check_tensorrt_version(version)
