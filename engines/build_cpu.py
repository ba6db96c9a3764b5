"""CPU artifacts built from ``NAME.onnx``: OpenVINO IR (fp32, INT8 through NNCF) and INT8 ONNX for ONNX Runtime.

- ``NAME.fp32.xml`` / ``NAME.int8.xml`` (+ ``.bin``): OpenVINO; INT8 by NNCF post-training quantisation
  (mixed preset: asymmetric activations, for the SiLU outputs).
- ``NAME.int8.onnx``: ONNX Runtime static quantisation (QDQ, per-channel int8 weights, uint8 activations).

INT8 quantises the convolutions and matrix products; the detector head's box decode, sigmoid and
softmax stay in float. Calibration images are uint8 RGB, preprocessed as the Detector or Classifier
would (engines/calibration.py). Every artifact is compared with ONNX Runtime on the source ONNX; an
INT8 one must also pass an accuracy check on held-out data before it may serve (``accept``, given by
the trainer, records it in the manifest's ``runtime.accuracy``; the backends refuse INT8 without it).
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np

from engines.calibration import calibration_batches, preprocess_for
from engines.errors import EngineBuildError
from engines.manifest import Manifest, load_manifest, manifest_path, sha256_file, write_manifest

logger = logging.getLogger(__name__)

CALIBRATION_BATCH = 8
INT8_TOLERANCE = 0.01  # an INT8 artifact serves only if its held-out metric is within this of fp32's
QUANTISED_OPS = ["Conv", "MatMul", "Gemm"]


def openvino_path(onnx_path: Path, precision: str) -> Path:
    return onnx_path.with_name(f"{onnx_path.stem}.{precision}.xml")


def ort_int8_path(onnx_path: Path) -> Path:
    return onnx_path.with_name(f"{onnx_path.stem}.int8.onnx")


def _batches(source: Manifest, images: Iterable[np.ndarray], limit: int) -> list[np.ndarray]:
    batches = list(
        calibration_batches(
            images, batch=CALIBRATION_BATCH, limit=limit, preprocess=preprocess_for(source.kind, source.input_size)
        )
    )
    if not batches:
        raise EngineBuildError(f"INT8 calibration of the {source.kind} got no full batch of {CALIBRATION_BATCH}")
    return batches


def _write(out: Path, source: Manifest, *, fmt: str, precision: str, runtime: dict[str, Any]) -> Manifest:
    from engines.export import framework_versions

    versions = framework_versions()
    if fmt == "openvino":
        from engines.backends.openvino_backend import import_openvino

        versions["openvino"] = import_openvino().__version__
    manifest = dataclasses.replace(
        source,
        format=fmt,
        file=out.name,
        sha256=sha256_file(out),
        precision=precision,
        device={"type": "cpu"},
        runtime=runtime,
        versions=versions,
    )
    write_manifest(out, manifest)
    return manifest


def build_openvino(
    onnx_path: Path, *, precision: str, calibration: Iterable[np.ndarray] | None = None, limit: int = 256
) -> Path:
    """``NAME.<precision>.xml`` (+ .bin) beside ``onnx_path``: fp32, or int8 calibrated on ``calibration``."""
    from engines.backends.openvino_backend import import_openvino

    if precision not in ("fp32", "int8") or (precision == "int8") != (calibration is not None):
        raise EngineBuildError(f"OpenVINO precision {precision!r}: fp32, or int8 with calibration images")
    ov = import_openvino()
    source = load_manifest(onnx_path)
    model = ov.Core().read_model(str(onnx_path))
    if precision == "int8":
        import nncf

        data = _batches(source, calibration, limit)
        ignored = nncf.IgnoredScope(types=["Sigmoid", "Multiply", "Subtract", "Divide", "Softmax"], validate=False)
        model = nncf.quantize(
            model,
            nncf.Dataset(data),
            subset_size=len(data),
            ignored_scope=ignored,
            preset=nncf.QuantizationPreset.MIXED,
        )
    out = openvino_path(onnx_path, precision)
    ov.save_model(model, str(out), compress_to_fp16=False)
    weights = out.with_suffix(".bin")
    _write(
        out,
        source,
        fmt="openvino",
        precision=precision,
        runtime={"weights": weights.name, "weights_sha256": sha256_file(weights)},
    )
    return out


def build_ort_int8(onnx_path: Path, *, calibration: Iterable[np.ndarray], limit: int = 256) -> Path:
    """``NAME.int8.onnx`` beside ``onnx_path``: ONNX Runtime static quantisation (QDQ) calibrated on ``calibration``."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    source = load_manifest(onnx_path)
    data = _batches(source, calibration, limit)
    input_name = source.io.get("input") or _input_name(onnx_path)

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.batches = iter(data)

        def get_next(self) -> dict[str, np.ndarray] | None:
            batch = next(self.batches, None)
            return None if batch is None else {input_name: batch}

    out = ort_int8_path(onnx_path)
    # reduce_range: 7-bit weights, so that u8 x s8 products cannot saturate on CPUs without VNNI (AVX2, AVX-512F);
    # without it the classifier lost 0.025 AUC here, with it 0.002.
    quantize_static(
        str(onnx_path),
        str(out),
        Reader(),
        quant_format=QuantFormat.QDQ,
        per_channel=True,
        reduce_range=True,
        activation_type=QuantType.QUInt8,
        weight_type=QuantType.QInt8,
        op_types_to_quantize=QUANTISED_OPS,
    )
    _write(out, source, fmt="onnx", precision="int8", runtime={})
    return out


def _input_name(onnx_path: Path) -> str:
    import onnxruntime as ort

    return ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"]).get_inputs()[0].name


Accept = Callable[[str, Path, Path], tuple[str, float, float]]  # (kind, fp32, int8 artifact) -> (metric, fp32, int8)


def gate_int8(artifact: Path, reference: Path, accept: Accept) -> dict[str, Any]:
    """Measure ``artifact`` (INT8) against ``reference`` (its fp32 twin) with ``accept``; record the result in its
    manifest. Within INT8_TOLERANCE it is accepted; else its files are removed and the result says why."""
    manifest = load_manifest(artifact, verify=False)
    metric, fp32, int8 = accept(manifest.kind, reference, artifact)
    result = {
        "metric": metric,
        "fp32": round(fp32, 4),
        "int8": round(int8, 4),
        "tolerance": INT8_TOLERANCE,
        "accepted": bool(fp32 - int8 <= INT8_TOLERANCE),
    }
    if result["accepted"]:
        write_manifest(artifact, dataclasses.replace(manifest, runtime=manifest.runtime | {"accuracy": result}))
    else:
        remove_artifact(artifact)
        logger.warning(
            "%s refused: %s %.4f against %.4f in fp32 (more than %.2f lower)",
            artifact.name,
            metric,
            int8,
            fp32,
            INT8_TOLERANCE,
        )
    return result


def remove_artifact(artifact: Path) -> None:
    """Delete a built artifact, its manifest and (OpenVINO) its weights."""
    weights = [artifact.with_suffix(".bin")] if artifact.suffix == ".xml" else []
    for path in (artifact, manifest_path(artifact), *weights):
        path.unlink(missing_ok=True)
