"""Sample N frames evenly from a video with PyAV, seeking by timestamp instead of decoding it all."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np

from trainer.errors import NoFramesError, VideoReadError

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class SampledFrames:
    images: list[np.ndarray]  # n frames, each (H, W, 3) uint8 RGB
    index: np.ndarray  # (n,) int32 frame numbers in the video (0-based, from pts and frame rate)
    total: int  # frames in the video (from the container; estimated from duration when not stored)
    detail: str = ""  # what went wrong part-way (e.g. a truncated file), "" when all is well

    def __len__(self) -> int:
        return len(self.images)


def sample_frames(path: str | Path, n: int) -> SampledFrames:
    """Up to ``n`` frames spread evenly over the video: frame ``floor((i + 0.5) * total / n)`` for i < n.

    Each target is reached by seeking to the keyframe before its timestamp and decoding
    forward to it. Streams with no usable duration or frame rate are decoded in full
    instead (logged once per video). A video that cannot be opened, or yields no frame,
    raises VideoReadError; one that breaks part-way keeps the frames it gave, with ``detail``.
    """
    if n < 1:
        raise ValueError(f"frames per video must be >= 1, got {n}")
    path = Path(path)
    try:
        container = av.open(str(path))
    except (av.FFmpegError, OSError) as exc:
        raise VideoReadError(f"cannot open: {exc}") from exc
    with container:
        if not container.streams.video:
            raise NoFramesError("no video stream")
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        rate = stream.average_rate or stream.guessed_rate
        tb = stream.time_base
        duration = stream.duration if stream.duration is not None else None
        if duration is None and container.duration is not None and tb is not None:
            duration = int(container.duration / av.time_base / tb)  # container duration is in microseconds
        total = int(stream.frames or 0)
        if not total and duration and rate and tb is not None:
            total = int(round(float(duration * tb * rate)))
        if not (rate and tb is not None and total > 0):
            logger.info("%s: no frame count or rate in the container; decoding it whole", path)
            return _sample_by_decoding(container, stream, n)
        return _sample_by_seeking(container, stream, n, total=total, rate=float(rate), tb=float(tb))


def _targets(total: int, n: int) -> np.ndarray:
    return np.unique(np.floor((np.arange(min(n, total)) + 0.5) * total / min(n, total)).astype(np.int64))


def _keyframes(container: av.container.InputContainer, stream: av.VideoStream) -> np.ndarray:
    """Sorted pts of the keyframes (a demux pass: packets are read, nothing is decoded)."""
    pts = [p.pts for p in container.demux(stream) if p.is_keyframe and p.pts is not None]
    return np.unique(np.asarray(pts, dtype=np.int64))


def _sample_by_seeking(
    container: av.container.InputContainer, stream: av.VideoStream, n: int, *, total: int, rate: float, tb: float
) -> SampledFrames:
    """Seek to the keyframe before each target, unless decoding on from the last target is shorter."""
    start = stream.start_time or 0
    try:
        keyframes = _keyframes(container, stream)
    except av.FFmpegError as exc:
        raise VideoReadError(f"cannot read packets: {exc}") from exc
    images: list[np.ndarray] = []
    index: list[int] = []
    detail = ""
    half = 0.5 / rate / tb  # half a frame, in pts units
    decoder = None
    last = None  # the frame decoded last
    for target in _targets(total, n):
        pts = start + target / rate / tb
        before = keyframes[keyframes <= pts + half]
        key = int(before[-1]) if len(before) else None
        got = None
        try:
            if decoder is None or last is None or (key is not None and key > last.pts):
                container.seek(int(key if key is not None else pts), stream=stream, backward=True, any_frame=False)
                decoder = container.decode(stream)
                last = None
            if last is not None and last.pts >= pts - half:
                got = last  # two targets on one frame (very short videos)
            else:
                for frame in decoder:
                    if frame.pts is None:
                        continue
                    last = frame
                    if frame.pts >= pts - half:
                        got = frame
                        break
        except av.FFmpegError as exc:  # a damaged file: keep what decoded so far
            detail = f"decoding failed before frame {target} of {total}: {exc}"
            break
        if got is None:  # the stream ended before the target: a truncated file
            end = "no frame" if last is None else f"frame {int(round((last.pts - start) * tb * rate))}"
            detail = f"the video ends at {end}, before frame {target} of the {total} it claims"
            break
        i = int(round((got.pts - start) * tb * rate))
        if index and i <= index[-1]:
            continue  # the file ends early: the same last frame again
        images.append(got.to_ndarray(format="rgb24"))
        index.append(i)
    if not images:
        if detail:
            raise VideoReadError(detail)
        raise NoFramesError(f"no frame decoded (container claims {total})")
    return SampledFrames(images, np.asarray(index, np.int32), total, detail)


def _sample_by_decoding(container: av.container.InputContainer, stream: av.VideoStream, n: int) -> SampledFrames:
    frames: list[np.ndarray] = []
    detail = ""
    try:
        for frame in container.decode(stream):
            frames.append(frame.to_ndarray(format="rgb24"))
    except av.FFmpegError as exc:
        detail = f"decoding stopped after {len(frames)} frames: {exc}"
    if not frames:
        if detail:
            raise VideoReadError(detail)
        raise NoFramesError("the video holds no frame")
    picks = _targets(len(frames), n)
    return SampledFrames([frames[i] for i in picks], picks.astype(np.int32), len(frames), detail)
