"""The offline teacher that pseudo-labels faces for training: MTCNN from the ``facenet-pytorch`` wheel.

MTCNN's three small networks ship inside the wheel (``facenet_pytorch/data/*.pt``), so it runs
with nothing downloaded. It is a training-only tool, not a runtime dependency of dfwatch:
install it with ``pip install --no-deps facenet-pytorch==2.6.0`` (its own pins would replace
the project's torch). It labels frames for the detector's training set and finds the faces
whose crops train the classifier; its boxes are never used as ground truth for validation.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np

from trainer.errors import TrainerError

logger = logging.getLogger(__name__)

INSTALL_HINT = "pip install --no-deps facenet-pytorch==2.6.0"


class TeacherError(TrainerError):
    """The teacher cannot run (facenet-pytorch missing)."""


@dataclass(frozen=True)
class TeacherFaces:
    """Faces of one image: boxes xyxy (n, 4) float32 in image pixels, scores (n,), landmarks (n, 5, 2)."""

    xyxy: np.ndarray
    score: np.ndarray
    landmarks: np.ndarray

    def __len__(self) -> int:
        return len(self.score)


class Teacher:
    """MTCNN on CPU: ``teacher(image)`` -> TeacherFaces of faces at least ``min_face`` px, any score.

    ``sure`` is the score above which a face counts as labelled; ``doubtful(faces)`` says
    whether an image holds a face between ``unsure`` and ``sure`` (neither clearly a face nor
    clearly not), which callers drop rather than teach a wrong label.
    """

    def __init__(self, *, min_face: int = 20, sure: float = 0.95, unsure: float = 0.7, threads: int | None = None):
        try:
            from facenet_pytorch import MTCNN
        except ImportError as exc:
            raise TeacherError(
                f"the MTCNN teacher needs facenet-pytorch, a training-only tool: {INSTALL_HINT}"
            ) from exc
        import torch

        if threads:
            torch.set_num_threads(threads)
        self.min_face, self.sure, self.unsure = min_face, sure, unsure
        # thresholds of the three stages; the last is lowered so doubtful faces are seen and can be dropped
        self._mtcnn = MTCNN(
            keep_all=True,
            device="cpu",
            min_face_size=min_face,
            thresholds=[0.6, 0.7, unsure],
            post_process=False,
            select_largest=False,
        )

    def __call__(self, image: np.ndarray) -> TeacherFaces:
        """Faces in one (H, W, 3) uint8 RGB image."""
        boxes, probs, points = self._mtcnn.detect(image, landmarks=True)
        if boxes is None:
            return TeacherFaces(np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros((0, 5, 2), np.float32))
        h, w = image.shape[:2]
        xyxy = np.asarray(boxes, np.float32).reshape(-1, 4)
        xyxy[:, [0, 2]] = xyxy[:, [0, 2]].clip(0, w)
        xyxy[:, [1, 3]] = xyxy[:, [1, 3]].clip(0, h)
        keep = (xyxy[:, 3] - xyxy[:, 1] >= self.min_face) & (xyxy[:, 2] - xyxy[:, 0] >= self.min_face * 0.5)
        return TeacherFaces(xyxy[keep], np.asarray(probs, np.float32)[keep], np.asarray(points, np.float32)[keep])

    def sure_faces(self, faces: TeacherFaces) -> TeacherFaces:
        keep = faces.score >= self.sure
        return TeacherFaces(faces.xyxy[keep], faces.score[keep], faces.landmarks[keep])

    def doubtful(self, faces: TeacherFaces) -> bool:
        return bool(((faces.score >= self.unsure) & (faces.score < self.sure)).any())

    @staticmethod
    def describe() -> dict[str, Any]:
        import facenet_pytorch

        return {"teacher": "MTCNN (facenet-pytorch)", "version": getattr(facenet_pytorch, "__version__", "2.6.0")}
