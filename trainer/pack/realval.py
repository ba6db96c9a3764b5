"""Real manipulated faces for validation: the labelled sets under ``../shared/data/labelled``, as face crops.

Each set is cut the way serving cuts faces: frames (or photos) -> the shipped face detector ->
the most confident face -> ``engines.crop_faces`` straight to the classifier's input size (one
resize). A face is scored alone; a *clip* (``group``) is the unit of the clip-level AUC: a
video, or a photo on its own.

Roles (``HeldOutSet.role``):

- ``select``: model selection and early stopping may look at it (never training): the Celeb-DF
  hard segments and the DFDC crops of the videos ``trainer.realmedia`` puts in ``train``;
- ``report``: measured and reported only: the DFDC crops of the held-out videos, DeeperForensics,
  and every tool of ``wild_swaps`` (inswapper, the few-shot GAN, DeepFaceLive, two lip-sync
  methods). The default pack is trained on none of them, so each is a leave-tool-out measure.

Some sets mix sources that differ in more than the label (the DFDC crops come from two
repositories, one with small tight crops, one with 224 px ones, in other proportions of real and
fake in each half): ``face_auc_within_source`` counts only real-fake pairs of one source, so a
source's look cannot pass for a verdict. Selection uses it.

Detections are cached per set (``cache``/<set>-<detector sha>.npz): the detector runs once per
set and detector, crops are cut again for any size.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from engines.crops import crop_faces
from engines.detections import Detections
from trainer import realmedia
from trainer.errors import TrainerError
from trainer.metrics import roc_auc

logger = logging.getLogger(__name__)

FRAMES_PER_VIDEO = 24
ROLES = ("select", "report")


@dataclass(frozen=True)
class HeldOutSet:
    name: str  # short id: "celebdf_hard", "inswapper", ...
    role: str  # "select" or "report" (module docstring)
    what: str  # one line for reports


SETS = (
    HeldOutSet("celebdf_hard", "select", "Celeb-DF v2 hard segments, 7 real / 7 fake clips (validation only)"),
    HeldOutSet("dfdc_select", "select", "DFDC face crops of the DFDC videos realmedia puts in train"),
    HeldOutSet("dfdc_test", "report", "DFDC face crops of the held-out DFDC videos"),
    HeldOutSet("deeperforensics", "report", "DeeperForensics, 2 real / 2 fake videos"),
    HeldOutSet("inswapper", "report", "inswapper swaps vs real FFHQ faces of the same pool"),
    HeldOutSet("fewshot_gan", "report", "few-shot GAN swaps (128 px) vs the same real FFHQ faces"),
    HeldOutSet("deepfacelive", "report", "DeepFaceLive: left half of each frame real, right half swapped"),
    HeldOutSet("lipsync", "report", "wav2lip and HyperLips lip-synced videos vs their real inputs"),
)
SET_NAMES = tuple(s.name for s in SETS)


@dataclass(frozen=True)
class _Item:
    path: Path
    label: int  # 1 = fake
    group: str  # clip id for clip-level scores
    half: str = ""  # "left" / "right": use only that half of each frame (DeepFaceLive side by side)
    source: str = ""  # where the file came from, when a set mixes sources


@dataclass(frozen=True)
class FaceSet:
    """One held-out set as crops: ``images`` (n, S, S, 3) uint8 RGB, ``labels`` (n,), ``groups`` (n,) clip ids,
    ``sources`` (n,) where each came from ("" for a set of one source)."""

    name: str
    images: np.ndarray
    labels: np.ndarray
    groups: np.ndarray
    missed: int  # frames or photos where the detector found no face (left out)
    sources: np.ndarray | None = None
    small: int = 0  # faces lower than the classifier's min_face (left out: the service does not score them)
    heights: np.ndarray | None = None  # (n,) the detector box's height in source pixels (None: not known)

    def __len__(self) -> int:
        return len(self.labels)


def _images(root: Path, pattern: str) -> list[Path]:
    return sorted(p for p in root.glob(pattern) if p.suffix.lower() in realmedia.IMAGE_SUFFIXES)


def _videos(root: Path, pattern: str) -> list[Path]:
    return sorted(p for p in root.glob(pattern) if p.suffix.lower() in realmedia.VIDEO_SUFFIXES)


def items(name: str, media: Path) -> list[_Item]:
    """The files of set ``name`` under the shared data folder ``media``, with labels and clip ids."""
    lab = Path(media) / "labelled"
    if not lab.is_dir():
        raise realmedia.MediaError(f"{lab} is missing; --media must point at the shared data folder (../shared/data)")
    if name == "celebdf_hard":
        return [_Item(p, int(p.parent.name == "fake"), p.stem) for p in _videos(lab, "celebdf_hard_segments/*/*")]
    if name in ("dfdc_select", "dfdc_test"):
        split = "train" if name == "dfdc_select" else "test"
        return [
            _Item(s.path, s.label, s.identity, source=s.path.parts[-3])
            for s in realmedia.dfdc_crops(Path(media))
            if s.split == split
        ]
    if name == "deeperforensics":
        return [_Item(s.path, s.label, s.rel) for s in realmedia.deeperforensics(Path(media))]
    if name in ("inswapper", "fewshot_gan"):
        reals = [_Item(p, 0, p.stem) for p in _images(lab, "wild_swaps/inswapper/real_ffhq/*")]
        fakes = _images(lab, f"wild_swaps/{name}/fake/*")
        return reals + [_Item(p, 1, p.stem) for p in fakes]
    if name == "deepfacelive":
        clips = _videos(lab, "wild_swaps/deepfacelive/side_by_side/*")
        return [_Item(p, int(half == "right"), f"{p.stem}:{half}", half) for p in clips for half in ("left", "right")]
    if name == "lipsync":
        return [
            _Item(p, int(p.parent.name == "fake"), p.relative_to(lab).as_posix())
            for p in _videos(lab, "wild_swaps/lipsync_*/*/*")
        ]
    raise TrainerError(f"unknown held-out set {name!r}; valid: {list(SET_NAMES)}")


def read_frames(item: _Item, frames_per_video: int) -> tuple[list[np.ndarray], np.ndarray]:
    """The item's frames as RGB (only its half, for a side-by-side clip) and their frame numbers (0 for a photo)."""
    from trainer.paper.frames import sample_frames

    if item.path.suffix.lower() in realmedia.IMAGE_SUFFIXES:
        img = realmedia.read_rgb(item.path)
        if img is None:
            raise TrainerError(f"{item.path}: unreadable image")
        frames, index = [img], np.zeros(1, np.int64)
    else:
        sampled = sample_frames(item.path, frames_per_video)
        frames, index = sampled.images, np.asarray(sampled.index)
    if item.half:
        w = frames[0].shape[1] // 2
        frames = [np.ascontiguousarray(f[:, :w] if item.half == "left" else f[:, w:]) for f in frames]
    return frames, index


def load_set(
    name: str,
    media: Path,
    detector: Callable[[list[np.ndarray]], Detections],
    *,
    detector_sha: str,
    size: int,
    margin: float,
    cache: Path | None = None,
    frames_per_video: int = FRAMES_PER_VIDEO,
    min_face: int = 0,
) -> FaceSet:
    """Set ``name`` cut at ``size`` with ``margin``; the detector's boxes come from ``cache`` when there. Faces
    lower than ``min_face`` pixels are left out, as the service leaves them unscored."""
    todo = items(name, media)
    if not todo:
        raise realmedia.MediaError(f"held-out set {name!r} has no files under {media}/labelled")
    cached = Path(cache) / f"{name}-{detector_sha[:12]}-{frames_per_video}.npz" if cache else None
    boxes: dict[str, np.ndarray] = {}
    if cached is not None and cached.is_file():
        with np.load(cached, allow_pickle=False) as z:
            boxes = {k: z[k] for k in z.files}
    crops, labels, groups, sources, heights, missed, small, fresh = [], [], [], [], [], 0, 0, False
    for item in todo:
        frames, _ = read_frames(item, frames_per_video)
        key = f"{item.path.relative_to(media).as_posix()}:{item.half}"
        if key not in boxes:  # (frames, 4) xyxy, NaN where no face was found
            boxes[key] = _best_boxes(detector, frames)
            fresh = True
        found = ~np.isnan(boxes[key][:, 0])
        missed += int((~found).sum())
        tall = found & ((boxes[key][:, 3] - boxes[key][:, 1]) >= min_face)  # NaN compares False
        small += int((found & ~tall).sum())
        idx = np.flatnonzero(tall)
        if len(idx):
            dets = Detections(boxes[key][idx], np.ones(len(idx), np.float32), idx)
            crops.append(crop_faces(frames, dets, size=size, margin=margin))
            labels += [item.label] * len(idx)
            groups += [item.group] * len(idx)
            sources += [item.source] * len(idx)
            heights.append(boxes[key][idx, 3] - boxes[key][idx, 1])
    if fresh and cached is not None:
        cached.parent.mkdir(parents=True, exist_ok=True)
        tmp = cached.with_name(cached.name + ".tmp.npz")
        np.savez(tmp, **boxes)
        tmp.replace(cached)
    if missed:
        logger.info("held-out set %s: no face found in %d frame(s) or photo(s); they are left out", name, missed)
    if small:
        logger.info(
            "held-out set %s: %d face(s) lower than %d px left out (not scored as served)", name, small, min_face
        )
    images = np.concatenate(crops) if crops else np.zeros((0, size, size, 3), np.uint8)
    return FaceSet(
        name,
        images,
        np.asarray(labels, np.int64),
        np.asarray(groups),
        missed,
        np.asarray(sources),
        small,
        np.concatenate(heights) if heights else np.zeros(0, np.float32),
    )


def _best_boxes(detector: Callable[[list[np.ndarray]], Detections], frames: Sequence[np.ndarray]) -> np.ndarray:
    """The most confident face of each frame, (n, 4) xyxy; NaN rows where there is none."""
    out = np.full((len(frames), 4), np.nan, np.float32)
    for i, frame in enumerate(frames):
        det = detector([frame])
        if len(det):
            out[i] = det.xyxy[int(np.argmax(det.score))]
    return out


def clip_scores(face_set: FaceSet, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(labels, mean score) per clip of ``face_set``, clips in sorted order."""
    names, inverse = np.unique(face_set.groups, return_inverse=True)
    mean = np.bincount(inverse, weights=scores, minlength=len(names)) / np.bincount(inverse, minlength=len(names))
    labels = np.zeros(len(names), np.int64)
    labels[inverse] = face_set.labels
    return labels, mean


def _auc(labels: np.ndarray, scores: np.ndarray) -> float | None:
    return roc_auc(labels, scores) if 0 < labels.sum() < len(labels) else None


def within_source_auc(labels: np.ndarray, scores: np.ndarray, sources: np.ndarray | None) -> float | None:
    """ROC AUC over the real-fake pairs of one source only: each source's AUC weighted by its pairs."""
    if sources is None or len(set(sources.tolist())) <= 1:
        return _auc(labels, scores)
    total = weight = 0.0
    for src in sorted(set(sources.tolist())):
        mine = sources == src
        pos, neg = int(labels[mine].sum()), int((labels[mine] == 0).sum())
        if pos and neg:
            total += roc_auc(labels[mine], scores[mine]) * pos * neg
            weight += pos * neg
    return total / weight if weight else None


SIZE_BINS = 5


def size_matched_auc(
    labels: np.ndarray,
    scores: np.ndarray,
    heights: np.ndarray | None,
    sources: np.ndarray | None = None,
    bins: int = SIZE_BINS,
) -> float | None:
    """ROC AUC over the real-fake pairs of faces of about the same size (and source): the faces of each source
    are cut into ``bins`` bins by the quantiles of their box height, each bin's AUC weighted by its pairs.

    A score that follows the face's size (a small face is upscaled into the crop and looks soft) ranks a set
    whose fakes are smaller than its reals well for the wrong reason; matched on size, it is at chance.
    None where no bin holds both classes (or ``heights`` is unknown)."""
    if heights is None or len(heights) != len(labels):
        return None
    strata = np.zeros(len(labels), np.int64)  # (n,) source * bins + size bin, each source binned on its own faces
    groups = np.zeros(len(labels), np.int64) if sources is None else np.unique(sources, return_inverse=True)[1]
    for g in np.unique(groups):
        mine = np.flatnonzero(groups == g)
        edges = np.quantile(heights[mine], np.linspace(0.0, 1.0, bins + 1)[1:-1])
        strata[mine] = g * bins + np.searchsorted(edges, heights[mine], side="right")  # bins 0 .. bins - 1
    return within_source_auc(labels, scores, strata)


def measure(face_set: FaceSet, scores: np.ndarray) -> dict[str, float | int | None]:
    """Face-level and clip-level ROC AUC of ``scores`` (n,) P(fake) on ``face_set`` (and face-level within
    each source, where it mixes sources, and between faces of about the same size: ``size_matched_auc``).
    ``size_alone_auc`` is the set's, not the score's: how well the face's size alone (smaller = fake) ranks it."""
    clip_labels, clip_mean = clip_scores(face_set, scores)
    real, fake = scores[face_set.labels == 0], scores[face_set.labels == 1]
    heights = (
        None
        if face_set.heights is None or len(face_set.heights) != len(scores)
        else face_set.heights.astype(np.float64)
    )
    return {
        "faces": len(face_set),
        "clips": len(clip_labels),
        "fake_clips": int(clip_labels.sum()),
        "face_auc": _auc(face_set.labels, scores),
        "clip_auc": _auc(clip_labels, clip_mean),
        "face_auc_within_source": within_source_auc(face_set.labels, scores, face_set.sources),
        "face_auc_size_matched": size_matched_auc(face_set.labels, scores, heights, face_set.sources),
        "size_alone_auc": None if heights is None else within_source_auc(face_set.labels, -heights, face_set.sources),
        "mean_p_fake_real": float(real.mean()) if len(real) else None,
        "mean_p_fake_fake": float(fake.mean()) if len(fake) else None,
    }


SELECT = ("celebdf_hard", "dfdc_select")


class RealFakeValidator:
    """``validator(model) -> {"select": ..., "<set>_face_auc": ..., "<set>_clip_auc": ...}`` for ``fit(select=...)``.

    Loads the held-out sets once (crops at the model's input size, detector boxes cached). The
    selection score is the lowest face-level AUC within source over the ``select`` sets (the worst decides); the other
    sets are measured and recorded alongside, never used to pick.
    """

    def __init__(
        self,
        media: Path,
        detector: str | Path,
        *,
        size: int,
        margin: float,
        cache: Path | None,
        sets: Sequence[str] = SET_NAMES,
        select: Sequence[str] = SELECT,
        device: str = "cpu",
        frames_per_video: int = FRAMES_PER_VIDEO,
    ) -> None:
        from engines import Detector

        bad = [s for s in (*sets, *select) if s not in SET_NAMES]
        if bad:
            raise TrainerError(f"unknown held-out set(s) {bad}; valid: {list(SET_NAMES)}")
        wrong_role = [s for s in select if next(h for h in SETS if h.name == s).role != "select"]
        if wrong_role:
            raise TrainerError(f"set(s) {wrong_role} are for reporting only; selection may use {list(SELECT)}")
        det = Detector(detector)
        names = list(dict.fromkeys([*select, *sets]))
        self.sets = {
            n: load_set(
                n,
                Path(media),
                det,
                detector_sha=det.manifest.sha256,
                size=size,
                margin=margin,
                cache=cache,
                frames_per_video=frames_per_video,
            )
            for n in names
        }
        self.select, self.device = tuple(select), device

    def scores(self, model: Any, images: np.ndarray, batch: int = 64) -> np.ndarray:
        """P(fake) (n,) of uint8 (n, S, S, 3) crops from a torch model (B, 3, S, S) -> (B, 1) logits."""
        import torch

        from trainer.fit import _to_input

        out = []
        with torch.inference_mode():
            for i in range(0, len(images), batch):
                x = torch.from_numpy(images[i : i + batch]).permute(0, 3, 1, 2).float().div_(255.0)  # (B, 3, S, S)
                out.append(torch.sigmoid(model(_to_input(x, self.device))).reshape(-1).double().cpu().numpy())
        return np.concatenate(out) if out else np.zeros(0)

    def __call__(self, model: Any) -> dict[str, float]:
        model.eval()
        record: dict[str, float] = {}
        for name, face_set in self.sets.items():
            m = measure(face_set, self.scores(model, face_set.images))
            mixed = face_set.sources is not None and len(set(face_set.sources.tolist())) > 1
            for key in ("face_auc", "clip_auc", *(["face_auc_within_source"] if mixed else [])):
                record[f"{name}_{key}"] = float("nan") if m[key] is None else float(m[key])
        within = [record.get(f"{n}_face_auc_within_source", record[f"{n}_face_auc"]) for n in self.select]
        record["select"] = float(np.min(within))  # the worst set decides: a mean lets one set hide another
        return record
