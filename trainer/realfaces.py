"""The classifier's face store from the real media in ``../shared/data`` (trainer.realmedia).

Rows (crops through ``engines.crop_faces``, as serving cuts them):

- real faces (label 0) from the ``real_videos/`` clips (split per clip, trainer.realmedia), the
  ``face_images/`` photos (train), and the large faces of WIDER FACE (its own train / val
  folders, human boxes);
- the labelled DFDC face crops (label 0 or 1; half of the DFDC videos held out as test).

Boxes of clips, photos and DFDC crops come from the MTCNN teacher (trainer.teacher); only
faces the teacher is sure of and at least ``min_face`` px high are kept. Fakes for training
are made on the fly from the real rows by self-blending (trainer.selfblend, ``--self-blend``).
A rerun resumes: sources already in the store are skipped.
"""

from __future__ import annotations

import logging
import sys
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from engines.crops import crop_faces
from engines.detections import Detections
from trainer import realmedia
from trainer.errors import TrainerError
from trainer.store import FaceStoreWriter

logger = logging.getLogger(__name__)

SOURCE = "shared-data-real-faces"


@dataclass
class RealFacesSummary:
    rows: dict[str, int] = field(default_factory=dict)  # "<split>/<real|fake>" -> crops
    sources: dict[str, int] = field(default_factory=dict)  # "clips" / "photos" / "wider" / "dfdc" -> crops
    skipped: list[str] = field(default_factory=list)


def _read_rgb(path: Path) -> np.ndarray | None:
    img = cv2.imread(str(path), cv2.IMREAD_COLOR)
    return None if img is None else cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def wider_boxes(label: Path, w: int, h: int) -> np.ndarray:
    """xyxy pixel boxes (n, 4) of a YOLO label file (``0 cx cy bw bh`` normalised)."""
    if not label.is_file():
        return np.zeros((0, 4), np.float32)
    rows = np.loadtxt(label, ndmin=2, dtype=np.float32).reshape(-1, 5)
    cx, cy, bw, bh = rows[:, 1] * w, rows[:, 2] * h, rows[:, 3] * w, rows[:, 4] * h
    return np.stack([cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2], axis=1)


def build_real_faces(
    media: Path,
    out: Path,
    *,
    crop_size: int = 256,
    margin: float = 0.25,
    frames_per_clip: int = 24,
    min_face: int = 64,
    max_faces: int = 4,
    progress: bool = True,
) -> RealFacesSummary:
    """Write (or resume) the store ``out``; see the module docstring."""
    from tqdm import tqdm

    from trainer.frames import sample_frames
    from trainer.teacher import Teacher

    teacher = Teacher()
    clips, photos, dfdc = realmedia.real_videos(media), realmedia.photos(media), realmedia.dfdc_crops(media)
    wider = [(img, split) for split in ("train", "val")
             for img in sorted((media / "widerface" / split / "images").glob("*.jpg"))]  # fmt: skip
    summary = RealFacesSummary()
    writer = FaceStoreWriter(out, crop_size=crop_size, crop_margin=margin, whole_frames=False, source=SOURCE,
                             frames_per_video=frames_per_clip, detector_sha256="mtcnn-teacher",
                             split_protocol="identity", extra_attrs={"min_face": min_face})  # fmt: skip
    with writer:
        done = writer.done_videos()
        jobs = [("clips", s) for s in clips] + [("photos", s) for s in photos] + [("dfdc", s) for s in dfdc]
        jobs += [("wider", w) for w in wider]
        for kind, job in tqdm(jobs, desc="real faces", unit="src", file=sys.stderr, disable=None if progress else True):
            name = f"widerface/{job[1]}/{job[0].name}" if kind == "wider" else job.rel
            if name in done:
                continue
            try:
                if kind == "wider":
                    img_path, split = job
                    img = _read_rgb(img_path)
                    if img is None:
                        raise TrainerError("unreadable image")
                    h, w = img.shape[:2]
                    boxes = wider_boxes(img_path.parent.parent / "labels" / f"{img_path.stem}.txt", w, h)
                    boxes = boxes[boxes[:, 3] - boxes[:, 1] >= min_face]
                    boxes = boxes[np.argsort(-(boxes[:, 3] - boxes[:, 1]), kind="stable")][:max_faces]  # largest
                    frames, index = [img], np.zeros(1, np.int64)
                    dets = Detections(boxes, np.ones(len(boxes)), np.zeros(len(boxes)))
                    identity, label = f"wider:{img_path.stem}", 0
                else:
                    split, identity, label = job.split, job.identity, job.label
                    if job.kind == "video":
                        sampled = sample_frames(job.path, frames_per_clip)
                        frames, index = sampled.images, sampled.index
                    else:
                        img = _read_rgb(job.path)
                        if img is None:
                            raise TrainerError("unreadable image")
                        frames, index = [img], np.zeros(1, np.int64)
                    dets = _teacher_faces(teacher, frames, min_face=min_face if kind != "dfdc" else 32,
                                          max_faces=1 if kind == "dfdc" else max_faces)  # fmt: skip
            except TrainerError as exc:
                writer.finish_video(name, status="unreadable", detail=str(exc))
                summary.skipped.append(f"{name}: {exc}")
                continue
            if len(dets) == 0:
                writer.finish_video(name, status="no_face", frames=len(frames))
                summary.skipped.append(f"{name}: no face of {32 if kind == 'dfdc' else min_face} px or more")
                continue
            crops = crop_faces(frames, dets, size=crop_size, margin=margin)
            writer.append(crops, label=label, video=name, identity=identity, identity_src="",
                          frame=index[dets.frame_index], box=dets.xyxy, det_score=dets.score, split=split)  # fmt: skip
            writer.finish_video(name, frames=len(frames), faces=len(dets))
            key = f"{split}/{'fake' if label else 'real'}"
            summary.rows[key] = summary.rows.get(key, 0) + len(dets)
            summary.sources[kind] = summary.sources.get(kind, 0) + len(dets)
    return summary


def _teacher_faces(teacher, frames: list[np.ndarray], *, min_face: int, max_faces: int) -> Detections:  # noqa: ANN001
    parts = []
    for i, frame in enumerate(frames):
        faces = teacher.sure_faces(teacher(frame))
        keep = faces.xyxy[:, 3] - faces.xyxy[:, 1] >= min_face
        xyxy, score = faces.xyxy[keep], faces.score[keep]
        order = np.argsort(-(xyxy[:, 2] - xyxy[:, 0]) * (xyxy[:, 3] - xyxy[:, 1]))[:max_faces]  # largest first
        parts.append(Detections(xyxy[order], score[order], np.full(len(order), i)))
    return Detections.concatenate(parts)
