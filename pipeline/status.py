"""`dfwatch status`: a terminal table of every stream in Redis, from the latest-state hashes the sinks write.

One row per stream id in the set ``dfwatch:streams``, whichever worker publishes it: verdict, fake
score, faces, verdicts per second, capture-to-publish p95, up or down, last alert, worker. A stream
is *down* when its latest verdict is older than ``stale`` seconds: that covers a feed that stopped
delivering, a file that ended and a worker that died, which no flag written by the worker could.
FAKE streams come first, then down ones, then the rest, each by name. Refreshed in place with ANSI
escapes on a terminal; a plain sequence of tables otherwise. A key of the wrong type (another writer's
``SET dfwatch:state:x``) is skipped and counted under the table; the other streams are still shown.
"""

from __future__ import annotations

import fnmatch
import logging
import math
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TextIO

import redis

from engines.urls import printable, redact
from pipeline.errors import SinkError
from pipeline.ranges import ranged
from pipeline.redis_conn import RedisTarget
from pipeline.sinks import STATE_KEY, STREAMS_KEY

logger = logging.getLogger(__name__)

COLUMNS = ("STREAM", "VERDICT", "SCORE", "FACES", "FPS", "P95 MS", "STATE", "LAST ALERT", "WORKER")
_RED, _YELLOW, _BOLD, _RESET = "\x1b[31m", "\x1b[33m", "\x1b[1m", "\x1b[0m"
_HOME, _CLEAR_LINE, _CLEAR_DOWN, _CLEAR = "\x1b[H", "\x1b[K", "\x1b[J", "\x1b[2J"
_HIDE_CURSOR, _SHOW_CURSOR = "\x1b[?25l", "\x1b[?25h"


@dataclass(frozen=True)
class StreamRow:
    """One stream's latest state, as the Redis sink left it (None where the hash has no value)."""

    stream: str
    verdict: str
    score: float | None
    faces: int | None
    fps: float | None
    p95_ms: float | None
    updated: float | None  # publish time (time.time()) of the latest verdict
    last_alert: float | None  # publish time of the latest turn to FAKE
    worker: str

    @classmethod
    def from_hash(cls, stream: str, fields: dict[str, str]) -> StreamRow:
        num = _number(fields)
        faces = num("faces")  # finite, or None: int(inf) would raise
        return cls(
            stream=stream,
            verdict=fields.get("verdict") or "?",
            score=num("score"),
            faces=None if faces is None else int(faces),
            fps=num("fps"),
            p95_ms=num("p95_ms"),
            updated=num("updated"),
            last_alert=num("last_alert"),
            worker=fields.get("worker") or "-",
        )

    def is_up(self, *, now: float, stale: float) -> bool:
        return self.updated is not None and now - self.updated <= stale


def _number(fields: dict[str, str]):
    """A reader of finite numbers: a missing field, text, ``inf`` or ``nan`` (another writer's Redis) read as None."""

    def get(name: str) -> float | None:
        try:
            value = float(fields[name])
        except (KeyError, ValueError):
            return None
        return value if math.isfinite(value) else None

    return get


def read_rows(client: redis.Redis, *, match: str | None = None) -> tuple[list[StreamRow], int, list[str]]:
    """Every published stream (matching the shell pattern ``match``) with a state hash, how many had none, and
    the keys skipped for being of the wrong type (``dfwatch:streams`` not a set, a state key not a hash)."""
    try:
        members = client.smembers(STREAMS_KEY)
    except redis.ResponseError as exc:
        if not _wrong_type(exc):
            raise
        return [], 0, [STREAMS_KEY]  # no index of streams: nothing else can be listed
    raw = {_text(s): s if isinstance(s, bytes) else s.encode() for s in members}
    ids = sorted(s for s in raw if not match or fnmatch.fnmatchcase(s, match))
    pipe = client.pipeline(transaction=False)
    for stream in ids:  # by the id's own bytes: one that is not UTF-8 still finds its hash
        pipe.hgetall(STATE_KEY.encode().replace(b"{stream}", raw[stream]))
    rows, missing, bad = [], 0, []
    for stream, fields in zip(ids, pipe.execute(raise_on_error=False) if ids else []):
        if isinstance(fields, redis.ResponseError) and _wrong_type(fields):
            bad.append(STATE_KEY.format(stream=stream))  # another writer's key: skip it, show the rest
            continue
        if isinstance(fields, Exception):
            raise fields
        if not fields:
            missing += 1  # in the set, but its state hash expired or was deleted
            continue
        rows.append(StreamRow.from_hash(stream, {_text(k): _text(v) for k, v in fields.items()}))
    return rows, missing, bad


def _wrong_type(exc: redis.ResponseError) -> bool:
    return str(exc).startswith("WRONGTYPE")


def sort_rows(rows: Sequence[StreamRow], *, now: float, stale: float) -> list[StreamRow]:
    """FAKE streams first, then down ones, then the rest; by name within each group."""

    def rank(row: StreamRow) -> tuple[int, str]:
        if row.verdict == "FAKE":
            return 0, row.stream
        return (1 if not row.is_up(now=now, stale=stale) else 2), row.stream

    return sorted(rows, key=rank)


def format_table(
    rows: Sequence[StreamRow],
    *,
    now: float,
    stale: float,
    title: str,
    missing: int = 0,
    skipped: Sequence[str] = (),
    colour: bool = False,
) -> list[str]:
    """The table as lines (header, column names, one line per stream worst first, footnotes).

    ``skipped``: keys of the wrong type that ``read_rows`` left out, named (escaped) in a footnote.
    """
    rows = sort_rows(rows, now=now, stale=stale)
    fake = sum(r.verdict == "FAKE" for r in rows)
    down = sum(not r.is_up(now=now, stale=stale) for r in rows)
    clock = time.strftime("%H:%M:%S", time.localtime(now))
    lines = [f"{title}  {len(rows)} streams: {fake} FAKE, {down} down  {clock}"]
    cells = [COLUMNS]
    for r in rows:
        state = "up" if r.is_up(now=now, stale=stale) else "down" + (f" {_age(now - r.updated)}" if r.updated else "")
        cells.append(
            tuple(
                printable(c)
                for c in (  # a stream name cannot drive the terminal
                    r.stream,
                    r.verdict,
                    _fmt(r.score, "{:.2f}"),
                    _fmt(r.faces, "{}"),
                    _fmt(r.fps, "{:.1f}"),
                    _fmt(r.p95_ms, "{:.0f}"),
                    state,
                    f"{_age(now - r.last_alert)} ago" if r.last_alert else "-",
                    r.worker,
                )
            )
        )
    widths = [max(len(row[i]) for row in cells) for i in range(len(COLUMNS))]
    right = {2, 3, 4, 5}  # numbers
    for i, row in enumerate(cells):
        text = "  ".join(c.rjust(w) if j in right else c.ljust(w) for j, (c, w) in enumerate(zip(row, widths)))
        text = text.rstrip()
        if colour and i > 0:
            r = rows[i - 1]
            if r.verdict == "FAKE":
                text = f"{_RED}{_BOLD}{text}{_RESET}"
            elif not r.is_up(now=now, stale=stale):
                text = f"{_YELLOW}{text}{_RESET}"
        lines.append(text)
    if not rows:
        lines.append("(no stream has published a verdict to this Redis yet)")
    if missing:
        lines.append(f"({missing} stream ids in {STREAMS_KEY} have no state hash: expired or deleted)")
    if skipped:
        names = ", ".join(printable(k) for k in skipped[:3]) + (", ..." if len(skipped) > 3 else "")
        lines.append(
            f"({len(skipped)} keys skipped: not of the type dfwatch writes (a set of ids, a hash per stream): {names})"
        )
    return lines


def connect(url: str, *, password: str | None = None, timeout: float = 5.0) -> redis.Redis:
    """A client of ``url`` that answered a PING; SinkError naming the (redacted) URL when it does not.

    Replies are bytes: ids and fields that are not UTF-8 are decoded by ``_text`` and shown escaped.
    """
    return RedisTarget(url, password=password).connect(timeout=timeout)


@dataclass(frozen=True)
class StatusOptions:
    """What `dfwatch status` shows (its flags are made from these fields)."""

    redis: str  # Redis URL, e.g. redis://127.0.0.1:6379/0 (password: DFWATCH_REDIS_PASSWORD)
    once: bool = False  # print the table once and exit (for scripts)
    interval: float = ranged(1.0, 0.05, 3600, unit="seconds")  # seconds between refreshes
    # a stream with no verdict for this many seconds shows as down (the read timeout)
    stale: float = ranged(10.0, 0, 86400, open_lo=True, unit="seconds")
    match: str | None = None  # only stream ids matching this shell pattern, e.g. 'lobby-*'


def watch_status(
    url: str,
    *,
    once: bool = False,
    interval: float = 1.0,
    stale: float = 10.0,
    match: str | None = None,
    password: str | None = None,
    out: TextIO | None = None,
) -> int:
    """Print the table once (``once``) or refresh it every ``interval`` s until Ctrl-C; returns the exit code.

    Raises SinkError when Redis does not answer at start; later outages show in the table's place and the
    refresh goes on.
    """
    out = out or sys.stdout
    client = connect(url, password=password)
    title = f"dfwatch status  {redact(url)}" + (f"  streams {printable(match)!r}" if match else "")
    tty = out.isatty() and not once
    if tty:
        out.write(_HIDE_CURSOR + _CLEAR)
    try:
        while True:
            now = time.time()
            try:
                rows, missing, skipped = read_rows(client, match=match)
                lines = format_table(
                    rows, now=now, stale=stale, title=title, missing=missing, skipped=skipped, colour=tty
                )
            except redis.RedisError as exc:
                if once:
                    raise SinkError(f"Redis at {redact(url)}: {exc}") from exc
                lines = [title, f"Redis does not answer ({exc}); trying again every {interval:g} s"]
            if tty:
                out.write(_HOME + "".join(f"{line}{_CLEAR_LINE}\n" for line in lines) + _CLEAR_DOWN)
            else:
                out.write("\n".join(lines) + "\n" + ("" if once else "\n"))
            out.flush()
            if once:
                return 0
            time.sleep(interval)
    except KeyboardInterrupt:
        return 0
    finally:
        if tty:
            out.write(_SHOW_CURSOR)
            out.flush()
        client.close()


def _text(value: str | bytes) -> str:
    """Redis bytes as text; bytes that are not UTF-8 stay visible as escapes (\\xff) instead of failing."""
    return value.decode(errors="backslashreplace") if isinstance(value, bytes) else value


def _fmt(value: float | int | None, spec: str) -> str:
    return "-" if value is None else spec.format(value)


def _age(seconds: float) -> str:
    """A short age: 12s, 4m, 3h, 2d."""
    seconds = max(0.0, seconds)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size:.0f}{unit}"
    return f"{seconds:.0f}s"
