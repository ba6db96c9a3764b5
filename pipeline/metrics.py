"""The Prometheus observer: latency per stage and end to end, counts and gauges on /metrics.

The only module that imports prometheus_client. Each PrometheusObserver owns its registry, so
several can live in one process (tests) without clashing.
"""

from __future__ import annotations

import logging
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

from pipeline.messages import VerdictState
from pipeline.observer import Observer

logger = logging.getLogger(__name__)

STAGES = ("decode", "queue", "detect", "classify", "publish")
# 0.5 ms .. 10 s: stage latencies on CPU and GPU, and capture-to-publish under load.
BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
_STATES = tuple(s.value for s in VerdictState)


class PrometheusObserver(Observer):
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
        self.dropped_total = Counter(
            "dfwatch_frames_dropped",
            "Decoded frames not processed (queue full, shed, shutdown)",
            ["stream"],
            registry=r,
        )
        self.shed_total = Counter(
            "dfwatch_frames_shed",
            "Live frames shed before inference: too late for their latency budget",
            ["stream"],
            registry=r,
        )
        self.faces_found = Counter("dfwatch_faces", "Faces detected", ["stream"], registry=r)
        self.stream_errors = Counter(
            "dfwatch_stream_errors", "Streams that failed to open or broke", ["stream"], registry=r
        )
        self.sink_errors_total = Counter("dfwatch_sink_errors", "Failed sink writes", ["sink"], registry=r)
        self.up = Gauge("dfwatch_stream_up", "1 while a stream delivers frames", ["stream"], registry=r)
        self.depth = Gauge("dfwatch_queue_depth", "Frames waiting in a stream's queue", ["stream"], registry=r)
        self.sink_buffered = Gauge("dfwatch_sink_buffered", "Records waiting for a sink", ["sink"], registry=r)
        self.sink_connected = Gauge("dfwatch_sink_connected", "1 while a sink's server answers", ["sink"], registry=r)
        self.reconnects = Counter("dfwatch_reconnects", "Reconnect attempts", ["stream"], registry=r)
        self.refused = Counter(
            "dfwatch_streams_refused",
            "Control-hash entries refused (invalid, or past [sources] max_streams)",
            ["reason"],
            registry=r,
        )
        self.alerts = Counter("dfwatch_alerts", "Times a stream turned FAKE", ["stream"], registry=r)
        self.fps = Gauge("dfwatch_stream_fps", "Verdicts published per second, per stream", ["stream"], registry=r)
        self.detect_every = Gauge("dfwatch_detect_every", "The detector runs on every k-th frame", registry=r)
        self.classify_every = Gauge("dfwatch_classify_every", "Each face is classified every m-th frame", registry=r)
        self.fake_score = Gauge("dfwatch_fake_score", "Smoothed fake score of a stream", ["stream"], registry=r)
        self.verdict_state = Gauge(
            "dfwatch_verdict", "1 for the stream's verdict state, 0 for the others", ["stream", "state"], registry=r
        )
        self.heartbeat = Gauge(
            "dfwatch_loop_heartbeat_seconds",
            "Unix time of the stage loop's latest turn: a stale value means the pipeline is stuck (dfwatch health)",
            registry=r,
        )
        self._exported_state: dict[str, VerdictState] = {}  # the state dfwatch_verdict shows, set again on change
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

    def frame_decoded(self, stream: str, seconds: float) -> None:
        self.frames_decoded.labels(stream).inc()
        self.stage_seconds.labels("decode").observe(seconds)

    def frames_dropped(self, stream: str, count: int) -> None:
        self.dropped_total.labels(stream).inc(count)

    def frames_shed(self, stream: str, count: int) -> None:
        self.shed_total.labels(stream).inc(count)
        self.dropped_total.labels(stream).inc(count)  # shed frames are dropped frames too (drop-rate alerts)

    def queue_depth(self, stream: str, depth: int) -> None:
        self.depth.labels(stream).set(depth)

    def stream_up(self, stream: str, up: bool) -> None:
        self.up.labels(stream).set(1 if up else 0)

    def stream_error(self, stream: str) -> None:
        self.stream_errors.labels(stream).inc()

    def reconnect(self, stream: str) -> None:
        self.reconnects.labels(stream).inc()

    def beat(self) -> None:
        self.heartbeat.set_to_current_time()

    def stream_ended(self, stream: str) -> None:
        try:
            self.up.remove(stream)
        except KeyError:
            pass

    def forget_stream(self, stream: str) -> None:
        """Drop a removed stream's series: its last ``stream_up`` 0 or FAKE must not alert for ever, and a service
        whose feeds come and go must not keep a counter and a histogram per id it ever saw."""
        series = [(g, (stream,)) for g in (self.up, self.depth, self.fps, self.fake_score)]
        series += [(self.verdict_state, (stream, state)) for state in _STATES]
        # and its counters and histogram: each holds a label set per stream id for ever otherwise
        series += [
            (m, (stream,))
            for m in (
                self.capture_to_publish,
                self.frames_decoded,
                self.dropped_total,
                self.shed_total,
                self.faces_found,
                self.stream_errors,
                self.reconnects,
                self.alerts,
            )
        ]
        for gauge, labels in series:
            try:
                gauge.remove(*labels)
            except KeyError:  # never set
                pass
        self._exported_state.pop(stream, None)

    def stage(self, stage: str, seconds: float) -> None:
        self.stage_seconds.labels(stage).observe(seconds)

    def intervals(self, detect_every: int, classify_every: int) -> None:
        self.detect_every.set(detect_every)
        self.classify_every.set(classify_every)

    def faces(self, stream: str, count: int) -> None:
        self.faces_found.labels(stream).inc(count)

    def verdict(self, stream: str, state: VerdictState, score: float | None, *, alert: bool) -> None:
        if self._exported_state.get(stream) is not state:  # one-hot dfwatch_verdict: alerts hold while FAKE
            for name in _STATES:
                self.verdict_state.labels(stream, name).set(1.0 if name == state.value else 0.0)
            self._exported_state[stream] = state
        if alert:
            self.alerts.labels(stream).inc()
        if score is not None:
            self.fake_score.labels(stream).set(score)

    def published(self, stream: str, capture_to_publish: float, fps: float | None) -> None:
        self.capture_to_publish.labels(stream).observe(capture_to_publish)
        if fps is not None:
            self.fps.labels(stream).set(fps)

    def sink_errors(self, sink: str, count: int) -> None:
        self.sink_errors_total.labels(sink).inc(count)

    def streams_refused(self, reason: str, count: int) -> None:
        self.refused.labels(reason).inc(count)

    def sink_state(self, sink: str, *, buffered: int, connected: bool | None = None) -> None:
        self.sink_buffered.labels(sink).set(buffered)
        if connected is not None:
            self.sink_connected.labels(sink).set(1 if connected else 0)
