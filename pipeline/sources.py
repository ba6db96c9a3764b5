"""Video sources decoded with PyAV: files, RTSP(S), HTTP(S)/HLS. One thread reads each (see runner)."""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from urllib.parse import urlparse

import av

from pipeline.errors import SourceError
from pipeline.messages import Frame

logger = logging.getLogger(__name__)

LIVE_SCHEMES = ("rtsp", "rtsps", "rtmp", "http", "https", "udp", "srt", "tcp")
_ID_SAFE = re.compile(r"[^A-Za-z0-9_.-]+")


class SourceKind(str, Enum):
    FILE = "file"
    LIVE = "live"


@dataclass(frozen=True)
class SourceSpec:
    stream_id: str  # unique name used in verdicts, Redis keys and metrics labels
    url: str  # file path or URL
    open_timeout: float = 10.0  # seconds to connect and read the stream header
    read_timeout: float = 10.0  # seconds without a packet before the stream counts as dead
    rtsp_transport: str = "tcp"  # "tcp" or "udp"

    @property
    def kind(self) -> SourceKind:
        return SourceKind.LIVE if urlparse(self.url).scheme.lower() in LIVE_SCHEMES else SourceKind.FILE

    @classmethod
    def parse(cls, text: str, **options: float | str) -> SourceSpec:
        """``NAME=URL`` or a bare URL/path (the id is then derived from the file or path name)."""
        name, sep, url = text.partition("=")
        if sep and "://" not in name and "/" not in name and name:
            return cls(name, url, **options)  # type: ignore[arg-type]
        parsed = urlparse(text)
        stem = Path(parsed.path).stem if parsed.path.strip("/") else parsed.hostname or "stream"
        return cls(_ID_SAFE.sub("_", stem) or "stream", text, **options)  # type: ignore[arg-type]


def _open_options(spec: SourceSpec) -> dict[str, str]:
    scheme = urlparse(spec.url).scheme.lower()
    options = {}
    if scheme in ("rtsp", "rtsps"):
        options = {"rtsp_transport": spec.rtsp_transport, "timeout": str(int(spec.read_timeout * 1e6))}
    elif scheme in ("http", "https", "tcp"):
        options = {"rw_timeout": str(int(spec.read_timeout * 1e6)), "reconnect": "0"}
    # No "fflags=nobuffer": measured here, it lost half the frames of an RTSP stream with B-frames.
    return options


def _describe(exc: BaseException, spec: SourceSpec | None = None) -> str:
    if isinstance(exc, av.error.ExitError) and spec is not None:  # PyAV's timeout interrupted a read
        return f"no data for {spec.read_timeout:g} s (read timeout)"
    if isinstance(exc, av.error.FFmpegError):
        return exc.strerror or str(exc)
    return str(exc) or type(exc).__name__


def open_container(spec: SourceSpec) -> av.container.InputContainer:
    """Open ``spec`` with PyAV; raise SourceError with a clear reason."""
    if spec.kind is SourceKind.FILE:
        path = Path(spec.url)
        if not path.exists():
            raise SourceError(spec, "cannot open: no such file")
        if path.is_dir():
            raise SourceError(spec, "cannot open: is a directory, expected a video file")
    try:
        container = av.open(spec.url, options=_open_options(spec), timeout=(spec.open_timeout, spec.read_timeout))
    except (av.error.FFmpegError, OSError) as exc:
        raise SourceError(spec, f"cannot open: {_describe(exc)}") from exc
    if not container.streams.video:
        container.close()
        raise SourceError(spec, "cannot open: no video stream (not a video file?)")
    return container


def read_frames(spec: SourceSpec) -> Iterator[Frame]:
    """Decode every frame of ``spec`` as RGB.

    Raises SourceError when the source cannot be opened, breaks mid-stream, or (for files)
    ends before the frame count its container declares; frames decoded before that are
    yielded first, so a truncated file still produces verdicts.
    """
    container = open_container(spec)
    try:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        declared = stream.frames  # 0 when the container does not say
        index = 0
        decoder = container.decode(stream)
        while True:
            start = time.perf_counter()
            try:
                frame = next(decoder)
            except StopIteration:
                break
            except (av.error.FFmpegError, OSError) as exc:
                raise SourceError(spec, f"stream broke after {index} frames: {_describe(exc, spec)}") from exc
            image = frame.to_ndarray(format="rgb24")  # (H, W, 3)
            yield Frame(
                stream_id=spec.stream_id,
                index=index,
                pts=None if frame.pts is None or frame.time_base is None else float(frame.pts * frame.time_base),
                capture_time=time.time(),
                image=image,
                decode_seconds=time.perf_counter() - start,
            )
            index += 1
        if index == 0:
            raise SourceError(spec, "no frame could be decoded (corrupt or truncated file?)")
        if spec.kind is SourceKind.FILE and declared and index < declared:
            raise SourceError(spec, f"truncated: decoded {index} of {declared} frames the file declares")
        if spec.kind is SourceKind.LIVE:
            logger.warning("stream %r (%s): the live stream ended after %d frames", spec.stream_id, spec.url, index)
    finally:
        container.close()
