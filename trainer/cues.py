"""Training-free cues of a face swap, measured on the held-out real fakes as a baseline to beat.

Each cue scores a face crop (higher = more likely swapped) from the fixed frequency statistics of
``trainer.models.spectral`` (grey pyramid, inner-face ellipse), with nothing learned:

- ``inner_sharpness``: minus the log mean |finest octave| of the inner face. A swapped face is
  rendered at the generator's resolution and pasted back, so it is often softer than the frame
  (the issue's "mean absolute Laplacian inside the face box", lower = fake). It also rises for
  any soft real face: out of focus, low bitrate, beauty filters, a small face upscaled.
- ``octave_slope``: minus the log ratio of the inner face's finest octave to the one below it. A
  generator's upscaled output has crisp mid frequencies and no finest octave, so it scores high;
  as a ratio it ignores the face's contrast (lighting, camera gain), which moves
  ``inner_sharpness``. Blur still raises it: a soft real face loses the finest octave first.
- ``mouth_detail``: the octave slope of an eye band minus the slope of the mouth: high when the mouth
  keeps more of its finest octave than the eyes of the same face do (a re-rendered or sharpened
  mouth: lip-sync, reenactment, some swaps). The reference is the same face, so the source's overall
  sharpness cancels. Measured: weak, but at 0.5 or above on every held-out set
  (``models/deepfake_classifier.md``).

A cue behaves like an ``engines.Classifier`` for ``trainer.holdout.face_sets``: ``input_size``,
``crop_margin``, and a call on uint8 (N, S, S, 3) RGB crops returning (N,) scores.
"""

from __future__ import annotations

import numpy as np

from trainer.errors import TrainerError

CUES = ("inner_sharpness", "octave_slope", "mouth_detail")
# eye band and mouth: rectangles (x0, x1, y0, y1) in face-box units from the crop's centre, y down
EYES = (-0.30, 0.30, -0.22, -0.02)
MOUTH = (-0.20, 0.20, 0.15, 0.36)


class Cue:
    def __init__(self, name: str, *, input_size: int = 256, crop_margin: float = 0.25) -> None:
        from trainer.models.spectral import BandStatistics

        if name not in CUES:
            raise TrainerError(f"unknown cue {name!r}; valid: {list(CUES)}")
        self.name, self.input_size, self.crop_margin = name, input_size, crop_margin
        self.stats = BandStatistics(input_size, 2, crop_margin, ring=False, chroma=False).eval()

    def __call__(self, crops: np.ndarray) -> np.ndarray:
        import torch

        from trainer.models.spectral import octave_slopes

        with torch.inference_mode():
            x = torch.from_numpy(np.ascontiguousarray(crops)).permute(0, 3, 1, 2).float().div_(255.0)
            if self.name == "mouth_detail":
                return (_slope(x, self.crop_margin, EYES) - _slope(x, self.crop_margin, MOUTH)).double().numpy()
            s = self.stats(x).double()  # (N, 4): per octave, log mean |band| and log rms of the inner face
        cue = s[:, 0] if self.name == "inner_sharpness" else octave_slopes(s, 2)[:, 0]  # finest octave / over the next
        return -cue.numpy()


def _slope(x, margin: float, rect: tuple[float, float, float, float]):
    """(N, 3, S, S) in [0, 1] -> (N,): log mean |next octave| minus log mean |finest octave| of the grey crop
    inside ``rect`` (face-box units): high where the finest octave is weak, as ``octave_slope``."""
    import torch
    from torch.nn import functional as f

    from trainer.models.spectral import EPS

    size = x.shape[-1]
    c = (torch.arange(size, dtype=torch.float32) + 0.5 - size / 2) / (size / (1 + 2 * margin))  # box units
    x0, x1, y0, y1 = rect
    w = ((c[:, None] >= y0) & (c[:, None] <= y1) & (c[None, :] >= x0) & (c[None, :] <= x1)).float()[None, None]
    p = (x * torch.tensor([0.299, 0.587, 0.114]).reshape(1, 3, 1, 1)).sum(dim=1, keepdim=True)
    levels = []
    for _ in range(2):
        low = f.avg_pool2d(p, 2)
        band = (p - f.interpolate(low, scale_factor=2.0, mode="bilinear", align_corners=False)).abs()
        levels.append(torch.log((band * w).sum(dim=(1, 2, 3)) / w.sum() + EPS))
        p, w = low, f.avg_pool2d(w, 2)
    return levels[1] - levels[0]
