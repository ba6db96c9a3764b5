"""Bounded per-stream frame queues with an explicit policy for when they are full."""

from __future__ import annotations

import collections
import threading
from enum import Enum

from pipeline.messages import Frame


class DropPolicy(str, Enum):
    DROP_OLDEST = "drop_oldest"  # live feeds: a full queue drops its oldest frame, lag never grows
    WAIT = "wait"  # files: the reader waits, nothing is dropped


class FrameQueue:
    """A bounded per-stream queue with an explicit policy for when it is full."""

    def __init__(self, size: int, policy: DropPolicy, wake: threading.Event) -> None:
        self.frames: collections.deque[Frame] = collections.deque()
        self.size, self.policy, self.wake = size, policy, wake
        self.cond = threading.Condition()
        self.closed = False  # the reader has finished (end of stream, error or removal)
        self.dropped = 0

    def put(self, frame: Frame, stop: threading.Event) -> bool:
        """Queue ``frame``; returns True when the oldest frame was dropped to make room.

        A closed queue (its stream was removed while the reader was stuck in a read) takes nothing more.
        """
        dropped = False
        with self.cond:
            if self.closed:
                return False
            if self.policy is DropPolicy.WAIT:
                while len(self.frames) >= self.size and not stop.is_set():
                    self.cond.wait(0.1)
            elif len(self.frames) >= self.size:
                self.frames.popleft()
                self.dropped += 1
                dropped = True
            self.frames.append(frame)
        self.wake.set()
        return dropped

    def get(self) -> Frame | None:
        with self.cond:
            frame = self.frames.popleft() if self.frames else None
            self.cond.notify()
            return frame

    def clear(self) -> int:
        """Drop everything queued (shutdown past its bound); returns how many frames were dropped."""
        with self.cond:
            n = len(self.frames)
            self.frames.clear()
            self.dropped += n
            self.cond.notify_all()
            return n

    def close(self) -> None:
        with self.cond:
            self.closed = True
        self.wake.set()

    @property
    def finished(self) -> bool:
        with self.cond:
            return self.closed and not self.frames

    @property
    def fill(self) -> float:
        return len(self.frames) / self.size
