"""The annotated video: per stream an H.264 MP4 with face boxes, track ids, fake scores and the verdict.

Fed by the runner with each published verdict and its frame (a FrameSink), so it draws exactly what
the sinks said, on exactly the frames that went through the pipeline: a frame dropped to keep up with
a live feed is not in the video either; its time shows as a longer-held frame. Files are fragmented
MP4 (a fragment per keyframe, about one a second) flushed as they are written, so a run that is
killed leaves a playable file that lacks at most its last second.

Disk per stream is bounded by ``max_mb``: when ``<stream>.mp4`` reaches half of it, the file is
closed and renamed ``<stream>.1.mp4`` (replacing the older one) and a new ``<stream>.mp4`` starts,
so the newest footage is always kept. A frame whose size differs from the open file's (a camera that
reconnects at another resolution, a source that alternates sizes) is scaled into the file's size, aspect
kept and black bars added (letterboxed), said once per stream: a resolution change never starts a new file,
so it cannot push footage out (a source alternating 64x64 and 128x96 left 2 of 60 frames on disk, and a
log line per frame). The next file, after a rotation by size, takes the size of the frame that starts it.

A file that cannot be written (disk full) stops that stream's video, not the process: the muxer
writes through a file object that keeps the first write error to itself (FFmpeg's MP4 muxer
segfaulted on the writes that followed one), the frames of that stream are skipped and counted,
and a new file is tried RETRY_SECONDS later. Files are never written through a symbolic link.
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np

from engines.letterbox import letterbox
from engines.urls import printable
from pipeline.errors import SinkError
from pipeline.messages import Frame, Verdict, VerdictState
from pipeline.ranges import check_ranges, ranged
from pipeline.sinks import FrameSink

logger = logging.getLogger(__name__)

Colour = tuple[int, int, int]  # RGB

UNSCORED: Colour = (160, 160, 160)  # a face not classified yet
VERDICT_COLOURS: dict[VerdictState, Colour] = {
    VerdictState.FAKE: (200, 0, 0),
    VerdictState.REAL: (0, 140, 0),
    VerdictState.UNKNOWN: (90, 90, 90),
    VerdictState.NO_FACE: (50, 50, 110),
}
_TIME_BASE = Fraction(1, 1000)  # output timestamps in milliseconds
_DEFAULT_STEP = 0.04  # seconds a frame is shown when neither pts nor capture times give a usable step
_MAX_STEP = 10.0  # a longer gap (a stream that was down) is shown as one default step; the banner shows the clock
_SAFE = re.compile(r"[^A-Za-z0-9._-]+")
RETRY_SECONDS = 30.0  # after a write error (disk full), a stream's video starts a new file this much later


@dataclass(frozen=True)
class AnnotateConfig:
    # one annotated H.264 MP4 per stream (boxes, track ids, fake scores, verdict) in this directory; None = none
    dir: Path | None = None
    # disk per stream: <stream>.mp4 rotates to <stream>.1.mp4 at half of this
    max_mb: float = ranged(200.0, 0, 1_000_000, open_lo=True, unit="MB")
    crf: int = ranged(23, 0, 51)  # x264 quality: lower is sharper and bigger
    # frames between keyframes = frames per MP4 fragment (lost at most when killed)
    keyframe_every: int = ranged(25, 1, 600)

    def __post_init__(self) -> None:
        check_ranges(self, "annotate.")


def score_colour(p_fake: float | None) -> Colour:
    """Box colour for a smoothed fake probability: green at 0, yellow at 0.5, red at 1; grey before scored."""
    if p_fake is None:
        return UNSCORED
    p = min(max(float(p_fake), 0.0), 1.0)
    if p <= 0.5:
        return (round(460 * p), 200 + round(60 * p), 0)  # (0, 200, 0) -> (230, 230, 0)
    return (230, round(230 * (1 - p) * 2), 0)  # (230, 230, 0) -> (230, 0, 0)


def line_width(height: int, width: int) -> int:
    """Box line thickness in pixels for a frame size: 3 at 480p, thicker on larger frames."""
    return max(2, round(min(height, width) / 160))


def banner_height(height: int) -> int:
    """Height in pixels of the verdict banner across the top of the frame."""
    return max(18, round(height / 18))


def draw(image: np.ndarray, verdict: Verdict) -> np.ndarray:
    """A copy of ``image`` (H, W, 3) uint8 RGB with the verdict's faces and a verdict banner drawn on it."""
    out = np.ascontiguousarray(image).copy()  # (H, W, 3): the pipeline's frame is never written to
    h, w = out.shape[:2]
    thick, top = line_width(h, w), banner_height(h)
    font_scale = max(0.4, h / 960)
    faces = verdict.faces
    for track, box, p in zip(faces.track_id.tolist(), faces.xyxy.tolist(), faces.p_fake.tolist()):
        p_fake = None if p != p else p  # NaN: not scored yet
        colour = score_colour(p_fake)
        x1, y1, x2, y2 = (round(v) for v in box)
        cv2.rectangle(out, (x1, y1), (x2, y2), colour, thick)
        label = f"#{track} " + ("--" if p_fake is None else f"{p_fake:.2f}")
        (tw, th), base = cv2.getTextSize(label, cv2.FONT_HERSHEY_SIMPLEX, font_scale, 1)
        ty = y1 - thick  # above the box, else inside it below the banner
        if ty - th - base < top:
            ty = max(y1, top) + thick + th + base
        cv2.rectangle(out, (x1, ty - th - base), (x1 + tw + 4, ty), colour, -1)
        cv2.putText(out, label, (x1 + 2, ty - base), cv2.FONT_HERSHEY_SIMPLEX, font_scale, (0, 0, 0), 1, cv2.LINE_AA)
    _banner(out, verdict)
    return out


def _banner(out: np.ndarray, verdict: Verdict) -> None:
    h, w = out.shape[:2]
    bh = banner_height(h)
    out[:bh] = VERDICT_COLOURS[verdict.state]
    score = "-" if verdict.score is None else f"{verdict.score:.2f}"
    clock = time.strftime("%H:%M:%S", time.localtime(verdict.capture_time))
    at = f"{verdict.pts:.2f}s" if verdict.pts is not None else ""
    text = f"{verdict.stream_id}  {verdict.state.value}  score {score}  frame {verdict.frame_index} {at} {clock}"
    if verdict.placeholder_models:
        text += "  PLACEHOLDER MODELS"
    scale = bh / 40
    (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)
    if tw > w - 8:  # shrink to fit narrow frames
        scale *= (w - 8) / tw
        (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)
    y = (bh + th) // 2
    cv2.putText(out, text, (4, y), cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255), 1, cv2.LINE_AA)


def check_writable(directory: Path, *, what: str) -> Path:
    """Create ``directory`` if needed and prove a file can be written there; SinkError naming it and ``what``."""
    directory = Path(directory)
    try:
        directory.mkdir(parents=True, exist_ok=True)
        probe = directory / f".dfwatch-write-test-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise SinkError(f"cannot write {what} in {directory}: {exc.strerror or exc}") from exc
    return directory


def open_no_follow(path: Path, *, what: str) -> int:
    """A file descriptor of ``path`` opened for writing (created or truncated) without following a symbolic link
    at its last component: a link planted there cannot make dfwatch overwrite its target. SinkError naming
    ``what`` and the path (escaped) otherwise."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        return os.open(path, flags, 0o644)
    except OSError as exc:
        symlink = " (a symbolic link: dfwatch never writes through one)" if Path(path).is_symlink() else ""
        raise SinkError(f"cannot write {what} {printable(str(path))}: {exc.strerror or exc}{symlink}") from exc


class _StreamVideo:
    """One stream's current MP4 file: opened at its first frame at that frame's size, rotated by disk size."""

    def __init__(self, directory: Path, stream_id: str, cfg: AnnotateConfig, *, name: str | None = None) -> None:
        """``name``: the file name stem; by default the stream id made safe for a file name."""
        name = name or safe_name(stream_id)
        self.path = directory / f"{name}.mp4"
        self.previous = directory / f"{name}.1.mp4"
        self.stream_id, self.cfg = stream_id, cfg
        self.container: av.container.OutputContainer | None = None
        self.video: av.VideoStream | None = None
        self.size: tuple[int, int] | None = None  # (width, height) of the open file, both even
        self.bytes = 0  # encoded bytes in the open file
        self.frames = 0  # frames in the open file
        self.written = 0  # frames written in all, over rotations
        self.rotations = 0
        self.scaled = 0  # frames letterboxed into the file's size (another resolution), over rotations
        self._start_ms = 0  # output time of the open file's first frame
        self._clock_ms: int | None = None  # output time of the last frame, over rotations
        self._last: Frame | None = None
        self.file: _OutputFile | None = None
        self.skipped = 0  # frames not written because the file could not be (disk full, a symlink in the way)
        self._retry_at: float | None = None  # monotonic time of the next attempt after a write error

    def waiting(self, frame: Frame) -> bool:
        """True while a failed file waits for its retry: the frame is counted as skipped (its time kept), so the
        caller need not draw it."""
        if self._retry_at is None or time.monotonic() >= self._retry_at:
            return False
        self._next_time(frame)
        self.skipped += 1
        return True

    def write(self, image: np.ndarray, frame: Frame) -> bool:
        """Append the frame; False when it was skipped (the file failed; a new one is tried later)."""
        if self.waiting(frame):
            return False
        t_ms = self._next_time(frame)
        if self._retry_at is not None:  # the retry is due: a new file
            self._retry_at = None
            try:
                if self.path.exists() and not self.path.is_symlink():  # keep what the failed file holds
                    os.replace(self.path, self.previous)
            except OSError:
                pass  # the new file's open says what is wrong
        image = _even(image)  # (H', W', 3) with H', W' even: yuv420p needs it
        if self.container is not None and self.bytes >= self.cfg.max_mb * 1e6 / 2:
            self._rotate("size limit reached")
        if self.container is not None and self.size != (image.shape[1], image.shape[0]):
            image = self._fit(image)  # (H_file, W_file, 3)
        size = (image.shape[1], image.shape[0])
        try:
            if self.container is None:
                self._open(size, t_ms)
            assert self.video is not None and self.container is not None
            vf = av.VideoFrame.from_ndarray(image, format="rgb24")
            vf.pts, vf.time_base = t_ms - self._start_ms, _TIME_BASE
            for packet in self.video.encode(vf):
                self.bytes += packet.size
                self.container.mux(packet)
            if self.file is not None:
                self.file.mark()
        except SinkError as exc:
            return self._fail(str(exc))
        if self.file is not None and self.file.error is not None:
            return self._fail(f"cannot write {self.path}: {self.file.error.strerror or self.file.error}")
        self.frames += 1
        self.written += 1
        return True

    def _fail(self, why: str) -> bool:
        """Stop this file (the muxer never saw the error: closing it is safe), skip frames for RETRY_SECONDS."""
        self.close()
        self._retry_at = time.monotonic() + RETRY_SECONDS
        self.skipped += 1
        logger.error(
            "annotated video of %r: %s; its frames are skipped, a new file is tried in %.0f s",
            self.stream_id,
            why,
            RETRY_SECONDS,
        )
        return False

    def close(self) -> None:
        if self.container is None:
            return
        assert self.video is not None
        try:
            for packet in self.video.encode(None):
                self.bytes += packet.size
                self.container.mux(packet)
        finally:
            self.container.close()
            self.container = self.video = None
            if self.file is not None:
                self.file.close()

    def _next_time(self, frame: Frame) -> int:
        """Output time (ms) of ``frame``: the gap to the previous frame by pts, else by capture time."""
        last, self._last = self._last, frame
        if self._clock_ms is None or last is None:
            self._clock_ms = 0
            return 0
        step = None
        if frame.pts is not None and last.pts is not None and 0 < frame.pts - last.pts <= _MAX_STEP:
            step = frame.pts - last.pts
        elif 0 < frame.capture_time - last.capture_time <= _MAX_STEP:
            step = frame.capture_time - last.capture_time
        self._clock_ms += max(1, round((step or _DEFAULT_STEP) * 1000))
        return self._clock_ms

    def _open(self, size: tuple[int, int], t_ms: int) -> None:
        options = {"movflags": "frag_keyframe+empty_moov+default_base_moof", "flush_packets": "1"}
        self.file = _OutputFile(self.path)
        try:
            container = av.open(self.file, mode="w", format="mp4", options=options)
        except (OSError, av.error.FFmpegError) as exc:
            self.file.close()
            raise SinkError(f"cannot write annotated video {self.path}: {exc}") from exc
        video = container.add_stream(
            "libx264",
            rate=25,
            options={
                "preset": "veryfast",
                "tune": "zerolatency",
                "crf": str(self.cfg.crf),
                "g": str(self.cfg.keyframe_every),
            },
        )
        video.width, video.height, video.pix_fmt = size[0], size[1], "yuv420p"
        video.time_base = video.codec_context.time_base = _TIME_BASE
        self.container, self.video, self.size = container, video, size
        self.bytes = self.frames = 0
        self._start_ms = t_ms

    def _fit(self, image: np.ndarray) -> np.ndarray:
        """``image`` (H, W, 3) letterboxed into the open file's (H_file, W_file, 3); the first time, said once."""
        assert self.size is not None
        if not self.scaled:
            logger.info(
                "annotated video of %r: a frame of %dx%d in a file of %dx%d; frames of another size are "
                "scaled into the file's (aspect kept, black bars) until it rotates at its size limit "
                "(said once per stream)",
                self.stream_id,
                image.shape[1],
                image.shape[0],
                *self.size,
            )
        self.scaled += 1
        return letterbox(image, self.size, pad=0)[0]

    def _rotate(self, why: str) -> None:
        self.close()
        os.replace(self.path, self.previous)
        self.rotations += 1
        logger.info(
            "annotated video of %r: %s; kept as %s, new %s started",
            self.stream_id,
            why,
            self.previous.name,
            self.path.name,
        )


class _OutputFile(io.RawIOBase):
    """The MP4 file as PyAV writes it: opened without following a symlink; the first write error is kept in
    ``error`` and later writes are dropped, so the muxer never sees an I/O error (it crashed on them).

    ``mark()`` records that everything written so far is whole (the writer calls it after each mux: the
    fragmented muxer hands over a fragment at once). A file that failed is cut back to its last mark when
    closed, so a write that filled the disk half-way through a fragment leaves no torn fragment behind
    (decoders fail on one); a file that never reached a mark is removed.
    """

    def __init__(self, path: Path) -> None:
        super().__init__()
        self.fd = open_no_follow(path, what="annotated video")
        self.path, self.pos, self.whole = path, 0, 0
        self.error: OSError | None = None

    def mark(self) -> None:
        if self.error is None:
            self.whole = self.pos

    def writable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def write(self, data) -> int:  # noqa: ANN001 - bytes-like from PyAV
        view = memoryview(data)
        if self.error is None:
            try:
                done = 0
                while done < len(view):
                    done += os.pwrite(self.fd, view[done:], self.pos + done)
            except OSError as exc:
                self.error = exc
        self.pos += len(view)
        return len(view)

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        if whence == io.SEEK_SET:
            self.pos = offset
        elif whence == io.SEEK_CUR:
            self.pos += offset
        else:  # SEEK_END: the end as the muxer believes it (writes after an error are not on disk)
            self.pos = max(self.pos, os.fstat(self.fd).st_size) + offset
        return self.pos

    def tell(self) -> int:
        return self.pos

    def close(self) -> None:
        if not self.closed:
            try:
                if self.error is not None:
                    os.ftruncate(self.fd, self.whole)
                    if not self.whole:
                        os.unlink(self.path)
            except OSError:
                pass  # the file stays as it is; the write error was already reported
            finally:
                os.close(self.fd)
        super().close()


def safe_name(stream_id: str) -> str:
    """``stream_id`` as a file name stem (ids that differ only in unsafe characters give the same stem)."""
    return _SAFE.sub("_", stream_id).strip("._") or "stream"


def _even(image: np.ndarray) -> np.ndarray:
    """(H, W, 3) padded by one black row / column where H or W is odd."""
    h, w = image.shape[:2]
    if h % 2 == 0 and w % 2 == 0:
        return image
    return cv2.copyMakeBorder(image, 0, h % 2, 0, w % 2, cv2.BORDER_CONSTANT, value=(0, 0, 0))


class Annotator(FrameSink):
    """FrameSink that draws each verdict on its frame and appends it to its stream's MP4 in ``cfg.dir``."""

    name = "annotate"

    def __init__(self, cfg: AnnotateConfig) -> None:
        """Raises SinkError when ``cfg.dir`` is unset or cannot be written."""
        if cfg.dir is None:
            raise SinkError("annotate: no directory given (--annotate DIR or [annotate] dir)")
        self.cfg = cfg
        self.dir = check_writable(cfg.dir, what="the annotated video (--annotate DIR)")
        self.videos: dict[str, _StreamVideo] = {}
        self._skipped_gone = 0  # skipped frames of streams already forgotten

    @property
    def unwritten(self) -> int:
        """Frames skipped because their file could not be written."""
        return self._skipped_gone + sum(v.skipped for v in self.videos.values())

    def publish_frames(self, pairs: Sequence[tuple[Frame, Verdict]]) -> int:
        """Draw and append each pair; returns how many were skipped (their file could not be written; the
        runner adds them to the summary)."""
        before = self.unwritten
        for frame, verdict in pairs:
            video = self.videos.get(frame.stream_id)
            if video is None:
                video = self.videos[frame.stream_id] = self._new_video(frame.stream_id)
            if not video.waiting(frame):  # a frame that will be skipped is not drawn
                video.write(draw(frame.rgb().image, verdict), frame)  # tracked-past frames are still I420
        return self.unwritten - before

    def forget_stream(self, stream_id: str) -> None:
        """The stream was removed: finish its file and drop its encoder and last frame."""
        video = self.videos.pop(stream_id, None)
        if video is not None:
            self._skipped_gone += video.skipped
            self._finish(video)

    def _new_video(self, stream_id: str) -> _StreamVideo:
        """The stream's video under its safe name, or that name plus a hash of the id when the name (or its
        rotation ``.1``) is another stream's file: "cam/1" and "cam_1", or "cam" and "cam.1"."""
        taken = {p for v in self.videos.values() for p in (v.path, v.previous)}
        video = _StreamVideo(self.dir, stream_id, self.cfg)
        if video.path in taken or video.previous in taken:
            digest = hashlib.blake2b(stream_id.encode(), digest_size=4).hexdigest()
            video = _StreamVideo(self.dir, stream_id, self.cfg, name=f"{safe_name(stream_id)}-{digest}")
            logger.info("annotated video of %r goes to %s: its plain name is another stream's", stream_id, video.path)
        return video

    def close(self) -> None:
        for video in self.videos.values():
            self._finish(video)

    def _finish(self, video: _StreamVideo) -> None:
        try:
            video.close()
        except Exception:
            logger.exception("annotated video of %r: closing %s failed", video.stream_id, video.path)
            return
        size = video.path.stat().st_size / 1e6 if video.path.exists() else 0.0
        kept = f", older footage in {video.previous.name}" if video.rotations else ""
        skipped = f", {video.skipped} frames skipped (write errors)" if video.skipped else ""
        scaled = f", {video.scaled} frames of another size scaled in" if video.scaled else ""
        logger.info(
            "annotated video of %r: %s (%d frames, %.1f MB)%s%s%s",
            video.stream_id,
            video.path,
            video.frames,
            size,
            kept,
            scaled,
            skipped,
        )
