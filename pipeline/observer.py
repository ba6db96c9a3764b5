"""What the pipeline reports while it runs, behind one interface: Prometheus, nothing, or a recording.

Readers, stages and the publisher call an ``Observer``; which one is chosen at the edge:
``pipeline.metrics.PrometheusObserver`` for the service (``dfwatch watch``), ``NullObserver`` where
nothing is watched (``dfwatch report``), ``RecordingObserver`` for tests and benchmarks.
Methods are called from the reader threads and the stage loop; they must not block.
"""

from __future__ import annotations

from collections import Counter, defaultdict

from pipeline.messages import VerdictState


class Observer:
    """The interface; every method does nothing here (see NullObserver)."""

    # Sources (reader threads).
    def frame_decoded(self, stream: str, seconds: float) -> None:
        """A frame of ``stream`` was decoded and converted in ``seconds``."""

    def frames_dropped(self, stream: str, count: int) -> None:
        """``count`` frames of ``stream`` were dropped unprocessed: its live queue was full, or at shutdown."""

    def queue_depth(self, stream: str, depth: int) -> None:
        """Frames of ``stream`` waiting for the stages."""

    def stream_up(self, stream: str, up: bool) -> None:
        """``stream`` started (True) or stopped (False) delivering frames."""

    def stream_error(self, stream: str) -> None:
        """``stream`` failed to open or broke."""

    def reconnect(self, stream: str) -> None:
        """A reconnection attempt of ``stream`` starts."""

    def stream_ended(self, stream: str) -> None:
        """A file (not a live feed) came to its end: it is neither up nor down any more (no stream-down alert)."""

    def forget_stream(self, stream: str) -> None:
        """``stream`` was removed: drop everything kept for it (so no alert keeps firing for it)."""

    def streams_refused(self, reason: str, count: int) -> None:
        """``count`` control-hash entries were refused (``reason``: "max_streams" or "invalid"); each once."""

    # Processing (the stage loop).
    def beat(self) -> None:
        """The stage loop turned (the liveness heartbeat `dfwatch health` reads)."""

    def frames_shed(self, stream: str, count: int) -> None:
        """``count`` live frames of ``stream`` were shed before inference: too late for their latency budget."""

    def stage(self, stage: str, seconds: float) -> None:
        """A stage took ``seconds`` (per frame: decode, queue; per batch: detect, classify, publish)."""

    def intervals(self, detect_every: int, classify_every: int) -> None:
        """The detector now runs on every ``detect_every``-th frame, faces are classified every ``classify_every``."""

    def faces(self, stream: str, count: int) -> None:
        """The detector found ``count`` faces in a frame of ``stream``."""

    def verdict(self, stream: str, state: VerdictState, score: float | None, *, alert: bool) -> None:
        """A frame's verdict: its state, the stream's fake score (None: no scored face), and whether it turned FAKE."""

    # Publication.
    def published(self, stream: str, capture_to_publish: float, fps: float | None) -> None:
        """A verdict of ``stream`` was published ``capture_to_publish`` s after capture; verdicts/s lately."""

    def sink_errors(self, sink: str, count: int) -> None:
        """``count`` verdicts (or frames) could not be written to ``sink``."""

    def sink_state(self, sink: str, *, buffered: int, connected: bool | None = None) -> None:
        """Records waiting for ``sink``; whether its server answers (None: the sink has no server)."""


class NullObserver(Observer):
    """Observes nothing."""


class RecordingObserver(Observer):
    """Keeps what it is told, for tests and benchmarks: stage timings, counts, the latest gauge values."""

    def __init__(self) -> None:
        self.stages: defaultdict[str, list[float]] = defaultdict(list)  # stage -> seconds, in call order
        self.counts: Counter[tuple[str, str]] = Counter()  # (what, stream or sink) -> total
        self.gauges: dict[tuple[str, str], object] = {}  # (what, stream or sink) -> latest value
        self.forgotten: list[str] = []

    def frame_decoded(self, stream: str, seconds: float) -> None:
        self.counts["decoded", stream] += 1
        self.stages["decode"].append(seconds)

    def frames_dropped(self, stream: str, count: int) -> None:
        self.counts["dropped", stream] += count

    def queue_depth(self, stream: str, depth: int) -> None:
        self.gauges["queue_depth", stream] = depth

    def stream_up(self, stream: str, up: bool) -> None:
        self.gauges["up", stream] = up

    def stream_error(self, stream: str) -> None:
        self.counts["stream_errors", stream] += 1

    def reconnect(self, stream: str) -> None:
        self.counts["reconnects", stream] += 1

    def stream_ended(self, stream: str) -> None:
        self.gauges.pop(("up", stream), None)

    def beat(self) -> None:
        self.counts["beats", ""] += 1

    def forget_stream(self, stream: str) -> None:
        self.forgotten.append(stream)
        self.gauges = {key: value for key, value in self.gauges.items() if key[1] != stream}

    def streams_refused(self, reason: str, count: int) -> None:
        self.counts["refused", reason] += count

    def frames_shed(self, stream: str, count: int) -> None:
        self.counts["shed", stream] += count

    def stage(self, stage: str, seconds: float) -> None:
        self.stages[stage].append(seconds)

    def intervals(self, detect_every: int, classify_every: int) -> None:
        self.gauges["intervals", ""] = (detect_every, classify_every)

    def faces(self, stream: str, count: int) -> None:
        self.counts["faces", stream] += count

    def verdict(self, stream: str, state: VerdictState, score: float | None, *, alert: bool) -> None:
        self.gauges["verdict", stream] = state
        self.counts["verdicts", stream] += 1
        self.counts["alerts", stream] += alert

    def published(self, stream: str, capture_to_publish: float, fps: float | None) -> None:
        self.counts["published", stream] += 1
        self.stages["capture_to_publish"].append(capture_to_publish)

    def sink_errors(self, sink: str, count: int) -> None:
        self.counts["sink_errors", sink] += count

    def sink_state(self, sink: str, *, buffered: int, connected: bool | None = None) -> None:
        self.gauges["sink_buffered", sink] = buffered
