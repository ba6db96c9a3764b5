"""Where verdicts go: JSON lines on stdout (the embedded default) and Redis (streams, state, alerts)."""

from __future__ import annotations

import collections
import errno
import json
import logging
import math
import os
import select
import socket
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Protocol, TextIO

import redis

from pipeline.backoff import Backoff
from pipeline.errors import SinkError
from pipeline.messages import Frame, Publication, StreamRemoved, Verdict, VerdictState
from pipeline.redis_conn import RedisTarget
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
    """Gets every published record; may also have ``forget_stream(stream_id)``, called once a stream was removed."""

    name: str

    def publish(self, publications: Sequence[Publication]) -> None: ...

    def close(self) -> None: ...


class FrameSink(Protocol):
    """A sink that needs the pixels too (the annotated video): each published verdict comes with its frame.

    runner.py calls it from a thread of its own, behind a bounded queue, never from the stage loop. A frame the
    stages tracked past without looking at it comes in the decoder's I420: ``frame.rgb()`` converts it, in the
    sink's own thread.
    """

    name: str

    def publish_frames(self, pairs: Sequence[tuple[Frame, Verdict]]) -> None: ...

    def close(self) -> None: ...


def _dumps(obj: object) -> str:
    return json.dumps(obj, separators=(",", ":"))


class JsonLinesSink:
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


class StdoutSink:
    """JSON lines to a file descriptor (stdout: a pipe or a terminal) from a writer thread of its own.

    publish() never waits for the reader. Lines wait in a bounded buffer: while a reader reads nothing
    the oldest are dropped and counted in ``dropped`` (the pipeline, Redis included, goes on). The writer
    writes with poll() and os.write() in pieces of at most PIPE_BUF bytes, so it never blocks either,
    and close() gives it ``close_timeout`` seconds to write what is buffered; the rest is counted in
    ``unflushed``. A reader that goes away (EPIPE: ``dfwatch watch ... | head -1``) is logged once;
    verdicts after that are counted in ``dropped``. Python's own sys.stdout is not used, so the
    interpreter has nothing left to flush into a stuck pipe at exit.
    """

    name = "stdout"

    def __init__(self, fd: int, *, buffer_size: int = 10_000, close_timeout: float = 1.0) -> None:
        self.fd, self.buffer_size, self.close_timeout = fd, buffer_size, close_timeout
        self.dropped = self.unflushed = self.written = 0
        self._lines: collections.deque[str] = collections.deque()
        self._cond = threading.Condition()
        self._closed = False
        self._give_up = threading.Event()
        self._broken: str | None = None  # why the descriptor can no longer be written
        self._thread = threading.Thread(target=self._run, name="dfwatch-stdout", daemon=True)
        self._thread.start()

    @property
    def buffered(self) -> int:
        with self._cond:
            return len(self._lines)

    @property
    def connected(self) -> bool:
        """False once the descriptor failed (its reader went away)."""
        return self._broken is None

    def publish(self, publications: Sequence[Publication]) -> None:
        lines = [p.line + "\n" for p in publications]
        with self._cond:
            if self._broken is not None or self._closed:
                self.dropped += len(lines)
                return
            self._lines.extend(lines)
            excess = len(self._lines) - self.buffer_size
            for _ in range(excess):
                self._lines.popleft()
            if excess > 0:
                if not self.dropped:
                    logger.warning(
                        "stdout is not being read: dropping the oldest of %d buffered verdict lines; "
                        "counted in the summary",
                        self.buffer_size,
                    )
                self.dropped += excess
            self._cond.notify()

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify()
        self._thread.join(self.close_timeout)
        if self._thread.is_alive():
            self._give_up.set()
            self._thread.join(1.0)
        with self._cond:
            self.unflushed += len(self._lines)
            self._lines.clear()
        if self.unflushed:
            logger.error(
                "stdout: %d verdict lines not written in %.1f s at shutdown (nobody read them)",
                self.unflushed,
                self.close_timeout,
            )

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._lines and not self._closed:
                    self._cond.wait()
                if not self._lines:
                    return
                lines = list(self._lines)
                self._lines.clear()
            data = "".join(lines).encode()
            try:
                done = self._write(data)
            except OSError as exc:
                with self._cond:
                    self._broken = os.strerror(exc.errno) if exc.errno else str(exc)
                    self.dropped += len(lines) + len(self._lines)
                    self._lines.clear()
                closed = exc.errno == errno.EPIPE
                logger.warning(
                    "stdout %s (%s): verdicts still go to the other sinks; those not written are "
                    "counted in the summary",
                    "was closed by its reader" if closed else "failed",
                    self._broken,
                )
                return
            if done < len(data):  # gave up at shutdown
                with self._cond:
                    self.unflushed += data[done:].count(b"\n")
                return
            self.written += len(lines)

    def _write(self, data: bytes) -> int:
        """Write ``data`` without ever blocking for long; the bytes written (fewer when close() gave up)."""
        done = 0
        poller = select.poll()
        poller.register(self.fd, select.POLLOUT)
        while done < len(data):
            if self._give_up.is_set():
                return done
            events = poller.poll(200)  # ms
            if not events:
                continue
            if events[0][1] & (select.POLLERR | select.POLLHUP | select.POLLNVAL) and not events[0][1] & select.POLLOUT:
                raise OSError(errno.EPIPE, os.strerror(errno.EPIPE))
            done += os.write(self.fd, data[done : done + _PIPE_BUF])
        return done


class RedisSink:
    """Publish verdicts to Redis from a background writer; publish() never waits for Redis.

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
    stream (``forget_stream``) leaves the set at once.

    Records wait in a bounded in-memory buffer. A record leaves it only once the pipeline that carried
    it succeeded; when a connection breaks mid-pipeline the whole batch is sent again, so Redis may hold
    a few entries twice, but never out of order. While Redis is away the writer reconnects with
    exponential backoff and jitter, logging one warning when the connection is lost and one info when
    it is back. A full buffer drops its oldest records, counted in ``dropped``. Memory holds at most
    ``buffer_size + batch_size`` records (the batch in flight is not counted against the buffer).

    Counters, for the metrics exporter (read them from any thread; they only grow):

    - ``sent``: records whose XADD pipeline succeeded,
    - ``dropped``: records dropped because the buffer was full,
    - ``failures``: write attempts that failed on the connection (or a transient refusal),
    - ``rejected``: commands Redis refused for good (e.g. WRONGTYPE); not retried,
    - ``buffered``: records waiting now (property), ``connected``: False during an outage (property),
    - ``unflushed``: records still buffered when close() gave up (set by close(), lost).
    """

    name = "redis"

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
        self.maxlen, self.buffer_size, self.batch_size = maxlen, buffer_size, batch_size
        self.backoff, self.ttl = backoff, int(math.ceil(ttl))
        self.on_error = on_error
        # no retries inside redis-py: the writer retries, with its own backoff and bookkeeping
        self.client = self.target.connect(timeout=socket_timeout, retry=False)
        self.sent = self.dropped = self.failures = self.rejected = self.unflushed = 0
        self._queue: collections.deque[Publication | StreamRemoved] = collections.deque()
        self._inflight = 0  # verdicts taken by the writer, not yet confirmed
        self._cond = threading.Condition()
        self._closed = False  # publish() refuses records
        self._deadline = float("inf")  # monotonic time when the writer gives up flushing
        self._closing = threading.Event()  # cuts a backoff wait short
        self._crashed: BaseException | None = None
        self._down_since: float | None = None
        self._dropped_logged = 0
        self._last_log = {"drops": -math.inf, "rejected": -math.inf}
        self.worker = f"{socket.gethostname()}:{os.getpid()}"
        self._recent: dict[str, collections.deque[tuple[float, float]]] = {}  # stream -> (published, c2p ms)
        self._rates: dict[str, tuple[str, str]] = {}  # stream -> (fps, p95_ms) as written to the state hash
        self._thread = threading.Thread(target=self._run, name="dfwatch-redis-sink", daemon=True)
        self._thread.start()

    @property
    def buffered(self) -> int:
        with self._cond:
            return _verdicts(self._queue) + self._inflight

    @property
    def connected(self) -> bool:
        return self._down_since is None

    def publish(self, publications: Sequence[Publication]) -> None:
        """Queue the publications for the writer and return at once; SinkError only when closed or crashed."""
        rates = self._window(publications)
        with self._cond:
            self._rates.update(rates)
            if self._crashed is not None:
                raise SinkError(f"Redis at {self.url}: the writer stopped ({self._crashed}); verdicts not sent")
            if self._closed:
                raise SinkError(f"Redis at {self.url}: publish() after close()")
            self._queue.extend(publications)
            self._trim()
            self._cond.notify()

    def forget_stream(self, stream_id: str) -> None:
        """A removed stream: after its buffered records, take it out of the set of streams (its keys expire)."""
        with self._cond:
            self._recent.pop(stream_id, None)
            self._rates.pop(stream_id, None)
            if not self._closed:
                self._queue.append(StreamRemoved(stream_id))
                self._cond.notify()

    def close(self, timeout: float = 5.0) -> None:
        """Flush what is buffered for up to ``timeout`` seconds (half a second more at worst), then stop the writer.

        What could not be written is logged as an error and left in ``unflushed``.
        """
        with self._cond:
            if self._closed:
                return
            self._closed = True
            self._deadline = time.monotonic() + timeout
            self._cond.notify()
        self._closing.set()
        self._thread.join(timeout)
        if self._thread.is_alive():  # stuck in a socket call to a silent host: break the connection
            self.client.connection_pool.disconnect()
            self._thread.join(0.5)
        with self._cond:
            self.unflushed = _verdicts(self._queue) + self._inflight
        self._log_drops("before close")
        if self.unflushed:
            logger.error(
                "Redis at %s: %d verdicts still buffered after %.1f s are lost (%d sent, %d dropped)",
                self.url,
                self.unflushed,
                timeout,
                self.sent,
                self.dropped,
            )
        if self._thread.is_alive():
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

    # The writer thread.

    def _run(self) -> None:
        try:
            self._drain()
        except Exception as exc:  # a bug, not Redis: say so, and make publish() raise from now on
            logger.exception("Redis at %s: the writer crashed", self.url)
            with self._cond:
                self._crashed = exc

    def _drain(self) -> None:
        backoff = Backoff(*self.backoff)
        while True:
            with self._cond:
                while not self._queue and not self._closed:
                    self._cond.wait()
                if not self._queue or time.monotonic() >= self._deadline:
                    return
                batch = [self._queue.popleft() for _ in range(min(self.batch_size, len(self._queue)))]
                self._inflight = _verdicts(batch)
            try:
                self._write(batch)
            except (redis.ConnectionError, redis.TimeoutError, OSError, *_TRANSIENT) as exc:
                # The next attempt connects afresh (DNS, failover); idle connections only, as others may share
                # this client (the CLI's control loop does).
                self.client.connection_pool.disconnect(inuse_connections=False)
                with self._cond:
                    self._queue.extendleft(reversed(batch))  # back at the head, order kept
                    self._inflight = 0
                    self._trim()
                self._lost(exc)
                # Jittered exponential backoff; once closing, retry at the shortest interval until the deadline.
                wait = backoff.next_delay() if not self._closing.is_set() else backoff.initial
                self._closing.wait(min(wait, max(0.0, self._deadline - time.monotonic())))
                continue
            with self._cond:
                self._inflight = 0
                self.sent += _verdicts(batch)
            backoff.reset()
            if self._down_since is not None:
                self._back(_verdicts(batch))
            elif self.dropped > self._dropped_logged and self._due("drops"):
                self._log_drops("because Redis is slower than the pipeline")

    def _write(self, batch: list[Publication | StreamRemoved]) -> None:
        pipe = self.client.pipeline(transaction=False)
        latest: dict[str, Publication] = {}
        alerts = []
        last_alert: dict[str, dict[str, str | int]] = {}
        members, forgotten = set(), set()  # streams of this batch, and streams removed after their last record
        for p in batch:
            if isinstance(p, StreamRemoved):
                forgotten.add(p.stream_id)
                members.discard(p.stream_id)
                continue
            verdict = p.verdict
            members.add(verdict.stream_id)
            forgotten.discard(verdict.stream_id)
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
        with self._cond:
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
        if members:
            pipe.sadd(STREAMS_KEY, *members)
        if forgotten:
            pipe.srem(STREAMS_KEY, *forgotten)
        if self.ttl and (members or forgotten):
            pipe.expire(STREAMS_KEY, self.ttl)
        for alert in alerts:
            pipe.publish(ALERT_CHANNEL, alert)
        results = pipe.execute(raise_on_error=False)
        errors = [r for r in results if isinstance(r, Exception)]
        transient = [e for e in errors if isinstance(e, _TRANSIENT)]
        if transient:
            raise transient[0]  # retried whole: the commands that did succeed will be repeated
        if errors:
            with self._cond:
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

    def _trim(self) -> None:
        """Drop the oldest queued verdicts beyond buffer_size (the caller holds the lock). A removed stream's
        marker is no verdict: it is never dropped (its stream would stay in the set) and never counted."""
        if len(self._queue) <= self.buffer_size:
            return
        excess = _verdicts(self._queue) - self.buffer_size
        markers: list[StreamRemoved] = []
        while excess > 0:
            item = self._queue.popleft()
            if isinstance(item, StreamRemoved):
                markers.append(item)
            else:
                excess -= 1
                self.dropped += 1
        self._queue.extendleft(reversed(markers))  # ahead of everything left, as they were

    def _lost(self, exc: BaseException) -> None:
        self.failures += 1
        self._hook("connection")
        if self._down_since is None:
            self._down_since = time.monotonic()
            logger.warning(
                "Redis at %s: connection lost (%s); buffering up to %d verdicts and reconnecting",
                self.url,
                self._scrub(exc),
                self.buffer_size,
            )

    def _back(self, just_sent: int) -> None:
        assert self._down_since is not None
        outage, self._down_since = time.monotonic() - self._down_since, None
        logger.info(
            "Redis at %s: connection back after %.1f s; flushing %d buffered verdicts",
            self.url,
            outage,
            just_sent + self.buffered,
        )
        self._log_drops("during the outage")

    def _log_drops(self, when: str) -> None:
        dropped = self.dropped
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


def _verdicts(items: Iterable[Publication | StreamRemoved]) -> int:
    """How many of ``items`` are verdicts (not markers of removed streams)."""
    return sum(not isinstance(item, StreamRemoved) for item in items)


def _num(value: float | None, digits: int) -> str:
    return "" if value is None else f"{value:.{digits}f}"
