"""Face detector: frames in, columnar Detections in source-frame pixels out."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from engines._artifact import Artifact
from engines.detections import Detections
from engines.errors import InputError
from engines.letterbox import LetterboxInfo, letterbox_batch, unletterbox_boxes
from engines.yolo import decode_yolov8


class Detector:
    """YOLOv8 face detector behind any backend.

    ``conf`` and ``iou`` default to the thresholds in the artifact's manifest. ``device`` ("cpu",
    "cuda" or None: the artifact's own) and ``threads`` go to the backend (engines.backends).
    """

    def __init__(
        self,
        path: str | Path,
        *,
        threads: int | None = None,
        device: str | None = None,
        conf: float | None = None,
        iou: float | None = None,
        max_det: int = 100,
    ) -> None:
        self.artifact = Artifact(path, kind="detector", threads=threads, device=device)
        self.manifest = self.artifact.manifest
        self.input_size = self.manifest.input_size
        self.conf = self.manifest.thresholds["confidence"] if conf is None else conf
        self.iou = self.manifest.thresholds["iou"] if iou is None else iou
        self.max_det = max_det

    @property
    def backend_name(self) -> str:
        return self.artifact.backend.name

    def __call__(self, frames: np.ndarray | Sequence[np.ndarray]) -> Detections:
        """Detect faces in (N, H, W, 3) uint8 RGB frames (or a list of frames of any sizes)."""
        _check_frames(frames)
        if len(frames) == 0:
            return Detections.empty()
        batch, infos = self.prepare(frames)
        return self.boxes(self.infer(batch), infos)

    # The three steps of a call, apart so that each can be timed (the pipeline's stage timings, benchmarks).

    def prepare(self, frames: Sequence[np.ndarray]) -> tuple[np.ndarray, list[LetterboxInfo]]:
        """Letterbox frames into the network input (N, 3, S, S) float32, with how each was placed."""
        return letterbox_batch(frames, self.input_size)

    def infer(self, batch: np.ndarray) -> np.ndarray:
        """The raw network output (N, 4 + 1, anchors) for a prepared batch."""
        return self.artifact.run(batch)[0]

    def boxes(self, output: np.ndarray, infos: Sequence[LetterboxInfo]) -> Detections:
        """Box decode, NMS and boxes back in frame pixels; ``frame_index`` is the position in the batch."""
        decoded = decode_yolov8(output, conf=self.conf, iou=self.iou, max_det=self.max_det)
        return Detections.concatenate(
            [
                Detections(unletterbox_boxes(xyxy, info), score, np.full(len(score), i))
                for i, ((xyxy, score), info) in enumerate(zip(decoded, infos))
            ]
        )


def _check_frames(frames: np.ndarray | Sequence[np.ndarray]) -> None:
    if isinstance(frames, np.ndarray) and frames.ndim != 4:
        raise InputError(f"Detector expects uint8 RGB frames (N, H, W, 3), got {frames.dtype} {frames.shape}")
    for frame in frames:
        if not isinstance(frame, np.ndarray) or frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[2] != 3:
            got = f"{frame.dtype} {frame.shape}" if isinstance(frame, np.ndarray) else type(frame).__name__
            raise InputError(f"Detector expects uint8 RGB frames (N, H, W, 3), got {got}")
