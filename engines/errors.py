"""The exceptions of engines/: every failure names the path or value and what was expected."""

from __future__ import annotations

from pathlib import Path

# ONNX files are exported from torch; every other format is built from them (and the torch reference).
REBUILD_HINT = (
    "restore the bundled pack with `git checkout models/`, or re-export: `dfwatch-train export --checkpoint CKPT` "
    "(classifier), `dfwatch-train detector --export PATH` (detector), `dfwatch-train placeholders --out DIR` "
    "(untrained placeholders)"
)
ENGINES_HINT = "rebuild the artifacts for this machine with `dfwatch-train engines --models DIR`"


def rebuild_hint(artifact: str | Path, fmt: str | None = None) -> str:
    """How to get a good copy of ``artifact``.

    ``NAME.onnx`` and the fp32 torch reference ``NAME.pt2`` are exported from the torch model: re-export.
    Everything built from them (``NAME.<variant>.pt2``, ``.engine``, ``.xml``, ``NAME.int8.onnx``):
    ``dfwatch-train engines``.
    """
    path = Path(artifact)
    exported = path.suffix in (".onnx", ".pt2") and path.name.count(".") == 1  # NAME.onnx, NAME.pt2
    if fmt is not None:
        exported = fmt in ("onnx", "torch") and exported
    return REBUILD_HINT if exported else ENGINES_HINT.replace("DIR", str(path.parent))


class EngineError(Exception):
    """Base class of every error raised by engines/."""


class ModelNotFoundError(EngineError):
    """An artifact or its manifest is not where it was asked for."""


class ManifestError(EngineError):
    """A manifest is unreadable, incomplete, or of the wrong kind."""


class ManifestMismatchError(ManifestError):
    """An artifact does not match its manifest (changed, truncated, or built elsewhere)."""


class ModelLoadError(EngineError):
    """A runtime could not load an artifact that passed the manifest checks."""


class DeviceError(EngineError):
    """A device was asked for that this machine does not have (e.g. CUDA without a GPU)."""


class BackendUnavailableError(ModelLoadError):
    """The runtime an artifact needs (TensorRT, a CUDA build of torch) is not installed here."""


class InputError(EngineError, ValueError):
    """A batch of the wrong shape or dtype was given to a Detector or Classifier."""


class ExportError(EngineError):
    """Exporting a model to ONNX failed or its outputs did not match the source model."""


class EngineBuildError(EngineError):
    """Building an artifact (TensorRT plan, torch variant) from ONNX or torch failed or did not verify."""
