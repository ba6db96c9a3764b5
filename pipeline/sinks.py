"""Where verdicts go: JSON lines on stdout (the embedded default) and Redis Streams."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Sequence
from typing import Protocol, TextIO

import redis

from pipeline.errors import SinkError
from pipeline.messages import Verdict

logger = logging.getLogger(__name__)

STREAM_KEY = "dfwatch:verdicts:{stream}"  # one Redis Stream per video stream
STREAM_MAXLEN = 10_000  # approximate cap per Redis Stream (XADD MAXLEN ~)


class Sink(Protocol):
    name: str

    def publish(self, records: Sequence[tuple[Verdict, dict]]) -> None: ...

    def close(self) -> None: ...


def encode(verdicts: Sequence[Verdict]) -> list[tuple[Verdict, dict]]:
    """Stamp each verdict with the publish time and turn it into the JSON-ready record all sinks share."""
    now = time.time()
    return [(v, v.to_dict(publish_time=now)) for v in verdicts]


class JsonLinesSink:
    name = "jsonl"

    def __init__(self, out: TextIO) -> None:
        self.out = out

    def publish(self, records: Sequence[tuple[Verdict, dict]]) -> None:
        for _, record in records:
            self.out.write(json.dumps(record, separators=(",", ":")) + "\n")
        self.out.flush()

    def close(self) -> None:
        self.out.flush()


class RedisSink:
    """XADD one entry per verdict to ``dfwatch:verdicts:<stream>`` (fields: verdict, score, frame, json)."""

    name = "redis"

    def __init__(self, url: str, *, maxlen: int = STREAM_MAXLEN) -> None:
        self.url = url
        self.maxlen = maxlen
        try:
            self.client = redis.Redis.from_url(url, socket_timeout=5, socket_connect_timeout=5)
            self.client.ping()
        except (redis.RedisError, ValueError) as exc:
            raise SinkError(f"Redis at {url} is unreachable: {exc}") from exc
        self.failed = 0

    def publish(self, records: Sequence[tuple[Verdict, dict]]) -> None:
        pipe = self.client.pipeline(transaction=False)
        for verdict, record in records:
            fields = {
                "verdict": verdict.state.value,
                "score": "" if verdict.score is None else f"{verdict.score:.4f}",
                "frame": verdict.frame_index,
                "json": json.dumps(record, separators=(",", ":")),
            }
            pipe.xadd(STREAM_KEY.format(stream=verdict.stream_id), fields, maxlen=self.maxlen, approximate=True)
        try:
            pipe.execute()
        except redis.RedisError as exc:
            self.failed += len(records)
            raise SinkError(f"Redis at {self.url}: {len(records)} verdicts not written: {exc}") from exc

    def close(self) -> None:
        self.client.close()
