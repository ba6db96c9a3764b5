"""The paper's small CNN family (two or more conv layers, max-pool, dropout, dense, sigmoid)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class PaperCNNConfig:
    input_size: int = 256  # square crop side in pixels
    filters: tuple[int, ...] = (32, 64)  # output channels of each 3x3 conv layer (valid padding)
    kernel: int = 3  # conv kernel size
    pool: int = 2  # max-pool size after the conv stack
    dropout_conv: float = 0.25  # dropout after pooling
    dropout_dense: float = 0.5  # dropout after flatten
    dense_units: int = 0  # hidden dense layer width; 0 = flatten straight to the output unit


class PaperCNN(nn.Module):
    def __init__(self, cfg: PaperCNNConfig) -> None:
        super().__init__()
        self.cfg = cfg
        layers: list[nn.Module] = []
        channels, side = 3, cfg.input_size
        for width in cfg.filters:
            layers += [nn.Conv2d(channels, width, cfg.kernel), nn.ReLU(inplace=True)]
            channels, side = width, side - cfg.kernel + 1
        layers += [nn.MaxPool2d(cfg.pool), nn.Dropout(cfg.dropout_conv), nn.Flatten(), nn.Dropout(cfg.dropout_dense)]
        features = channels * (side // cfg.pool) ** 2
        if cfg.dense_units:
            layers += [nn.Linear(features, cfg.dense_units), nn.ReLU(inplace=True)]
            features = cfg.dense_units
        layers.append(nn.Linear(features, 1))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)  # (B, 3, S, S) -> (B, 1) logits
