"""The paper's small CNN family: conv blocks, max- or average-pooling, dropout, dense, one logit.

``paper_cnn`` is the network the paper's search picked (conv 32 -> conv 64 -> max-pool ->
dropout -> flatten -> dropout -> dense); the family's other members differ in the config only.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from trainer.models._registry import ModelConfigError, register

POOL_TYPES = ("max", "avg")


@dataclass(frozen=True)
class PaperCNNConfig:
    input_size: int = 256  # square crop side in pixels
    filters: tuple[int, ...] = (32, 64)  # output channels of each conv block (conv + ReLU, valid padding)
    kernel: int = 3  # conv kernel size
    pool: int = 2  # pooling window and stride
    pool_type: str = "max"  # "max" or "avg"
    pool_every: bool = False  # pool after every conv block; False = once after the stack (the paper)
    dropout_conv: float = 0.25  # dropout after the (last) pooling
    dropout_dense: float = 0.5  # dropout after flatten
    dense_units: int = 0  # hidden dense layer width; 0 = flatten straight to the output unit
    batch_norm: bool = False  # conv -> BatchNorm -> ReLU (beyond the paper: trains far faster from scratch)

    def __post_init__(self) -> None:
        object.__setattr__(self, "filters", tuple(int(f) for f in self.filters))  # JSON gives lists
        if not self.filters or min(self.filters) < 1:
            raise ModelConfigError(f"paper_cnn: filters must be one or more positive widths, got {self.filters}")
        if self.pool_type not in POOL_TYPES:
            raise ModelConfigError(f"paper_cnn: pool_type {self.pool_type!r} is not one of {list(POOL_TYPES)}")
        for name in ("dropout_conv", "dropout_dense"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ModelConfigError(f"paper_cnn: {name} must be in [0, 1), got {getattr(self, name)}")
        if self.kernel < 1 or self.pool < 1 or self.dense_units < 0:
            raise ModelConfigError(
                f"paper_cnn: kernel ({self.kernel}) and pool ({self.pool}) must be >= 1, "
                f"dense_units ({self.dense_units}) >= 0"
            )
        if self.feature_side() < 1:
            raise ModelConfigError(
                f"paper_cnn: input_size {self.input_size} is too small for {len(self.filters)} blocks of "
                f"kernel {self.kernel} with pool {self.pool} (pool_every={self.pool_every})"
            )

    def feature_side(self) -> int:
        """Side of the last feature map, before flatten."""
        side = self.input_size
        for _ in self.filters:
            side -= self.kernel - 1
            if self.pool_every:
                side //= self.pool
        return side if self.pool_every else side // self.pool

    def build(self) -> PaperCNN:
        return PaperCNN(self)


class PaperCNN(nn.Module):
    def __init__(self, cfg: PaperCNNConfig) -> None:
        super().__init__()
        self.cfg = cfg
        pool = nn.MaxPool2d if cfg.pool_type == "max" else nn.AvgPool2d
        layers: list[nn.Module] = []
        channels = 3
        for width in cfg.filters:
            if cfg.batch_norm:
                layers += [nn.Conv2d(channels, width, cfg.kernel, bias=False), nn.BatchNorm2d(width)]
            else:
                layers.append(nn.Conv2d(channels, width, cfg.kernel))
            layers.append(nn.ReLU(inplace=True))
            if cfg.pool_every:
                layers.append(pool(cfg.pool))
            channels = width
        if not cfg.pool_every:
            layers.append(pool(cfg.pool))
        layers += [nn.Dropout(cfg.dropout_conv), nn.Flatten(), nn.Dropout(cfg.dropout_dense)]
        features = channels * cfg.feature_side() ** 2
        if cfg.dense_units:
            layers += [nn.Linear(features, cfg.dense_units), nn.ReLU(inplace=True)]
            features = cfg.dense_units
        layers.append(nn.Linear(features, 1))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)  # (B, 3, S, S) -> (B, 1) logits


@register
def paper_cnn(**overrides) -> PaperCNNConfig:
    """The CNN the paper's search picked: conv 32 -> conv 64 -> max-pool -> dropout -> dense."""
    return PaperCNNConfig(**overrides)


@register
def paper_cnn_deep(**overrides) -> PaperCNNConfig:
    """A deeper member of the family: three blocks 32-64-128, pooled after each, dense 128."""
    return PaperCNNConfig(**{"filters": (32, 64, 128), "pool_every": True, "dense_units": 128, **overrides})
