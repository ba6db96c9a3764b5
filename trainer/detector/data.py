"""The face detector's training set: WIDER FACE ``train`` plus teacher-labelled frames of real media.

``prepare(media, out)`` writes an ultralytics dataset under ``out`` (its own folder, so
ultralytics' label caches never land in the read-only shared data):

- ``train/``: every WIDER FACE train image (symlinked) with its labels, plus frames of the
  ``train`` and ``val`` clips of ``real_videos/`` and every photo of ``face_images/``
  pseudo-labelled by the MTCNN teacher (trainer.teacher). An image where the teacher is
  unsure of a face is left out rather than taught a wrong label.
- ``val/``: WIDER FACE ``val`` only (human labels; no teacher frame is ever validated on).
- ``data.yaml`` for ultralytics and ``pseudo_labels.json`` (what the teacher said, per image).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from trainer import realmedia
from trainer.errors import TrainerError

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class PreparedData:
    yaml: Path
    wider_train: int  # WIDER FACE train images linked
    pseudo_images: int  # teacher-labelled images written
    pseudo_faces: int
    dropped_doubtful: int  # images left out: the teacher was unsure of a face
    dropped_empty: int  # images left out: the teacher found no face


def yolo_line(box: np.ndarray, w: int, h: int) -> str:
    """One YOLO label line (class 0, normalised cx cy w h) for an xyxy box in a w x h image."""
    x1, y1, x2, y2 = (float(v) for v in box)
    return f"0 {(x1 + x2) / 2 / w:.6f} {(y1 + y2) / 2 / h:.6f} {(x2 - x1) / w:.6f} {(y2 - y1) / h:.6f}"


def image_prefix(rel: str) -> str:
    """The name prefix of the teacher-labelled images made from the media file ``rel``."""
    return "pl__" + rel.replace("/", "__").rsplit(".", 1)[0]


def labelled_sources(record: dict, rels: list[str]) -> set[str]:
    """The media files among ``rels`` that gave the teacher images (kept or dropped) in ``record``."""
    names = [*record["images"], *record["dropped_doubtful"], *record["dropped_empty"]]
    return {rel for rel in rels if any(n == image_prefix(rel) or n.startswith(image_prefix(rel) + "__") for n in names)}


def _link_split(src: Path, dst: Path) -> int:
    (dst / "images").mkdir(parents=True, exist_ok=True)
    (dst / "labels").mkdir(parents=True, exist_ok=True)
    n = 0
    for img in sorted((src / "images").iterdir()):
        link = dst / "images" / img.name
        if not link.exists():
            os.symlink(img.resolve(), link)
        label = src / "labels" / (img.stem + ".txt")
        if label.is_file():
            shutil.copyfile(label, dst / "labels" / label.name)
        n += 1
    return n


def _media_images(media: Path, frames_per_clip: int) -> list[tuple[str, np.ndarray]]:
    """(name, RGB image) of the frames and photos the teacher labels (train and val clips only)."""
    from trainer.paper.frames import sample_frames

    out: list[tuple[str, np.ndarray]] = []
    for src in realmedia.real_videos(media):
        if src.split == "test":
            continue
        try:
            sampled = sample_frames(src.path, frames_per_clip)
        except TrainerError as exc:
            logger.warning("%s: skipped (%s)", src.rel, exc)
            continue
        out += [(f"{image_prefix(src.rel)}__{int(i):05d}", img) for img, i in zip(sampled.images, sampled.index)]
    for src in realmedia.photos(media):
        img = realmedia.read_rgb(src.path)
        if img is None:
            logger.warning("%s: unreadable image, skipped", src.rel)
            continue
        out.append((image_prefix(src.rel), img))
    return out


def prepare(
    media: Path, out: Path, *, frames_per_clip: int = 6, teacher: Callable | None = None, progress: bool = True
) -> PreparedData:
    """Write the detector's dataset under ``out`` (see the module docstring); reuses pseudo-labels already there."""
    from tqdm import tqdm

    from trainer.teacher import Teacher

    wider = media / "widerface"
    if not (wider / "train" / "images").is_dir() or not (wider / "val" / "images").is_dir():
        raise realmedia.MediaError(f"{wider} lacks train/images and val/images; --media must be ../shared/data")
    n_train = _link_split(wider / "train", out / "train")
    _link_split(wider / "val", out / "val")
    record_path = out / "pseudo_labels.json"
    if record_path.is_file():
        record = json.loads(record_path.read_text())
        if record.get("frames_per_clip") != frames_per_clip:
            raise TrainerError(
                f"{record_path} was made with {record.get('frames_per_clip')} frames per clip, not {frames_per_clip}: "
                "delete the folder's train/ and pseudo_labels.json, or pass the same --frames-per-clip"
            )
        logger.info("reusing %d pseudo-labelled images from %s", len(record["images"]), record_path)
    else:
        teacher = teacher or Teacher()
        images = _media_images(media, frames_per_clip)
        record = {
            "teacher": Teacher.describe(),
            "sure": teacher.sure,
            "unsure": teacher.unsure,
            "frames_per_clip": frames_per_clip,
            "images": {},
            "dropped_doubtful": [],
            "dropped_empty": [],
        }
        for name, img in tqdm(images, desc="teacher", unit="img", file=sys.stderr, disable=None if progress else True):
            faces = teacher(img)
            if teacher.doubtful(faces):
                record["dropped_doubtful"].append(name)
                continue
            sure = teacher.sure_faces(faces)
            if len(sure) == 0:
                record["dropped_empty"].append(name)
                continue
            h, w = img.shape[:2]
            cv2.imwrite(
                str(out / "train" / "images" / f"{name}.jpg"),
                cv2.cvtColor(img, cv2.COLOR_RGB2BGR),
                [cv2.IMWRITE_JPEG_QUALITY, 95],
            )
            lines = [yolo_line(b, w, h) for b in sure.xyxy]
            (out / "train" / "labels" / f"{name}.txt").write_text("\n".join(lines) + "\n")
            record["images"][name] = {
                "size": [w, h],
                "boxes": sure.xyxy.round(1).tolist(),
                "scores": sure.score.round(4).tolist(),
            }
        record_path.write_text(json.dumps(record, indent=1))
    yaml = out / "data.yaml"
    yaml.write_text(f"path: {out.resolve()}\ntrain: train/images\nval: val/images\nnames:\n  0: face\n")
    return PreparedData(
        yaml=yaml,
        wider_train=n_train,
        pseudo_images=len(record["images"]),
        pseudo_faces=sum(len(v["boxes"]) for v in record["images"].values()),
        dropped_doubtful=len(record["dropped_doubtful"]),
        dropped_empty=len(record["dropped_empty"]),
    )
