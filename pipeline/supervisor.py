"""Keeps one stream coming: reconnects live feeds with backoff, loops and paces files.

``stream_frames`` wraps ``read_frames`` (one connection) for the runner's reader thread.
It never starts threads; it only sleeps on the caller's ``stop``, so stopping takes effect
within one ``stop.wait`` step (a connection that is opening or reading ends within its
open/stall timeout).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import closing
from dataclasses import replace
from typing import Protocol

from pipeline.backoff import Backoff
from pipeline.errors import SourceError
from pipeline.messages import Frame
from pipeline.policy import SourcePolicy
from pipeline.sources import SourceKind, SourceSpec, open_container, read_frames

logger = logging.getLogger(__name__)

HEALTHY_SECONDS = 5.0  # a connection that delivered frames this long resets the backoff
MAX_PACE_LAG = 1.0  # seconds: a paced file this late re-anchors its clock instead of bursting to catch up


class StopSignal(Protocol):
    """A threading.Event, or anything with the same is_set/wait (the runner combines two)."""

    def is_set(self) -> bool: ...

    def wait(self, timeout: float | None = None) -> bool: ...


class SourceEvents(Protocol):
    """What the supervisor reports about a stream; called from the reader thread, must not block."""

    def on_up(self, spec: SourceSpec) -> None:
        """The first frame arrived: of the first connection, or of the first one after an on_down."""

    def on_down(self, spec: SourceSpec, reason: str) -> None:
        """A connection failed, broke, stalled or ended and will be retried (on_reconnect follows).

        Called once per failed attempt, so again and again while a stream stays unreachable.
        """

    def on_reconnect(self, spec: SourceSpec, attempt: int, delay: float) -> None:
        """Attempt ``attempt`` (1, 2, ... since the last healthy connection) starts after ``delay`` s."""

    def on_format_change(self, spec: SourceSpec, old: tuple[int, int], new: tuple[int, int]) -> None:
        """The frame size (width, height) changed, e.g. after a reconnect; frames continue at the new size."""


class LogEvents:
    """SourceEvents that only logs: the default of stream_frames (the runner passes its own, with metrics)."""

    def on_up(self, spec: SourceSpec) -> None:
        logger.info("stream %r (%s) is up", spec.stream_id, spec.display)

    def on_down(self, spec: SourceSpec, reason: str) -> None:
        logger.warning("stream %r (%s) is down: %s", spec.stream_id, spec.display, reason)

    def on_reconnect(self, spec: SourceSpec, attempt: int, delay: float) -> None:
        logger.info("stream %r: reconnect attempt %d in %.1f s", spec.stream_id, attempt, delay)

    def on_format_change(self, spec: SourceSpec, old: tuple[int, int], new: tuple[int, int]) -> None:
        logger.info("stream %r: frame size changed from %dx%d to %dx%d", spec.stream_id, *old, *new)


class Pacer:
    """Holds a file's frames until their presentation time, scheduled against one start time (no drift).

    Frame times are pts (or i/fps without pts) relative to the first frame of the current pass
    through the file; each new pass (loop or reconnect) continues where the last one ended.
    """

    def __init__(self, spec: SourceSpec, policy: SourcePolicy) -> None:
        self.spec, self.policy = spec, policy
        self.t0: float | None = None  # monotonic time of the first frame
        self.base = 0.0  # schedule time at which the current pass started
        self.first: float | None = None  # media time of the current pass's first frame
        self.last: float | None = None  # media time of the latest frame
        self.step: float | None = None  # latest positive frame interval, the duration of the last frame
        self.count = 0  # frames of the current pass
        self._fps: float | None = None

    def new_pass(self) -> None:
        if self.first is not None and self.last is not None:
            self.base += self.last - self.first + (self.step or 1 / self.fps())
        self.first = self.last = None
        self.count = 0

    def wait(self, pts: float | None, stop: StopSignal) -> bool:
        """Sleep until the frame with ``pts`` is due; False when ``stop`` was set meanwhile."""
        t = pts if pts is not None else self.count / self.fps()
        self.count += 1
        if self.first is None:
            self.first = t
        elif self.last is not None and t > self.last:
            self.step = t - self.last
        self.last = t
        now = time.monotonic()
        if self.t0 is None:
            self.t0 = now
        due = self.t0 + self.base + (t - self.first)
        if now - due > MAX_PACE_LAG:  # we were held up (a slow disk, a paused process): do not burst
            self.t0 += now - due
            return not stop.is_set()
        return due <= now or not stop.wait(due - now)

    def fps(self) -> float:
        """The file's frame rate (read once, only for frames without pts or a one-frame file)."""
        if self._fps is None:
            container = open_container(self.spec, policy=self.policy)
            try:
                stream = container.streams.video[0]
                rate = stream.average_rate or stream.guessed_rate
            finally:
                container.close()
            self._fps = float(rate) if rate else 25.0
        return self._fps


def stream_frames(
    spec: SourceSpec,
    stop: StopSignal,
    events: SourceEvents | None = None,
    *,
    policy: SourcePolicy | None = None,
    rgb: bool = True,
) -> Iterator[Frame]:
    """Frames of ``spec`` until it ends for good or ``stop`` is set; indices count on across reconnects and loops.

    With ``spec.reconnects`` an error, a stall or the end of a live feed calls ``on_down`` and
    ``on_reconnect``, waits the backoff and connects again, until ``stop``. Without it the
    stream ends as ``read_frames`` does: SourceError propagates, a live feed that ends just ends.
    Files loop with ``spec.loop`` and are held to their frame rate with ``spec.pace``. ``policy``
    (default: SourcePolicy()) sets what FFmpeg may open on the way (see pipeline.policy). ``rgb``: as
    ``read_frames``'s (False: yuv420p frames stay I420 until processed).
    """
    events = events or LogEvents()
    policy = policy or SourcePolicy()
    backoff = Backoff(spec.backoff_initial, spec.backoff_max)
    pacer = Pacer(spec, policy) if spec.pace else None
    next_index, size, up = 0, None, False
    while not stop.is_set():
        connected, decoded = 0.0, 0
        try:
            with closing(read_frames(spec, first_index=next_index, policy=policy, rgb=rgb)) as frames:
                for frame in frames:
                    if decoded == 0:
                        connected = time.monotonic()
                        if not up:
                            up = True
                            events.on_up(spec)
                    elif backoff.attempt and time.monotonic() - connected >= HEALTHY_SECONDS:
                        backoff.reset()
                    new = frame.size  # (W, H)
                    if size is not None and new != size:
                        events.on_format_change(spec, size, new)
                    size, next_index, decoded = new, frame.index + 1, decoded + 1
                    if pacer is not None:
                        if not pacer.wait(frame.pts, stop):
                            return
                        frame = replace(frame, capture_time=time.time())  # a paced file is "captured" when due
                    yield frame
                    if stop.is_set():
                        return
            if spec.kind is SourceKind.FILE:  # the end of a file: finished, or the next pass
                if not spec.loop:
                    return
                if pacer is not None:
                    pacer.new_pass()
                continue
            reason = f"the live stream ended after {decoded} frames"
            if not spec.reconnects:
                logger.warning("stream %r (%s): %s", spec.stream_id, spec.display, reason)
                return
        except SourceError as exc:
            if not spec.reconnects:
                raise
            reason = exc.reason
        up = False
        if pacer is not None:
            pacer.new_pass()
        events.on_down(spec, reason)
        delay = backoff.next_delay()
        events.on_reconnect(spec, backoff.attempt, delay)
        if stop.wait(delay):
            return
