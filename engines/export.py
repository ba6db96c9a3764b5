"""Export torch models to ONNX with a dynamic batch axis, verify against torch, write the manifest.

torch, onnx, onnxslim and ultralytics are imported inside the functions: the serving path
imports this module never, and loading it costs nothing.
"""

from __future__ import annotations

import logging
import platform
import warnings
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from engines.errors import ExportError
from engines.manifest import Manifest, sha256_file, write_manifest

logger = logging.getLogger(__name__)

OPSET = 17
DETECTOR_THRESHOLDS = {"confidence": 0.25, "iou": 0.45}
BATCH_MAX = 64


def framework_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for dist in ("dfwatch", "torch", "onnx", "onnxruntime", "onnxslim", "ultralytics", "tensorrt"):
        try:
            versions[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            pass
    return versions


def export_onnx(module: Any, path: Path, *, input_size: int, input_name: str, output_name: str) -> None:
    """Export ``module`` (eval mode, input (B, 3, S, S) float32) to ONNX and simplify it in place."""
    import onnx
    import onnxslim
    import torch

    dummy = torch.rand(2, 3, input_size, input_size)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        with warnings.catch_warnings():
            # The TorchScript exporter (as ultralytics uses): stable dynamic batch axes, no onnxscript.
            warnings.simplefilter("ignore", DeprecationWarning)
            torch.onnx.export(
                module,
                (dummy,),
                str(path),
                input_names=[input_name],
                output_names=[output_name],
                dynamic_axes={input_name: {0: "batch"}, output_name: {0: "batch"}},
                opset_version=OPSET,
                dynamo=False,
            )
        model = onnxslim.slim(onnx.load(str(path)))
        onnx.checker.check_model(model)
        onnx.save(model, str(path))
    except Exception as exc:
        raise ExportError(f"exporting {type(module).__name__} to {path} failed: {exc}") from exc


def verify_onnx(module: Any, path: Path, inputs: np.ndarray, *, atol: float) -> float:
    """Run ``inputs`` (B, 3, S, S) float32 through torch and ONNX Runtime; return max abs difference."""
    import onnxruntime as ort
    import torch

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    with torch.no_grad():
        expected = module(torch.from_numpy(inputs)).numpy()
    got = session.run(None, {session.get_inputs()[0].name: inputs})[0]
    diff = float(np.abs(expected - got).max())
    if not diff <= atol:
        raise ExportError(f"{path}: ONNX Runtime differs from torch by {diff:.3g} (tolerance {atol:g})")
    return diff


def finish_artifact(path: Path, **fields: Any) -> Manifest:
    """Write the manifest for a freshly exported ONNX file."""
    digest = sha256_file(path)
    manifest = Manifest(
        format="onnx",
        file=path.name,
        sha256=digest,
        source_onnx_sha256=digest,
        batch_min=1,
        batch_max=BATCH_MAX,
        precision="fp32",
        versions=framework_versions(),
        **fields,
    )
    write_manifest(path, manifest)
    return manifest


def load_yolo_detector(source: str | Path) -> Any:
    """A YOLOv8 DetectionModel in export mode from an ultralytics ``.pt`` or a model ``.yaml``.

    A ``.yaml`` (e.g. ``yolov8n.yaml``, shipped inside ultralytics) builds an untrained
    one-class network; a ``.pt`` is a trained checkpoint. Nothing is downloaded.
    """
    import torch
    from ultralytics.nn.tasks import DetectionModel

    source = str(source)
    if source.endswith((".yaml", ".yml")):
        model = DetectionModel(source, nc=1, verbose=False)
    else:
        if not Path(source).is_file():
            raise ExportError(f"detector checkpoint {source} does not exist")
        try:
            ckpt = torch.load(source, map_location="cpu", weights_only=False)
            model = (ckpt.get("ema") or ckpt["model"]).float()
            classes = model.nc
        except Exception as exc:  # a truncated file, or a checkpoint that is not an ultralytics detector
            raise ExportError(
                f"{source} is not an ultralytics YOLOv8 detector checkpoint (.pt with a 'model'): "
                f"{type(exc).__name__}: {exc}"
            ) from exc
        if classes != 1:
            raise ExportError(f"{source} has {model.nc} classes; dfwatch needs a one-class face detector")
    model = model.fuse() if hasattr(model, "fuse") else model
    model.eval()
    head = model.model[-1]
    head.export, head.format, head.dynamic = True, "onnx", True
    return model


def export_detector(
    source: str | Path,
    out: Path,
    *,
    input_size: int,
    placeholder: bool,
    training: dict | None = None,
    torch_reference: bool = True,
) -> tuple[Manifest, float]:
    """Export a YOLOv8 face detector to ``out`` (.onnx) with its manifest; returns (manifest, max diff).

    With ``torch_reference`` the same module is also written as ``out`` with suffix ``.pt2`` (a
    torch.export program, engines/build_torch.py), checked against the ONNX.
    """
    model = load_yolo_detector(source)
    atol = 1e-3 * input_size  # boxes are in pixels
    diff = _export_verified(model, out, input_size=input_size, names=("images", "output0"), atol=atol)
    manifest = finish_artifact(
        out,
        kind="detector",
        name="yolov8n-face",
        input_size=input_size,
        thresholds=dict(DETECTOR_THRESHOLDS),
        class_names=["face"],
        placeholder=placeholder,
        io=_io("images", "output0", "(N, 4 + classes, anchors), boxes cx cy w h in input pixels"),
        preprocess={"letterbox_pad": 114},
        training=training,
    )
    if torch_reference:
        _write_torch_reference(model, out, manifest)
    return manifest, diff


def export_classifier(
    module: Any,
    out: Path,
    *,
    name: str,
    input_size: int,
    crop_margin: float,
    threshold: float = 0.5,
    placeholder: bool,
    training: dict | None = None,
    torch_reference: bool = True,
    min_face: int = 0,
) -> tuple[Manifest, float]:
    """Export a classifier (logits (B, 1)) as an ONNX model that outputs P(fake) (B, 1).

    With ``torch_reference`` the same module (with its sigmoid) is also written as ``.pt2``. ``min_face`` > 0
    goes into the manifest (``preprocess.min_face``): the service scores only faces at least that many pixels
    high, for a model whose cue a smaller, upscaled face does not carry.
    """
    if min_face < 0:
        raise ExportError(f"min_face must be >= 0 pixels, got {min_face}")
    import torch

    wrapped = torch.nn.Sequential(module, torch.nn.Sigmoid()).eval()
    diff = _export_verified(wrapped, out, input_size=input_size, names=("crops", "p_fake"), atol=1e-4)
    manifest = finish_artifact(
        out,
        kind="classifier",
        name=name,
        input_size=input_size,
        thresholds={"fake": threshold},
        class_names=["fake"],
        placeholder=placeholder,
        io=_io("crops", "p_fake", "(N, 1) probability that the face is fake"),
        preprocess={"crop_margin": crop_margin} | ({"min_face": int(min_face)} if min_face else {}),
        training=training,
    )
    if torch_reference:
        _write_torch_reference(wrapped, out, manifest)
    return manifest, diff


def _write_torch_reference(module: Any, out: Path, manifest: Manifest) -> None:
    from engines.build_torch import write_torch_reference

    ref, diff = write_torch_reference(module, out, manifest)
    logger.info("wrote %s (torch.export, max |torch - onnx| = %.2g)", out.with_name(ref.file), diff)


def _export_verified(module: Any, out: Path, *, input_size: int, names: tuple[str, str], atol: float) -> float:
    """Export to ONNX, then check it against torch on a fixed random batch; returns the max abs difference."""
    export_onnx(module, out, input_size=input_size, input_name=names[0], output_name=names[1])
    sample = np.random.default_rng(0).random((2, 3, input_size, input_size), dtype=np.float32)
    return verify_onnx(module, out, sample, atol=atol)


def _io(input_name: str, output_name: str, output_layout: str) -> dict[str, Any]:
    """The manifest's description of the network's tensors (every dfwatch input is the same kind)."""
    return {
        "input": input_name,
        "layout": "NCHW",
        "dtype": "float32",
        "range": [0, 1],
        "color": "RGB",
        "output": output_name,
        "output_layout": output_layout,
    }
