"""Measure a trained face detector: WIDER FACE val mAP, recall of faces >= 32 px, held-out clips, speed.

- ``wider_map``: mAP50 and mAP50-95 on WIDER FACE ``val`` (human boxes, never trained on), by
  ultralytics' own validator at a given input size.
- ``match_recall``: the serving path (the exported ONNX through ``engines.Detector`` at its
  manifest threshold) against reference boxes: recall of faces at least ``min_height`` px high
  at IoU 0.5, and precision of what it reports. Run on WIDER val (human boxes) and on frames of
  the held-out ``test`` clips of ``real_videos/`` (teacher boxes: MTCNN, not trained on).
- ``latency_ms``: median ms per 1280x720 frame, batch 1, ONNX Runtime on this CPU.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from engines.boxes import iou_matrix

logger = logging.getLogger(__name__)

IOU_MATCH = 0.5


@dataclass(frozen=True)
class RecallResult:
    faces: int  # reference faces at least min_height px high
    found: int  # of those, matched by a detection at IoU >= 0.5
    detections: int  # detections reported
    true_detections: int  # detections that match any reference face (any size)

    @property
    def recall(self) -> float:
        return self.found / self.faces if self.faces else float("nan")

    @property
    def precision(self) -> float:
        return self.true_detections / self.detections if self.detections else float("nan")

    def to_dict(self) -> dict[str, Any]:
        def num(x: float) -> float | None:  # strict JSON: no NaN
            return None if np.isnan(x) else round(x, 4)

        return {
            "faces": self.faces,
            "found": self.found,
            "recall": num(self.recall),
            "detections": self.detections,
            "precision": num(self.precision),
        }


def match_recall(pairs: list[tuple[np.ndarray, np.ndarray]], *, min_height: float) -> RecallResult:
    """Greedy one-to-one matching per image of (reference xyxy (n, 4), detected xyxy (m, 4)) pairs."""
    faces = found = dets = true_dets = 0
    for ref, det in pairs:
        big = (ref[:, 3] - ref[:, 1]) >= min_height
        faces += int(big.sum())
        dets += len(det)
        iou = iou_matrix(ref, det, dtype=np.float64)
        used_ref, used_det = set(), set()
        for flat in np.argsort(-iou, axis=None):
            r, d = divmod(int(flat), max(len(det), 1))
            if iou[r, d] < IOU_MATCH:
                break
            if r in used_ref or d in used_det:
                continue
            used_ref.add(r)
            used_det.add(d)
        found += sum(1 for r in used_ref if big[r])
        true_dets += len(used_det)
    return RecallResult(faces, found, dets, true_dets)


def wider_map(weights: Path, data_yaml: Path, *, imgsz: int) -> dict[str, float]:
    """mAP50 and mAP50-95 of an ultralytics ``.pt`` on the dataset's val split (WIDER FACE val).

    ultralytics' validation folder goes beside the weights (``<run>/val<imgsz>``), not under the
    ``runs/`` of its settings (the repository's own when run from a checkout).
    """
    from ultralytics import YOLO

    run = Path(weights).resolve().parent.parent  # <run>/weights/best.pt -> <run>
    metrics = YOLO(str(weights)).val(
        data=str(data_yaml),
        imgsz=imgsz,
        batch=8,
        device="cpu",
        plots=False,
        verbose=False,
        workers=0,
        max_det=1000,
        project=str(run),
        name=f"val{imgsz}",
        exist_ok=True,
    )
    return {"map50": round(float(metrics.box.map50), 4), "map50_95": round(float(metrics.box.map), 4)}


def wider_pairs(detector: Any, val_dir: Path) -> list[tuple[np.ndarray, np.ndarray]]:
    """(human boxes, detections) for every WIDER FACE val image."""
    from trainer.errors import TrainerError
    from trainer.pack.realfaces import wider_boxes
    from trainer.realmedia import read_rgb

    pairs = []
    for img_path in sorted((val_dir / "images").glob("*.jpg")):
        img = read_rgb(img_path)
        if img is None:
            raise TrainerError(f"{img_path}: unreadable image")
        h, w = img.shape[:2]
        ref = wider_boxes(val_dir / "labels" / f"{img_path.stem}.txt", w, h)
        pairs.append((ref, detector([img]).xyxy))
    return pairs


def clip_frames(media: Path, *, per_clip: int = 8, exclude: set[str] = frozenset()) -> list[tuple[str, np.ndarray]]:
    """Frames of the held-out ``test`` clips of ``real_videos/``, but for the clips in ``exclude`` (the
    ones a training set was made from: a clip moved to test after its frames were labelled)."""
    from trainer import realmedia
    from trainer.paper.frames import sample_frames

    out = []
    for src in realmedia.real_videos(media):
        if src.split == "test" and src.rel not in exclude:
            sampled = sample_frames(src.path, per_clip)
            out += [(f"{src.rel}#{int(i)}", img) for img, i in zip(sampled.images, sampled.index)]
    return out


def latency_ms(detector: Any, *, runs: int = 15) -> float:
    frame = np.random.default_rng(0).integers(0, 255, (720, 1280, 3), dtype=np.uint8)
    detector([frame])  # warm up
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        detector([frame])
        times.append((time.perf_counter() - t) * 1e3)
    return round(float(np.median(times)), 1)
