"""Reconnect backoff: the one definition the source supervisor and the Redis sink share."""

from __future__ import annotations

import random

FLOOR = 0.25  # seconds: no wait is ever shorter, whatever a config or control entry asks for


class Backoff:
    """Exponential backoff with equal jitter: attempt n waits between c/2 and c, c = min(maximum, initial * 2**(n-1)).

    Equal rather than full jitter: many cameras behind one failed switch still spread out, and
    one stream's waits never shrink from one attempt to the next (until they reach the cap).
    Every wait is at least FLOOR seconds: a retry loop without a floor (``backoff_initial = 1e-9``)
    wrote tens of thousands of log lines a second.
    """

    def __init__(self, initial: float, maximum: float, rng: random.Random | None = None) -> None:
        self.initial, self.maximum = max(initial, FLOOR), max(maximum, FLOOR)
        self.rng = rng or random.Random()
        self.attempt = 0

    def next_delay(self) -> float:
        self.attempt += 1
        cap = min(self.maximum, self.initial * 2.0 ** min(self.attempt - 1, 60))
        return max(FLOOR, cap / 2 + self.rng.uniform(0, cap / 2))

    def reset(self) -> None:
        self.attempt = 0
