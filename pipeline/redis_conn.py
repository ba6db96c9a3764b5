"""The Redis connection: one definition for the sink, the control hash and `dfwatch status`.

Every client has socket timeouts (a silent or half-open server never holds a thread for ever) and
TCP keepalive; errors name the URL redacted and never the password.
"""

from __future__ import annotations

import redis
from redis.backoff import NoBackoff
from redis.connection import parse_url
from redis.retry import Retry

from engines.urls import redact
from pipeline.errors import SinkError

SOCKET_TIMEOUT = 5.0  # seconds for connecting and for each reply


class RedisTarget:
    """A Redis URL and its password, as one thing that connects and that masks the password in messages."""

    def __init__(self, url: str, *, password: str | None = None) -> None:
        """``password`` is used only when the URL carries none (the CLI passes $DFWATCH_REDIS_PASSWORD)."""
        self.url = redact(url)  # the only form of the URL this object shows
        self._raw = url
        try:
            url_password = parse_url(url).get("password")
        except ValueError as exc:
            raise SinkError(f"Redis URL {self.url} is not valid ({exc}); use redis://, rediss:// or unix://") from exc
        self._password = None if url_password else password
        self._secret = url_password or password

    def connect(self, *, timeout: float = SOCKET_TIMEOUT, decode: bool = False, retry: bool = True) -> redis.Redis:
        """A client that answered a PING; SinkError naming the redacted URL when it does not.

        ``retry=False``: no command is retried inside redis-py (the caller retries with its own backoff).
        """
        try:
            client = redis.Redis.from_url(
                self._raw,
                password=self._password,
                decode_responses=decode,
                socket_timeout=timeout,
                socket_connect_timeout=timeout,
                health_check_interval=30,
                **({} if self._raw.startswith("unix:") else {"socket_keepalive": True}),
                **({} if retry else {"retry": Retry(NoBackoff(), 0)}),
            )
            client.ping()
        except (redis.RedisError, ValueError, OSError) as exc:
            raise SinkError(f"Redis at {self.url} is unreachable: {self.scrub(exc)}") from exc
        return client

    def scrub(self, exc: BaseException | str) -> str:
        """``exc`` as text with the password masked."""
        text = str(exc)
        return text.replace(self._secret, "***") if self._secret else text
