"""Band statistics of the face at native resolution: a fixed frequency front end and a small learned head.

What a face swap leaves that survives broadcast compression is largely spectral: the swapped
face was generated at a lower resolution than the frame and pasted back, so the finest octave
inside the face is weaker (relative to the octave below) than in a real face of the same size,
and the inner face and its surroundings differ in sharpness, noise and colour. A CNN trained
from scratch on a few thousand faces learns the look of its training faces before it learns
that; this family measures it directly and learns only how to weigh it. Measured on the held-out
real swaps (``models/deepfake_classifier.md``): trained on self-blends alone, a head on the octaves'
levels weighs the inner face's finest octave (how soft the face is), not its slope against the next
octave, which ``dfwatch-train cues`` shows is the trace that holds on Celeb-DF; with
``statistics="slopes"`` (the default pack) the head sees only the slopes.

Front end (fixed, no weights): the grey image's Laplacian-style pyramid, ``bands`` octaves
(``|p_k - up(p_{k+1})|``, ``p_{k+1}`` the 2x2 average of ``p_k``); for each band, the mean
absolute and the root-mean-square value over two regions of the crop: the inner face (an
ellipse inside the face box: eyes, nose, mouth, cheeks) and a ring around it (jaw line,
forehead, hair, a little background), or the inner face alone (``regions="inner"``: the head can
then weigh only how the octaves of the face compare, not how the face compares to its frame).
A black canvas around a cut-out face is left out of the ring. Colour: the inner face's mean
chroma (R-G, B-G) minus the ring's, signed and absolute. Band statistics are logs, so ratios
between bands and regions are differences the head can weigh linearly.

Crops come from ``engines.crop_faces``: the face box is the centred square of side
``S / (1 + 2 * margin)``; ``margin`` must be the crop margin of the store and the manifest
(0.25 in the pack), or the regions sit in the wrong place.

``statistics="slopes"``: the head sees, per region, each band's log statistics minus the next
octave's (log ratios between neighbouring octaves, ``dfwatch-train cues``' ``octave_slope`` among
them) instead of the levels. A ratio does not move with the face's contrast or sharpness as a
whole, only with the shape of its spectrum, so the head cannot learn "soft face = fake".

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
RING = ((0.46, 0.56), (0.62, 0.72))  # ring between two centred ellipses (half-width, half-height), same units
CANVAS = 0.02  # grey below this (a black canvas) is left out of the ring, with a 4 px border
EPS = 1e-4  # floor of every statistic before its log
REGIONS = ("inner", "both")
STATISTICS = ("levels", "slopes")


@dataclass(frozen=True)
class SpectralConfig:
    input_size: int = 256  # square crop side; the statistics are of the crop at this side, resized once
    bands: int = 4  # octaves of the pyramid (each halves the side)
    hidden: int = 0  # 0: a linear head; else one hidden layer of this width
    dropout: float = 0.1  # on the statistics, before the head
    margin: float = 0.25  # the crop margin the regions are placed for (engines.crop_faces)
    regions: str = "both"  # band statistics of "inner" (the inner face alone) or "both" (inner face and ring)
    chroma: bool = True  # add the chroma difference between inner face and ring (signed and absolute)
    statistics: str = "levels"  # the head sees each band's log statistics ("levels") or minus the next's ("slopes")

    def __post_init__(self) -> None:
        if self.bands < 1 or self.input_size >> self.bands < 4:
            raise ModelConfigError(
                f"spectral: {self.bands} bands need an input of at least {4 << self.bands} px, got {self.input_size}"
            )
        if self.hidden < 0:
            raise ModelConfigError(f"spectral: hidden must be >= 0, got {self.hidden}")
        if not 0.0 <= self.dropout < 1.0:
            raise ModelConfigError(f"spectral: dropout must be in [0, 1), got {self.dropout}")
        if self.regions not in REGIONS:
            raise ModelConfigError(f"spectral: regions {self.regions!r} is not one of {list(REGIONS)}")
        if self.statistics not in STATISTICS:
            raise ModelConfigError(f"spectral: statistics {self.statistics!r} is not one of {list(STATISTICS)}")
        if self.statistics == "slopes" and self.bands < 2:
            raise ModelConfigError(f"spectral: slopes compare neighbouring bands and need 2 or more, got {self.bands}")
        if not 0.0 <= self.margin <= 1.0:
            raise ModelConfigError(f"spectral: margin must be in [0, 1], got {self.margin}")

    @property
    def features(self) -> int:
        rows = self.bands - (self.statistics == "slopes")  # slopes: one per pair of neighbouring bands
        return self.per_band * rows + (4 if self.chroma else 0)  # and the chroma difference, signed and absolute

    @property
    def per_band(self) -> int:
        return 4 if self.regions == "both" else 2  # (mean |band|, rms) x (inner[, ring])

    def build(self) -> SpectralNet:
        return SpectralNet(self)


def _box_units(size: int, margin: float) -> torch.Tensor:
    """(size,) pixel centres of a crop side in face-box units from the crop's centre (crop_faces' box at ``margin``)."""
    return (torch.arange(size, dtype=torch.float32) + 0.5 - size / 2) / (size / (1 + 2 * margin))


def _ellipse(size: int, margin: float, half_w: float, half_h: float, down: float = 0.0) -> torch.Tensor:
    """(size, size) float mask of an ellipse in face-box units, centred in the crop (``down``: shifted down)."""
    c = _box_units(size, margin)
    y, x = c[:, None] - down, c[None, :]
    return ((x / half_w) ** 2 + (y / half_h) ** 2 <= 1.0).float()


def rect_mask(size: int, margin: float, rect: tuple[float, float, float, float]) -> torch.Tensor:
    """(size, size) float mask of the rectangle ``rect`` = (x0, x1, y0, y1) in face-box units, y down."""
    c = _box_units(size, margin)
    x0, x1, y0, y1 = rect
    return ((c[:, None] >= y0) & (c[:, None] <= y1) & (c[None, :] >= x0) & (c[None, :] <= x1)).float()


class BandStatistics(nn.Module):
    """(B, 3, S, S) in [0, 1] -> (B, F) statistics (module docstring): the chroma difference (R-G, B-G) signed and
    absolute (``chroma=True``), then per band the log mean |band| and log rms of the inner face (and of the ring,
    ``ring=True``). ``inner`` (S, S) replaces the inner-face ellipse with another region of the face."""

    def __init__(
        self,
        size: int,
        bands: int,
        margin: float,
        *,
        ring: bool = True,
        chroma: bool = True,
        inner: torch.Tensor | None = None,
    ) -> None:
        super().__init__()
        self.bands, self.use_ring, self.use_chroma = bands, ring, chroma
        self.register_buffer("grey", torch.tensor([0.299, 0.587, 0.114]).reshape(1, 3, 1, 1))
        inner = _ellipse(size, margin, *INNER) if inner is None else inner
        self.register_buffer("inner", inner[None, None])  # (1, 1, S, S)
        ring = _ellipse(size, margin, *RING[1]) * (1.0 - _ellipse(size, margin, *RING[0]))
        self.register_buffer("ring", ring[None, None])

    @staticmethod
    def _mean(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        """Weighted mean over the image of x (B, C, h, w) with weights w (B or 1, 1, h, w) -> (B, C)."""
        return (x * w).sum(dim=(2, 3)) / (w.sum(dim=(2, 3)) + 1e-6)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = nn.functional
        g = (x * self.grey).sum(dim=1, keepdim=True)  # (B, 1, S, S)
        regions = [self.inner]  # (1, 1, S, S) each; the ring only where a statistic uses it
        stats: list[torch.Tensor] = []
        if self.use_ring or self.use_chroma:
            dark = (g < CANVAS).float()
            ring = self.ring * (1.0 - f.max_pool2d(dark, 9, stride=1, padding=4))  # (B, 1, S, S): canvas left out
            if self.use_chroma:  # mean chroma of the inner face minus the ring's
                chroma = torch.cat([x[:, 0:1] - x[:, 1:2], x[:, 2:3] - x[:, 1:2]], dim=1)  # (B, 2, S, S)
                diff = self._mean(chroma, self.inner) - self._mean(chroma, ring)  # (B, 2)
                stats += [diff, diff.abs()]
            if self.use_ring:
                regions.append(ring)
        p = g
        for _ in range(self.bands):
            low = f.avg_pool2d(p, 2)
            band = p - f.interpolate(low, scale_factor=2.0, mode="bilinear", align_corners=False)
            for region in regions:
                stats.append(torch.log(self._mean(band.abs(), region) + EPS))
                stats.append(0.5 * torch.log(self._mean(band * band, region) + EPS * EPS))
            p, regions = low, [f.avg_pool2d(r, 2) for r in regions]
        return torch.cat(stats, dim=1)


def octave_slopes(levels: torch.Tensor, bands: int) -> torch.Tensor:
    """(B, bands * k) per-band log statistics (k per band, band-major, as ``BandStatistics`` lays them out) ->
    (B, (bands - 1) * k): each band's statistics minus the next octave's, the log ratios of neighbouring octaves."""
    b = levels.reshape(levels.shape[0], bands, -1)
    return (b[:, :-1] - b[:, 1:]).flatten(1)


class SpectralNet(nn.Module):
    def __init__(self, cfg: SpectralConfig) -> None:
        super().__init__()
        self.cfg = cfg
        ring = cfg.regions == "both"
        self.stats = BandStatistics(cfg.input_size, cfg.bands, cfg.margin, ring=ring, chroma=cfg.chroma)
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
        """What the head sees: (B, 3, S, S) -> (B, F)."""
        s = self.stats(x)  # (B, [4 chroma +] bands * per_band)
        if self.cfg.statistics == "slopes":  # each band's log statistics minus the next octave's: log ratios
            lead = 4 if self.cfg.chroma else 0
            s = torch.cat([s[:, :lead], octave_slopes(s[:, lead:], self.cfg.bands)], dim=1)
        return s


@register
def spectral(**overrides) -> SpectralConfig:
    """Band statistics at 256 (4 octaves, inner face and ring, chroma difference), linear head."""
    return SpectralConfig(**overrides)
