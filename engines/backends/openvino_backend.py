"""OpenVINO backend (CPU): an IR (``NAME.<precision>.xml`` + ``.bin``) built by ``dfwatch-train engines --openvino``.

The weights file is checked against the sha256 its manifest records (the manifest's own sha256 is the
.xml's). An INT8 artifact serves only with the accuracy check of its build in its manifest
(``runtime.accuracy``, within 0.01 of fp32): see engines/build_cpu.py.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from engines.devices import check_device_option
from engines.errors import BackendUnavailableError, DeviceError, ManifestMismatchError, ModelLoadError, rebuild_hint
from engines.manifest import Manifest, sha256_file

logger = logging.getLogger(__name__)


def import_openvino() -> Any:
    """``import openvino``, or BackendUnavailableError that says what to use instead."""
    try:
        import openvino
    except ImportError as exc:
        raise BackendUnavailableError(
            f"OpenVINO is not installed in this Python ({exc}); run the ONNX artifact instead, or pip install openvino"
        ) from exc
    return openvino


def check_accepted(artifact: Path, manifest: Manifest) -> None:
    """An INT8 artifact must carry its accepted accuracy check; fp32 and fp16 need none."""
    if manifest.precision != "int8":
        return
    accuracy = manifest.runtime.get("accuracy") or {}
    if accuracy.get("accepted") is not True:
        raise ManifestMismatchError(
            f"{artifact} is INT8 without an accepted accuracy check in its manifest (runtime.accuracy: {accuracy}); "
            f"INT8 serves only within 0.01 of fp32: {rebuild_hint(artifact, manifest.format)} --int8 --media DIR"
        )


class OpenVINOBackend:
    def __init__(
        self, artifact: Path, manifest: Manifest, *, threads: int | None = None, device: str | None = None
    ) -> None:
        check_device_option(device)
        if device == "cuda":
            raise DeviceError(f"{artifact} is an OpenVINO artifact: dfwatch runs OpenVINO on CPU, not on 'cuda'")
        check_accepted(artifact, manifest)
        weights = artifact.with_name(manifest.runtime.get("weights", artifact.with_suffix(".bin").name))
        if not weights.is_file() or sha256_file(weights) != manifest.runtime.get("weights_sha256"):
            raise ManifestMismatchError(
                f"{weights} is missing or does not match the manifest of {artifact}; "
                f"{rebuild_hint(artifact, manifest.format)}"
            )
        ov = import_openvino()
        config: dict[str, Any] = {"INFERENCE_NUM_THREADS": int(threads)} if threads else {}
        if manifest.precision != "int8":  # on CPUs with bf16 units OpenVINO would run an fp32 model in bf16
            config["INFERENCE_PRECISION_HINT"] = "f32"
        try:
            core = _core(ov)
            self.compiled = core.compile_model(core.read_model(str(artifact), str(weights)), "CPU", config)
        except Exception as exc:  # OpenVINO raises its own untyped errors
            hint = rebuild_hint(artifact, "openvino")
            raise ModelLoadError(f"OpenVINO cannot load {artifact}: {exc}; {hint}") from exc
        self.request = self.compiled.create_infer_request()
        self.outputs = list(self.compiled.outputs)
        self.name = f"openvino-cpu-{manifest.precision}"
        logger.debug("%s: %s on %s", manifest.kind, artifact, self.name)

    def run(self, batch: np.ndarray) -> list[np.ndarray]:
        result = self.request.infer({0: np.ascontiguousarray(batch)})
        return [np.array(result[o]) for o in self.outputs]  # copies: the request reuses its buffers


_CORE: Any = None


def _core(ov: Any) -> Any:
    """One OpenVINO Core for the process: every model compiles on it, and it lives as long as the process.

    A Core per model was destroyed with its model; after three in-process service runs that destroyed theirs, a
    later, unrelated step of the same process (torch and h5py in a test) crashed with a segmentation fault.
    """
    global _CORE
    if _CORE is None:
        _CORE = ov.Core()
    return _CORE
