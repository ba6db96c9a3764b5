"""What a run did, per stream, for the short human summary printed at the end; and the one percentile."""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np

from pipeline.messages import Publication, VerdictState

SAMPLES = 10_000  # latency samples kept per stream and stage for the summary's percentiles
MAX_CHANGES = 20  # verdict changes kept per stream for the summary


def percentiles(values: Iterable[float], qs: Sequence[float] = (50, 95, 99)) -> dict[str, float | None]:
    """``{"p50": ..., "p95": ..., "p99": ...}`` of ``values`` (None for no values), by nearest rank.

    The q-th percentile is the smallest value with at least q % of the values at or below it: always a
    value that occurred (of 5 latencies, the 95th percentile is the slowest).
    """
    values = np.fromiter(values, dtype=np.float64)
    if not len(values):
        return {f"p{q:g}": None for q in qs}
    return {f"p{q:g}": float(v) for q, v in zip(qs, np.percentile(values, qs, method="inverted_cdf"))}


@dataclass
class StreamStats:
    frames: int = 0
    faces: int = 0
    dropped: int = 0  # decoded frames never processed: queue full, shed, or still queued at shutdown
    shed: int = 0  # of those, live frames shed before inference, too late for their latency budget
    state: VerdictState = VerdictState.UNKNOWN
    # frame, pts, new state: the latest changes only, so a long-running service keeps bounded memory
    changes: deque[tuple[int, float | None, VerdictState]] = field(default_factory=lambda: deque(maxlen=MAX_CHANGES))
    latency_ms: dict[str, deque[float]] = field(default_factory=dict)  # stage -> the latest SAMPLES samples
    first_publish: float | None = None
    last_publish: float | None = None
    error: str | None = None


class RunStats:
    def __init__(self, stream_ids: list[str]) -> None:
        self.streams = {sid: StreamStats() for sid in stream_ids}
        self.sink_failures: dict[str, int] = {}

    def add_stream(self, stream_id: str) -> None:
        self.streams.setdefault(stream_id, StreamStats())

    def retire(self, stream_id: str) -> None:
        """A stream was removed: keep its counts for the summary, free its latency samples (~1.6 MB per stream)."""
        stats = self.streams.get(stream_id)
        if stats is not None:
            stats.latency_ms = {}

    def record(self, publication: Publication) -> None:
        verdict, published = publication.verdict, publication.published
        s = self.streams[verdict.stream_id]
        s.frames += 1
        s.faces += len(verdict.faces)
        if verdict.changed:
            s.changes.append((verdict.frame_index, verdict.pts, verdict.state))
        s.state = verdict.state
        for stage, seconds in verdict.latency.items():
            s.latency_ms.setdefault(stage, deque(maxlen=SAMPLES)).append(seconds * 1000)
        e2e = s.latency_ms.setdefault("capture_to_publish", deque(maxlen=SAMPLES))
        e2e.append(publication.capture_to_publish * 1000)
        s.first_publish = published if s.first_publish is None else s.first_publish
        s.last_publish = published

    def sink_failed(self, sink: str, count: int) -> None:
        self.sink_failures[sink] = self.sink_failures.get(sink, 0) + count

    @property
    def failed(self) -> list[str]:
        return [sid for sid, s in self.streams.items() if s.error]

    def format(self, *, placeholder_models: bool) -> str:
        lines = [
            "",
            "dfwatch summary" + ("  (PLACEHOLDER models: untrained, verdicts are noise)" if placeholder_models else ""),
        ]
        cols = ("frames", "faces", "drops", "shed", "fps")
        lines.append(f"{'stream':<16} " + " ".join(f"{c:>6}" for c in cols) + "  p50 ms  p95 ms  verdict / changes")
        for sid, s in self.streams.items():
            span = (s.last_publish or 0) - (s.first_publish or 0)
            fps = (s.frames - 1) / span if s.frames > 1 and span > 0 else 0.0
            p = percentiles(s.latency_ms.get("capture_to_publish", ()), (50, 95))
            p50, p95 = ("-" if v is None else f"{v:.0f}" for v in p.values())
            changes = ", ".join(f"{st.value}@{_at(frame, pts)}" for frame, pts, st in s.changes) or "-"
            tail = f"FAILED ({s.error})" if s.error else f"{s.state.value}  ({changes})"
            lines.append(
                f"{sid[:16]:<16} {s.frames:>6} {s.faces:>6} {s.dropped:>6} {s.shed:>6} {fps:>6.1f} "
                f"{p50:>7} {p95:>7}  {tail}"
            )
        stages: dict[str, list[float]] = {}
        for s in self.streams.values():
            for stage, samples in s.latency_ms.items():
                stages.setdefault(stage, []).extend(samples)
        if stages:
            parts = []
            for k, v in stages.items():
                p = percentiles(v, (50, 95))
                parts.append(f"{k} {p['p50']:.1f}/{p['p95']:.1f}")
            lines.append("latency ms p50/p95 (detect and classify are per batch): " + "  ".join(parts))
        for sink, n in self.sink_failures.items():
            lines.append(f"sink {sink}: {n} verdicts could not be written")
        return "\n".join(lines)


def _at(frame: int, pts: float | None) -> str:
    return f"{pts:.2f}s" if pts is not None else f"frame {frame}"
