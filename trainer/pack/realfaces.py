"""The classifier's face store from the real media in ``../shared/data`` (trainer.realmedia).

Rows (crops through ``engines.crop_faces``, as serving cuts them):

- real faces (label 0) from the ``real_videos/`` clips (split per clip, trainer.realmedia), the
  ``face_images/`` photos (train), the ``utkface/`` photos (one person each, split by file), and
  the large faces of WIDER FACE (its own train / val folders, human boxes);
- optionally (``dfdc``) the labelled DFDC face crops (label 0 or 1; half of the DFDC videos held
  out as test). The default pack leaves them out: they are validation material (trainer.pack.realval);
- optionally (``tools``) outputs of real swap tools from ``labelled/wild_swaps`` as train rows, fakes
  with their real inputs where the set has them (``TOOLS``: DeepFaceLive side-by-side halves, the
  lip-sync videos, the few-shot GAN's fakes). A model trained on a tool must report that tool as
  seen; the other tools stay held out (leave-one-tool-out).

Boxes of clips and photos come from the shipped face detector (``boxes="detector"``: the serving
crop, the paper's YOLOv8n face crops) or from the MTCNN teacher (``boxes="teacher"``); only
faces at least ``min_face`` px high are kept (detector: the most confident ``max_faces`` of them
per frame; teacher: the faces it is sure of). Fakes for training are made on the fly from the
real rows by self-blending (trainer.pack.selfblend, ``--self-blend``). A rerun resumes: sources
already in the store are skipped.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from engines.crops import crop_faces
from engines.detections import Detections
from trainer import realmedia
from trainer.errors import TrainerError
from trainer.pack.realval import items, read_frames
from trainer.store import FaceStoreWriter

logger = logging.getLogger(__name__)

SOURCE = "shared-data-real-faces"
BOXES = ("detector", "teacher")
DETECT_BATCH = 16  # photos per detector call
TOOLS = ("deepfacelive", "lipsync", "fewshot_gan")  # wild_swaps sets that ``tools`` may put in training


@dataclass
class RealFacesSummary:
    rows: dict[str, int] = field(default_factory=dict)  # "<split>/<real|fake>" -> crops
    sources: dict[str, int] = field(default_factory=dict)  # "clips" / "photos" / "utkface" / "wider" / "dfdc" -> crops
    skipped: list[str] = field(default_factory=list)


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
    boxes: str = "detector",
    detector: str | Path = Path("models/face_detector.onnx"),
    utkface: int | None = None,
    dfdc: bool = False,
    tools: Sequence[str] = (),
    tool_frames: int = 96,
    progress: bool = True,
) -> RealFacesSummary:
    """Write (or resume) the store ``out``; see the module docstring.

    ``utkface``: how many UTKFace photos (None: all, 0: none); ``detector``: the face detector
    artifact used with ``boxes="detector"``; ``tools``: names from ``TOOLS`` to train on, ``tool_frames``
    frames sampled from each of their clips (there are few of them).
    """
    from tqdm import tqdm

    from trainer.paper.frames import sample_frames

    if boxes not in BOXES:
        raise TrainerError(f"unknown box source {boxes!r}; valid: {list(BOXES)}")
    unknown = sorted(set(tools) - set(TOOLS))
    if unknown:
        raise TrainerError(f"unknown tool set(s) {unknown}; valid: {list(TOOLS)}")
    find, box_source = _box_finder(boxes, detector)
    clips, photos = realmedia.real_videos(media), realmedia.photos(media)
    utk = realmedia.utkface(media, limit=utkface) if utkface != 0 else []
    dfdc_rows = realmedia.dfdc_crops(media) if dfdc else []
    wider = [
        (img, split)
        for split in ("train", "val")
        for img in sorted((media / "widerface" / split / "images").glob("*.jpg"))
    ]
    summary = RealFacesSummary()
    writer = FaceStoreWriter(
        out,
        crop_size=crop_size,
        crop_margin=margin,
        whole_frames=False,
        source=SOURCE,
        frames_per_video=frames_per_clip,
        detector_sha256=box_source,
        split_protocol="identity",
        extra_attrs={"min_face": min_face},
    )
    with writer:
        done = writer.done_videos()
        jobs = [("clips", s) for s in clips] + [("photos", s) for s in photos] + [("dfdc", s) for s in dfdc_rows]
        jobs += [("utkface", s) for s in utk] + [("wider", w) for w in wider] + _tool_jobs(media, tools)
        bar = tqdm(jobs, desc="real faces", unit="src", file=sys.stderr, disable=None if progress else True)
        for kind, job in bar:
            name = f"widerface/{job[1]}/{job[0].name}" if kind == "wider" else job.rel if kind != "tool" else job[0]
            if name in done:
                continue
            try:
                if kind == "wider":
                    img_path, split = job
                    img = realmedia.read_rgb(img_path)
                    if img is None:
                        raise TrainerError("unreadable image")
                    h, w = img.shape[:2]
                    boxes = wider_boxes(img_path.parent.parent / "labels" / f"{img_path.stem}.txt", w, h)
                    boxes = boxes[boxes[:, 3] - boxes[:, 1] >= min_face]
                    boxes = boxes[np.argsort(-(boxes[:, 3] - boxes[:, 1]), kind="stable")][:max_faces]  # largest
                    frames, index = [img], np.zeros(1, np.int64)
                    dets = Detections(boxes, np.ones(len(boxes)), np.zeros(len(boxes)))
                    identity, label = f"wider:{img_path.stem}", 0
                elif kind == "tool":
                    _, folder, item = job
                    frames, index = read_frames(item, tool_frames)  # index: the sampled frame numbers
                    split, identity, label = "train", f"tool:{item.group}", item.label
                    dets = find(frames, min_face=min_face, max_faces=1)
                else:
                    split, identity, label = job.split, job.identity, job.label
                    if job.kind == "video":
                        sampled = sample_frames(job.path, frames_per_clip)
                        frames, index = sampled.images, sampled.index
                    else:
                        img = realmedia.read_rgb(job.path)
                        if img is None:
                            raise TrainerError("unreadable image")
                        frames, index = [img], np.zeros(1, np.int64)
                    dets = find(
                        frames,
                        min_face=min_face if kind != "dfdc" else 32,
                        max_faces=1 if kind in ("dfdc", "utkface") else max_faces,
                    )
            except TrainerError as exc:
                writer.finish_video(name, status="unreadable", detail=str(exc))
                summary.skipped.append(f"{name}: {exc}")
                continue
            if len(dets) == 0:
                writer.finish_video(name, status="no_face", frames=len(frames))
                summary.skipped.append(f"{name}: no face of {32 if kind == 'dfdc' else min_face} px or more")
                continue
            if kind == "tool":
                kind = f"tool:{folder}"  # tool:deepfacelive, tool:lipsync_wav2lip, ...
            crops = crop_faces(frames, dets, size=crop_size, margin=margin)
            writer.append(
                crops,
                label=label,
                video=name,
                identity=identity,
                identity_src="",
                frame=index[dets.frame_index],
                box=dets.xyxy,
                det_score=dets.score,
                split=split,
            )
            writer.finish_video(name, frames=len(frames), faces=len(dets))
            key = f"{split}/{'fake' if label else 'real'}"
            summary.rows[key] = summary.rows.get(key, 0) + len(dets)
            summary.sources[kind] = summary.sources.get(kind, 0) + len(dets)
    return summary


def _tool_jobs(media: Path, tools: Sequence[str]) -> list[tuple[str, tuple[str, str, Any]]]:
    """``("tool", (name, tool folder, item))`` jobs for the wild_swaps ``tools``: every clip or photo of each
    set (for the few-shot GAN only its fakes: its reals are the inswapper set's, which stays held out)."""
    jobs = []
    for tool in tools:
        for item in items(tool, media):
            if tool == "fewshot_gan" and item.label == 0:
                continue
            rel = item.path.relative_to(media).as_posix()
            jobs.append(("tool", (f"{rel}:{item.half}" if item.half else rel, rel.split("/")[2], item)))
    return jobs


def _box_finder(boxes: str, detector: str | Path) -> tuple[Callable[..., Detections], str]:
    """``find(frames, *, min_face, max_faces) -> Detections`` for the box source, and what to record
    as the store's ``detector_sha256``."""
    if boxes == "teacher":
        from trainer.teacher import Teacher

        teacher = Teacher()

        def find_teacher(frames: list[np.ndarray], *, min_face: int, max_faces: int) -> Detections:
            parts = []
            for i, frame in enumerate(frames):
                faces = teacher.sure_faces(teacher(frame))
                parts.append(_keep(faces.xyxy, faces.score, i, min_face=min_face, max_faces=max_faces, largest=True))
            return Detections.concatenate(parts)

        return find_teacher, "mtcnn-teacher"
    from engines import Detector

    det = Detector(detector)

    def find_detector(frames: list[np.ndarray], *, min_face: int, max_faces: int) -> Detections:
        parts = []
        for start in range(0, len(frames), DETECT_BATCH):
            found = det(frames[start : start + DETECT_BATCH])
            for i in range(min(DETECT_BATCH, len(frames) - start)):
                mine = found.frame_index == i
                parts.append(
                    _keep(
                        found.xyxy[mine],
                        found.score[mine],
                        start + i,
                        min_face=min_face,
                        max_faces=max_faces,
                        largest=False,
                    )
                )
        return Detections.concatenate(parts)

    return find_detector, det.manifest.sha256


def _keep(
    xyxy: np.ndarray, score: np.ndarray, frame: int, *, min_face: int, max_faces: int, largest: bool
) -> Detections:
    """Faces at least ``min_face`` px high, the ``max_faces`` largest (or most confident) first."""
    keep = xyxy[:, 3] - xyxy[:, 1] >= min_face
    xyxy, score = xyxy[keep], score[keep]
    key = (xyxy[:, 2] - xyxy[:, 0]) * (xyxy[:, 3] - xyxy[:, 1]) if largest else score
    order = np.argsort(-key, kind="stable")[:max_faces]
    return Detections(xyxy[order], score[order], np.full(len(order), frame))
