"""The exceptions of engines/: every failure names the path or value and what was expected."""

from __future__ import annotations

REBUILD_HINT = (
    "rebuild the artifacts with `dfwatch-train placeholders --out DIR` "
    "(`make models` for the bundled models/ directory)"
)


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


class InputError(EngineError, ValueError):
    """A batch of the wrong shape or dtype was given to a Detector or Classifier."""


class ExportError(EngineError):
    """Exporting a model to ONNX failed or its outputs did not match the source model."""
