"""Rebuild every artifact of a model directory for this machine: the work behind ``dfwatch-train engines``.

For each ``NAME.onnx`` (with its manifest) in the directory:

1. ONNX: manifest and sha256 checked, run through ONNX Runtime, compared with the fp32 torch
   reference ``NAME.pt2`` when it is there (always).
2. TensorRT ``NAME.<precision>.engine``: where TensorRT and a GPU are (or when demanded).
3. torch ``NAME.<precision>.pt2`` with a torch.compile mode: where asked.
4. CPU: OpenVINO ``NAME.fp32.xml`` and, with calibration images, INT8 ``NAME.int8.xml`` (NNCF) and
   ``NAME.int8.onnx`` (ONNX Runtime), each INT8 one kept only if it passes its accuracy check.

Every built artifact is compared with ONNX Runtime on the same batch (engines/build_torch.py).
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from engines.errors import BackendUnavailableError, EngineError
from engines.manifest import Manifest, check_source_onnx, load_manifest, manifest_path, write_manifest

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class TorchPlan:
    precision: str  # "fp32", "fp16", "bf16"
    compile_mode: str | None  # torch.compile mode, None = eager
    device: str  # "cpu" or "cuda"


@dataclass(frozen=True)
class TensorRTPlan:
    required: bool  # fail (rather than skip) when TensorRT or a GPU is missing
    precision: str  # "fp16" or "fp32"; classifiers get "int8" when calibration images are given
    calibration: Callable[[int], Iterable[np.ndarray]] | None  # input_size -> uint8 crops, for INT8
    calibration_limit: int = 512  # crops calibration reads, at most


@dataclass(frozen=True)
class CpuPlan:
    openvino: bool  # build NAME.fp32.xml
    calibration: Callable[[Manifest], Iterable[np.ndarray]] | None = None  # uint8 images per model: INT8 builds
    accept: Callable[[str, Path, Path], tuple[str, float, float]] | None = None  # held-out metric, fp32 vs INT8
    calibration_limit: int = 256  # images calibration reads, at most


@dataclass(frozen=True)
class BuildRow:
    """One line of the summary table."""

    artifact: str
    format: str
    precision: str
    batch_range: str
    size_bytes: int | None
    build_s: float
    max_diff: float | None  # max |artifact - ONNX| on the check batch (ONNX: vs the torch reference)
    note: str = ""


def model_files(models: Path) -> list[Path]:
    """The ONNX artifacts (with manifests) in ``models``; EngineError when there are none."""
    if not models.is_dir():
        raise EngineError(f"model directory {models} does not exist")
    found = sorted(p for p in models.glob("*.onnx") if manifest_path(p).is_file() and p.name.count(".") == 1)
    if not found:
        raise EngineError(f"{models} holds no ONNX artifact with a manifest (NAME.onnx + NAME.onnx.json)")
    return found


def tensorrt_available() -> str | None:
    """None when TensorRT and a CUDA GPU are usable here, else why not."""
    from engines.backends.trt_backend import import_tensorrt
    from engines.devices import cuda_device

    try:
        import_tensorrt()
    except BackendUnavailableError:
        return "TensorRT is not installed"
    return None if cuda_device() is not None else "no CUDA GPU"


def rebuild(
    models: Path,
    *,
    tensorrt: TensorRTPlan | None,
    torch: TorchPlan | None,
    cpu: CpuPlan | None = None,
    force: bool = False,
    progress: bool = True,
) -> list[BuildRow]:
    """Verify and build the artifacts of ``models``; one BuildRow per artifact, in build order.

    A built artifact that is intact, comes from the ONNX beside it and fits this machine and the
    options (same GPU and TensorRT version; same torch precision, compile mode and device type)
    is kept and only re-verified, unless ``force``.
    """
    onnx_files = model_files(models)
    trt_missing = tensorrt_available() if tensorrt is not None else "not asked"
    if tensorrt is not None and tensorrt.required and trt_missing is not None:
        raise BackendUnavailableError(f"--tensorrt was asked for, but {trt_missing} on this machine")
    jobs: list[tuple[str, Path]] = [("onnx", p) for p in onnx_files]
    if tensorrt is not None and trt_missing is None:
        jobs += [("tensorrt", p) for p in onnx_files]
    if torch is not None:
        jobs += [("torch", p) for p in onnx_files]
    if cpu is not None and cpu.openvino:
        jobs += [("openvino", p) for p in onnx_files]
    if cpu is not None and cpu.calibration is not None:
        jobs += [(f, p) for p in onnx_files for f in ("openvino-int8", "onnxruntime-int8")]
    rows = []
    bar = tqdm(jobs, desc="engines", unit="artifact", disable=None if progress else True)
    for fmt, onnx_path in bar:
        bar.set_postfix_str(f"{onnx_path.stem} {fmt}")
        if fmt == "onnx":
            rows.append(_verify_onnx(onnx_path))
        elif fmt == "tensorrt":
            rows.append(_build_tensorrt(onnx_path, tensorrt, force=force))
        elif fmt == "torch":
            rows.append(_build_torch(onnx_path, torch, force=force))
        else:
            rows.append(_build_cpu(fmt, onnx_path, cpu))
    bar.close()
    if tensorrt is not None and trt_missing is not None:
        rows.append(BuildRow("(tensorrt)", "tensorrt", "-", "-", None, 0.0, None, f"skipped: {trt_missing}"))
    return rows


def _row(path: Path, build_s: float, diff: float | None, note: str = "") -> BuildRow:
    m = load_manifest(path, verify=False)
    size = path.stat().st_size + sum(p.stat().st_size for p in [path.with_suffix(".bin")] if path.suffix == ".xml")
    return BuildRow(path.name, m.format, m.precision, f"{m.batch_min}-{m.batch_max}", size, build_s, diff, note)


def _verify_onnx(onnx_path: Path) -> BuildRow:
    from engines.build_torch import verify_against_onnx

    start = time.perf_counter()
    manifest = load_manifest(onnx_path)  # sha256 checked
    reference = onnx_path.with_suffix(".pt2")
    if reference.is_file():
        diff = verify_against_onnx(reference, onnx_path, device="cpu")
        return _row(onnx_path, time.perf_counter() - start, diff, f"vs {reference.name}")
    from engines.backends import open_backend
    from engines.build_torch import sample_inputs

    out = open_backend(onnx_path, manifest, device="cpu").run(sample_inputs(manifest.input_size))[0]
    if not np.isfinite(out).all():
        raise EngineError(f"{onnx_path} gives non-finite outputs on a random batch")
    return _row(onnx_path, time.perf_counter() - start, None, "runs; no torch reference .pt2 to compare")


def up_to_date(path: Path, *, precision: str, matches: Callable[[Manifest], bool]) -> bool:
    """True when ``path`` is intact, built from the ONNX beside it, at ``precision``, and ``matches`` this machine."""
    if not path.is_file():
        return False
    try:
        manifest = load_manifest(path)  # sha256 checked
        check_source_onnx(path, manifest)
    except EngineError:
        return False
    return manifest.precision == precision and matches(manifest)


def _build_tensorrt(onnx_path: Path, plan: TensorRTPlan, *, force: bool) -> BuildRow:
    from engines.backends.trt_backend import import_tensorrt
    from engines.build_tensorrt import build_engine, plan_path
    from engines.build_torch import verify_against_onnx
    from engines.devices import cuda_device

    manifest = load_manifest(onnx_path, verify=False)
    precision, calibration, note = plan.precision, None, ""
    if plan.calibration is not None:
        if manifest.kind == "classifier":
            precision, calibration = "int8", plan.calibration(manifest.input_size)
        else:
            note = "INT8 calibration crops are for classifiers; detector kept at " + precision
    out = plan_path(onnx_path, precision)
    gpu, version = cuda_device(), import_tensorrt().__version__

    def same_machine(m: Manifest) -> bool:
        return gpu is not None and m.device == gpu.record() and m.versions.get("tensorrt") == version

    start = time.perf_counter()
    if not force and up_to_date(out, precision=precision, matches=same_machine):
        note = "up to date, kept" + (f"; {note}" if note else "")
    else:
        out, _ = build_engine(
            onnx_path, precision=precision, calibration=calibration, calibration_limit=plan.calibration_limit
        )
    build_s = time.perf_counter() - start
    return _row(out, build_s, verify_against_onnx(out, onnx_path), note)


def _build_torch(onnx_path: Path, plan: TorchPlan, *, force: bool) -> BuildRow:
    from engines.build_torch import build_torch_variant, variant_path, verify_against_onnx

    reference = onnx_path.with_suffix(".pt2")
    if not reference.is_file():
        raise EngineError(
            f"{reference} (the fp32 torch reference, written when the ONNX is exported) is missing: torch "
            "variants are built from it; re-export the model (dfwatch-train placeholders, or the trainer's export)"
        )
    mode = f"torch.compile {plan.compile_mode}" if plan.compile_mode else "eager"
    out = variant_path(reference, plan.precision)

    def same_plan(m: Manifest) -> bool:
        return m.runtime.get("compile") == plan.compile_mode and (m.device or {}).get("type") == plan.device

    start = time.perf_counter()
    if not force and up_to_date(out, precision=plan.precision, matches=same_plan):
        diff = verify_against_onnx(out, onnx_path, device=plan.device)
        return _row(out, time.perf_counter() - start, diff, f"{plan.device}, {mode}; up to date, kept")
    out, _, diff = build_torch_variant(
        reference, precision=plan.precision, compile_mode=plan.compile_mode, device=plan.device
    )
    return _row(out, time.perf_counter() - start, diff, f"{plan.device}, {mode}")


def _build_cpu(fmt: str, onnx_path: Path, plan: CpuPlan) -> BuildRow:
    """One CPU artifact: built, compared with ONNX Runtime on real inputs, INT8 put through its accuracy check."""
    from engines.build_cpu import _batches, build_openvino, build_ort_int8, gate_int8, remove_artifact
    from engines.build_torch import verify_against_onnx

    source = load_manifest(onnx_path)
    start = time.perf_counter()
    if fmt == "openvino":
        out, check = build_openvino(onnx_path, precision="fp32"), None
    else:
        images = list(plan.calibration(source))
        check = _batches(source, images, plan.calibration_limit)[0]  # a real batch: INT8 is calibrated on such
        if fmt == "openvino-int8":
            out = build_openvino(onnx_path, precision="int8", calibration=images, limit=plan.calibration_limit)
        else:
            out = build_ort_int8(onnx_path, calibration=images, limit=plan.calibration_limit)
    build_s = time.perf_counter() - start
    manifest = load_manifest(out)
    if manifest.precision != "int8":
        return _row(out, build_s, verify_against_onnx(out, onnx_path, device="cpu"))
    if plan.accept is None:
        raise EngineError("INT8 artifacts need an accuracy check (accept) before they may serve")
    # The backends refuse INT8 without an accepted check; while it is measured the manifest says "pending", and
    # the artifact is removed unless the check accepts it.
    pending = {"accepted": True, "metric": "pending: being measured by dfwatch-train engines"}
    write_manifest(out, dataclasses.replace(manifest, runtime=manifest.runtime | {"accuracy": pending}))
    try:
        diff = verify_against_onnx(out, onnx_path, device="cpu", inputs=check, enforce=False)
        result = gate_int8(out, onnx_path, plan.accept)
    except BaseException:
        remove_artifact(out)
        raise
    note = f"{result['metric']} {result['int8']:.4f} vs fp32 {result['fp32']:.4f}: "
    note += "accepted" if result["accepted"] else f"REFUSED (more than {result['tolerance']} lower), removed"
    if not result["accepted"]:
        return BuildRow(out.name, manifest.format, "int8", "-", None, build_s, diff, note)
    return _row(out, build_s, diff, note)


def format_table(rows: list[BuildRow]) -> str:
    """The summary as a fixed-width table."""
    header = ("artifact", "format", "precision", "batch", "size", "build s", "max |diff| vs ONNX", "note")
    lines = [header]
    for r in rows:
        size = f"{r.size_bytes / 2**20:.1f} MiB" if r.size_bytes is not None else "-"
        diff = f"{r.max_diff:.2g}" if r.max_diff is not None else "-"
        lines.append((r.artifact, r.format, r.precision, r.batch_range, size, f"{r.build_s:.1f}", diff, r.note))
    widths = [max(len(str(line[i])) for line in lines) for i in range(len(header))]
    return "\n".join("  ".join(str(c).ljust(w) for c, w in zip(line, widths)).rstrip() for line in lines)
