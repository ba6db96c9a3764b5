"""The observer: latency per stage and end to end, counts and gauges, exported to Prometheus.

The only module that imports prometheus_client. Each Observer owns its registry, so several
can live in one process (tests) without clashing.
"""

from __future__ import annotations

import logging
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

from pipeline.messages import VerdictState

logger = logging.getLogger(__name__)

STAGES = ("decode", "queue", "detect", "classify", "publish")
# 0.5 ms .. 10 s: stage latencies on CPU and GPU, and capture-to-publish under load.
BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class Observer:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.stage_seconds = Histogram(
            "dfwatch_stage_seconds",
            "Time spent per pipeline stage, per frame or per batch",
            ["stage"],
            buckets=BUCKETS,
            registry=r,
        )
        self.capture_to_publish = Histogram(
            "dfwatch_capture_to_publish_seconds",
            "Wall time from frame capture to verdict publish",
            ["stream"],
            buckets=BUCKETS,
            registry=r,
        )
        self.frames_decoded = Counter("dfwatch_frames_decoded", "Frames decoded", ["stream"], registry=r)
        self.frames_dropped = Counter(
            "dfwatch_frames_dropped", "Frames dropped to stay real time", ["stream"], registry=r
        )
        self.faces = Counter("dfwatch_faces", "Faces detected", ["stream"], registry=r)
        self.stream_errors = Counter(
            "dfwatch_stream_errors", "Streams that failed to open or broke", ["stream"], registry=r
        )
        self.sink_errors = Counter("dfwatch_sink_errors", "Failed sink writes", ["sink"], registry=r)
        self.stream_up = Gauge("dfwatch_stream_up", "1 while a stream delivers frames", ["stream"], registry=r)
        self.queue_depth = Gauge("dfwatch_queue_depth", "Frames waiting in a stream's queue", ["stream"], registry=r)
        self.sink_buffered = Gauge("dfwatch_sink_buffered", "Records waiting for a sink", ["sink"], registry=r)
        self.sink_connected = Gauge("dfwatch_sink_connected", "1 while a sink's server answers", ["sink"], registry=r)
        self.reconnects = Counter("dfwatch_reconnects", "Reconnect attempts", ["stream"], registry=r)
        self.alerts = Counter("dfwatch_alerts", "Times a stream turned FAKE", ["stream"], registry=r)
        self.fps = Gauge("dfwatch_stream_fps", "Verdicts published per second, per stream", ["stream"], registry=r)
        self.detect_every = Gauge("dfwatch_detect_every", "The detector runs on every k-th frame", registry=r)
        self.classify_every = Gauge("dfwatch_classify_every", "Each face is classified every m-th frame", registry=r)
        self.fake_score = Gauge("dfwatch_fake_score", "Smoothed fake score of a stream", ["stream"], registry=r)
        self.verdict = Gauge(
            "dfwatch_verdict", "1 for the stream's verdict state, 0 for the others", ["stream", "state"], registry=r
        )
        self.heartbeat = Gauge(
            "dfwatch_loop_heartbeat_seconds",
            "Unix time of the stage loop's latest turn: a stale value means the pipeline is stuck (dfwatch health)",
            registry=r,
        )
        self._server: Any = None

    def serve(self, host: str, port: int) -> None:
        """Expose /metrics on host:port (raises OSError when the port is taken)."""
        self._server, _ = start_http_server(port, addr=host, registry=self.registry)
        logger.info("Prometheus metrics on http://%s:%d/metrics", host, port)

    def close(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def observe_stage(self, stage: str, seconds: float) -> None:
        self.stage_seconds.labels(stage).observe(seconds)

    def beat(self) -> None:
        """The stage loop is alive (dfwatch_loop_heartbeat_seconds = now)."""
        self.heartbeat.set_to_current_time()

    def forget_stream_up(self, stream: str) -> None:
        """A file that ended is not a feed that is down: drop its ``stream_up`` rather than leave a 0 that alerts."""
        try:
            self.stream_up.remove(stream)
        except KeyError:
            pass

    def forget_stream(self, stream: str) -> None:
        """Drop a removed stream's series: its last ``stream_up`` 0 or FAKE must not alert for ever, and a service
        whose feeds come and go must not keep a counter and a histogram per id it ever saw."""
        series = [(g, (stream,)) for g in (self.stream_up, self.queue_depth, self.fps, self.fake_score)]
        series += [(self.verdict, (stream, state.value)) for state in VerdictState]
        # and its counters and histogram: each holds a label set per stream id for ever otherwise
        series += [(m, (stream,)) for m in (self.capture_to_publish, self.frames_decoded, self.frames_dropped,
                                            self.faces, self.stream_errors, self.reconnects, self.alerts)]  # fmt: skip
        for gauge, labels in series:
            try:
                gauge.remove(*labels)
            except KeyError:  # never set
                pass

    def set_verdict(self, stream: str, state: str, states: tuple[str, ...]) -> None:
        """One-hot ``dfwatch_verdict{stream, state}``: alerts can hold while a stream stays FAKE."""
        for name in states:
            self.verdict.labels(stream, name).set(1.0 if name == state else 0.0)
