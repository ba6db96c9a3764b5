"""The EfficientNet B0-B7 family (torchvision, untrained: ``weights=None``, nothing is downloaded).

The network normalises its [0, 1] input with the ImageNet statistics itself and ends in one
logit, so it answers the same interface as every other registered model.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from trainer.models._registry import ModelConfigError, register

VARIANTS = ("b0", "b1", "b2", "b3", "b4", "b5", "b6", "b7")
NATIVE_SIZE = {"b0": 224, "b1": 240, "b2": 260, "b3": 300, "b4": 380, "b5": 456, "b6": 528, "b7": 600}
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class EfficientNetConfig:
    variant: str = "b0"  # "b0" ... "b7": width, depth and default dropout of the torchvision model
    input_size: int = 256  # square crop side in pixels (any size works: the head pools globally)
    dropout: float | None = None  # classifier dropout; None = torchvision's default for the variant
    stochastic_depth: float = 0.2  # stochastic depth probability of the last block
    normalize: bool = True  # normalise the [0, 1] input with the ImageNet mean and std

    def __post_init__(self) -> None:
        if self.variant not in VARIANTS:
            raise ModelConfigError(f"efficientnet: variant {self.variant!r} is not one of {list(VARIANTS)}")
        if self.dropout is not None and not 0.0 <= self.dropout < 1.0:
            raise ModelConfigError(f"efficientnet: dropout must be in [0, 1), got {self.dropout}")
        if not 0.0 <= self.stochastic_depth < 1.0:
            raise ModelConfigError(f"efficientnet: stochastic_depth must be in [0, 1), got {self.stochastic_depth}")
        if self.input_size < 32:
            raise ModelConfigError(
                f"efficientnet: input_size must be >= 32 (five stride-2 stages), got {self.input_size}"
            )

    def build(self) -> EfficientNetClassifier:
        return EfficientNetClassifier(self)


class EfficientNetClassifier(nn.Module):
    def __init__(self, cfg: EfficientNetConfig) -> None:
        super().__init__()
        from torchvision import models

        self.cfg = cfg
        kwargs = {"num_classes": 1, "stochastic_depth_prob": cfg.stochastic_depth}
        if cfg.dropout is not None:
            kwargs["dropout"] = cfg.dropout
        self.net = getattr(models, f"efficientnet_{cfg.variant}")(weights=None, **kwargs)
        # torchvision draws the head from U(-1/sqrt(classes), +) = U(-1, 1) for one class: logits of
        # several units at the start and a first epoch spent shrinking them; start near P = 0.5 instead
        head = self.net.classifier[-1]
        nn.init.normal_(head.weight, std=0.01)
        nn.init.zeros_(head.bias)
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.cfg.normalize:
            x = (x - self.mean) / self.std  # (B, 3, S, S)
        return self.net(x)  # (B, 1) logits


def _efficientnet(variant: str, overrides: dict) -> EfficientNetConfig:
    return EfficientNetConfig(**{"variant": variant, **overrides})


@register
def efficientnet_b0(**overrides) -> EfficientNetConfig:
    return _efficientnet("b0", overrides)


@register
def efficientnet_b1(**overrides) -> EfficientNetConfig:
    return _efficientnet("b1", overrides)


@register
def efficientnet_b2(**overrides) -> EfficientNetConfig:
    return _efficientnet("b2", overrides)


@register
def efficientnet_b3(**overrides) -> EfficientNetConfig:
    return _efficientnet("b3", overrides)


@register
def efficientnet_b4(**overrides) -> EfficientNetConfig:
    return _efficientnet("b4", overrides)


@register
def efficientnet_b5(**overrides) -> EfficientNetConfig:
    return _efficientnet("b5", overrides)


@register
def efficientnet_b6(**overrides) -> EfficientNetConfig:
    return _efficientnet("b6", overrides)


@register
def efficientnet_b7(**overrides) -> EfficientNetConfig:
    return _efficientnet("b7", overrides)
