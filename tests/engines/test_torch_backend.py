"""The torch backend against ONNX Runtime on real frames: parity, variants, bad input, mismatched manifests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from engines import Classifier, Detector, InputError, ManifestError, ManifestMismatchError
from engines.build_torch import build_torch_variant
from engines.errors import DeviceError, EngineBuildError, ModelLoadError
from engines.letterbox import letterbox_batch
from engines.manifest import load_manifest, manifest_path, sha256_file
from tests.engines.conftest import CLASSIFIER_SIZE, DETECTOR_SIZE, face_crops


def test_export_writes_a_torch_reference_tied_to_its_onnx(small_models: Path):
    onnx = load_manifest(small_models / "face_detector.onnx")
    ref = load_manifest(small_models / "face_detector.pt2", kind="detector")
    assert (ref.format, ref.precision, ref.device, ref.runtime) == ("torch", "fp32", None, {"compile": None})
    assert ref.source_onnx_sha256 == onnx.sha256 and ref.sha256 == sha256_file(small_models / "face_detector.pt2")
    assert (ref.input_size, ref.batch_max, ref.thresholds) == (DETECTOR_SIZE, onnx.batch_max, onnx.thresholds)


def test_detector_torch_matches_onnx_runtime_on_real_frames(small_models: Path, frames: np.ndarray):
    ort_det = Detector(small_models / "face_detector.onnx", conf=0.001)
    torch_det = Detector(small_models / "face_detector.pt2", conf=0.001)
    assert (ort_det.backend_name, torch_det.backend_name) == ("onnxruntime-cpu", "torch-cpu-eager-fp32")
    batch, _ = letterbox_batch(list(frames), DETECTOR_SIZE)  # (4, 3, 320, 320)
    expected, got = ort_det.artifact.run(batch)[0], torch_det.artifact.run(batch)[0]
    assert got.shape == expected.shape == (4, 5, 2100)
    assert np.abs(got - expected).max() < 1e-2  # box coordinates in pixels of a 320 input
    assert np.abs(got[:, 4] - expected[:, 4]).max() < 1e-4  # face scores
    dets = torch_det(frames)
    assert len(dets) > 0 and set(dets.frame_index.tolist()) <= {0, 1, 2, 3}
    assert (dets.xyxy[:, [0, 2]] <= frames.shape[2]).all() and (dets.xyxy[:, [1, 3]] <= frames.shape[1]).all()


def test_classifier_torch_matches_onnx_runtime_on_real_face_crops(small_models: Path, frames: np.ndarray):
    crops = face_crops(frames, CLASSIFIER_SIZE)
    expected = Classifier(small_models / "deepfake_classifier.onnx")(crops)
    torch_cls = Classifier(small_models / "deepfake_classifier.pt2", device="cpu")
    np.testing.assert_allclose(torch_cls(crops), expected, atol=1e-5)
    big = np.repeat(crops, 20, axis=0)  # 80 crops: two chunks of at most batch_max 64
    np.testing.assert_allclose(torch_cls(big), np.repeat(expected, 20), atol=1e-5)


def test_empty_batches_and_bad_input_through_torch(small_models: Path):
    detector = Detector(small_models / "face_detector.pt2")
    classifier = Classifier(small_models / "deepfake_classifier.pt2")
    assert len(detector([])) == 0 and len(detector(np.zeros((0, 48, 64, 3), np.uint8))) == 0
    assert classifier(np.zeros((0, CLASSIFIER_SIZE, CLASSIFIER_SIZE, 3), np.uint8)).shape == (0,)
    with pytest.raises(InputError, match=r"uint8 RGB frames \(N, H, W, 3\), got float32"):
        detector(np.zeros((1, 48, 64, 3), np.float32))
    with pytest.raises(InputError, match=r"\(n, 64, 64, 3\), got uint8 \(2, 64, 64, 1\)"):
        classifier(np.zeros((2, 64, 64, 1), np.uint8))


def test_bf16_variant_is_close_to_onnx_and_recorded(models_copy: Path, frames: np.ndarray):
    out, manifest, diff = build_torch_variant(
        models_copy / "deepfake_classifier.pt2", precision="bf16", compile_mode=None, device="cpu"
    )
    assert out.name == "deepfake_classifier.bf16.pt2" and manifest_path(out).is_file()
    assert (manifest.precision, manifest.device, manifest.runtime) == ("bf16", {"type": "cpu"}, {"compile": None})
    assert out.stat().st_size < 0.6 * (models_copy / "deepfake_classifier.pt2").stat().st_size  # 2-byte weights
    crops = face_crops(frames, CLASSIFIER_SIZE)
    variant = Classifier(out)
    assert variant.backend_name == "torch-cpu-eager-bf16"
    np.testing.assert_allclose(variant(crops), Classifier(models_copy / "deepfake_classifier.onnx")(crops), atol=2e-2)
    assert 0 <= diff < 2e-2


def test_compiled_variant_runs_padded_batches(models_copy: Path, frames: np.ndarray):
    out, manifest, _ = build_torch_variant(
        models_copy / "deepfake_classifier.pt2", precision="fp32", compile_mode="default", device="cpu"
    )
    assert manifest.runtime == {"compile": "default"}
    compiled = Classifier(out)
    assert compiled.backend_name == "torch-cpu-compiled-default-fp32"
    crops = face_crops(frames, CLASSIFIER_SIZE)[:3]  # 3 crops: padded to a batch of 4, sliced back to 3
    expected = Classifier(models_copy / "deepfake_classifier.onnx")(crops)
    np.testing.assert_allclose(compiled(crops), expected, atol=1e-4)


@pytest.mark.parametrize(
    "options, error, message",
    [
        ({"precision": "int4", "compile_mode": None, "device": "cpu"}, EngineBuildError, r"not one of \['fp32'"),
        ({"precision": "fp32", "compile_mode": "turbo", "device": "cpu"}, EngineBuildError, "mode 'turbo' is not"),
        ({"precision": "fp16", "compile_mode": None, "device": "cpu"}, EngineBuildError, "fp16 torch variants are"),
        ({"precision": "fp32", "compile_mode": None, "device": "tpu"}, DeviceError, r"'tpu' is not one of"),
    ],
)
def test_bad_variant_options_are_refused(models_copy: Path, options, error, message):
    with pytest.raises(error, match=message):
        build_torch_variant(models_copy / "face_detector.pt2", **options)


def test_torch_artifacts_check_their_manifest(models_copy: Path):
    with pytest.raises(ManifestError, match="is a detector artifact, expected a classifier"):
        Classifier(models_copy / "face_detector.pt2")
    reference = models_copy / "deepfake_classifier.pt2"
    variant, _, _ = build_torch_variant(reference, precision="bf16", compile_mode=None, device="cpu")
    for path, hint in (
        (reference, "git checkout models/.*export --checkpoint CKPT.*detector --export.*placeholders"),
        (variant, "dfwatch-train engines"),
    ):
        path.write_bytes(path.read_bytes()[:4096])
        with pytest.raises(ManifestMismatchError, match=f"changed or truncated; .*{hint}"):
            Classifier(path)


def test_a_torch_artifact_built_from_another_onnx_is_stale(models_copy: Path):
    import json

    onnx_manifest = manifest_path(models_copy / "face_detector.onnx")
    raw = json.loads(onnx_manifest.read_text())
    raw["sha256"] = "0" * 64  # as if the ONNX had been re-exported since the .pt2 was built
    onnx_manifest.write_text(json.dumps(raw))
    with pytest.raises(ManifestMismatchError, match=r"built from another face_detector\.onnx.*stale"):
        Detector(models_copy / "face_detector.pt2")


def test_garbage_that_matches_its_manifest_fails_to_load(models_copy: Path):
    import json

    path = models_copy / "face_detector.pt2"
    path.write_bytes(b"not a zip archive")
    raw = json.loads(manifest_path(path).read_text())
    raw["sha256"] = sha256_file(path)
    manifest_path(path).write_text(json.dumps(raw))
    with pytest.raises(ModelLoadError, match=r"torch cannot load .*face_detector\.pt2"):
        Detector(path)


class _Marker:
    """Unpickling this creates a file: what arbitrary code in a model file could do instead."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self):
        return (open, (str(self.path), "w"))


def test_a_pt2_that_would_unpickle_code_is_refused_before_torch_loads_it(models_copy: Path, tmp_path: Path):
    """torch.export.load unpickles sample inputs with weights_only=False when the safe load fails: a model
    file could run code, and the sha256 in its manifest only proves it is the file the manifest names."""
    import io
    import json
    import zipfile

    import torch

    marker = tmp_path / "code-ran"
    payload = io.BytesIO()
    torch.save(_Marker(marker), payload)
    artifact = models_copy / "deepfake_classifier.pt2"
    evil = tmp_path / "evil.pt2"
    with zipfile.ZipFile(artifact) as src, zipfile.ZipFile(evil, "w") as out:
        for info in src.infolist():
            data = payload.getvalue() if info.filename.endswith("sample_inputs/model.pt") else src.read(info)
            out.writestr(info, data)
    evil.replace(artifact)
    raw = json.loads(manifest_path(artifact).read_text())
    raw["sha256"] = sha256_file(artifact)  # an attacker replaces both files
    manifest_path(artifact).write_text(json.dumps(raw))
    with pytest.raises(ModelLoadError, match=r"sample_inputs/model.pt holds \d+ bytes of sample inputs, a pickle"):
        Classifier(artifact)
    assert not marker.exists()


def _tamper(artifact: Path, *, add: dict[str, bytes], constants: dict | None = None) -> None:
    """Rewrite the ``.pt2`` at ``artifact`` with members ``add`` (``ROOT`` in a name: the archive's root folder)
    and ``constants`` entries added to its constants config, and its manifest's sha256 with it (an attacker
    replaces both)."""
    import json
    import zipfile

    tampered = artifact.with_suffix(".tampered")
    with zipfile.ZipFile(artifact) as src, zipfile.ZipFile(tampered, "w") as out:
        root = src.namelist()[0].split("/", 1)[0]
        for info in src.infolist():
            data = src.read(info)
            if constants and info.filename.endswith("_constants_config.json"):
                config = json.loads(data)
                config["config"].update(constants)
                data = json.dumps(config).encode()
            out.writestr(info, data)
        for name, data in add.items():
            out.writestr(name.replace("ROOT", root), data)
    tampered.replace(artifact)
    raw = json.loads(manifest_path(artifact).read_text())
    raw["sha256"] = sha256_file(artifact)
    manifest_path(artifact).write_text(json.dumps(raw))


def _opaque_constant(payload: bytes) -> dict:
    """A constants-config entry that sends ``payload`` to torch's ``pickle.loads`` (opaque objects are unpickled
    whatever the entry's ``use_pickle`` says; a tensor_meta gets it past torch's own checks)."""
    meta = {
        "dtype": 1,  # uint8: any payload length is a whole number of elements
        "sizes": [{"as_int": len(payload)}],
        "strides": [{"as_int": 1}],
        "storage_offset": {"as_int": 0},
        "requires_grad": False,
        "device": {"type": "cpu", "index": None},
        "layout": 7,
    }
    return {"opaque": {"path_name": "opaque_obj_0", "is_param": False, "use_pickle": False, "tensor_meta": meta}}


def test_a_pt2_with_an_opaque_object_constant_is_refused_and_its_payload_never_runs(models_copy: Path, tmp_path: Path):
    """Issue 23 item 2: torch.export.load unpickles ``opaque_obj_*`` constants with ``pickle.loads`` before the load
    fails; the old check looked only at ``use_pickle`` and ``.pt``/``.pkl`` members, so the payload ran."""
    import pickle

    marker = tmp_path / "code-ran"
    payload = pickle.dumps(_Marker(marker))
    artifact = models_copy / "deepfake_classifier.pt2"
    _tamper(artifact, add={"ROOT/data/constants/opaque_obj_0": payload}, constants=_opaque_constant(payload))
    with pytest.raises(ModelLoadError, match=r"entry 'opaque' .*opaque_obj_0.* is not a raw tensor payload"):
        Classifier(artifact)
    assert not marker.exists()


@pytest.mark.parametrize(
    ("member", "refused"),
    [
        ("ROOT/data/constants/opaque_obj_0", r"member '[^']*data/constants/opaque_obj_0' is not one"),
        ("ROOT/data/constants/custom_obj_0", r"member '[^']*data/constants/custom_obj_0' is not one"),
        ("ROOT/data/weights/model.pt", r"member '[^']*data/weights/model.pt' is not one"),  # legacy: weights_only=False
        ("ROOT/data/weights/payload.pkl", r"member '[^']*payload.pkl' is not one"),
        ("ROOT/extra/module_info.json", r"member '[^']*extra/module_info.json' is not one"),
        ("ROOT/data/aotinductor/model/model.so", r"member '[^']*model.so' is not one"),
        ("other/data/weights/weight_0", r"has one root folder"),
        ("ROOT/data/weights/weight_0", r"appear twice"),
    ],
)
def test_only_the_members_of_a_weights_only_export_are_allowed(models_copy: Path, tmp_path: Path, member, refused):
    """An allow-list, not a denylist: any member a weights-only ``torch.export.save`` does not write is refused
    before torch opens the archive, and the payload (a pickle that would write a marker) never runs."""
    import pickle
    import warnings

    marker = tmp_path / "code-ran"
    artifact = models_copy / "face_detector.pt2"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # zipfile warns of the duplicate name it is asked to write
        _tamper(artifact, add={member: pickle.dumps(_Marker(marker))})
    with pytest.raises(ModelLoadError, match=refused):
        Detector(artifact)
    assert not marker.exists()
