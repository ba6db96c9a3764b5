"""Add and remove streams at run time through a Redis hash, without a restart.

The hash ``dfwatch:control:streams`` maps a stream id to its URL, or to a JSON object of
SourceSpec fields (``{"url": "rtsp://...", "read_timeout": 5}``). dfwatch polls it: a new
field starts a stream, a deleted field stops it, a changed value restarts it. Streams given on
the command line or in the config file are never touched by the control hash.

    redis-cli HSET dfwatch:control:streams lobby rtsp://192.0.2.7/live
    redis-cli HDEL dfwatch:control:streams lobby
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable
from typing import Any

import redis

from pipeline.config import build
from pipeline.errors import ConfigError
from pipeline.runner import Runner
from pipeline.sources import SourceSpec

logger = logging.getLogger(__name__)

CONTROL_KEY = "dfwatch:control:streams"


def parse_control_entry(stream_id: str, value: str) -> SourceSpec:
    """A control hash field into a SourceSpec; raises ConfigError naming the stream."""
    value = value.strip()
    table: dict[str, Any]
    if value.startswith("{"):
        try:
            table = json.loads(value)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"{CONTROL_KEY} {stream_id}: invalid JSON ({exc})") from exc
        if not isinstance(table, dict):
            raise ConfigError(f"{CONTROL_KEY} {stream_id}: expected a JSON object or a URL")
    else:
        table = {"url": value}
    table.pop("id", None)
    table.pop("stream_id", None)
    return build(SourceSpec, {"stream_id": stream_id, **table}, f"{CONTROL_KEY} {stream_id}")


class RedisControl:
    """Polls the control hash every ``interval`` seconds and applies the difference to ``runner``."""

    def __init__(
        self,
        client: redis.Redis,
        runner: Runner,
        *,
        interval: float = 2.0,
        key: str = CONTROL_KEY,
        owns: Callable[[str], bool] | None = None,
    ) -> None:
        """``owns(stream_id)``: whether this worker takes a stream (``Shard.owns``); None takes every one."""
        self.client, self.runner, self.interval, self.key, self.owns = client, runner, interval, key, owns
        self._owned_counts: tuple[int, int] | None = None  # (owned, in the hash), logged when it changes
        self.managed: dict[str, SourceSpec] = {}  # streams this control hash started
        self._draining: set[str] = set()  # ids this control stopped whose old instance may still be draining
        self._bad: dict[str, str] = {}  # id -> value already reported as invalid
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="redis-control", daemon=True)
        self._failing = False

    def start(self) -> None:
        self._thread.start()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=self.interval + 5)

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.poll_once()
                if self._failing:
                    logger.info("control hash %s readable again", self.key)
                self._failing = False
            except redis.RedisError as exc:
                if not self._failing:
                    logger.warning("control hash %s unreadable (%s); streams stay as they are, retrying", self.key, exc)
                self._failing = True
            self._stop.wait(self.interval)

    def poll_once(self) -> None:
        raw = self.client.hgetall(self.key)
        values = {_text(k): _text(v) for k, v in raw.items()}  # stream id -> URL or JSON
        if self.owns is not None:  # sharded: the other workers take the rest
            every = len(values)
            values = {sid: v for sid, v in values.items() if self.owns(sid)}
            if (len(values), every) != self._owned_counts:
                self._owned_counts = (len(values), every)
                logger.info("control hash %s: this worker owns %d of its %d streams", self.key, len(values), every)
        desired: dict[str, SourceSpec] = {}
        for sid, value in values.items():
            try:
                desired[sid] = parse_control_entry(sid, value)
            except ConfigError as exc:
                if self._bad.get(sid) != value:
                    logger.error("%s; ignoring it", exc)
                    self._bad[sid] = value
        for sid, spec in list(self.managed.items()):
            if desired.get(sid) != spec:  # deleted or changed: stop it (a changed one restarts below)
                self.runner.remove_stream(sid)
                del self.managed[sid]
                self._draining.add(sid)
        watched = set(self.runner.stream_ids)
        for sid, spec in desired.items():
            if sid in self.managed:
                continue
            if sid in watched:
                if sid not in self._draining and self._bad.get(sid) != values[sid]:
                    logger.error("%s %s: stream id %r is already watched (config or command line); ignoring it",
                                 self.key, sid, sid)  # fmt: skip
                    self._bad[sid] = values[sid]
                continue  # a restarted stream's old instance is still draining: start it on a later poll
            self._draining.discard(sid)
            self.runner.add_stream(spec)
            self.managed[sid] = spec


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
