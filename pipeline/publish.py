"""Publication: a batch's verdicts stamped with one clock, serialised once, handed to every sink and counted.

No threads here: sinks that write to a reader or a server buffer off the calling thread (pipeline.sink_worker).
"""

from __future__ import annotations

import collections
import logging
import time
from collections.abc import Sequence

from pipeline.errors import SinkError
from pipeline.messages import Publication, Verdict
from pipeline.observer import Observer
from pipeline.sinks import Sink
from pipeline.summary import RunStats

logger = logging.getLogger(__name__)

FPS_WINDOW = 50  # publications per stream behind dfwatch_stream_fps


class Publisher:
    def __init__(self, sinks: Sequence[Sink], observer: Observer, stats: RunStats) -> None:
        self.sinks, self.observer, self.stats = list(sinks), observer, stats
        self._failed: set[str] = set()  # sinks whose failure was logged once
        self._times: dict[str, collections.deque[float]] = {}  # stream -> its latest publish times

    def publish(self, verdicts: Sequence[Verdict]) -> list[Publication]:
        """Stamp, serialise and hand ``verdicts`` to every sink; a sink that fails is counted, never fatal."""
        start = time.perf_counter()
        publications = Publication.of(verdicts, published=time.time())
        for sink in self.sinks:
            try:
                sink.publish(publications)
            except SinkError as exc:
                self.observer.sink_errors(sink.name, 1)
                if sink.name not in self._failed:
                    logger.error("%s (further failures of this sink are counted, not logged)", exc)
                    self._failed.add(sink.name)
                self.stats.sink_failed(sink.name, len(publications))
        self.observer.stage("publish", time.perf_counter() - start)
        for sink in self.sinks:
            health = sink.health()
            self.observer.sink_state(sink.name, buffered=health.buffered, connected=health.connected)
        for p in publications:
            sid = p.verdict.stream_id
            times = self._times.setdefault(sid, collections.deque(maxlen=FPS_WINDOW))
            times.append(p.published)
            fps = (len(times) - 1) / (times[-1] - times[0]) if len(times) > 1 and times[-1] > times[0] else None
            self.observer.published(sid, p.capture_to_publish, fps)
            self.stats.record(p)
        return publications

    def forget(self, stream_id: str) -> None:
        """A removed stream: its window here, and what each sink keeps for it."""
        self._times.pop(stream_id, None)
        for sink in self.sinks:
            sink.forget_stream(stream_id)

    def close(self) -> None:
        """Close every sink; what a sink dropped or could not flush is counted in the run's stats."""
        for sink in self.sinks:
            try:
                sink.close()
            except Exception:
                logger.exception("%s sink: close failed", sink.name)
            lost = sink.health().lost
            if lost:
                self.stats.sink_failed(sink.name, lost)
