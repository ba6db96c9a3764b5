"""Video sources decoded with PyAV: files, RTSP(S), HTTP(S)/HLS. One thread reads each (see runner).

``read_frames`` is one connection: open, decode, close. ``pipeline.supervisor.stream_frames``
wraps it for the runner: reconnects live feeds, loops and paces files. What a source may point at,
and the FFmpeg options that hold it to that, come from ``pipeline.policy``.
"""

from __future__ import annotations

import errno
import logging
import os
import re
import select
import stat
import time
from collections.abc import Iterator
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from urllib.parse import urlparse

import av
import cv2
import numpy as np

from engines.urls import redact
from pipeline.errors import ConfigError, SourceError
from pipeline.http_budget import RequestBudget, release
from pipeline.messages import Frame
from pipeline.open_errors import explain
from pipeline.policy import SourcePolicy, url_scheme
from pipeline.ranges import check_ranges, ranged

LIVE_SCHEMES = ("rtsp", "rtsps", "rtmp", "http", "https", "udp", "srt", "tcp")
RTSP_TRANSPORTS = ("tcp", "udp")
_ID_SAFE = re.compile(r"[^A-Za-z0-9_.-]+")
MAX_ID_LENGTH = 128  # stream ids name Redis keys, metric labels and files
MAX_SECONDS = 3600.0  # longest timeout or backoff a stream may ask for (a control entry included)
_SLOW_FORMATS_LOGGED: set[str] = set()
# Limited-range planar YUV that to_i420 packs (bits per sample); full-range "yuvj" and the rest take swscale.
FAST_FORMATS = {
    f"yuv{chroma}p{depth}": bits for chroma in ("420", "422", "444") for depth, bits in (("", 8), ("10le", 10))
}

logger = logging.getLogger(__name__)


class SourceKind(str, Enum):
    FILE = "file"
    LIVE = "live"


@dataclass(frozen=True)
class SourceSpec:
    stream_id: str  # unique name used in verdicts, Redis keys and metrics labels
    url: str  # file path or URL
    # time allowed to connect and read the stream header
    open_timeout: float = ranged(10.0, 0, MAX_SECONDS, open_lo=True, unit="seconds")
    # time without a packet before the stream counts as dead and is reopened
    read_timeout: float = ranged(10.0, 0, MAX_SECONDS, open_lo=True, unit="seconds")
    rtsp_transport: str = "tcp"  # RTSP transport, "tcp" or "udp"
    loop: bool = False  # files: start again at the end (frame indices keep counting)
    pace: bool = False  # files: deliver at the file's frame rate, like a live feed
    reconnect: bool | None = None  # reopen after an error or a live feed's end; None: live yes, files no
    # longest wait before the first reconnect (doubles per attempt)
    backoff_initial: float = ranged(0.5, 0, MAX_SECONDS, open_lo=True, unit="seconds")
    # cap of the wait between reconnects
    backoff_max: float = ranged(30.0, 0, MAX_SECONDS, open_lo=True, unit="seconds")
    # no frame for this long: close and retry; None: read_timeout
    stall_seconds: float | None = ranged(None, 0, MAX_SECONDS, open_lo=True, unit="seconds")
    # FFmpeg decoder threads of this stream: 1 by default (the readers of many streams decode in parallel already,
    # and one thread keeps no frame-thread buffers: 50 files held 1.24 GiB, not 1.49); 0: FFmpeg's choice (cores + 1,
    # frame and slice threads), for a single feed too large for one core to decode in real time
    decoder_threads: int = ranged(1, 0, 64)

    def __post_init__(self) -> None:
        where = f"stream {self.stream_id!r}"
        if not self.stream_id or len(self.stream_id) > MAX_ID_LENGTH or not self.stream_id.isprintable():
            raise ConfigError(f"{where}: a stream id is 1 to {MAX_ID_LENGTH} printable characters")
        check_ranges(self, f"{where}: ")
        if self.backoff_max < self.backoff_initial:
            got = f"{self.backoff_max:g} < {self.backoff_initial:g}"
            raise ConfigError(f"{where}: backoff_max must be at least backoff_initial, got {got}")
        if self.rtsp_transport not in RTSP_TRANSPORTS:
            raise ConfigError(f"{where}: rtsp_transport {self.rtsp_transport!r} is not one of {list(RTSP_TRANSPORTS)}")
        if (self.loop or self.pace) and self.kind is SourceKind.LIVE:
            raise ConfigError(f"{where}: loop and pace apply to files only, {self.url!r} is a live URL")

    @property
    def kind(self) -> SourceKind:
        return SourceKind.LIVE if url_scheme(self.url) in LIVE_SCHEMES else SourceKind.FILE

    @property
    def display(self) -> str:
        """The URL as log lines and errors show it: passwords masked, length bounded (engines.urls.redact)."""
        return redact(self.url)

    @property
    def is_live(self) -> bool:
        """Frames come at the source's own pace (a live URL, or a paced file): drop frames, never make it wait."""
        return self.kind is SourceKind.LIVE or self.pace

    @property
    def reconnects(self) -> bool:
        """``reconnect`` with None resolved: live URLs reconnect, files do not."""
        return self.kind is SourceKind.LIVE if self.reconnect is None else self.reconnect

    @property
    def stall_timeout(self) -> float:
        """Seconds without a decoded frame after which a connection counts as dead."""
        return self.read_timeout if self.stall_seconds is None else self.stall_seconds

    @classmethod
    def parse(cls, text: str, **options: float | str | bool | None) -> SourceSpec:
        """``NAME=URL`` or a bare URL/path (the id is then derived from the file or path name)."""
        name, sep, url = text.partition("=")
        if sep and "://" not in name and "/" not in name and name:
            return cls(name, url, **options)  # type: ignore[arg-type]
        parsed = urlparse(text)
        stem = Path(parsed.path).stem if parsed.path.strip("/") else parsed.hostname or "stream"
        return cls(_ID_SAFE.sub("_", stem) or "stream", text, **options)  # type: ignore[arg-type]


def _read_timeout(spec: SourceSpec) -> float:
    """Limit of one blocking read: a stall must not hide inside a read longer than stall_timeout."""
    return min(spec.read_timeout, spec.stall_timeout)


def _open_options(spec: SourceSpec, policy: SourcePolicy) -> dict[str, str]:
    # FFmpeg's own socket timeout (microseconds), a second guard next to PyAV's interrupt callback
    scheme, timeout_us = url_scheme(spec.url), str(int(_read_timeout(spec) * 1e6))
    options = policy.ffmpeg_options(spec.url)
    if scheme in ("rtsp", "rtsps"):
        options |= {"rtsp_transport": spec.rtsp_transport, "timeout": timeout_us}
    elif scheme in ("http", "https", "tcp"):
        options |= {"rw_timeout": timeout_us, "reconnect": "0"}  # reconnecting is stream_frames' job
    # No "fflags=nobuffer": measured here, it lost half the frames of an RTSP stream with B-frames.
    return options


def _request_budget(spec: SourceSpec, policy: SourcePolicy) -> RequestBudget:
    """[sources] max_http_requests for an http(s) connection (HLS included); no budget for other sources."""
    limit = policy.max_http_requests if url_scheme(spec.url) in ("http", "https") else None
    return RequestBudget(limit, hold=spec.open_timeout + 0.5)  # while opening; reading: read_frames sets it


def to_i420(frame: av.VideoFrame) -> np.ndarray | None:
    """The decoder's planes packed as one (H * 3/2, W) 8-bit I420 array (a copy without row padding), or None
    for a pixel format off the fast path (``FAST_FORMATS``) or odd sides.

    4:2:2 and 4:4:4 chroma (contribution feeds, FaceForensics++ files) is averaged down to 4:2:0 by OpenCV's
    area resize, and 10-bit samples are rounded to 8 bits, so every format converts to RGB at 4:2:0 cost
    (swscale took 4:4:4 720p off real time). Only the colour of sharp colour edges differs from swscale's.
    """
    w, h = frame.width, frame.height
    bits = FAST_FORMATS.get(frame.format.name)
    if bits is None or w % 2 or h % 2:
        return None
    dtype = np.dtype(np.uint8 if bits == 8 else "<u2")
    i420 = np.empty(h * w * 3 // 2, np.uint8)  # Y (h, w), then U and V (h/2, w/2) each, packed
    at = 0
    for plane, (pw, ph) in zip(frame.planes, ((w, h), (w // 2, h // 2), (w // 2, h // 2))):
        rows = np.frombuffer(plane, dtype).reshape(plane.height, plane.line_size // dtype.itemsize)
        rows = rows[:, : plane.width]  # without padding
        if (plane.width, plane.height) != (pw, ph):  # 4:2:2 or 4:4:4 chroma: each 2x1 or 2x2 block averaged
            rows = cv2.resize(rows, (pw, ph), interpolation=cv2.INTER_AREA)
        if bits != 8:
            rows = cv2.convertScaleAbs(rows, alpha=1 / (1 << (bits - 8)))  # rounded to 8 bits
        i420[at : at + pw * ph].reshape(ph, pw)[:] = rows
        at += pw * ph
    return i420.reshape(h * 3 // 2, w)


def upright(image: np.ndarray, rotation: float, *, i420: bool) -> np.ndarray:
    """``image`` turned as players show it: ``rotation`` is the stream's display matrix (PyAV's
    ``frame.rotation``, counterclockwise degrees; FFmpeg's autorotate turns the same way). RGB (H, W, 3) or
    packed I420 (H * 3/2, W), each plane turned; a quarter turn swaps the sides. Other angles than multiples
    of 90 are rounded to the nearest."""
    k = round(rotation / 90) % 4
    if k == 0:
        return image
    if not i420:
        return np.ascontiguousarray(np.rot90(image, k))  # (W, H, 3) or (H, W, 3)
    h, w = image.shape[0] * 2 // 3, image.shape[1]
    flat = image.reshape(-1)
    planes = [
        flat[: h * w].reshape(h, w),
        flat[h * w : h * w * 5 // 4].reshape(h // 2, w // 2),
        flat[h * w * 5 // 4 :].reshape(h // 2, w // 2),
    ]
    turned = [np.rot90(p, k) for p in planes]
    out = np.concatenate([t.reshape(-1) for t in turned])  # Y, then U and V, packed as before
    return out.reshape(turned[0].shape[0] * 3 // 2, turned[0].shape[1])


def to_rgb(frame: av.VideoFrame) -> np.ndarray:
    """A decoded frame as (H, W, 3) uint8 RGB, converted once.

    The usual yuv420p (even sides): the three planes are read as they lie in the decoder's buffers and
    converted by OpenCV (BT.601, limited range, as swscale's default), a fifth of what PyAV's
    ``to_ndarray(format="rgb24")`` (swscale) costs. Any other pixel format goes through swscale, which
    is logged once per format.
    """
    i420 = to_i420(frame)
    if i420 is None:
        name = f"{frame.format.name} {frame.width}x{frame.height}"
        if name not in _SLOW_FORMATS_LOGGED:
            _SLOW_FORMATS_LOGGED.add(name)
            logger.info(
                "frames in %s are converted to RGB by swscale (the fast path reads 8- and 10-bit "
                "yuv420p, yuv422p and yuv444p with even sides); this costs a few ms more per frame",
                name,
            )
        return frame.to_ndarray(format="rgb24")
    return cv2.cvtColor(i420, cv2.COLOR_YUV2RGB_I420)  # (h, w, 3)


def _describe(exc: BaseException, spec: SourceSpec | None = None) -> str:
    if isinstance(exc, av.error.ExitError) and spec is not None:  # PyAV's timeout interrupted a read
        return f"no data for {_read_timeout(spec):g} s (read timeout)"
    if isinstance(exc, av.error.ArgumentError) and spec is not None:  # a decoder refusing a frame over max_pixels
        return f"{exc.strerror} (a frame larger than [sources] max_pixels is refused this way)"
    if isinstance(exc, (av.error.FFmpegError, OSError)):  # strerror: str() would repeat the (secret) URL
        return exc.strerror or type(exc).__name__
    return str(exc) or type(exc).__name__


def open_container(spec: SourceSpec, *, policy: SourcePolicy | None = None) -> av.container.InputContainer:
    """Open ``spec`` with PyAV under ``policy`` (default: SourcePolicy()); raise SourceError with a clear reason.

    A local file opens as ``file:`` + its resolved path, so FFmpeg never reads a protocol into a file
    name; a FIFO is read through Python with the open and read timeouts (FFmpeg's block for ever).
    """
    policy = policy or SourcePolicy()
    target: str | _FifoReader = policy.login_url(spec.url)  # + its host's login from [sources] credentials, if any
    regular: Path | None = None  # the local file, unless a FIFO: read once more when FFmpeg refuses it
    if spec.kind is SourceKind.FILE:
        try:
            path = policy.check_local(spec.url, where="cannot open")
        except ConfigError as exc:
            raise SourceError(spec, str(exc)) from None
        if not path.exists():
            raise SourceError(spec, "cannot open: no such file")
        regular = None if stat.S_ISFIFO(path.stat().st_mode) else path
        target = f"file:{path}" if regular else _FifoReader(spec, path)
    start = time.monotonic()
    try:
        timeouts = (spec.open_timeout, _read_timeout(spec))
        container = av.open(target, options=_open_options(spec, policy), timeout=timeouts)
    except (av.error.FFmpegError, OSError) as exc:
        waited = time.monotonic() - start
        # An interrupted open surfaces as ExitError or, for RTSP, as "Invalid data found": say what happened.
        if spec.kind is SourceKind.LIVE and waited >= min(spec.open_timeout, _read_timeout(spec)) - 0.05:
            raise SourceError(spec, f"cannot open: timed out after {waited:.1f} s ({_describe(exc)})") from exc
        # FFmpeg's errno misleads for a refused redirect, bad y4m dimensions, an untrusted certificate: say which
        why = explain(spec.url, policy, exc, path=regular, timeout=spec.open_timeout) or _describe(exc)
        raise SourceError(spec, f"cannot open: {why}") from exc
    if not container.streams.video:
        container.close()
        raise SourceError(spec, "cannot open: no video stream (not a video file?)")
    codec = container.streams.video[0].codec_context
    if codec.width * codec.height > policy.max_pixels:
        container.close()
        raise SourceError(
            spec,
            f"cannot open: frames of {codec.width}x{codec.height} are larger than [sources] "
            f"max_pixels = {policy.max_pixels}",
        )
    codec.options = {**codec.options, "max_pixels": str(policy.max_pixels)}  # the decoder refuses larger frames
    return container


class _FifoReader:
    """A FIFO (named pipe) as a file object for PyAV, with the spec's open and read timeouts.

    FFmpeg opens a FIFO with a blocking open() that waits for a writer for ever and reads it with
    blocking reads that no timeout interrupts. Here the FIFO opens without blocking, and each read
    first waits at most the read timeout for data (open_timeout for the first): TimeoutError after.
    """

    fd: int | None = None

    def __init__(self, spec: SourceSpec, path: Path) -> None:
        self.fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)  # returns at once, writer or not
        self.timeouts = (spec.open_timeout, _read_timeout(spec))
        self.first = True

    def read(self, size: int) -> bytes:
        if self.fd is None:
            return b""
        timeout = self.timeouts[0] if self.first else self.timeouts[1]
        deadline = time.monotonic() + timeout
        while True:
            ready, _, _ = select.select([self.fd], [], [], max(0.0, deadline - time.monotonic()))
            try:
                data = os.read(self.fd, size) if ready else None
            except BlockingIOError:
                data = None
            if data is None and time.monotonic() >= deadline:
                what = "no writer sent data" if self.first else "no data"
                raise TimeoutError(errno.ETIMEDOUT, f"{what} for {timeout:g} s (FIFO)")
            if data == b"" and self.first:  # no writer has opened the FIFO yet: keep waiting
                time.sleep(min(0.05, max(0.0, deadline - time.monotonic())))
                continue
            if data is not None:
                self.first = False
                return data

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None

    __del__ = close


def read_frames(
    spec: SourceSpec, *, first_index: int = 0, policy: SourcePolicy | None = None, rgb: bool = True
) -> Iterator[Frame]:
    """Decode every frame of one connection to ``spec`` as RGB, numbered from ``first_index``.

    ``rgb=False``: yuv420p frames come as their I420 planes (``pixel_format`` "i420"), to be converted only
    if they are processed (``Frame.rgb``); a live feed under load drops most frames unconverted.

    Raises SourceError when the source cannot be opened, breaks mid-stream, stalls (no frame
    for ``spec.stall_timeout`` s of reading; time the caller holds a frame does not count), or
    (for files) ends before the frame count its container declares; frames decoded before that
    are yielded first, so a truncated file still produces verdicts. ``policy``: see open_container.
    """
    policy = policy or SourcePolicy()
    budget = _request_budget(spec, policy)
    with budget:
        try:
            container = open_container(spec, policy=policy)
        except SourceError as exc:
            if budget.exceeded:  # FFmpeg's error is the timeout that ended it: say why it was ended
                raise SourceError(spec, f"cannot open: {budget.reason}") from exc
            raise
        budget.hold = _read_timeout(spec) + 0.5  # PyAV's read timeout runs from each read
        try:
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            if spec.decoder_threads:
                stream.codec_context.thread_count = spec.decoder_threads
            declared = stream.frames  # 0 when the container does not say
            index = first_index
            packets = container.demux(stream)
            resumed = time.monotonic()  # reset whenever the caller gives control back
            work = 0.0  # seconds spent decoding and converting since the last frame (not waiting for data)
            while True:
                try:
                    packet = next(packets, None)
                    if packet is None:
                        break
                    # Checked per packet, not per frame: packets that never decode must not hide a stall.
                    if time.monotonic() - resumed > spec.stall_timeout:
                        why = f"no frame for {spec.stall_timeout:g} s"
                        raise SourceError(spec, f"stalled after {index - first_index} frames: {why}")
                    t0 = time.perf_counter()
                    frames = packet.decode()
                    work += time.perf_counter() - t0
                except (av.error.FFmpegError, OSError) as exc:  # OSError: a FIFO's TimeoutError too
                    why = budget.reason if budget.exceeded else _describe(exc, spec)
                    decoded = index - first_index
                    if spec.kind is SourceKind.FILE and declared and decoded < declared:  # a file cut short
                        reason = f"truncated: decoded {decoded} of {declared} frames the file declares ({why})"
                    else:
                        reason = f"stream broke after {decoded} frames: {why}"
                    raise SourceError(spec, reason) from exc
                for frame in frames:
                    budget.frame()
                    t0 = time.perf_counter()
                    planes = None if rgb else to_i420(frame)  # (H * 3/2, W)
                    image = to_rgb(frame) if planes is None else planes  # (H, W, 3)
                    if frame.rotation:  # stored sideways with a display matrix: turn it as every player does
                        image = upright(image, frame.rotation, i420=planes is not None)
                    work += time.perf_counter() - t0
                    pts = None if frame.pts is None or frame.time_base is None else float(frame.pts * frame.time_base)
                    yield Frame(
                        stream_id=spec.stream_id,
                        index=index,
                        pts=pts,
                        capture_time=time.time(),
                        image=image,
                        decode_seconds=work,
                        pixel_format="rgb24" if planes is None else "i420",
                    )
                    index += 1
                    work, resumed = 0.0, time.monotonic()
            decoded = index - first_index
            if budget.exceeded:  # FFmpeg may end an interrupted playlist as if it had ended
                raise SourceError(spec, f"stream broke after {decoded} frames: {budget.reason}")
            if decoded == 0:
                raise SourceError(spec, "no frame could be decoded (corrupt or truncated file?)")
            if spec.kind is SourceKind.FILE and declared and decoded < declared:
                raise SourceError(spec, f"truncated: decoded {decoded} of {declared} frames the file declares")
        finally:
            release(container)  # the decoder flushed first: see pipeline.http_budget
