"""engines: models as runnable artifacts (ONNX Runtime, TensorRT, torch) for pipeline and trainer."""

from engines.classifier import Classifier
from engines.crops import crop_faces
from engines.detections import Detections
from engines.detector import Detector
from engines.errors import (
    BackendUnavailableError,
    DeviceError,
    EngineBuildError,
    EngineError,
    ExportError,
    InputError,
    ManifestError,
    ManifestMismatchError,
    ModelLoadError,
    ModelNotFoundError,
)
from engines.manifest import Manifest, load_manifest

__all__ = [
    "BackendUnavailableError",
    "Classifier",
    "Detections",
    "Detector",
    "DeviceError",
    "EngineBuildError",
    "EngineError",
    "ExportError",
    "InputError",
    "Manifest",
    "ManifestError",
    "ManifestMismatchError",
    "ModelLoadError",
    "ModelNotFoundError",
    "crop_faces",
    "load_manifest",
]
