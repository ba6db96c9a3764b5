"""Columnar face detections for a batch of frames, shared by every stage."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from engines.columns import Columns, column


@dataclass(frozen=True)
class Detections(Columns):
    """Faces found in a batch of frames.

    Boxes are in source-frame pixels. ``frame_index`` says which frame of the batch each box
    belongs to (0-based position in the batch, not a stream frame number).
    """

    xyxy: np.ndarray = column(np.float32, width=4)  # (n, 4) float32: x1, y1, x2, y2
    score: np.ndarray = column(np.float32)  # (n,) float32 detector confidence
    frame_index: np.ndarray = column(np.int64)  # (n,) int64 position in the batch

    def for_frame(self, i: int) -> Detections:
        return self[self.frame_index == i]
