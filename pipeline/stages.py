"""Inference stages: batches of frames in, columnar results out. They know no threads or queues."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from engines import Classifier, Detections, Detector, crop_faces
from pipeline.messages import Frame


class DetectStage:
    def __init__(self, detector: Detector) -> None:
        self.detector = detector

    def process(self, frames: Sequence[Frame]) -> Detections:
        """Faces of every frame in the batch; ``frame_index`` points into ``frames``."""
        return self.detector([f.image for f in frames])


class ClassifyStage:
    def __init__(self, classifier: Classifier) -> None:
        self.classifier = classifier

    def process(self, frames: Sequence[Frame], detections: Detections) -> np.ndarray:
        """P(fake) (n,) for each detection, cropped the way the classifier was trained."""
        crops = crop_faces(
            [f.image for f in frames],
            detections,
            size=self.classifier.input_size,
            margin=self.classifier.crop_margin,
        )  # (n, S, S, 3)
        return self.classifier(crops)
