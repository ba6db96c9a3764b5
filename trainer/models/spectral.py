"""Band statistics of the face at native resolution: a fixed frequency front end and a small learned head.

What a face swap leaves that survives broadcast compression is largely spectral: the swapped
face was generated at a lower resolution than the frame and pasted back, so the finest octave
inside the face is weaker, relative to the octave below, than in a real face of the same size.
A CNN trained from scratch on a few thousand faces learns the look of its training faces before
it learns that; this family measures it directly and learns only how to weigh it. The default is
the shipped head (``models/deepfake_classifier.md``): 2 octaves, the inner face, their slope.

Front end (fixed, no weights): the grey image's Laplacian-style pyramid, ``bands`` octaves
(``|p_k - up(p_{k+1})|``, ``p_{k+1}`` the 2x2 average of ``p_k``); for each band, the log mean
absolute and the log root-mean-square value over the inner face (an ellipse inside the face box:
eyes, nose, mouth, cheeks). The head sees each band's statistics minus the next octave's: log
ratios between neighbouring octaves, which do not move with the face's contrast or sharpness as
a whole, only with the shape of its spectrum, so the head cannot learn "soft face = fake".

Crops come from ``engines.crop_faces``: the face box is the centred square of side
``S / (1 + 2 * margin)``; ``margin`` must be the crop margin of the store and the manifest
(0.25 in the pack), or the inner face sits in the wrong place.

Options that did not ship (the octaves' levels, a ring around the face, the chroma difference
between face and ring) are recorded with their numbers in ``research/README.md``; a checkpoint
that names them at the values built here (``regions="inner"``, ``chroma=False``,
``statistics="slopes"``) still loads.

Head: BatchNorm over the statistics, dropout, then one dense unit (``hidden=0``) or one hidden
layer. Input (B, 3, S, S) float32 in [0, 1] -> fake logits (B, 1), like every family; it exports
to ONNX (pooling, bilinear resize, elementwise ops).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from trainer.models._registry import ModelConfigError, register

INNER = (0.28, 0.36, 0.05)  # inner-face ellipse: half-width, half-height, centre offset down; fractions of the box
EPS = 1e-4  # floor of every statistic before its log
# options of the studies that did not ship (research/README.md) -> the one value built now; older checkpoints name them
RETIRED = {"regions": "inner", "chroma": False, "statistics": "slopes"}


@dataclass(frozen=True)
class SpectralConfig:
    input_size: int = 256  # square crop side; the statistics are of the crop at this side, resized once
    bands: int = 2  # octaves of the pyramid (each halves the side); the head sees bands - 1 slopes
    hidden: int = 0  # 0: a linear head; else one hidden layer of this width
    dropout: float = 0.1  # on the statistics, before the head
    margin: float = 0.25  # the crop margin the inner face is placed for (engines.crop_faces)

    def __post_init__(self) -> None:
        if self.bands < 2:
            raise ModelConfigError(f"spectral: slopes compare neighbouring bands and need 2 or more, got {self.bands}")
        if self.input_size >> self.bands < 4:
            raise ModelConfigError(
                f"spectral: {self.bands} bands need an input of at least {4 << self.bands} px, got {self.input_size}"
            )
        if self.hidden < 0:
            raise ModelConfigError(f"spectral: hidden must be >= 0, got {self.hidden}")
        if not 0.0 <= self.dropout < 1.0:
            raise ModelConfigError(f"spectral: dropout must be in [0, 1), got {self.dropout}")
        if not 0.0 <= self.margin <= 1.0:
            raise ModelConfigError(f"spectral: margin must be in [0, 1], got {self.margin}")

    @property
    def features(self) -> int:
        return 2 * (self.bands - 1)  # (mean |band|, rms) of the inner face, per pair of neighbouring octaves

    def build(self) -> SpectralNet:
        return SpectralNet(self)


def box_units(size: int, margin: float) -> torch.Tensor:
    """(size,) pixel centres of a crop side in face-box units from the crop's centre (crop_faces' box at ``margin``)."""
    return (torch.arange(size, dtype=torch.float32) + 0.5 - size / 2) / (size / (1 + 2 * margin))


def _ellipse(size: int, margin: float, half_w: float, half_h: float, down: float = 0.0) -> torch.Tensor:
    """(size, size) float mask of an ellipse in face-box units, centred in the crop (``down``: shifted down)."""
    c = box_units(size, margin)
    y, x = c[:, None] - down, c[None, :]
    return ((x / half_w) ** 2 + (y / half_h) ** 2 <= 1.0).float()


class BandStatistics(nn.Module):
    """(B, 3, S, S) in [0, 1] -> (B, 2 * bands): per band the log mean |band| and log rms over the inner face,
    band-major. ``inner`` (S, S) replaces the inner-face ellipse with another region of the face."""

    def __init__(self, size: int, bands: int, margin: float, *, inner: torch.Tensor | None = None) -> None:
        super().__init__()
        self.bands = bands
        self.register_buffer("grey", torch.tensor([0.299, 0.587, 0.114]).reshape(1, 3, 1, 1))
        inner = _ellipse(size, margin, *INNER) if inner is None else inner
        self.register_buffer("inner", inner[None, None])  # (1, 1, S, S)

    @staticmethod
    def _mean(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        """Weighted mean over the image of x (B, C, h, w) with weights w (B or 1, 1, h, w) -> (B, C)."""
        return (x * w).sum(dim=(2, 3)) / (w.sum(dim=(2, 3)) + 1e-6)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = nn.functional
        p = (x * self.grey).sum(dim=1, keepdim=True)  # (B, 1, S, S)
        region = self.inner  # (1, 1, S, S), halved with each octave
        stats: list[torch.Tensor] = []
        for _ in range(self.bands):
            low = f.avg_pool2d(p, 2)
            band = p - f.interpolate(low, scale_factor=2.0, mode="bilinear", align_corners=False)
            stats.append(torch.log(self._mean(band.abs(), region) + EPS))
            stats.append(0.5 * torch.log(self._mean(band * band, region) + EPS * EPS))
            p, region = low, f.avg_pool2d(region, 2)
        return torch.cat(stats, dim=1)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs) -> None:
        state_dict.pop(prefix + "ring", None)  # a checkpoint of the ring's days carries its mask; nothing reads it now
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)


def octave_slopes(levels: torch.Tensor, bands: int) -> torch.Tensor:
    """(B, bands * k) per-band log statistics (k per band, band-major, as ``BandStatistics`` lays them out) ->
    (B, (bands - 1) * k): each band's statistics minus the next octave's, the log ratios of neighbouring octaves."""
    b = levels.reshape(levels.shape[0], bands, -1)
    return (b[:, :-1] - b[:, 1:]).flatten(1)


class SpectralNet(nn.Module):
    def __init__(self, cfg: SpectralConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.stats = BandStatistics(cfg.input_size, cfg.bands, cfg.margin)
        n = cfg.features
        layers: list[nn.Module] = [nn.BatchNorm1d(n), nn.Dropout(cfg.dropout)]
        if cfg.hidden:
            layers += [nn.Linear(n, cfg.hidden), nn.ReLU(inplace=True), nn.Linear(cfg.hidden, 1)]
        else:
            layers.append(nn.Linear(n, 1))
        self.head = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.statistics(x))  # (B, 3, S, S) -> (B, F) -> (B, 1) logits

    def statistics(self, x: torch.Tensor) -> torch.Tensor:
        """What the head sees: (B, 3, S, S) -> (B, F), each band's log statistics minus the next octave's."""
        return octave_slopes(self.stats(x), self.cfg.bands)  # (B, 2 * bands) -> (B, 2 * (bands - 1))


@register
def spectral(**overrides) -> SpectralConfig:
    """Band statistics at 256: the slope of the inner face's finest octave against the next, linear head."""
    for name, built in RETIRED.items():
        if name in overrides and (value := overrides.pop(name)) != built:
            raise ModelConfigError(
                f"spectral: {name}={value!r} was a study that did not ship (research/README.md); valid: [{built!r}]"
            )
    return SpectralConfig(**overrides)
