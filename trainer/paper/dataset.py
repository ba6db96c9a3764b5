"""Build the face-crop HDF5 store from a Celeb-DF v2 tree (``dfwatch-train dataset``).

Per video: sample frames evenly (PyAV, seeking), find faces with ``engines.Detector`` and cut
them with ``engines.crop_faces`` (or, ``whole_frames``, resize whole frames: the paper's case
1), drop near-duplicate crops (dHash), write the originals with their split, then
``augment_copies`` augmented copies of the rows in ``augment_splits``, which keep their
original's split, label and video. Each finished video is committed, so an interrupted build
resumes where it stopped; unreadable, frameless and faceless videos are recorded and listed.
"""

from __future__ import annotations

import hashlib
import itertools
import logging
import sys
from collections import Counter, deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from engines.images import resize
from trainer.paper.augment import augment_batch, build_augment
from trainer.paper.celebdf import Video, count_by, scan_tree, select_videos
from trainer.paper.config import DatasetConfig
from trainer.paper.dedupe import dhash, keep_distinct
from trainer.paper.frames import NoFramesError, SampledFrames, VideoReadError, sample_frames
from trainer.paper.splits import SplitPlan, plan_splits
from trainer.store import SPLITS, FaceStore, FaceStoreWriter, split_code

logger = logging.getLogger(__name__)


@dataclass
class BuildSummary:
    """What a build did; ``format()`` is the closing table."""

    path: Path
    selected: dict[str, int]  # videos per folder
    rows: dict[tuple[str, str], int] = field(default_factory=dict)  # (split, "real"/"fake") -> crops
    augmented: dict[str, int] = field(default_factory=dict)  # split -> augmented copies
    videos: dict[tuple[str, str], int] = field(default_factory=dict)  # (split, label) -> videos with rows
    status: Counter[str] = field(default_factory=Counter)  # video status -> count
    skipped: list[tuple[str, str, str]] = field(default_factory=list)  # (video, status, detail)
    partial: list[tuple[str, str]] = field(default_factory=list)  # (video, what went wrong) read in part
    shared_people: dict[str, int] = field(default_factory=dict)  # "train & val" -> people on both sides
    split_videos: int = 0  # videos whose frames lie in more than one split (the paper protocol's leakage)
    duplicates: int = 0  # crops dropped as near-duplicates (this run)
    resumed: int = 0  # videos found done in an existing file
    interrupted: bool = False
    fingerprint: str = ""

    def format(self, *, max_listed: int = 20) -> str:
        lines = [f"dataset {self.path}: " + ", ".join(f"{v} {k}" for k, v in self.selected.items()) + " selected"]
        lines.append(f"{'split':<6} {'real':>8} {'fake':>8} {'videos':>7} {'augmented':>10}")
        for s in SPLITS:
            real, fake = self.rows.get((s, "real"), 0), self.rows.get((s, "fake"), 0)
            vids = self.videos.get((s, "real"), 0) + self.videos.get((s, "fake"), 0)
            lines.append(f"{s:<6} {real:>8} {fake:>8} {vids:>7} {self.augmented.get(s, 0):>10}")
        lines.append("videos: " + ", ".join(f"{n} {s}" for s, n in sorted(self.status.items())))
        if self.resumed:
            lines.append(f"resumed: {self.resumed} videos were already done")
        shared = ", ".join(f"{k} {v}" for k, v in self.shared_people.items())
        lines.append(f"people on two sides: {shared}; videos split across sides: {self.split_videos}")
        lines.append(f"near-duplicate crops dropped: {self.duplicates}")
        for video, status, detail in self.skipped[:max_listed]:
            lines.append(f"  skipped {video}: {status}{' (' + detail + ')' if detail else ''}")
        for video, detail in self.partial[:max_listed]:
            lines.append(f"  partly read {video}: {detail}")
        if len(self.skipped) > max_listed:
            lines.append(f"  ... and {len(self.skipped) - max_listed} more (the file's videos/ log lists all)")
        if self.interrupted:
            lines.append("INTERRUPTED: rerun the same command to resume")
        elif self.fingerprint:
            lines.append(f"fingerprint {self.fingerprint[:16]}")
        return "\n".join(lines)


def _top_faces(dets: Any, *, per_frame: int) -> Any:
    """The ``per_frame`` most confident detections of each frame, in frame order."""
    if len(dets) == 0:
        return dets
    order = np.lexsort((-dets.score, dets.frame_index))  # by frame, then by score descending
    fi = dets.frame_index[order]
    rank = np.arange(len(order)) - np.searchsorted(fi, fi, side="left")  # position within its frame
    return dets[order[rank < per_frame]]


def _seed_of(seed: int, video: str) -> int:
    return int.from_bytes(hashlib.blake2b(f"{seed}\0{video}".encode(), digest_size=4).digest(), "little")


_Faces = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]  # crops, frame numbers, boxes, scores


class _Builder:
    """Turns one video into committed rows of the store."""

    def __init__(
        self,
        cfg: DatasetConfig,
        detector: Callable[[list[np.ndarray]], Any] | None,
        plan: SplitPlan,
        writer: FaceStoreWriter,
    ) -> None:
        self.cfg = cfg
        self.detector = detector
        self.plan = plan
        self.writer = writer
        self.aug_codes = [split_code(s) for s in cfg.augment_splits]

    def faces(self, images: list[np.ndarray], index: np.ndarray) -> _Faces:
        """(crops (n, S, S, 3) uint8, frame numbers (n,), boxes (n, 4), scores (n,)) of one video's frames."""
        s = self.cfg.crop_size
        if self.cfg.whole_frames:
            crops = np.stack([resize(im, s, s) for im in images])
            boxes = np.array([[0, 0, im.shape[1], im.shape[0]] for im in images], np.float32)
            return crops, index, boxes, np.full(len(images), np.nan, np.float32)
        from engines import crop_faces

        assert self.detector is not None
        dets = _top_faces(self.detector(images), per_frame=self.cfg.faces_per_frame)
        crops = crop_faces(images, dets, size=s, margin=self.cfg.crop_margin)  # (n, S, S, 3)
        return crops, index[dets.frame_index], dets.xyxy, dets.score

    def read(self, video: Video) -> SampledFrames | VideoReadError | None:
        """The video's sampled frames, or why it cannot be read; None for a video the split leaves out.

        Runs in a reader thread (PyAV decodes without the GIL), ahead of ``video``.
        """
        if video.path in self.plan.excluded:
            return None
        try:
            return sample_frames(Path(self.cfg.celebdf) / video.path, self.cfg.frames)
        except VideoReadError as exc:
            return exc

    def video(self, video: Video, sampled: SampledFrames | VideoReadError | None) -> int:
        """Detect, crop, dedupe, write and commit one video read by ``read``; returns the near-duplicates dropped."""
        cfg, writer = self.cfg, self.writer
        if sampled is None:
            why = f"people on both sides: {self.plan.excluded[video.path]}"
            writer.finish_video(video.path, status="excluded", detail=why)
            return 0
        if isinstance(sampled, VideoReadError):
            status = "no_frames" if isinstance(sampled, NoFramesError) else "unreadable"
            logger.warning("skipping %s: %s", video.path, sampled)
            writer.finish_video(video.path, status=status, detail=str(sampled))
            return 0
        if sampled.detail:
            logger.warning("%s: %s (keeping the %d frames read)", video.path, sampled.detail, len(sampled))
        crops, frame, box, score = self.faces(sampled.images, sampled.index)
        if len(crops) == 0:
            writer.finish_video(video.path, status="no_face", frames=len(sampled), detail=sampled.detail)
            return 0
        keep = keep_distinct(dhash(crops), max_distance=cfg.dedupe_hamming)
        crops, frame, box, score = crops[keep], frame[keep], box[keep], score[keep]
        split = self.plan.split_of(video.path, frame)  # (n,) uint8
        common = {
            "label": video.label,
            "video": video.path,
            "identity": video.identity,
            "identity_src": video.identity_src,
        }
        rows = writer.append(crops, frame=frame, box=box, det_score=score, split=split, **common)
        copy = np.isin(split, self.aug_codes)  # copies keep their original's split
        if cfg.augment_copies and copy.any():
            aug = build_augment(cfg.augment, seed=_seed_of(cfg.seed, video.path))  # the same copies on a rerun
            for k in range(1, cfg.augment_copies + 1):
                writer.append(
                    augment_batch(crops[copy], aug),
                    frame=frame[copy],
                    box=box[copy],
                    det_score=score[copy],
                    split=split[copy],
                    augmented=k,
                    origin=rows[copy],
                    **common,
                )
        writer.finish_video(video.path, status="ok", frames=len(sampled), faces=len(crops), detail=sampled.detail)
        return int((~keep).sum())


def open_detector(cfg: DatasetConfig) -> tuple[Callable[[list[np.ndarray]], Any] | None, str]:
    """The engines Detector of ``cfg`` and its artifact's sha256 (None, "" for whole frames)."""
    if cfg.whole_frames:
        return None, ""
    from engines import Detector

    det = Detector(cfg.detector, conf=cfg.det_conf, threads=cfg.threads)
    if det.manifest.placeholder:
        logger.warning(
            "%s is an untrained placeholder: its boxes are noise, so the crops will not show faces; "
            "use a trained face detector (--detector) or --whole-frames",
            cfg.detector,
        )
    return det, det.manifest.sha256


def build_dataset(
    cfg: DatasetConfig,
    *,
    detector: Callable[[list[np.ndarray]], Any] | None = None,
    detector_sha256: str | None = None,
    progress: bool = True,
) -> BuildSummary:
    """Build or resume the store ``cfg.out``; returns the summary (also for an interrupted build).

    ``detector`` (frames -> engines.Detections) defaults to ``engines.Detector(cfg.detector)``.
    Raises TreeError for a bad tree and StoreError when ``cfg.out`` is corrupt or was built
    with other options; a KeyboardInterrupt stops after committing the finished videos.
    """
    from tqdm import tqdm

    videos = select_videos(
        scan_tree(cfg.celebdf),
        n_real=cfg.n_real,
        n_fake=cfg.n_fake,
        all_videos=cfg.all_videos,
        test_fraction=cfg.test_fraction,
        seed=cfg.seed,
    )
    plan = plan_splits(
        videos, protocol=cfg.split, val_fraction=cfg.val_fraction, test_fraction=cfg.test_fraction, seed=cfg.seed
    )
    if detector is None and not cfg.whole_frames:
        detector, detector_sha256 = open_detector(cfg)
    summary = BuildSummary(cfg.out, count_by(videos))
    writer = FaceStoreWriter(
        cfg.out,
        crop_size=cfg.crop_size,
        crop_margin=cfg.crop_margin,
        whole_frames=cfg.whole_frames,
        source=str(Path(cfg.celebdf).resolve()),
        frames_per_video=cfg.frames,
        detector_sha256="" if cfg.whole_frames else (detector_sha256 or ""),
        split_protocol=cfg.split,
        extra_attrs=cfg.recorded(),
    )
    with writer:
        builder = _Builder(cfg, detector, plan, writer)
        done = writer.done_videos()
        todo = [v for v in videos if v.path not in done]
        summary.resumed = len(videos) - len(todo)
        if summary.resumed:
            logger.info("%s: %d of %d videos already done, resuming", cfg.out, summary.resumed, len(videos))
        bar = tqdm(total=len(todo), desc="dataset", unit="video", file=sys.stderr, disable=None if progress else True)
        pool = ThreadPoolExecutor(max_workers=cfg.readers, thread_name_prefix="dataset-read")
        try:
            ahead: deque[tuple[Video, Future[Any]]] = deque()
            pending = iter(todo)
            for video in itertools.islice(pending, 2 * cfg.readers):  # decode ahead while detecting
                ahead.append((video, pool.submit(builder.read, video)))
            while ahead:
                video, future = ahead.popleft()
                for nxt in itertools.islice(pending, 1):
                    ahead.append((nxt, pool.submit(builder.read, nxt)))
                summary.duplicates += builder.video(video, future.result())
                bar.update()
                bar.set_postfix(rows=writer.rows, refresh=False)
        except KeyboardInterrupt:
            summary.interrupted = True
            logger.warning("interrupted: %d rows of finished videos are kept in %s", writer.rows, cfg.out)
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
            bar.close()
    _fill_summary(summary, cfg.out)
    return summary


def _fill_summary(summary: BuildSummary, path: Path) -> None:
    with FaceStore(path) as store:
        label = store.meta("label")
        split = store.meta("split")
        aug = store.meta("augmented")
        video = store.meta("video")
        for code, s in enumerate(SPLITS):
            for value, name in ((0, "real"), (1, "fake")):
                mask = (split == code) & (label == value) & (aug == 0)
                summary.rows[(s, name)] = int(mask.sum())
                summary.videos[(s, name)] = len(set(video[mask].tolist()))
            summary.augmented[s] = int(((split == code) & (aug > 0)).sum())
        orig = aug == 0
        people = {
            code: set(store.meta("identity")[orig & (split == code)].tolist())
            | set(store.meta("identity_src")[orig & (split == code)].tolist()) - {""}
            for code in range(len(SPLITS))
        }
        for a, b in ((0, 1), (0, 2), (1, 2)):
            summary.shared_people[f"{SPLITS[a]} & {SPLITS[b]}"] = len(people[a] & people[b])
        sides: dict[str, set[int]] = {}
        for v, code in zip(video[orig].tolist(), split[orig].tolist()):
            sides.setdefault(v, set()).add(code)
        summary.split_videos = sum(len(c) > 1 for c in sides.values())
        for entry in store.video_log():
            summary.status[entry["status"]] += 1
            if entry["status"] != "ok":
                summary.skipped.append((entry["path"], entry["status"], entry["detail"]))
            elif entry["detail"]:
                summary.partial.append((entry["path"], entry["detail"]))
        if not summary.interrupted:
            summary.fingerprint = store.fingerprint()
