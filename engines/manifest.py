"""The JSON manifest that sits beside every model artifact and describes it.

``models/face_detector.onnx`` is described by ``models/face_detector.onnx.json``. Loading an
artifact reads its manifest, checks the kind and the file's sha256, and fails with a message
that says how to rebuild when they do not match.

``precision`` is the dtype the artifact computes in (and, for torch, the dtype of the weights in
the file). ``device`` is None for artifacts that run anywhere (ONNX, the fp32 torch reference);
artifacts built for a device record it: ``{"type": "cuda", "name": "NVIDIA H200",
"capability": "9.0"}`` (TensorRT plans must match name and capability; torch variants only the
type, since torch.compile compiles for the GPU it finds) or ``{"type": "cpu"}``.
"""

from __future__ import annotations

import hashlib
import json
import types
import typing
from dataclasses import MISSING, asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from engines.errors import ManifestError, ManifestMismatchError, ModelNotFoundError, rebuild_hint

SCHEMA = 1
KINDS = ("detector", "classifier")
FORMATS = ("onnx", "openvino", "tensorrt", "torch")


@dataclass(frozen=True)
class Manifest:
    kind: str  # "detector" or "classifier"
    name: str  # architecture name, e.g. "yolov8n-face", "paper_cnn"
    format: str  # "onnx", "openvino", "tensorrt" or "torch": selects the backend
    file: str  # artifact file name, beside the manifest
    sha256: str  # of the artifact file
    input_size: int  # square network input side in pixels
    batch_min: int  # smallest batch the artifact accepts
    batch_max: int  # largest batch the artifact accepts
    precision: str  # "fp32", "fp16", "bf16", "int8": the dtype it computes in (torch: of its weights too)
    thresholds: dict[str, float]  # detector: confidence, iou; classifier: fake
    class_names: list[str]  # detector: ["face"]; classifier: ["fake"] (output = P(fake))
    source_onnx_sha256: str  # the ONNX file every other format was built from
    versions: dict[str, str]  # frameworks that built it
    placeholder: bool = False  # True for untrained networks: outputs mean nothing
    io: dict[str, Any] = field(default_factory=dict)  # input/output tensor names, layout
    preprocess: dict[str, Any] = field(default_factory=dict)  # e.g. crop margin, scale
    device: dict[str, Any] | None = None  # where it must run: None = anywhere; see engines/devices.py
    training: dict[str, Any] | None = None  # provenance of the weights, if trained
    runtime: dict[str, Any] = field(default_factory=dict)  # backend options fixed at build, e.g. torch compile mode
    schema: int = SCHEMA

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True) + "\n"


def manifest_path(artifact: str | Path) -> Path:
    artifact = Path(artifact)
    return artifact.with_name(artifact.name + ".json")


def sha256_file(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_manifest(artifact: str | Path, manifest: Manifest) -> Path:
    path = manifest_path(artifact)
    path.write_text(manifest.to_json())
    return path


def load_manifest(artifact: str | Path, *, kind: str | None = None, verify: bool = True) -> Manifest:
    """Read and check the manifest of ``artifact``.

    Raises ModelNotFoundError when the artifact or its manifest is missing, ManifestError when
    the manifest is unreadable or of another kind, ManifestMismatchError when the artifact's
    sha256 differs from the manifest (a truncated or replaced file).
    """
    artifact = Path(artifact)
    hint = rebuild_hint(artifact)
    if not artifact.is_file():
        raise ModelNotFoundError(f"model file {artifact} does not exist; {hint}")
    mpath = manifest_path(artifact)
    if not mpath.is_file():
        raise ModelNotFoundError(f"model file {artifact} has no manifest {mpath}; {hint}")
    try:
        raw = json.loads(mpath.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ManifestError(f"manifest {mpath} is not valid JSON ({exc}); {hint}") from exc
    if not isinstance(raw, dict):
        raise ManifestError(f"manifest {mpath} must hold a JSON object; {hint}")
    names = {f.name for f in fields(Manifest)}
    required = {f.name for f in fields(Manifest) if f.default is MISSING and f.default_factory is MISSING}
    missing = sorted(required - raw.keys())
    if missing:
        raise ManifestError(f"manifest {mpath} lacks fields {missing}; {hint}")
    unknown = sorted(raw.keys() - names)
    if unknown:
        raise ManifestError(f"manifest {mpath} has unknown fields {unknown}; valid: {sorted(names)}")
    _check_types(raw, mpath, hint)
    manifest = Manifest(**raw)
    hint = rebuild_hint(artifact, manifest.format)
    if manifest.schema != SCHEMA:
        raise ManifestError(f"manifest {mpath} has schema {manifest.schema}, this dfwatch reads {SCHEMA}; {hint}")
    if manifest.kind not in KINDS:
        raise ManifestError(f"manifest {mpath}: kind {manifest.kind!r} is not one of {list(KINDS)}")
    if manifest.format not in FORMATS:
        raise ManifestError(f"manifest {mpath}: format {manifest.format!r} is not one of {list(FORMATS)}")
    if kind is not None and manifest.kind != kind:
        raise ManifestError(f"{artifact} is a {manifest.kind} artifact, expected a {kind}")
    if manifest.file != artifact.name:
        raise ManifestMismatchError(f"manifest {mpath} describes {manifest.file!r}, not {artifact.name!r}; {hint}")
    if verify:
        actual = sha256_file(artifact)
        if actual != manifest.sha256:
            raise ManifestMismatchError(
                f"{artifact} does not match its manifest (sha256 {actual[:12]}..., manifest says "
                f"{manifest.sha256[:12]}...): the file was changed or truncated; {hint}"
            )
    return manifest


def _check_types(raw: dict[str, Any], mpath: Path, hint: str) -> None:
    """ManifestError naming the field when a value has the wrong JSON type (a string batch_max failed later, raw)."""
    hints = typing.get_type_hints(Manifest)
    for name, value in raw.items():
        declared = hints[name]
        union = typing.get_origin(declared) in (typing.Union, types.UnionType)
        allowed = tuple(
            object if t is Any else typing.get_origin(t) or t
            for t in (typing.get_args(declared) if union else (declared,))
        )
        if not isinstance(value, allowed) or (isinstance(value, bool) and not {bool, object} & set(allowed)):
            names = " or ".join("null" if t is type(None) else t.__name__ for t in allowed)
            raise ManifestError(f"manifest {mpath}: field {name!r} must be {names}, got {value!r}; {hint}")
    if not 1 <= raw["batch_min"] <= raw["batch_max"] or raw["input_size"] < 1:
        raise ManifestError(
            f"manifest {mpath}: needs 1 <= batch_min <= batch_max and input_size >= 1, got "
            f"{raw['batch_min']}, {raw['batch_max']}, {raw['input_size']}; {hint}"
        )


def source_onnx_path(artifact: str | Path) -> Path:
    """The ONNX file an artifact was built from, by the naming rule NAME[.variant].ext -> NAME.onnx."""
    artifact = Path(artifact)
    return artifact.with_name(artifact.name.split(".", 1)[0] + ".onnx")


def check_source_onnx(artifact: str | Path, manifest: Manifest) -> None:
    """Fail when the ONNX beside a built artifact is not the one it was built from (a stale build).

    Nothing to check for ONNX files themselves, or when the source ONNX is not beside the artifact
    (an artifact may travel alone).
    """
    if manifest.format == "onnx":
        return
    source = source_onnx_path(artifact)
    if not manifest_path(source).is_file():
        return
    try:
        current = json.loads(manifest_path(source).read_text()).get("sha256")
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, AttributeError):
        return  # the ONNX's own loading reports a broken manifest
    if current != manifest.source_onnx_sha256:
        raise ManifestMismatchError(
            f"{artifact} was built from another {source.name} (source sha256 {manifest.source_onnx_sha256[:12]}..., "
            f"the ONNX beside it is {str(current)[:12]}...): it is stale; {rebuild_hint(artifact, manifest.format)}"
        )
