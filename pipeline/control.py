"""Add and remove streams at run time through a Redis hash, without a restart.

The hash ``dfwatch:control:streams`` maps a stream id to its URL, or to a JSON object of
SourceSpec fields (``{"url": "rtsp://...", "read_timeout": 5}``). dfwatch polls it: a new
field starts a stream, a deleted field stops it, a changed value restarts it. Streams given on
the command line or in the config file are never touched by the control hash.

    redis-cli HSET dfwatch:control:streams lobby rtsp://192.0.2.7/live
    redis-cli HDEL dfwatch:control:streams lobby

Whoever can write this hash chooses what the workers open, so every entry passes the source
policy as ``Origin.CONTROL`` (pipeline.policy: allowed schemes only, local files only from
``[sources] allow_dirs``); an entry that fails it, or that is not UTF-8 or valid JSON, is logged
once and ignored, and the others go on.

A Redis that loses its data (restarted without persistence, flushed) must not stop every stream:
the workers keep a marker key, ``dfwatch:control:epoch``, beside the hash. When the marker is gone
or holds another value than this worker last saw, the hash's contents were lost rather than
deleted: the worker keeps its streams, writes their entries back (HSETNX: never over a value set
meanwhile) and logs a warning. To stop streams, delete their fields (or the whole hash) instead.

RedisControl starts no thread: ``run(stop)`` is its polling loop, which the runner runs beside the stages
(``Runner.beside``) and stops when the run ends.
"""

from __future__ import annotations

import json
import logging
import threading
import uuid
from collections.abc import Callable
from typing import Any

import redis

from pipeline.config import build
from pipeline.errors import ConfigError, StreamLimitError
from pipeline.policy import Origin, SourcePolicy
from pipeline.runner import Runner
from pipeline.sources import SourceSpec

logger = logging.getLogger(__name__)

CONTROL_KEY = "dfwatch:control:streams"
EPOCH_KEY = "dfwatch:control:epoch"  # marker: missing or changed means Redis lost the control hash
MAX_ENTRY = 16_384  # characters of one hash value (a URL or a JSON object); longer ones are refused unread


def parse_control_entry(stream_id: str, value: str, *, policy: SourcePolicy | None = None) -> SourceSpec:
    """A control hash field into a SourceSpec the policy admits; raises ConfigError naming the stream."""
    if len(value) > MAX_ENTRY:
        raise ConfigError(f"{CONTROL_KEY} {stream_id!r}: a value of {len(value)} characters is over {MAX_ENTRY}")
    value = value.strip()
    table: dict[str, Any]
    if value.startswith("{"):
        try:
            table = json.loads(value)
        except (json.JSONDecodeError, RecursionError) as exc:
            raise ConfigError(f"{CONTROL_KEY} {stream_id!r}: invalid JSON ({exc})") from exc
        if not isinstance(table, dict):
            raise ConfigError(f"{CONTROL_KEY} {stream_id!r}: expected a JSON object or a URL")
    else:
        table = {"url": value}
    table.pop("id", None)
    table.pop("stream_id", None)
    spec = build(SourceSpec, {"stream_id": stream_id, **table}, f"{CONTROL_KEY} {stream_id!r}")
    return (policy or SourcePolicy()).admit(spec, origin=Origin.CONTROL)


class RedisControl:
    """Polls the control hash every ``interval`` seconds and applies the difference to ``runner``."""

    def __init__(
        self,
        client: redis.Redis,
        runner: Runner,
        *,
        interval: float = 2.0,
        key: str = CONTROL_KEY,
        epoch_key: str = EPOCH_KEY,
        owns: Callable[[str], bool] | None = None,
        policy: SourcePolicy | None = None,
    ) -> None:
        """``client``: from pipeline.redis_conn (socket timeouts). ``owns(stream_id)``: whether this worker takes
        a stream (``Shard.owns``); None takes every one. ``policy``: what entries may point at (default: defaults)."""
        self.client, self.runner, self.interval, self.key, self.owns = client, runner, interval, key, owns
        self.epoch_key, self.policy = epoch_key, policy or SourcePolicy()
        self._owned_counts: tuple[int, int] | None = None  # (owned, in the hash), logged when it changes
        self.managed: dict[str, SourceSpec] = {}  # streams this control hash started
        self._values: dict[str, bytes] = {}  # their hash values as read, to write back after a data loss
        self._epoch: bytes | None = None  # the marker value this worker saw last
        self._draining: set[str] = set()  # ids this control stopped whose old instance may still be draining
        self._bad: dict[str, bytes] = {}  # id -> value already reported as invalid
        self._over: set[str] = set()  # ids refused for [sources] max_streams at the last poll
        self._failing: str | None = None  # why the last poll failed, logged once

    def run(self, stop: threading.Event) -> None:
        """Poll every ``interval`` seconds until ``stop`` is set; a failed poll is logged once and retried."""
        while not stop.is_set():
            try:
                self.poll_once()
                if self._failing:
                    logger.info("control hash %s readable again", self.key)
                self._failing = None
            except redis.RedisError as exc:
                if not self._failing:
                    logger.warning("control hash %s unreadable (%s); streams stay as they are, retrying", self.key, exc)
                self._failing = "redis"
            except Exception:  # a bug or a surprise must not end the control plane for good: log once, go on
                if self._failing != "crash":
                    logger.exception("control hash %s: polling failed; streams stay as they are, retrying", self.key)
                self._failing = "crash"
            stop.wait(self.interval)

    def poll_once(self) -> None:
        pipe = self.client.pipeline(transaction=False)
        pipe.hgetall(self.key)
        pipe.get(self.epoch_key)
        raw, epoch = pipe.execute()
        if self._lost(epoch):
            return
        values: dict[str, bytes] = {}  # stream id -> URL or JSON, as bytes
        for k, v in raw.items():
            sid = _text(k)
            if sid is None:
                if self._bad.get(repr(k)) != v:
                    logger.error("%s: a stream id that is not UTF-8 (%r); ignoring it", self.key, k)
                    self._bad[repr(k)] = v
                continue
            values[sid] = _bytes(v)
        if self.owns is not None:  # sharded: the other workers take the rest
            every = len(values)
            values = {sid: v for sid, v in values.items() if self.owns(sid)}
            if (len(values), every) != self._owned_counts:
                self._owned_counts = (len(values), every)
                logger.info("control hash %s: this worker owns %d of its %d streams", self.key, len(values), every)
        desired: dict[str, SourceSpec] = {}
        for sid, value in values.items():
            try:
                text = _text(value)
                if text is None:
                    raise ConfigError(f"{self.key} {sid!r}: the value is not UTF-8 text")
                desired[sid] = parse_control_entry(sid, text, policy=self.policy)
            except ConfigError as exc:
                if self._bad.get(sid) != value:
                    logger.error("%s; ignoring it", exc)
                    self._bad[sid] = value
                    self.runner.observer.streams_refused("invalid", 1)
        for sid, spec in list(self.managed.items()):
            if desired.get(sid) != spec:  # deleted or changed: stop it (a changed one restarts below)
                self.runner.remove_stream(sid)
                del self.managed[sid]
                self._values.pop(sid, None)
                self._draining.add(sid)
        watched = set(self.runner.stream_ids)
        over: list[str] = []  # entries past [sources] max_streams, retried on every poll
        for sid, spec in sorted(desired.items()):  # by id: which entries get in does not depend on hash order
            if sid in self.managed:
                continue
            if sid in watched:
                if sid not in self._draining and self._bad.get(sid) != values[sid]:
                    logger.error(
                        "%s %s: stream id %r is already watched (config or command line); ignoring it",
                        self.key,
                        sid,
                        sid,
                    )
                    self._bad[sid] = values[sid]
                continue  # a restarted stream's old instance is still draining: start it on a later poll
            self._draining.discard(sid)
            try:
                self.runner.add_stream(spec)
            except StreamLimitError:
                over.append(sid)
                continue
            self.managed[sid] = spec
            self._values[sid] = values[sid]
        self._report_over(over)

    def _report_over(self, over: list[str]) -> None:
        """One line when the set of entries refused for [sources] max_streams changes; each counted once."""
        new = set(over) - self._over
        if new:
            self.runner.observer.streams_refused("max_streams", len(new))
        if set(over) == self._over:
            return
        if over:
            names = ", ".join(over[:5]) + (", ..." if len(over) > 5 else "")
            logger.warning(
                "control hash %s: %d entries refused (%s): this worker watches %d streams, its "
                "[sources] max_streams; they start when streams leave",
                self.key,
                len(over),
                names,
                self.runner.max_streams,
            )
        else:
            logger.info("control hash %s: every entry is watched again (within [sources] max_streams)", self.key)
        self._over = set(over)

    def _lost(self, epoch: bytes | None) -> bool:
        """True when Redis lost the control hash since the last poll: the entries of this worker go back in."""
        if epoch is not None and epoch == self._epoch:
            return False
        if self._epoch is None or not self.managed:  # first poll of this worker, or nothing of ours to lose
            if epoch is None:  # the first worker ever on this Redis (or a lost marker): set one
                self.client.set(self.epoch_key, uuid.uuid4().hex, nx=True)
                epoch = self.client.get(self.epoch_key)
            self._epoch = epoch
            return False
        logger.warning(
            "control hash %s: its marker %s is %s: Redis lost its data (restarted without persistence, "
            "or flushed)? Keeping this worker's %d streams and writing their entries back",
            self.key,
            self.epoch_key,
            "gone" if epoch is None else "another",
            len(self.managed),
        )
        pipe = self.client.pipeline(transaction=False)
        for sid, value in self._values.items():
            pipe.hsetnx(self.key, sid, value)
        pipe.set(self.epoch_key, uuid.uuid4().hex, nx=True)
        pipe.get(self.epoch_key)
        self._epoch = pipe.execute()[-1]
        return True


def _text(value: bytes | str) -> str | None:
    if isinstance(value, str):
        return value
    try:
        return value.decode()
    except UnicodeDecodeError:
        return None


def _bytes(value: bytes | str) -> bytes:
    return value if isinstance(value, bytes) else value.encode()
