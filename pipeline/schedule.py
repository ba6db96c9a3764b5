"""The schedule stage: which frames the detector sees, how often faces are classified, which live frames are shed.

It knows no queues or threads: the runner asks ``late`` about each live frame it takes (a frame
that can no longer be published within its latency budget is shed before inference) and calls
``adapt`` once in a while with what its queues say about the load.
"""

from __future__ import annotations

import collections
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from pipeline.messages import Batch, Frame
from pipeline.observer import Observer
from pipeline.ranges import check_ranges, ranged

logger = logging.getLogger(__name__)

RELIEF_BUSY = 0.7  # k and m come back only when the stages were busy less than this share of the time
RECENT_BATCHES = 30  # batch durations behind the estimate of how long the next batch takes (a few seconds)
SAFETY = 1.5  # the next batch is expected to take up to this many times the slowest recent one (a shared CPU)
PUBLISH_MARGIN = 0.02  # seconds added to that estimate for publishing the batch


@dataclass(frozen=True)
class ScheduleConfig:
    detect_every: int = ranged(1, 1, 1000)  # run the detector on every k-th frame; the tracker carries faces between
    max_detect_every: int = ranged(8, 1, 1000)  # under load (live queues filling up, frames lost) k grows up to this
    classify_every: int = ranged(1, 1, 1000)  # classify each tracked face every m-th frame it is on screen
    max_classify_every: int = ranged(4, 1, 1000)  # once k is at its maximum, m grows up to this under load
    # from capture, within which a live frame's verdict is worth publishing
    latency_budget: float = ranged(1.0, 0, 60, open_lo=True, unit="seconds")

    def __post_init__(self) -> None:
        check_ranges(self)


class Schedule:
    """Per stream, which frames are detected (every k-th through the stages); k and m adapt to load."""

    def __init__(self, cfg: ScheduleConfig, observer: Observer) -> None:
        self.cfg, self.observer = cfg, observer
        self.detect_every, self.classify_every = cfg.detect_every, cfg.classify_every
        self._seen: dict[str, int] = {}  # frames of each stream through the stages, for every-k-th
        self._phase: dict[str, int] = {}  # where each stream's count of k starts
        self._next_phase = 0
        self._recent: collections.deque[float] = collections.deque(maxlen=RECENT_BATCHES)
        self._warm = False

    def process(self, frames: Sequence[Frame], *, taken: float | None = None) -> Batch:
        """Mark every k-th frame of each stream for detection (and a stream's first).

        Each stream counts from its own phase (the order in which the streams first came), so with many
        streams about 1/k of every batch is detected, rather than all streams in one batch every k-th.
        """
        detect = np.zeros(len(frames), bool)
        for i, frame in enumerate(frames):
            seen = self._seen.get(frame.stream_id)
            if seen is None:
                seen = self._seen[frame.stream_id] = 0
                self._phase[frame.stream_id] = self._next_phase
                self._next_phase += 1
            detect[i] = seen == 0 or (seen + self._phase[frame.stream_id]) % self.detect_every == 0
            self._seen[frame.stream_id] = seen + 1
        return Batch(tuple(frames), time.time() if taken is None else taken, detect, self.classify_every)

    @property
    def expected_seconds(self) -> float:
        """How long the next batch may take to publish: SAFETY times the slowest of the recent ones, and a margin.

        Conservative on purpose: a frame shed a little early costs nothing under overload (a newer one of its
        stream is waiting), a frame published late counts against the budget.
        """
        return SAFETY * (max(self._recent) if self._recent else 0.0) + PUBLISH_MARGIN

    def took(self, seconds: float) -> None:
        """A batch took ``seconds`` through the stages (the first, which warms the runtimes up, does not count)."""
        if self._warm:
            self._recent.append(seconds)
        self._warm = True

    def late(self, frame: Frame, *, now: float) -> bool:
        """True for a live frame whose verdict, published after the next batch, would miss its latency budget."""
        return now + self.expected_seconds > frame.capture_time + self.cfg.latency_budget

    def adapt(self, *, fill: float, lost: int, busy: float, taken: int = 0) -> None:
        """One step of detecting less often, then classifying less often, under load; back once there is room.

        ``fill``: the fullest live queue (0..1); ``lost``: live frames dropped or shed since the last call,
        ``taken``: live frames processed since then; ``busy``: the share of time the stages worked. Under
        load (fill over half, or frames lost) k grows by one, up to max_detect_every, then m up to
        max_classify_every; when more frames were lost than processed, by doubling, so that a box that
        starts far behind catches up within seconds. With room again (queues nearly empty, nothing lost,
        stages busy less than RELIEF_BUSY) m comes back first, then k, one at a time. The runner calls it
        about once a second.
        """
        cfg, before = self.cfg, (self.detect_every, self.classify_every)
        if fill > 0.5 or lost > 0:
            grow = (lambda v: v * 2) if lost > taken else (lambda v: v + 1)
            if self.detect_every < cfg.max_detect_every:
                self.detect_every = min(cfg.max_detect_every, grow(self.detect_every))
            elif self.classify_every < cfg.max_classify_every:
                self.classify_every = min(cfg.max_classify_every, grow(self.classify_every))
        elif fill < 0.1 and busy < RELIEF_BUSY:
            if self.classify_every > cfg.classify_every:
                self.classify_every -= 1
            elif self.detect_every > cfg.detect_every:
                self.detect_every -= 1
        if (self.detect_every, self.classify_every) != before:
            self.observer.intervals(self.detect_every, self.classify_every)
            logger.info(
                "load: live queues %.0f%% full, %d frames lost, stages busy %.0f%%: detecting every %d "
                "frames, classifying faces every %d",
                fill * 100,
                lost,
                busy * 100,
                self.detect_every,
                self.classify_every,
            )

    def forget(self, stream_id: str) -> None:
        self._seen.pop(stream_id, None)
        self._phase.pop(stream_id, None)
