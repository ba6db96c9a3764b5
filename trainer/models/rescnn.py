"""A small residual CNN for face-swap traces: optional fixed high-pass front end, residual stages, global pooling.

Beyond the paper's family, for what generalises to real swaps when trained from scratch on a CPU:

- ``srm``: three fixed SRM high-pass filters (Fridrich & Kodovsky's residual kernels, as in
  steganalysis and RGB-N forensics) applied to the grey image and stacked onto the RGB input,
  so the first layer sees noise residuals (blending seams, resampling, noise mismatch) as
  directly as colour;
- residual stages with BatchNorm (trainable from scratch in few epochs);
- a pooled head instead of flatten + dense: a trace scores the same wherever it is in the crop,
  and the head has few weights to overfit with. ``pool="avg"`` averages the features, then one
  dense unit; ``pool="lse"`` scores every location (a 1x1 conv) and pools the scores with a
  log-sum-exp, a soft maximum: a crop is as fake as its most blended region, and regions with
  no evidence (flat skin, a black canvas around a cut-out face) add little.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from trainer.models._registry import ModelConfigError, register

# SRM residual kernels, each padded to 5x5: a 1-D second-order one, the 3x3 second-order "SQUARE" and the 5x5 "KV"
_SRM_KERNELS = (
    [[0, 0, 0, 0, 0], [0, 0, 0, 0, 0], [0, 1, -2, 1, 0], [0, 0, 0, 0, 0], [0, 0, 0, 0, 0]],
    [[0, 0, 0, 0, 0], [0, -1, 2, -1, 0], [0, 2, -4, 2, 0], [0, -1, 2, -1, 0], [0, 0, 0, 0, 0]],
    [[-1, 2, -2, 2, -1], [2, -6, 8, -6, 2], [-2, 8, -12, 8, -2], [2, -6, 8, -6, 2], [-1, 2, -2, 2, -1]],
)
_SRM_SCALE = (2.0, 4.0, 12.0)  # divide each kernel by this, so residuals of [0, 1] images stay near [-1, 1]
POOLS = ("avg", "lse")
LSE_SHARPNESS = 4.0  # r in (1/r) log mean exp(r z): 0 would be the mean of the scores, infinity their maximum


@dataclass(frozen=True)
class ResCNNConfig:
    input_size: int = 192  # square crop side in pixels
    stem: int = 24  # channels of the stem conv (3x3)
    stem_stride: int = 2  # stride of the stem conv (1 keeps full resolution for the first stage)
    widths: tuple[int, ...] = (32, 64, 128)  # channels of each residual stage; each stage halves the side
    blocks: tuple[int, ...] = (1, 1, 1)  # residual blocks per stage (the first one strides)
    srm: bool = True  # stack the three fixed SRM residuals of the grey image onto RGB (6 input channels)
    dropout: float = 0.2  # before the output layer
    pool: str = "avg"  # "avg": average the features, one dense unit; "lse": score each location, soft maximum

    def __post_init__(self) -> None:
        object.__setattr__(self, "widths", tuple(int(w) for w in self.widths))  # JSON gives lists
        object.__setattr__(self, "blocks", tuple(int(b) for b in self.blocks))
        if not self.widths or len(self.widths) != len(self.blocks):
            raise ModelConfigError(f"rescnn: widths {self.widths} and blocks {self.blocks} need one entry per stage")
        if min(self.widths) < 1 or min(self.blocks) < 1 or self.stem < 1 or self.stem_stride not in (1, 2):
            raise ModelConfigError(
                f"rescnn: widths, blocks and stem must be >= 1 and stem_stride 1 or 2, got widths {self.widths}, "
                f"blocks {self.blocks}, stem {self.stem}, stem_stride {self.stem_stride}"
            )
        if self.pool not in POOLS:
            raise ModelConfigError(f"rescnn: pool {self.pool!r} is not one of {list(POOLS)}")
        if not 0.0 <= self.dropout < 1.0:
            raise ModelConfigError(f"rescnn: dropout must be in [0, 1), got {self.dropout}")
        if self.input_size // self.stem_stride // 2 ** len(self.widths) < 1:
            raise ModelConfigError(f"rescnn: input_size {self.input_size} is too small for {len(self.widths)} stages")

    def build(self) -> ResCNN:
        return ResCNN(self)


class _Block(nn.Module):
    """conv3x3 - BN - ReLU - conv3x3 - BN, plus the input (projected when the shape changes), ReLU."""

    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(cin, cout, 3, stride, 1, bias=False),
            nn.BatchNorm2d(cout),
            nn.ReLU(inplace=True),
            nn.Conv2d(cout, cout, 3, 1, 1, bias=False),
            nn.BatchNorm2d(cout),
        )
        self.skip = (
            nn.Identity()
            if stride == 1 and cin == cout
            else nn.Sequential(
                nn.AvgPool2d(stride) if stride > 1 else nn.Identity(),
                nn.Conv2d(cin, cout, 1, bias=False),
                nn.BatchNorm2d(cout),
            )
        )
        self.act = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.body(x) + self.skip(x))


class _SRM(nn.Module):
    """(B, 3, S, S) RGB in [0, 1] -> (B, 6, S, S): RGB and the three SRM residuals of its grey image."""

    def __init__(self) -> None:
        super().__init__()
        k = torch.tensor(_SRM_KERNELS, dtype=torch.float32) / torch.tensor(_SRM_SCALE)[:, None, None]  # (3, 5, 5)
        grey = torch.tensor([0.299, 0.587, 0.114])  # (3,)
        weight = k[:, None] * grey[None, :, None, None]  # (3 out, 3 in, 5, 5): filter of the grey image
        self.register_buffer("weight", weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        residual = nn.functional.conv2d(x, self.weight, padding=2)  # (B, 3, S, S)
        return torch.cat([x, residual], dim=1)  # (B, 6, S, S)


class ResCNN(nn.Module):
    def __init__(self, cfg: ResCNNConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.srm = _SRM() if cfg.srm else nn.Identity()
        cin = 6 if cfg.srm else 3
        self.stem = nn.Sequential(
            nn.Conv2d(cin, cfg.stem, 3, cfg.stem_stride, 1, bias=False), nn.BatchNorm2d(cfg.stem), nn.ReLU(inplace=True)
        )
        layers: list[nn.Module] = []
        channels = cfg.stem
        for width, n in zip(cfg.widths, cfg.blocks):
            for i in range(n):
                layers.append(_Block(channels, width, 2 if i == 0 else 1))
                channels = width
        self.stages = nn.Sequential(*layers)
        if cfg.pool == "avg":
            self.head = nn.Sequential(
                nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(cfg.dropout), nn.Linear(channels, 1)
            )
        else:
            self.head = nn.Sequential(nn.Dropout(cfg.dropout), nn.Conv2d(channels, 1, 1), _LogSumExpPool())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(self.srm(x))  # (B, 3, S, S) -> (B, stem, S / stem_stride, ...)
        return self.head(self.stages(x))  # (B, C, s, s) -> (B, 1) logits


class _LogSumExpPool(nn.Module):
    """(B, 1, h, w) location scores -> (B, 1): (1/r) log mean exp(r z), between their mean and their maximum."""

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        z = z.flatten(1) * LSE_SHARPNESS  # (B, h * w)
        return (torch.logsumexp(z, dim=1, keepdim=True) - math.log(z.shape[1])) / LSE_SHARPNESS  # (B, 1)


@register
def rescnn(**overrides) -> ResCNNConfig:
    """The residual family's default: SRM front end, stem 24 (stride 2), stages 32-64-128 of one block each."""
    return ResCNNConfig(**overrides)
