"""Where verdicts go: JSON lines on stdout (the embedded default) and Redis (streams, state, alerts)."""

from __future__ import annotations

import collections
import dataclasses
import errno
import json
import logging
import math
import os
import select
import socket
import threading
import time
from collections.abc import Callable, Sequence
from typing import Protocol, TextIO

import redis

from pipeline.errors import SinkError
from pipeline.messages import Frame, Publication, Verdict, VerdictState
from pipeline.queues import DropPolicy
from pipeline.redis_conn import RedisTarget
from pipeline.sink_worker import Interrupted, SinkHealth, SinkWorker, Writer
from pipeline.summary import percentiles

logger = logging.getLogger(__name__)

STREAM_KEY = "dfwatch:verdicts:{stream}"  # one Redis Stream per video stream
STATE_KEY = "dfwatch:state:{stream}"  # hash: the latest verdict of a video stream
STREAMS_KEY = "dfwatch:streams"  # set: every stream id ever published
ALERT_CHANNEL = "dfwatch:alerts"  # pub/sub: one JSON message per transition to FAKE
STREAM_MAXLEN = 10_000  # approximate cap per Redis Stream (XADD MAXLEN ~)
KEY_TTL = 7 * 86400  # seconds: verdict keys of a stream nobody publishes any more expire after this
BUFFER_SIZE = 10_000  # records held in memory while Redis is slow or away
BATCH_SIZE = 500  # records per pipelined round trip
RATE_WINDOW = 10.0  # seconds of recent verdicts behind the state hash's fps and p95_ms

# Redis answers that mean "not now" rather than "never": the batch is retried like a lost connection.
_TRANSIENT = (
    redis.exceptions.ReadOnlyError,  # failover left us on a replica
    redis.exceptions.OutOfMemoryError,  # maxmemory reached
    redis.exceptions.TryAgainError,
    redis.exceptions.ClusterDownError,  # includes MASTERDOWN
)
_LOG_EVERY = 30.0  # seconds between repeated warnings about drops or refused commands while connected


class Sink(Protocol):
    """Gets every published record (on the stage loop: never waits for long). Subclass it for the defaults."""

    name: str

    def publish(self, publications: Sequence[Publication]) -> None: ...

    def health(self) -> SinkHealth:
        """Buffered, written and lost records, whether its server answers (default: a sink that writes in line)."""
        return SinkHealth()

    def forget_stream(self, stream_id: str) -> None:
        """A stream was removed: after its records, release what is kept for it (default: nothing is kept)."""

    def close(self) -> None: ...


class FrameSink(Protocol):
    """A sink that needs the pixels too (the annotated video): each published verdict comes with its frame.

    runner.py calls it from a SinkWorker's thread, behind a bounded queue, never from the stage loop. A frame the
    stages tracked past without looking at it comes in the decoder's I420: ``frame.rgb()`` converts it, in the
    sink's own thread. ``publish_frames`` may return how many of the pairs it skipped (a file it cannot write).
    """

    name: str

    def publish_frames(self, pairs: Sequence[tuple[Frame, Verdict]]) -> int | None: ...

    def forget_stream(self, stream_id: str) -> None:
        """A stream was removed: after its pairs, release what is kept for it (default: nothing is kept)."""

    def close(self) -> None: ...


def _dumps(obj: object) -> str:
    return json.dumps(obj, separators=(",", ":"))


class JsonLinesSink(Sink):
    """JSON lines written to a file as they come (a file or a StringIO; for a pipe or terminal: StdoutSink)."""

    name = "jsonl"

    def __init__(self, out: TextIO) -> None:
        self.out = out

    def publish(self, publications: Sequence[Publication]) -> None:
        for p in publications:
            self.out.write(p.line + "\n")
        self.out.flush()

    def close(self) -> None:
        self.out.flush()


_PIPE_BUF = select.PIPE_BUF  # a write this small to a pipe that polls writable never blocks


class StdoutSink(Sink, Writer[str]):
    """JSON lines to a file descriptor (stdout: a pipe or a terminal), written by a SinkWorker's thread.

    publish() never waits for the reader. Lines wait in a bounded buffer: while a reader reads nothing
    the oldest are dropped and counted in ``dropped`` (the pipeline, Redis included, goes on). The writer
    writes with poll() and os.write() in pieces of at most PIPE_BUF bytes, so it never blocks either,
    and close() gives it ``close_timeout`` seconds to write what is buffered; the rest is counted in
    ``unflushed``. A reader that goes away (EPIPE: ``dfwatch watch ... | head -1``) is logged once;
    verdicts after that are counted in ``dropped``. Python's own sys.stdout is not used, so the
    interpreter has nothing left to flush into a stuck pipe at exit.
    """

    name = "stdout"
    fatal = (OSError,)  # the reader went away, or the descriptor failed: nothing more can be written

    def __init__(self, fd: int, *, buffer_size: int = 10_000, close_timeout: float = 1.0) -> None:
        self.fd, self.buffer_size, self.close_timeout = fd, buffer_size, close_timeout
        self._give_up = threading.Event()
        self._worker: SinkWorker[str] = SinkWorker(self, size=buffer_size, policy=DropPolicy.DROP_OLDEST)

    def publish(self, publications: Sequence[Publication]) -> None:
        dropped = self._worker.put([p.line + "\n" for p in publications])
        if dropped and self._worker.error is None and self._worker.health().dropped == dropped:
            logger.warning(
                "stdout is not being read: dropping the oldest of %d buffered verdict lines; counted in the summary",
                self.buffer_size,
            )

    def health(self) -> SinkHealth:
        return self._worker.health()

    def close(self) -> None:
        self._worker.close(self.close_timeout)
        unflushed = self._worker.health().unflushed
        if unflushed:
            logger.error(
                "stdout: %d verdict lines not written in %.1f s at shutdown (nobody read them)",
                unflushed,
                self.close_timeout,
            )

    # The writer, on the worker's thread.

    def write(self, items: list[str]) -> None:
        """Write the lines without ever blocking for long; Interrupted when close() gave up on a stuck reader."""
        data = "".join(items).encode()
        done = 0
        poller = select.poll()
        poller.register(self.fd, select.POLLOUT)
        while done < len(data):
            if self._give_up.is_set():
                raise Interrupted(data[done:].count(b"\n"))
            events = poller.poll(200)  # ms
            if not events:
                continue
            if events[0][1] & (select.POLLERR | select.POLLHUP | select.POLLNVAL) and not events[0][1] & select.POLLOUT:
                raise OSError(errno.EPIPE, os.strerror(errno.EPIPE))
            done += os.write(self.fd, data[done : done + _PIPE_BUF])

    def interrupt(self) -> None:
        self._give_up.set()

    def broke(self, exc: BaseException) -> None:
        closed = isinstance(exc, OSError) and exc.errno == errno.EPIPE
        reason = os.strerror(exc.errno) if isinstance(exc, OSError) and exc.errno else str(exc)
        logger.warning(
            "stdout %s (%s): verdicts still go to the other sinks; those not written are counted in the summary",
            "was closed by its reader" if closed else "failed",
            reason,
        )


class RedisSink(Sink, Writer[Publication]):
    """Publish verdicts to Redis from a SinkWorker's thread; publish() never waits for Redis.

    Per batch, in one pipelined round trip (no MULTI):

    - ``XADD dfwatch:verdicts:<stream> MAXLEN ~ maxlen`` per record (fields verdict, score, frame, json;
      ``json`` is the stdout JSON line),
    - ``HSET dfwatch:state:<stream>`` with the batch's latest verdict per stream (fields verdict, score,
      frame, pts, capture_time, faces (count), updated (publish time), json; "" stands for None), the
      stream's verdicts per second ``fps`` and 95th percentile capture-to-publish ``p95_ms`` over the last
      RATE_WINDOW seconds of publishing, ``worker`` (host:pid of this process) and, when a verdict of the
      batch turned FAKE, ``last_alert`` (its publish time) and ``last_alert_frame`` (kept until the next),
    - ``SADD dfwatch:streams`` with the batch's stream ids,
    - ``PUBLISH dfwatch:alerts`` a JSON alert (stream, frame, pts, score, capture_time, verdict) per
      verdict that turned FAKE; after the state writes, so a subscriber reading the state sees it.

    Every key it writes (the Stream, the state hash, the set of streams) expires ``ttl`` seconds after its
    latest write, so the keys of streams nobody publishes any more go away by themselves; a removed
    stream (``forget_stream``) leaves the set after its buffered records (``SREM``).

    Records wait in the worker's bounded buffer (pipeline.sink_worker). A record leaves it only once the
    pipeline that carried it succeeded; when a connection breaks mid-pipeline the whole batch goes back to
    the head and is sent again, so Redis may hold a few entries twice, but never out of order. While Redis
    is away the worker retries with exponential backoff and jitter; one warning when the connection is lost,
    one info when it is back. A full buffer drops its oldest records (a removed stream's marker never).
    Memory holds at most ``buffer_size + batch_size`` records (the batch in flight is not counted against
    the buffer).

    ``health()`` (any thread; counts only grow): ``written`` records whose XADD pipeline succeeded,
    ``dropped`` because the buffer was full, ``failures`` write attempts that failed on the connection (or a
    transient refusal), ``rejected`` commands Redis refused for good (e.g. WRONGTYPE; not retried),
    ``buffered`` records waiting now, ``connected`` False during an outage, ``unflushed`` records still
    buffered when close() gave up (lost).
    """

    name = "redis"
    retry_on = (redis.ConnectionError, redis.TimeoutError, OSError, *_TRANSIENT)
    fatal = (Exception,)  # anything else is a bug, not Redis: the writer stops, publish() raises from then on

    def __init__(
        self,
        url: str,
        *,
        maxlen: int = STREAM_MAXLEN,
        password: str | None = None,
        buffer_size: int = BUFFER_SIZE,
        batch_size: int = BATCH_SIZE,
        backoff: tuple[float, float] = (0.2, 5.0),
        socket_timeout: float = 5.0,
        ttl: float = KEY_TTL,
        on_error: Callable[[str], None] | None = None,
    ) -> None:
        """Connect and ping once: raises SinkError when Redis cannot be reached now.

        ``url`` is ``redis://``, ``rediss://`` (TLS) or ``unix://``; ``password`` is used only when the
        URL carries none (the CLI passes $DFWATCH_REDIS_PASSWORD). ``backoff`` is the first and the
        longest wait between reconnection attempts, in seconds (pipeline.backoff: never below its floor).
        ``ttl``: seconds after its latest write a key expires (0: never). ``on_error`` is called from the writer
        thread with "connection" (a failed attempt) or "rejected" (a refused command); keep it quick.
        """
        if buffer_size < 1 or batch_size < 1 or maxlen < 1 or ttl < 0:
            raise SinkError(
                f"buffer_size, batch_size and maxlen must be at least 1 and ttl at least 0, got "
                f"{buffer_size}, {batch_size}, {maxlen}, {ttl}"
            )
        self.target = RedisTarget(url, password=password)
        self.url = self.target.url  # redacted: the only form of the URL this object keeps
        self.maxlen, self.buffer_size, self.ttl = maxlen, buffer_size, int(math.ceil(ttl))
        self.on_error = on_error
        # no retries inside redis-py: the worker retries, with its own backoff and bookkeeping
        self.client = self.target.connect(timeout=socket_timeout, retry=False)
        self.rejected = 0
        self._dropped_logged = 0
        self._last_log = {"drops": -math.inf, "rejected": -math.inf}
        self.worker = f"{socket.gethostname()}:{os.getpid()}"
        self._lock = threading.Lock()  # _recent and _rates: publish() writes them, the writer reads _rates
        self._recent: dict[str, collections.deque[tuple[float, float]]] = {}  # stream -> (published, c2p ms)
        self._rates: dict[str, tuple[str, str]] = {}  # stream -> (fps, p95_ms) as written to the state hash
        self._worker: SinkWorker[Publication] = SinkWorker(
            self, size=buffer_size, policy=DropPolicy.DROP_OLDEST, batch_size=batch_size, backoff=backoff
        )

    def publish(self, publications: Sequence[Publication]) -> None:
        """Queue the publications for the writer and return at once; SinkError only when closed or crashed."""
        if self._worker.error is not None:
            raise SinkError(f"Redis at {self.url}: the writer stopped ({self._worker.error}); verdicts not sent")
        if self._worker.closed:
            raise SinkError(f"Redis at {self.url}: publish() after close()")
        with self._lock:
            self._rates.update(self._window(publications))
        self._worker.put(publications)

    def forget_stream(self, stream_id: str) -> None:
        """A removed stream: after its buffered records, take it out of the set of streams (its keys expire)."""
        with self._lock:
            self._recent.pop(stream_id, None)
            self._rates.pop(stream_id, None)
        self._worker.forget_stream(stream_id)

    def health(self) -> SinkHealth:
        return dataclasses.replace(self._worker.health(), rejected=self.rejected)

    def close(self, timeout: float = 5.0) -> None:
        """Flush what is buffered for up to ``timeout`` seconds (half a second more at worst), then stop the writer.

        What could not be written is logged as an error and counted in ``health().unflushed``.
        """
        if self._worker.closed:
            return
        self._worker.close(timeout)  # a writer stuck in a socket call to a silent host: interrupt() breaks it
        health = self._worker.health()
        self._log_drops("before close")
        if health.unflushed:
            logger.error(
                "Redis at %s: %d verdicts still buffered after %.1f s are lost (%d sent, %d dropped)",
                self.url,
                health.unflushed,
                timeout,
                health.written,
                health.dropped,
            )
        if self._worker.running:
            logger.error("Redis at %s: the writer thread did not stop", self.url)
        self.client.close()

    def _window(self, publications: Sequence[Publication]) -> dict[str, tuple[str, str]]:
        """Add the publications to their streams' recent window; the (fps, p95_ms) of each stream they touch."""
        touched = set()
        now = max((p.published for p in publications), default=time.time())
        for p in publications:
            recent = self._recent.setdefault(p.verdict.stream_id, collections.deque(maxlen=4096))
            recent.append((p.published, float(p.record["latency_ms"]["capture_to_publish"])))
            touched.add(p.verdict.stream_id)
        rates = {}
        for stream_id in touched:
            recent = self._recent[stream_id]
            while recent and recent[0][0] < now - RATE_WINDOW:
                recent.popleft()
            first = recent[0][0]
            later = sum(1 for t, _ in recent if t > first)  # verdicts published after the first publish call
            fps = later / (now - first) if now > first else None
            p95 = percentiles((ms for _, ms in recent), (95,))["p95"]
            rates[stream_id] = (_num(fps, 2), _num(p95, 1))
        return rates

    # The writer, on the worker's thread.

    def write(self, items: list[Publication]) -> None:
        """One pipelined round trip for ``items``; raises (retried by the worker) when it did not go through."""
        pipe = self.client.pipeline(transaction=False)
        latest: dict[str, Publication] = {}
        alerts = []
        last_alert: dict[str, dict[str, str | int]] = {}
        for p in items:
            verdict = p.verdict
            fields = {"verdict": verdict.state.value, "score": _num(verdict.score, 4), "frame": verdict.frame_index}
            key = STREAM_KEY.format(stream=verdict.stream_id)
            pipe.xadd(key, {**fields, "json": p.line}, maxlen=self.maxlen, approximate=True)
            latest[verdict.stream_id] = p
            if verdict.changed and verdict.state is VerdictState.FAKE:
                alert = {k: p.record[k] for k in ("stream", "frame", "pts", "score", "capture_time", "verdict")}
                alerts.append(_dumps(alert))
                last_alert[verdict.stream_id] = {
                    "last_alert": _num(p.published, 6),
                    "last_alert_frame": verdict.frame_index,
                }
        with self._lock:
            rates = dict(self._rates)
        for stream_id, p in latest.items():
            verdict, published, text = p.verdict, p.published, p.line
            fps, p95 = rates.get(stream_id, ("", ""))
            state = {
                "verdict": verdict.state.value,
                "score": _num(verdict.score, 4),
                "frame": verdict.frame_index,
                "pts": _num(verdict.pts, 6),
                "capture_time": _num(verdict.capture_time, 6),
                "faces": len(verdict.faces),
                "updated": _num(published, 6),
                "json": text,
                "fps": fps,
                "p95_ms": p95,
                "worker": self.worker,
                **last_alert.get(stream_id, {}),
            }
            pipe.hset(STATE_KEY.format(stream=stream_id), mapping=state)
            if self.ttl:
                pipe.expire(STATE_KEY.format(stream=stream_id), self.ttl)
                pipe.expire(STREAM_KEY.format(stream=stream_id), self.ttl)
        if latest:
            pipe.sadd(STREAMS_KEY, *latest)
            if self.ttl:
                pipe.expire(STREAMS_KEY, self.ttl)
        for alert in alerts:
            pipe.publish(ALERT_CHANNEL, alert)
        self._execute(pipe)

    def forget(self, stream_id: str) -> None:
        pipe = self.client.pipeline(transaction=False)
        pipe.srem(STREAMS_KEY, stream_id)
        if self.ttl:
            pipe.expire(STREAMS_KEY, self.ttl)
        self._execute(pipe)

    def _execute(self, pipe: redis.client.Pipeline) -> None:
        try:
            results = pipe.execute(raise_on_error=False)
        except self.retry_on:
            # The next attempt connects afresh (DNS, failover); idle connections only, as others may share this
            # client.
            self.client.connection_pool.disconnect(inuse_connections=False)
            raise
        errors = [r for r in results if isinstance(r, Exception)]
        transient = [e for e in errors if isinstance(e, _TRANSIENT)]
        if transient:
            self.client.connection_pool.disconnect(inuse_connections=False)
            raise transient[0]  # retried whole: the commands that did succeed will be repeated
        if errors:
            self.rejected += len(errors)
            self._hook("rejected")
            if self._due("rejected"):
                logger.warning(
                    "Redis at %s refused %d of %d commands (%s); those writes are skipped, %d refused in all",
                    self.url,
                    len(errors),
                    len(results),
                    self._scrub(errors[0]),
                    self.rejected,
                )

    def interrupt(self) -> None:
        """Stuck in a socket call to a silent host: break the connection."""
        self.client.connection_pool.disconnect()

    def retrying(self, exc: BaseException, *, first: bool) -> None:
        self._hook("connection")
        if first:
            logger.warning(
                "Redis at %s: connection lost (%s); buffering up to %d verdicts and reconnecting",
                self.url,
                self._scrub(exc),
                self.buffer_size,
            )

    def written(self, n: int, *, outage: float | None) -> None:
        if outage is not None:
            logger.info(
                "Redis at %s: connection back after %.1f s; flushing %d buffered verdicts",
                self.url,
                outage,
                n + self._worker.health().buffered,
            )
            self._log_drops("during the outage")
        elif self._worker.health().dropped > self._dropped_logged and self._due("drops"):
            self._log_drops("because Redis is slower than the pipeline")

    def broke(self, exc: BaseException) -> None:
        logger.error("Redis at %s: the writer crashed", self.url, exc_info=exc)

    def _log_drops(self, when: str) -> None:
        dropped = self._worker.health().dropped
        if dropped > self._dropped_logged:
            logger.warning(
                "Redis at %s: the buffer (%d verdicts) was full; dropped the %d oldest %s",
                self.url,
                self.buffer_size,
                dropped - self._dropped_logged,
                when,
            )
            self._dropped_logged = dropped

    def _due(self, what: str) -> bool:
        now = time.monotonic()
        if now - self._last_log[what] < _LOG_EVERY:
            return False
        self._last_log[what] = now
        return True

    def _hook(self, kind: str) -> None:
        if self.on_error is not None:
            try:
                self.on_error(kind)
            except Exception:
                logger.exception("Redis sink: on_error hook failed")

    def _scrub(self, exc: BaseException) -> str:
        return self.target.scrub(exc)


def _num(value: float | None, digits: int) -> str:
    return "" if value is None else f"{value:.{digits}f}"
