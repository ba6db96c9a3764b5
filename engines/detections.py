"""Columnar face detections for a batch of frames, shared by every stage."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Detections:
    """Faces found in a batch of frames.

    Boxes are in source-frame pixels. ``frame_index`` says which frame of the batch each box
    belongs to (0-based position in the batch, not a stream frame number).
    """

    xyxy: np.ndarray  # (n, 4) float32: x1, y1, x2, y2
    score: np.ndarray  # (n,) float32 detector confidence
    frame_index: np.ndarray  # (n,) int64 position in the batch

    def __post_init__(self) -> None:
        xyxy = np.asarray(self.xyxy, dtype=np.float32).reshape(-1, 4)
        score = np.asarray(self.score, dtype=np.float32).reshape(-1)
        frame_index = np.asarray(self.frame_index, dtype=np.int64).reshape(-1)
        if not len(xyxy) == len(score) == len(frame_index):
            raise ValueError(
                f"Detections columns differ in length: xyxy {len(xyxy)}, "
                f"score {len(score)}, frame_index {len(frame_index)}"
            )
        object.__setattr__(self, "xyxy", xyxy)
        object.__setattr__(self, "score", score)
        object.__setattr__(self, "frame_index", frame_index)

    @classmethod
    def empty(cls) -> Detections:
        return cls(np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros(0, np.int64))

    @classmethod
    def concatenate(cls, parts: Sequence[Detections]) -> Detections:
        if not parts:
            return cls.empty()
        return cls(
            np.concatenate([p.xyxy for p in parts]),
            np.concatenate([p.score for p in parts]),
            np.concatenate([p.frame_index for p in parts]),
        )

    def __len__(self) -> int:
        return len(self.score)

    def __getitem__(self, index: np.ndarray | slice) -> Detections:
        """Select rows by boolean mask, integer array or slice."""
        return Detections(self.xyxy[index], self.score[index], self.frame_index[index])

    def for_frame(self, i: int) -> Detections:
        return self[self.frame_index == i]
