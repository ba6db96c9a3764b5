"""Which device an artifact runs on: the `device` option, what this machine has, the manifest's record.

A manifest's ``device`` is None for artifacts that run anywhere (ONNX, the fp32 torch reference),
``{"type": "cpu"}`` for a variant built for CPUs, and for GPU builds
``{"type": "cuda", "name": "NVIDIA H200", "capability": "9.0"}``. A TensorRT plan only runs on
the GPU model it was built for (same name and compute capability); a torch variant needs only a
GPU, as torch.compile compiles for the GPU it finds.

torch is imported inside the functions: the ONNX Runtime serving path never needs it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from engines.errors import DeviceError, ManifestMismatchError, rebuild_hint
from engines.manifest import Manifest

logger = logging.getLogger(__name__)

DEVICES = ("cpu", "cuda")


@dataclass(frozen=True)
class CudaDevice:
    """The GPU this process would run on."""

    name: str  # e.g. "NVIDIA H200"
    capability: str  # compute capability "major.minor", e.g. "9.0"

    def record(self) -> dict[str, str]:
        """The manifest's ``device`` for an artifact built on this GPU."""
        return {"type": "cuda", "name": self.name, "capability": self.capability}


def cuda_device() -> CudaDevice | None:
    """The current CUDA device as torch sees it, or None without torch, a CUDA build or a GPU."""
    try:
        import torch
    except ImportError:
        return None
    if not torch.cuda.is_available():
        return None
    index = torch.cuda.current_device()
    major, minor = torch.cuda.get_device_capability(index)
    return CudaDevice(name=torch.cuda.get_device_name(index), capability=f"{major}.{minor}")


def check_device_option(device: str | None) -> None:
    if device is not None and device not in DEVICES:
        raise DeviceError(f"device {device!r} is not one of {list(DEVICES)} (or None: the artifact's own)")


def resolve_torch_device(device: str | None, manifest: Manifest, artifact: Path) -> str:
    """The device a torch artifact runs on: the option, else the manifest's device type, else "cpu".

    Fails with DeviceError when CUDA is asked for and absent, and with ManifestMismatchError when
    the artifact was built for CUDA and this machine has none.
    """
    check_device_option(device)
    recorded = (manifest.device or {}).get("type")
    chosen = device or recorded or "cpu"
    if chosen == "cuda" and cuda_device() is None:
        if recorded == "cuda" and device is None:
            raise ManifestMismatchError(
                f"{artifact} was built for CUDA ({_describe(manifest.device)}) and this machine has no "
                f"CUDA GPU that torch can use; {rebuild_hint(artifact, manifest.format)}"
            )
        raise DeviceError(f"device 'cuda' was asked for {artifact}, but torch sees no CUDA GPU here; use device='cpu'")
    if recorded == "cuda" and chosen == "cpu":
        raise ManifestMismatchError(
            f"{artifact} was built for CUDA ({_describe(manifest.device)}, {manifest.precision}), not for device "
            f"'cpu'; load the fp32 reference beside it or {rebuild_hint(artifact, manifest.format)}"
        )
    return chosen


def check_gpu_match(manifest: Manifest, artifact: Path, current: CudaDevice | None) -> None:
    """A GPU-specific artifact (TensorRT plan) must run on the GPU model it was built for.

    ``current`` is this machine's GPU (``cuda_device()``), passed in so the rule is testable anywhere.
    """
    recorded = manifest.device or {}
    if recorded.get("type") != "cuda" or "name" not in recorded or "capability" not in recorded:
        raise ManifestMismatchError(
            f"manifest of {artifact} does not record the GPU it was built for (device {manifest.device!r}); "
            f"{rebuild_hint(artifact, manifest.format)}"
        )
    if current is None:
        raise ManifestMismatchError(
            f"{artifact} was built for {_describe(recorded)} and this machine has no CUDA GPU; run the ONNX "
            f"artifact beside it instead, or {rebuild_hint(artifact, manifest.format)} on a GPU machine"
        )
    if (current.name, current.capability) != (recorded["name"], recorded["capability"]):
        raise ManifestMismatchError(
            f"{artifact} was built for {_describe(recorded)}, this machine has {current.name} "
            f"(compute capability {current.capability}); {rebuild_hint(artifact, manifest.format)}"
        )


def _describe(device: dict | None) -> str:
    if not device:
        return "any device"
    if device.get("type") == "cuda" and "name" in device:
        return f"{device['name']} (compute capability {device.get('capability', '?')})"
    return str(device.get("type"))
