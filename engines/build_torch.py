"""Build torch artifacts: the fp32 reference ``NAME.pt2`` and compiled variants ``NAME.<precision>.pt2``.

The reference is a ``torch.export`` program of the very module the ONNX was exported from, with a
dynamic batch axis; it needs no model code (ultralytics, the trainer's registry) to run. A variant
is the reference with its weights cast to fp16/bf16 (or kept fp32), exported again, and a manifest
whose ``runtime.compile`` names the torch.compile mode the backend applies when loading it.
Every artifact is checked against ONNX Runtime running the source ONNX.

torch is imported inside the functions.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from engines.devices import cuda_device, resolve_torch_device
from engines.errors import EngineBuildError
from engines.manifest import Manifest, load_manifest, sha256_file, write_manifest

logger = logging.getLogger(__name__)

PRECISIONS = ("fp32", "fp16", "bf16")
# Allowed max |artifact - ONNX| as a fraction of the largest output magnitude (at least 1).
RELATIVE_TOLERANCE = {"fp32": 1e-4, "fp16": 1e-2, "bf16": 4e-2, "int8": 1e-1}


def tolerance(precision: str, reference: np.ndarray) -> float:
    return RELATIVE_TOLERANCE[precision] * max(1.0, float(np.abs(reference).max()))


def export_program(module: Any, out: Path, *, input_size: int, batch_max: int, dtype: Any = None) -> None:
    """``torch.export`` ``module`` with a dynamic batch axis (1..batch_max) and save it to ``out``."""
    import torch
    from torch.export import Dim

    dtype = dtype or torch.float32
    example = torch.rand(2, 3, input_size, input_size).to(dtype)  # (2, 3, S, S)
    try:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore", UserWarning)  # ultralytics assigns head attributes in forward
            program = torch.export.export(
                module, (example,), dynamic_shapes=({0: Dim("batch", min=1, max=batch_max)},), strict=False
            )
        with contextlib.suppress(AttributeError):  # a torch without the setter keeps them (a bigger file)
            program.example_inputs = None  # else the file carries the (2, 3, S, S) example batch
        out.parent.mkdir(parents=True, exist_ok=True)
        torch.export.save(program, str(out))
    except Exception as exc:
        raise EngineBuildError(f"torch.export of {type(module).__name__} to {out} failed: {exc}") from exc


def onnx_reference(onnx_path: Path, inputs: np.ndarray) -> np.ndarray:
    """The source ONNX's output for ``inputs`` (B, 3, S, S) float32, on ONNX Runtime's CPU provider."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: inputs})[0]


def sample_inputs(input_size: int, batch: int = 2, *, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).random((batch, 3, input_size, input_size), dtype=np.float32)


def verify_against_onnx(
    artifact: Path,
    onnx_path: Path,
    *,
    device: str | None = None,
    inputs: np.ndarray | None = None,
    enforce: bool = True,
) -> float:
    """Run ``artifact`` through its backend and the source ONNX on the same batch; fail beyond tolerance.

    ``enforce=False`` only measures (INT8: raw outputs of unlikely anchors move far; an accuracy check decides).
    """
    from engines.backends import open_backend

    manifest = load_manifest(artifact)
    inputs = sample_inputs(manifest.input_size) if inputs is None else inputs
    expected = onnx_reference(onnx_path, inputs)
    got = open_backend(artifact, manifest, device=device).run(inputs)[0]
    if got.shape != expected.shape:
        raise EngineBuildError(f"{artifact}: output shape {got.shape} differs from the ONNX's {expected.shape}")
    diff = float(np.abs(got - expected).max())
    allowed = tolerance(manifest.precision, expected)
    if enforce and not diff <= allowed:
        raise EngineBuildError(
            f"{artifact} ({manifest.precision}) differs from {onnx_path.name} by {diff:.3g} (tolerance {allowed:.3g})"
        )
    return diff


def write_torch_reference(module: Any, onnx_path: Path, onnx_manifest: Manifest) -> tuple[Manifest, float]:
    """Write ``NAME.pt2`` (fp32, any device) beside ``onnx_path`` from the module the ONNX came from."""
    from engines.export import framework_versions

    out = onnx_path.with_suffix(".pt2")
    export_program(module, out, input_size=onnx_manifest.input_size, batch_max=onnx_manifest.batch_max)
    manifest = dataclasses.replace(
        onnx_manifest,
        format="torch",
        file=out.name,
        sha256=sha256_file(out),
        precision="fp32",
        device=None,
        runtime={"compile": None},
        versions=framework_versions(),
    )
    write_manifest(out, manifest)
    return manifest, verify_against_onnx(out, onnx_path, device="cpu")


def variant_path(reference: Path, precision: str) -> Path:
    """Where the variant of ``NAME.pt2`` at ``precision`` goes: ``NAME.<precision>.pt2`` beside it."""
    return reference.with_name(f"{reference.name.split('.', 1)[0]}.{precision}.pt2")


def build_torch_variant(
    reference: Path, *, precision: str, compile_mode: str | None, device: str
) -> tuple[Path, Manifest, float]:
    """Build ``NAME.<precision>.pt2`` for ``device`` from the fp32 reference ``NAME.pt2``.

    Returns (path, manifest, max |diff| vs the source ONNX); the check also compiles the batch
    sizes it runs, which fills torch.compile's on-disk cache for this machine.
    """
    from engines.backends.torch_backend import COMPILE_MODES, DTYPES, load_program
    from engines.export import framework_versions
    from engines.manifest import source_onnx_path

    if precision not in PRECISIONS:
        raise EngineBuildError(f"torch precision {precision!r} is not one of {list(PRECISIONS)}")
    if compile_mode is not None and compile_mode not in COMPILE_MODES:
        raise EngineBuildError(f"torch.compile mode {compile_mode!r} is not one of {list(COMPILE_MODES)} (or None)")
    ref_manifest = load_manifest(reference)
    if ref_manifest.format != "torch" or ref_manifest.precision != "fp32":
        raise EngineBuildError(f"{reference} is not an fp32 torch reference (format {ref_manifest.format})")
    device = resolve_torch_device(device, ref_manifest, reference)
    if precision == "fp16" and device == "cpu":
        raise EngineBuildError("fp16 torch variants are for CUDA (--device cuda); on CPU use bf16 or fp32")
    onnx_path = source_onnx_path(reference)
    out = variant_path(reference, precision)
    start = time.perf_counter()
    module = load_program(reference, device="cpu").to(DTYPES[precision])
    export_program(
        module, out, input_size=ref_manifest.input_size, batch_max=ref_manifest.batch_max, dtype=DTYPES[precision]
    )
    gpu = cuda_device() if device == "cuda" else None
    manifest = dataclasses.replace(
        ref_manifest,
        file=out.name,
        sha256=sha256_file(out),
        precision=precision,
        device=gpu.record() if gpu else {"type": "cpu"},
        runtime={"compile": compile_mode},
        versions=framework_versions(),
    )
    write_manifest(out, manifest)
    diff = verify_against_onnx(out, onnx_path, device=device)
    logger.info("built %s in %.1f s (max |diff| vs ONNX %.3g)", out, time.perf_counter() - start, diff)
    return out, manifest, diff
