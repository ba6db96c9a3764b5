"""Validate a model pack on what its training never saw (behind `dfwatch-train validate`).

Two views of the labelled sets of ``../shared/data`` (trainer.pack.realval):

- ``face_sets``: every held-out set as served crops (shipped detector, ``engines.crop_faces`` at the
  classifier's input size), scored by the ONNX artifact through ``engines.Classifier``: face-level
  and clip-level ROC AUC;
- ``video_sets``: whole videos through the full service (in process, as `dfwatch watch` serves them,
  pipeline.clips: decode, detect, track, classify, smooth, verdict at the shipped thresholds): per clip the mean
  raw face score and whether the verdict ever turned FAKE; per set the clip-level AUC of the
  mean score, the share of real clips that ever alerted and the share of fakes caught. The
  held-out real clips (``real_videos`` of the ``test`` split) join them, to count false alerts,
  as they are (``real_clips``) and under five broadcast conditions (``real_broadcast``,
  trainer.pack.conditions: heavy compression, SD upscaled, sharpened, denoised, smaller).
"""

from __future__ import annotations

import logging
import tempfile
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from trainer import realmedia
from trainer.errors import TrainerError
from trainer.metrics import roc_auc
from trainer.pack import realval

logger = logging.getLogger(__name__)

VIDEO_SETS = ("celebdf_hard", "deeperforensics", "lipsync", "deepfacelive", "real_clips", "real_broadcast")


@dataclass(frozen=True)
class Clip:
    path: Path  # a video file the service can open
    label: int  # 1 = fake
    name: str  # for reports: the file relative to the data folder (":left" / ":right" for DeepFaceLive halves)


def face_sets(
    classifier: Any, detector: Any, media: Path, *, cache: Path | None, sets: Sequence[str] = realval.SET_NAMES
) -> dict[str, dict[str, Any]]:
    """Face- and clip-level AUC of every held-out set, scored as served (``classifier`` an engines.Classifier)."""
    return score_sets({"": classifier}, detector, media, cache=cache, sets=sets)[""]


def score_sets(
    scorers: Mapping[str, Any],
    detector: Any,
    media: Path,
    *,
    cache: Path | None,
    sets: Sequence[str] = realval.SET_NAMES,
) -> dict[str, dict[str, dict[str, Any]]]:
    """``face_sets`` of several scorers that cut faces alike (``input_size``, ``crop_margin``, ``min_face`` where
    they have one): each set is read and cut once. Returns scorer name -> set -> measures."""
    cuts = {(c.input_size, c.crop_margin, getattr(c, "min_face", 0)) for c in scorers.values()}
    if len(cuts) != 1:
        raise TrainerError(f"scorers cut faces differently (input size, margin, min face): {sorted(cuts)}")
    (size, margin, min_face), out = cuts.pop(), {n: {} for n in scorers}
    for name in sets:
        face_set = realval.load_set(
            name,
            media,
            detector,
            detector_sha=detector.manifest.sha256,
            size=size,
            margin=margin,
            cache=cache,
            min_face=min_face,
        )
        role = next(s for s in realval.SETS if s.name == name)
        for scorer, score in scorers.items():
            scores = np.concatenate([score(face_set.images[i : i + 64]) for i in range(0, len(face_set), 64)])
            out[scorer][name] = {
                "what": role.what,
                "role": role.role,
                "missed_faces": face_set.missed,
                "small_faces": face_set.small,
                **realval.measure(face_set, scores.astype(np.float64)),
            }
    return out


def clips(name: str, media: Path, work: Path, *, split: str = "test") -> list[Clip]:
    """The videos of video set ``name``; DeepFaceLive side-by-side clips are cut into halves under ``work``.
    ``real_clips`` are the ``real_videos`` clips of ``split`` (all real)."""
    if name == "real_clips":
        return [Clip(s.path, 0, s.rel) for s in realmedia.real_videos(media) if s.split == split]
    if name == "real_broadcast":
        from trainer.pack import conditions

        real = [s.path for s in realmedia.real_videos(media) if s.split == split]
        return [Clip(path, 0, what) for path, what in conditions.variants(real, work / "broadcast").items()]
    if name not in VIDEO_SETS:
        raise TrainerError(f"unknown video set {name!r}; valid: {list(VIDEO_SETS)}")
    out = []
    for item in realval.items(name, media):
        rel = item.path.relative_to(media).as_posix()
        if item.half:
            half = work / f"{item.path.stem}_{item.half}.mp4"
            if not half.is_file():
                _write_half(item.path, half, item.half)
            out.append(Clip(half, item.label, f"{rel}:{item.half}"))
        else:
            out.append(Clip(item.path, item.label, rel))
    return out


def calibration_clips(media: Path, work: Path | None = None) -> tuple[list[Path], list[Path]]:
    """(real, fake) videos that set the verdict thresholds (`dfwatch-train calibrate`), apart from what
    ``video_sets`` reports alerts on: the ``val`` real_videos clips (with ``work``, also under every broadcast
    condition, written there) and the Celeb-DF hard segments' fakes."""
    real = [s.path for s in realmedia.real_videos(media) if s.split == "val"]
    if work is not None:
        from trainer.pack import conditions

        real += list(conditions.variants(real, work / "broadcast"))
    fake = [i.path for i in realval.items("celebdf_hard", media) if i.label == 1]
    return real, fake


def _write_half(src: Path, dst: Path, half: str) -> None:
    """The left or right half of every frame of ``src``, as an H.264 file at the same rate (near-lossless)."""
    from trainer.pack.conditions import rewrite

    def cut(img: np.ndarray) -> np.ndarray:
        w = img.shape[1] // 2 // 2 * 2  # even sides for yuv420p
        return img[:, :w] if half == "left" else img[:, img.shape[1] - w :]

    rewrite(src, dst, cut, crf=12)


@dataclass(frozen=True)
class ServiceRun:
    """The service on whole files, as `dfwatch watch` serves them, per video (its path)."""

    summary: dict[str, dict[str, Any]]  # frames, face scores, their mean, verdicts, last, ever FAKE, first FAKE frame
    face_scores: dict[str, np.ndarray]  # every raw face score (``p_fake_last`` of each face on each frame)
    frame_scores: dict[str, list[float | None]]  # the stream score of each frame (None: no scored face)


def pipeline_videos(
    models: Path, videos: Sequence[Path], *, detector: Path | None = None, threads: int | None = None
) -> ServiceRun:
    """Run the service in process on whole files (pipeline.clips.serve_files: decode, detect, track, classify,
    verdict), with the models of ``models`` as `dfwatch watch` serves them (``detector``: that artifact instead of
    the served default; ``threads``: ONNX Runtime threads, None = all cores). TrainerError when a file breaks off."""
    from pipeline.clips import serve_files
    from pipeline.config import ModelsConfig

    logger.info("running the service on %d video(s)", len(videos))
    runs = serve_files(videos, ModelsConfig(dir=models, detector=detector, threads=threads))
    broken = [f"{run.path}: {run.error}" for run in runs if run.error]
    if broken:
        raise TrainerError(f"the service could not read {len(broken)} video(s): {'; '.join(broken)}")
    out, raw, series = {}, {}, {}
    for run in runs:
        key, verdicts, scores = str(run.path), run.verdicts, run.scores
        raw[key], series[key] = run.face_scores, scores
        seen = [s for s in scores if s is not None]
        out[key] = {
            "frames": len(verdicts),
            "face_scores": len(raw[key]),
            "mean_p_fake": round(float(raw[key].mean()), 4) if len(raw[key]) else None,
            "max_stream_score": max(seen) if seen else None,
            "verdicts": dict(Counter(v.state.value for v in verdicts)),
            "last_verdict": verdicts[-1].state.value if verdicts else None,
            "ever_fake": run.first_fake is not None,
            "first_fake_frame": run.first_fake,
        }
    return ServiceRun(out, raw, series)


def video_sets(
    models: Path,
    media: Path,
    *,
    sets: Sequence[str] = VIDEO_SETS,
    split: str = "test",
    work: Path | None = None,
    detector: Path | None = None,
    threads: int | None = None,
) -> dict[str, dict[str, Any]]:
    """Every video set through the service (``pipeline_videos``, whose ``detector`` and ``threads`` these are); see
    the module docstring. The clips made from the media (DeepFaceLive halves, broadcast conditions) are written
    under ``work`` and kept for the next run (None: a temporary folder)."""
    with tempfile.TemporaryDirectory(prefix="dfwatch-validate-") as tmp:
        listed = {name: clips(name, media, Path(tmp) if work is None else work, split=split) for name in sets}
        videos = [c.path for cs in listed.values() for c in cs]
        summary = pipeline_videos(models, videos, detector=detector, threads=threads).summary
    out = {}
    for name, members in listed.items():
        rows = [{"clip": c.name, "label": c.label, **summary[str(c.path)]} for c in members]
        labels = np.array([r["label"] for r in rows])
        means = np.array([r["mean_p_fake"] if r["mean_p_fake"] is not None else 0.0 for r in rows])
        ever = np.array([r["ever_fake"] for r in rows], bool)
        both = 0 < labels.sum() < len(labels)
        out[name] = {
            "clips": len(rows),
            "fake_clips": int(labels.sum()),
            "clip_auc": roc_auc(labels, means) if both else None,
            "real_alert_rate": float(ever[labels == 0].mean()) if (labels == 0).any() else None,
            "fake_catch_rate": float(ever[labels == 1].mean()) if labels.any() else None,
            "verdicts_right": int((ever == (labels == 1)).sum()),
            "rows": rows,
        }
    return out


def alert_summary(videos: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Over every video set: real clips that ever turned FAKE, fake clips caught."""
    rows = [r for s in videos.values() for r in s["rows"]]
    real = [r for r in rows if r["label"] == 0]
    fake = [r for r in rows if r["label"] == 1]
    return {
        "real_clips": len(real),
        "real_alerted": sum(r["ever_fake"] for r in real),
        "fake_clips": len(fake),
        "fake_caught": sum(r["ever_fake"] for r in fake),
        "real_alerted_clips": [r["clip"] for r in real if r["ever_fake"]],
        "fake_missed_clips": [r["clip"] for r in fake if not r["ever_fake"]],
    }


def _fmt(v: Any) -> str:
    if v is None:
        return "–"
    return f"{v:.3f}" if isinstance(v, float) else str(v)


def report_markdown(report: dict[str, Any]) -> str:
    """The validate report as markdown tables (the model card quotes them). "size-matched": the face AUC between
    faces of about the same size (``realval.size_matched_auc``); "face size alone": the AUC of the face's size
    (smaller = fake), what a score that only follows size would reach."""
    lines = [
        "| held-out set (faces as served) | role | faces | clips | face AUC | face AUC, size-matched | clip AUC | "
        "face size alone |",
        "|---|---|--:|--:|--:|--:|--:|--:|",
    ]
    for name, m in report["face_sets"].items():
        lines.append(
            f"| {name}: {m['what']} | {m['role']} | {m['faces']} | {m['clips']} | {_fmt(m['face_auc'])} | "
            f"{_fmt(m['face_auc_size_matched'])} | {_fmt(m['clip_auc'])} | "
            f"{_fmt(m['size_alone_auc'])} |"
        )
    lines += [
        "",
        "| videos through `dfwatch watch` | real / fake clips | clip AUC (mean score) | real clips alerted | "
        "fakes caught |",
        "|---|--:|--:|--:|--:|",
    ]
    for name, m in report["video_sets"].items():
        reals = m["clips"] - m["fake_clips"]
        alerted = "–" if m["real_alert_rate"] is None else f"{round(m['real_alert_rate'] * reals)} of {reals}"
        caught = (
            "–"
            if m["fake_catch_rate"] is None
            else f"{round(m['fake_catch_rate'] * m['fake_clips'])} of {m['fake_clips']}"
        )
        lines.append(f"| {name} | {reals} / {m['fake_clips']} | {_fmt(m['clip_auc'])} | {alerted} | {caught} |")
    a = report["alerts"]
    lines += [
        "",
        f"All video sets: {a['real_alerted']} of {a['real_clips']} real clips ever turned FAKE; "
        f"{a['fake_caught']} of {a['fake_clips']} fake clips were caught.",
    ]
    return "\n".join(lines) + "\n"
