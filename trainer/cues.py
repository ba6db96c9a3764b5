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
        from trainer.models.spectral import BandStatistics, rect_mask

        if name not in CUES:
            raise TrainerError(f"unknown cue {name!r}; valid: {list(CUES)}")
        self.name, self.input_size, self.crop_margin = name, input_size, crop_margin
        regions = [rect_mask(input_size, crop_margin, r) for r in (EYES, MOUTH)] if name == "mouth_detail" else [None]
        self.stats = [
            BandStatistics(input_size, 2, crop_margin, ring=False, chroma=False, inner=r).eval() for r in regions
        ]  # the inner face; or the eye band and the mouth

    def __call__(self, crops: np.ndarray) -> np.ndarray:
        import torch

        from trainer.models.spectral import octave_slopes

        with torch.inference_mode():
            x = torch.from_numpy(np.ascontiguousarray(crops)).permute(0, 3, 1, 2).float().div_(255.0)
            # (N, 4) per region: per octave, log mean |band| and log rms
            s = [stats(x).double() for stats in self.stats]
        if self.name == "mouth_detail":  # the eyes' octave slope minus the mouth's (finest over the next octave)
            eyes, mouth = (-octave_slopes(r, 2)[:, 0] for r in s)
            return (eyes - mouth).numpy()
        cue = s[0][:, 0] if self.name == "inner_sharpness" else octave_slopes(s[0], 2)[:, 0]
        return -cue.numpy()
