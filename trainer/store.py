"""The face-crop HDF5 store: one file of uint8 crops plus per-crop metadata columns.

Layout (schema 1), every dataset of length N along axis 0, chunked along it and compressed:

- ``crops`` uint8 (N, S, S, 3) RGB; ``label`` uint8 (N,) 1 = fake, 0 = real
- ``video`` str: path relative to the tree ("Celeb-synthesis/id0_id16_0000.mp4")
- ``identity`` str: whose video it is ("id0", "yt:00170"); ``identity_src`` str: the swapped-in
  person for fakes ("id16"), "" otherwise
- ``frame`` int32 frame index; ``box`` float32 (N, 4) xyxy source pixels (whole frames: the
  full frame); ``det_score`` float32 (NaN for whole frames: no detector ran)
- ``split`` uint8 0 = train, 1 = val, 2 = test
- ``augmented`` uint8 0 = original, k = k-th offline augmented copy; ``origin`` int64 row of the
  original crop (itself for originals)
- group ``videos``: one row per finished video (``path``, ``status``, ``frames``, ``faces``,
  ``detail``), so a resumed build knows what is done and the summary lists what was skipped.

Root attributes: ``schema``, ``crop_size``, ``crop_margin``, ``whole_frames``, ``source``,
``frames_per_video``, ``detector_sha256``, ``split_protocol``, ``created``, ``rows`` (rows
committed: a crash mid-video leaves rows past it, dropped on the next open) and any extra
build options the writer was given.

Crash safety: HDF5 rewrites metadata in place, and a process killed inside a flush can leave a
file whose B-trees point at space the superblock does not cover: unreadable, hours of crops lost.
So the writer never writes the store itself. It works on ``<store>.partial`` (a copy of the last
published store) and publishes it with fsync and an atomic rename at close and every
``publish_every`` seconds; a kill at any moment leaves the last published store whole, and the
next run resumes from it (losing at most the videos since that publish).
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import shutil
import time
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from trainer.errors import StoreError

logger = logging.getLogger(__name__)

SCHEMA = 1
SPLITS = ("train", "val", "test")  # split code = position
SPLIT_CODES = {name: code for code, name in enumerate(SPLITS)}
VIDEO_STATUSES = ("ok", "no_face", "unreadable", "no_frames", "excluded")

_STR = h5py.string_dtype("utf-8")
_META_CHUNK = 4096
# name -> (dtype, per-row shape); crops are added with their crop size
_COLUMNS: dict[str, tuple[Any, tuple[int, ...]]] = {
    "label": (np.uint8, ()),
    "video": (_STR, ()),
    "identity": (_STR, ()),
    "identity_src": (_STR, ()),
    "frame": (np.int32, ()),
    "box": (np.float32, (4,)),
    "det_score": (np.float32, ()),
    "split": (np.uint8, ()),
    "augmented": (np.uint8, ()),
    "origin": (np.int64, ()),
}
_STR_COLUMNS = {"video", "identity", "identity_src"}
_LOG_COLUMNS: dict[str, Any] = {"path": _STR, "status": _STR, "frames": np.int32, "faces": np.int32, "detail": _STR}
# attributes that must agree when an existing file is opened to append
_BUILD_ATTRS = (
    "crop_size",
    "crop_margin",
    "whole_frames",
    "source",
    "frames_per_video",
    "detector_sha256",
    "split_protocol",
)
_VOLATILE_ATTRS = {"created", "rows"}  # left out of the fingerprint


def split_code(name: str) -> int:
    """ "train" / "val" / "test" -> 0 / 1 / 2."""
    if name not in SPLIT_CODES:
        raise StoreError(f"unknown split {name!r}; valid: {list(SPLITS)}")
    return SPLIT_CODES[name]


def _attr(value: Any) -> Any:
    """An HDF5 attribute value as a plain Python value (numpy scalars and bytes unwrapped)."""
    if isinstance(value, bytes):
        return value.decode()
    if isinstance(value, np.generic):
        return value.item()
    return value


class FaceStoreWriter:
    """Append face crops to a new or existing store; use as a context manager.

    Rows of one video go in with one or more ``append`` calls, then ``finish_video`` records
    the video as done and flushes the file, so an interrupted build loses at most the video
    in progress and a rerun skips ``done_videos()``. Opening an existing file checks that it
    was built with the same options (crop size, margin, protocol, ...).
    """

    def __init__(
        self,
        path: str | Path,
        *,
        publish_every: float = 300.0,
        crop_size: int,
        crop_margin: float,
        whole_frames: bool,
        source: str,
        frames_per_video: int,
        detector_sha256: str,
        split_protocol: str,
        extra_attrs: Mapping[str, Any] | None = None,
    ) -> None:
        if crop_size < 8:
            raise StoreError(f"crop_size must be >= 8, got {crop_size}")
        if split_protocol not in ("identity", "paper"):
            raise StoreError(f"unknown split protocol {split_protocol!r}; valid: ['identity', 'paper']")
        self.path = Path(path)
        self.work = self.path.with_name(self.path.name + ".partial")  # what is written; published by rename
        self.publish_every = publish_every  # seconds between publishes of the committed work (and at close)
        self._published_at = 0.0
        self._lock: int | None = None  # flock on <store>.lock: one writer per store
        self.crop_size = int(crop_size)
        attrs: dict[str, Any] = {
            "schema": SCHEMA,
            "crop_size": int(crop_size),
            "crop_margin": float(crop_margin),
            "whole_frames": bool(whole_frames),
            "source": str(source),
            "frames_per_video": int(frames_per_video),
            "detector_sha256": str(detector_sha256),
            "split_protocol": split_protocol,
        }
        extra = dict(extra_attrs or {})
        clash = set(extra) & (set(attrs) | _VOLATILE_ATTRS | set(_COLUMNS))
        if clash:
            raise StoreError(f"extra_attrs may not redefine {sorted(clash)}")
        self._wanted = attrs | extra
        self._h5: h5py.File | None = None

    # -- context -----------------------------------------------------------------------------
    def __enter__(self) -> FaceStoreWriter:
        self.open()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def open(self) -> None:
        existed = self.path.exists()
        if existed:
            _check_readable(self.path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = os.open(self.path.with_name(self.path.name + ".lock"), os.O_CREAT | os.O_RDWR, 0o644)
        try:
            fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._unlock()
            raise StoreError(f"{self.path}: cannot open for writing; is another dfwatch-train writing it?") from None
        if self.work.exists():  # left by a run that was killed: it may be torn; the published store is not
            logger.warning(
                "%s: discarding %s of an interrupted run; resuming from the last published store",
                self.path,
                self.work.name,
            )
        if existed:
            shutil.copyfile(self.path, self.work)
        else:
            self.work.unlink(missing_ok=True)
        try:
            self._h5 = h5py.File(self.work, "a")
        except OSError as exc:
            self._unlock()
            raise StoreError(f"{self.path}: cannot open for writing ({exc})") from exc
        self._published_at = time.monotonic()
        if existed and "rows" in self._h5.attrs:
            try:
                self._check_same_build()
            except StoreError:
                self._abandon()
                raise
            self._drop_uncommitted()
        elif existed and (len(self._h5) or len(self._h5.attrs)):
            self._abandon()
            raise StoreError(
                f"{self.path}: an HDF5 file that is not a face store (or one interrupted before "
                "its first video was written); refusing to append to it: delete it or choose another --out"
            )
        else:
            self._create()

    def close(self) -> None:
        """Flush and publish the store (fsync, atomic rename over ``path``)."""
        if self._h5 is not None:
            self._h5.flush()
            self._h5.close()
            self._h5 = None
            _fsync(self.work)
            os.replace(self.work, self.path)
            _fsync(self.path.parent)
        self._unlock()

    def publish(self) -> None:
        """Make ``path`` a copy of the work so far (fsync, atomic rename), and go on writing the work."""
        self._file.flush()
        tmp = self.path.with_name(self.path.name + ".publishing")
        shutil.copyfile(self.work, tmp)
        _fsync(tmp)
        os.replace(tmp, self.path)
        _fsync(self.path.parent)
        self._published_at = time.monotonic()

    def _abandon(self) -> None:
        """Close and delete the work copy: the store stays as it was."""
        if self._h5 is not None:
            self._h5.close()
            self._h5 = None
        self.work.unlink(missing_ok=True)
        self._unlock()

    def _unlock(self) -> None:
        if self._lock is not None:
            os.close(self._lock)  # releases the flock
            self._lock = None

    # -- writing -----------------------------------------------------------------------------
    @property
    def rows(self) -> int:
        """Rows written so far (committed or not)."""
        return len(self._file["label"])

    def append(
        self,
        crops: np.ndarray,
        *,
        label: int | np.ndarray,
        video: str | Iterable[str],
        identity: str | Iterable[str],
        identity_src: str | Iterable[str],
        frame: int | np.ndarray,
        box: np.ndarray,
        det_score: float | np.ndarray,
        split: int | str | np.ndarray,
        augmented: int | np.ndarray = 0,
        origin: np.ndarray | None = None,
    ) -> np.ndarray:
        """Append n crops (n, S, S, 3) uint8; scalar columns are broadcast. Returns the n new row numbers.

        ``origin`` defaults to the new rows themselves (originals); augmented copies pass the
        rows of the crops they were made from.
        """
        h5 = self._file
        s = self.crop_size
        crops = np.asarray(crops)
        if crops.dtype != np.uint8 or crops.ndim != 4 or crops.shape[1:] != (s, s, 3):
            raise StoreError(f"crops must be uint8 (n, {s}, {s}, 3), got {crops.dtype} {crops.shape}")
        n = len(crops)
        start = len(h5["label"])
        rows = np.arange(start, start + n, dtype=np.int64)
        if isinstance(split, str):
            split = split_code(split)
        cols: dict[str, np.ndarray] = {
            "label": _column("label", label, n, np.uint8),
            "video": _str_column("video", video, n),
            "identity": _str_column("identity", identity, n),
            "identity_src": _str_column("identity_src", identity_src, n),
            "frame": _column("frame", frame, n, np.int32),
            "box": np.asarray(box, np.float32).reshape(n, 4),
            "det_score": _column("det_score", det_score, n, np.float32),
            "split": _column("split", split, n, np.uint8),
            "augmented": _column("augmented", augmented, n, np.uint8),
            "origin": rows if origin is None else _column("origin", origin, n, np.int64),
        }
        if not np.isin(cols["label"], (0, 1)).all():
            raise StoreError(f"label must be 0 (real) or 1 (fake), got {np.unique(cols['label']).tolist()}")
        if (cols["split"] >= len(SPLITS)).any():
            raise StoreError(f"split codes must be in 0..{len(SPLITS) - 1} ({list(SPLITS)})")
        if n == 0:
            return rows
        h5["crops"].resize(start + n, axis=0)
        h5["crops"][start:] = crops
        for name, values in cols.items():
            h5[name].resize(start + n, axis=0)
            h5[name][start:] = values
        return rows

    def finish_video(
        self, video: str, *, status: str = "ok", frames: int = 0, faces: int = 0, detail: str = ""
    ) -> None:
        """Record ``video`` as done (or skipped, with ``status`` and why), commit its rows and flush."""
        if status not in VIDEO_STATUSES:
            raise StoreError(f"unknown video status {status!r}; valid: {list(VIDEO_STATUSES)}")
        log = self._file["videos"]
        k = len(log["path"])
        row = {"path": video, "status": status, "frames": frames, "faces": faces, "detail": detail}
        for name, value in row.items():
            log[name].resize(k + 1, axis=0)
            log[name][k] = value
        self._file.attrs["rows"] = self.rows
        self._file.flush()
        if time.monotonic() - self._published_at >= self.publish_every:
            self.publish()

    def done_videos(self) -> set[str]:
        """Videos already finished (written, or skipped with a recorded reason)."""
        return set(self._file["videos"]["path"].asstr()[...].tolist())

    def video_log(self) -> list[dict[str, Any]]:
        return _read_log(self._file)

    # -- internals ---------------------------------------------------------------------------
    @property
    def _file(self) -> h5py.File:
        if self._h5 is None:
            raise StoreError("FaceStoreWriter is not open; use it as a context manager")
        return self._h5

    def _create(self) -> None:
        h5 = self._file
        s = self.crop_size
        h5.create_dataset(
            "crops",
            shape=(0, s, s, 3),
            maxshape=(None, s, s, 3),
            dtype=np.uint8,
            chunks=(1, s, s, 3),
            compression="gzip",
            compression_opts=4,
            shuffle=True,
        )
        for name, (dtype, shape) in _COLUMNS.items():
            h5.create_dataset(
                name,
                shape=(0, *shape),
                maxshape=(None, *shape),
                dtype=dtype,
                chunks=(_META_CHUNK, *shape),
                compression="gzip",
                compression_opts=4,
            )
        log = h5.create_group("videos")
        for name, dtype in _LOG_COLUMNS.items():
            log.create_dataset(name, shape=(0,), maxshape=(None,), dtype=dtype, chunks=(1024,))
        for key, value in self._wanted.items():
            h5.attrs[key] = value
        h5.attrs["created"] = datetime.now(UTC).isoformat(timespec="seconds")
        h5.attrs["rows"] = 0
        h5.flush()

    def _check_same_build(self) -> None:
        attrs = {k: _attr(v) for k, v in self._file.attrs.items()}
        if attrs.get("schema") != SCHEMA:
            raise StoreError(f"{self.path}: schema {attrs.get('schema')!r}, this dfwatch writes schema {SCHEMA}")
        diff = [
            f"{k}: file has {attrs.get(k)!r}, asked for {v!r}"
            for k, v in self._wanted.items()
            if not _same(attrs.get(k), v)
        ]
        if diff:
            raise StoreError(
                f"{self.path} was built with other options ({'; '.join(diff)}); "
                "resume with the same options or write to a new file"
            )

    def _drop_uncommitted(self) -> None:
        h5 = self._file
        rows = int(h5.attrs["rows"])
        extra = len(h5["label"]) - rows
        log = h5["videos"]
        n_log = min(len(log[name]) for name in _LOG_COLUMNS)  # a log row written in part is dropped
        if extra > 0 and n_log and log["path"].asstr()[n_log - 1] in set(h5["video"].asstr()[rows:].tolist()):
            n_log -= 1  # finish_video was interrupted after logging the video but before committing its rows
        for name in _LOG_COLUMNS:
            if len(log[name]) > n_log:
                log[name].resize(n_log, axis=0)
        if extra > 0:
            logger.warning("%s: dropping %d rows of a video that was interrupted; it is redone", self.path, extra)
            for name in ("crops", *_COLUMNS):
                h5[name].resize(rows, axis=0)
        h5.flush()


def _fsync(path: Path) -> None:
    """Force ``path`` (a file, or a folder after a rename in it) to disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, float) or isinstance(b, float):
        return a is not None and b is not None and abs(float(a) - float(b)) < 1e-9
    return a == b


def _column(name: str, value: Any, n: int, dtype: Any) -> np.ndarray:
    arr = np.asarray(value)
    if arr.ndim == 0:
        return np.full(n, arr, dtype=dtype)
    if arr.shape != (n,):
        raise StoreError(f"column {name!r} has shape {arr.shape}, expected ({n},) or a scalar")
    return arr.astype(dtype)


def _str_column(name: str, value: str | Iterable[str], n: int) -> np.ndarray:
    values = [value] * n if isinstance(value, str) else list(value)
    if len(values) != n:
        raise StoreError(f"column {name!r} has {len(values)} values, expected {n} or one string")
    return np.array(values, dtype=object)


def _check_readable(path: Path) -> None:
    if not h5py.is_hdf5(path):
        raise StoreError(f"{path}: not an HDF5 file (corrupt or truncated?); delete it or choose another --out")


def _read_log(h5: h5py.File) -> list[dict[str, Any]]:
    log = h5["videos"]
    cols = {
        name: (log[name].asstr()[...] if h5py.check_string_dtype(log[name].dtype) else log[name][...]).tolist()
        for name in _LOG_COLUMNS
    }
    return [dict(zip(cols, row)) for row in zip(*cols.values())]


class FaceStore:
    """Read-only view of a face store; metadata columns are read once and cached.

    ``len(store)`` counts committed rows only. Raises StoreError for a missing, unreadable,
    corrupt or other-schema file.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise StoreError(f"{self.path}: no such face store; build one with `dfwatch-train dataset`")
        _check_readable(self.path)
        try:
            self._h5 = h5py.File(self.path, "r")
        except OSError as exc:
            raise StoreError(f"{self.path}: unreadable HDF5 file ({exc})") from exc
        try:
            self.attrs: dict[str, Any] = {k: _attr(v) for k, v in self._h5.attrs.items()}
            self._validate()
        except StoreError:
            self._h5.close()
            raise
        except (OSError, KeyError, ValueError) as exc:
            self._h5.close()
            raise StoreError(f"{self.path}: corrupt face store ({exc})") from exc
        self._n = int(self.attrs["rows"])
        self._meta: dict[str, np.ndarray] = {}

    def _validate(self) -> None:
        if self.attrs.get("schema") != SCHEMA:
            raise StoreError(
                f"{self.path}: schema {self.attrs.get('schema')!r}, expected {SCHEMA}; "
                "rebuild it with `dfwatch-train dataset`"
            )
        missing = [k for k in ("crops", *_COLUMNS, "videos") if k not in self._h5]
        missing += [f"attribute {k}" for k in (*_BUILD_ATTRS, "rows") if k not in self.attrs]
        if missing:
            raise StoreError(f"{self.path}: not a complete face store, missing {missing}")
        rows = int(self.attrs["rows"])
        short = {k: len(self._h5[k]) for k in ("crops", *_COLUMNS) if len(self._h5[k]) < rows}
        if short:
            raise StoreError(f"{self.path}: corrupt face store, {rows} rows committed but {short}")
        s = int(self.attrs["crop_size"])
        if self._h5["crops"].shape[1:] != (s, s, 3) or self._h5["crops"].dtype != np.uint8:
            raise StoreError(f"{self.path}: crops are {self._h5['crops'].dtype} {self._h5['crops'].shape[1:]}")

    def close(self) -> None:
        self._h5.close()

    def __enter__(self) -> FaceStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __len__(self) -> int:
        return self._n

    @property
    def crop_size(self) -> int:
        return int(self.attrs["crop_size"])

    def meta(self, name: str) -> np.ndarray:
        """One metadata column (N,) (``box``: (N, 4)); string columns come back as numpy str arrays."""
        if name not in _COLUMNS:
            raise StoreError(f"unknown column {name!r}; valid: {sorted(_COLUMNS)}")
        if name not in self._meta:
            ds = self._h5[name]
            try:
                values = ds.asstr()[: self._n] if name in _STR_COLUMNS else ds[: self._n]
            except OSError as exc:
                raise StoreError(f"{self.path}: corrupt column {name!r} ({exc})") from exc
            self._meta[name] = np.asarray(values, dtype=str) if name in _STR_COLUMNS else np.asarray(values)
        return self._meta[name]

    def indices(self, split: str | None = None, *, originals_only: bool = False) -> np.ndarray:
        """Row numbers (sorted int64) of a split ("train", "val", "test"; None = all)."""
        mask = np.ones(self._n, dtype=bool)
        if split is not None:
            mask &= self.meta("split") == split_code(split)
        if originals_only:
            mask &= self.meta("augmented") == 0
        return np.flatnonzero(mask).astype(np.int64)

    def crops(self, idx: int | np.ndarray) -> np.ndarray:
        """Crops of row ``idx`` (S, S, 3) or rows ``idx`` (n, S, S, 3) uint8, in the order asked."""
        if np.ndim(idx) == 0:
            i = int(idx)
            if not 0 <= i < self._n:
                raise IndexError(f"row {i} out of range 0..{self._n - 1}")
            return self._read(slice(i, i + 1))[0]
        idx = np.asarray(idx, dtype=np.int64)
        if len(idx) == 0:
            return np.zeros((0, self.crop_size, self.crop_size, 3), np.uint8)
        if idx.min() < 0 or idx.max() >= self._n:
            raise IndexError(f"rows out of range 0..{self._n - 1}")
        uniq, inverse = np.unique(idx, return_inverse=True)  # h5py wants increasing, unique indices
        return self._read(uniq)[inverse]

    def _read(self, sel: slice | np.ndarray) -> np.ndarray:
        try:
            return self._h5["crops"][sel]
        except OSError as exc:
            raise StoreError(f"{self.path}: corrupt crops ({exc})") from exc

    def video_log(self) -> list[dict[str, Any]]:
        """One dict per finished video: path, status, frames, faces, detail."""
        return _read_log(self._h5)

    def fingerprint(self) -> str:
        """sha256 of the build attributes and the label, video, frame, split and augmented columns.

        Stable across reopenings and identical rebuilds (the creation time is left out);
        changes when any row, label, split or build option changes. Used as the dataset hash
        in checkpoints.
        """
        h = hashlib.sha256()
        attrs = {k: v for k, v in self.attrs.items() if k not in _VOLATILE_ATTRS}
        h.update(json.dumps(attrs, sort_keys=True, default=str).encode())
        h.update(np.int64(self._n).tobytes())
        for name in ("label", "split", "augmented", "frame"):
            h.update(np.ascontiguousarray(self.meta(name)).tobytes())
        h.update("\n".join(self.meta("video").tolist()).encode())
        return h.hexdigest()


class ImageItems:
    """Base of a torch Dataset whose item i is ``image(i)`` (uint8 (S, S, 3) RGB) with ``labels[i]``: it serves
    them as (float32 (3, S, S) in [0, 1], float32 label) pairs."""

    labels: np.ndarray  # (n,) float32, one per item

    def image(self, i: int) -> np.ndarray:
        raise NotImplementedError

    def __getitem__(self, i: int) -> tuple[Any, Any]:
        import torch

        img = self.image(i)
        x = torch.from_numpy(np.ascontiguousarray(img.transpose(2, 0, 1))).float().div_(255.0)  # (3, S, S)
        return x, torch.tensor(self.labels[i], dtype=torch.float32)


class FaceDataset(ImageItems):
    """torch Dataset over one split: (float32 (3, S, S) in [0, 1], float32 label) pairs.

    The HDF5 file is opened lazily in each DataLoader worker (h5py handles do not survive a
    fork). ``augment`` is a callable on uint8 (S, S, 3) RGB (see ``trainer.paper.augment``);
    ``input_size`` resizes crops (INTER_AREA down, linear up). ``originals_only`` defaults to
    True except for "train", so validation and test never count offline augmented copies.
    """

    def __init__(
        self,
        path: str | Path,
        split: str | None,
        *,
        augment: Any = None,
        input_size: int | None = None,
        originals_only: bool | None = None,
    ) -> None:
        self.path = Path(path)
        self.split = split
        self.augment = augment
        self.input_size = input_size
        with FaceStore(self.path) as store:
            only = (split != "train") if originals_only is None else originals_only
            self.rows = store.indices(split, originals_only=only)
            self.labels = store.meta("label")[self.rows].astype(np.float32)
            self.crop_size = store.crop_size
        self._store: FaceStore | None = None

    def __len__(self) -> int:
        return len(self.rows)

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_store": None}

    def image(self, i: int) -> np.ndarray:
        """The i-th crop as uint8 (S', S', 3) RGB after augmentation and resizing."""
        return self.finish(self.raw_crop(i))

    def raw_crop(self, i: int) -> np.ndarray:
        """The i-th crop as stored: uint8 (S, S, 3) RGB."""
        if self._store is None:
            self._store = FaceStore(self.path)
        return self._store.crops(int(self.rows[i]))

    def finish(self, img: np.ndarray) -> np.ndarray:
        """What ``image`` does to a stored crop: augmentation, then resizing to ``input_size``."""
        if self.augment is not None:
            img = self.augment(img)
        if self.input_size is not None:
            from engines.crops import resize_square

            img = resize_square(img, self.input_size)
        return img
