"""`dfwatch status` against the real Redis, fed by real `dfwatch watch` workers; the table's rules alone."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from pipeline.messages import Publication, Verdict, VerdictState
from pipeline.sinks import STATE_KEY, STREAM_KEY, STREAMS_KEY, RedisSink
from pipeline.status import COLUMNS, StreamRow, format_table, read_rows, watch_status
from tests._rtsp import free_port
from tests.conftest import REDIS_URL
from tests.pipeline._faces import faces

pytestmark = [pytest.mark.timeout(180)]


def verdict(stream: str, frame: int, state: VerdictState = VerdictState.REAL, *, changed: bool = False) -> Verdict:
    face = faces((1, (10.0, 20.0, 110.0, 140.0), 0.9, 0.7, 0.7))
    return Verdict(stream, frame, frame / 25, time.time(), face, 0.7, state, changed, True, {}, False)


def encode(verdicts: list[Verdict], published: float | None = None) -> list[Publication]:
    return Publication.of(verdicts, published=time.time() if published is None else published)


def _status(*args: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "pipeline.cli", "status", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=60)


def _rows(stdout: str) -> dict[str, list[list[str]]]:
    """Table lines by stream id (the first column), every occurrence kept."""
    lines = stdout.splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("STREAM"))
    rows: dict[str, list[list[str]]] = {}
    for line in lines[header + 1 :]:
        if line.startswith("("):
            continue
        cells = line.split()
        rows.setdefault(cells[0], []).append(cells)
    return rows


def _forget(client, *streams: str) -> None:
    for s in streams:
        client.delete(STATE_KEY.format(stream=s), STREAM_KEY.format(stream=s))
        client.srem(STREAMS_KEY, s)


def test_two_workers_each_stream_listed_once_with_its_worker(fast_models: Path, demo_clip, redis_client, tmp_path):
    prefix = f"t{uuid.uuid4().hex[:8]}"
    streams = {f"{prefix}-lobby": None, f"{prefix}-gate": None, f"{prefix}-dock": None}
    names = list(streams)
    workers = []
    try:
        # worker 1 publishes two streams, worker 2 one; both keep going (looped, paced files)
        for group in (names[:2], names[2:]):
            cmd = [
                sys.executable,
                "-m",
                "pipeline.cli",
                "watch",
                *(f"{s}={demo_clip.path}" for s in group),
                "--loop",
                "--pace",
                "--redis",
                REDIS_URL,
                "--models",
                str(fast_models),
                "--metrics-port",
                "0",
                "--det-conf",
                "0.001",
                "--max-faces",
                "1",
                "--detect-every",
                "4",
            ]
            log = (tmp_path / f"worker{len(workers)}.log").open("w")
            workers.append(subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=log))
            for s in group:
                streams[s] = workers[-1].pid
        deadline = time.monotonic() + 120
        while not all(redis_client.hget(STATE_KEY.format(stream=s), "fps") for s in names):
            assert all(w.poll() is None for w in workers), "a worker exited early"
            assert time.monotonic() < deadline, "the workers did not publish in time"
            time.sleep(0.2)
        run = _status("--redis", REDIS_URL, "--once", "--match", f"{prefix}-*")
        assert run.returncode == 0, run.stderr
        assert "\x1b[" not in run.stdout  # --once is for scripts: no escape codes
        rows = _rows(run.stdout)
        assert sorted(rows) == sorted(names)
        for stream, pid in streams.items():
            (row,) = rows[stream]  # exactly once
            state = redis_client.hgetall(STATE_KEY.format(stream=stream))
            assert row[-1] == f"{state['worker']}" and row[-1].endswith(f":{pid}")  # who publishes it
            assert row[1] in {v.value for v in VerdictState} and row[3] == "1"  # --max-faces 1, a box every frame
            assert float(row[4]) > 0 and float(row[5]) > 0  # fps and p95 ms, from the state hash
            assert row[6] == "up"
        assert f"{len(names)} streams: " in run.stdout.splitlines()[0]
    finally:
        for w in workers:
            w.kill()
            w.wait(10)
        _forget(redis_client, *names)


def test_unreachable_redis_is_one_line_and_exit_1():
    url = f"redis://127.0.0.1:{free_port()}/0"
    run = _status("--redis", url, "--once")
    assert run.returncode == 1 and run.stdout == ""
    (line,) = run.stderr.strip().splitlines()
    assert f"Redis at {url} is unreachable" in line and "Traceback" not in run.stderr


def test_bad_interval_is_refused():
    run = _status("--redis", REDIS_URL, "--interval", "0")
    assert run.returncode == 2 and "argument --interval: must be in [0.05, 3600] seconds, got '0'" in run.stderr


def _row(stream: str, verdict: str, *, age: float | None, **fields) -> StreamRow:
    base = dict(score=0.5, faces=1, fps=25.0, p95_ms=120.0, last_alert=None, worker="w:1")
    return StreamRow(stream, verdict, updated=None if age is None else 1000.0 - age, **(base | fields))


def test_fake_then_down_then_the_rest_each_by_name():
    rows = [
        _row("a-real", "REAL", age=1),
        _row("b-down", "REAL", age=60),
        _row("c-fake", "FAKE", age=2, last_alert=1000.0 - 75),
        _row("d-never", "UNKNOWN", age=None, score=None, faces=None, fps=None, p95_ms=None),
        _row("e-fake-down", "FAKE", age=4000),
    ]
    lines = format_table(rows, now=1000.0, stale=10.0, title="T")
    assert lines[0].startswith("T  5 streams: 2 FAKE, 3 down  ")
    assert lines[1].split() == [c for col in COLUMNS for c in col.split()]
    table = [line.split() for line in lines[2:]]
    assert [r[0] for r in table] == ["c-fake", "e-fake-down", "b-down", "d-never", "a-real"]
    assert table[0][6:9] == ["up", "1m", "ago"]  # last alert 75 s ago
    assert table[1][6:8] == ["down", "1h"] and table[2][6:8] == ["down", "1m"]
    assert table[3][1:8] == ["UNKNOWN", "-", "-", "-", "-", "down", "-"]  # nothing known: dashes, never zeros
    assert "\x1b[" not in "".join(lines)
    coloured = format_table(rows, now=1000.0, stale=10.0, title="T", colour=True)
    assert coloured[2].startswith("\x1b[31m") and coloured[4].startswith("\x1b[33m")  # FAKE red, down yellow


def test_no_stream_says_so():
    assert "no stream has published" in format_table([], now=0.0, stale=10.0, title="T")[-1]


class _Terminal(io.StringIO):
    """A stdout that says it is a terminal; Ctrl-C after ``frames`` refreshes."""

    def __init__(self, frames: int) -> None:
        super().__init__()
        self.frames, self.interrupted = frames, False

    def isatty(self) -> bool:
        return True

    def flush(self) -> None:
        if not self.interrupted and self.getvalue().count("\x1b[J") >= self.frames:
            self.interrupted = True
            raise KeyboardInterrupt


def test_live_table_is_redrawn_in_place_until_ctrl_c(redis_client, stream_id):
    sink = RedisSink(REDIS_URL)
    try:
        sink.publish(encode([verdict(stream_id, 0, VerdictState.FAKE, changed=True)]))
    finally:
        sink.close()
    try:
        out = _Terminal(frames=2)
        assert watch_status(REDIS_URL, interval=0.01, match=stream_id, out=out) == 0
        text = out.getvalue()
        assert text.startswith("\x1b[?25l\x1b[2J") and text.endswith("\x1b[?25h")  # cursor hidden, then restored
        frames = text.split("\x1b[H")[1:]
        assert len(frames) == 2 and all(stream_id in f for f in frames) and frames[0].endswith("\x1b[J")
        assert all(line.endswith("\x1b[K") for line in frames[0].split("\n")[:-1])  # each line clears its old tail
    finally:
        _forget(redis_client, stream_id)


def test_state_hash_carries_rates_worker_and_last_alert(redis_client, stream_id):
    sink = RedisSink(REDIS_URL)
    try:
        sink.publish(encode([verdict(stream_id, 0), verdict(stream_id, 1, VerdictState.FAKE, changed=True)]))
        sink.publish(encode([verdict(stream_id, 2, VerdictState.FAKE)]))  # no alert: last_alert stays
    finally:
        sink.close()
    try:
        state = redis_client.hgetall(STATE_KEY.format(stream=stream_id))
        assert state["last_alert_frame"] == "1" and state["frame"] == "2"
        rows, missing, skipped = read_rows(redis_client, match=stream_id)
        (row,) = rows
        assert missing == 0 and skipped == [] and row.verdict == "FAKE" and row.worker == sink.worker
        assert row.last_alert == pytest.approx(float(state["last_alert"])) and row.last_alert <= row.updated
        assert json.loads(state["json"])["frame"] == 2
    finally:
        _forget(redis_client, stream_id)


def test_rates_are_over_the_recent_window(redis_client, stream_id):
    sink = RedisSink(REDIS_URL)
    try:
        # 11 publish calls of 5 verdicts, 0.2 s apart: after the first, 50 verdicts in 2 s
        for k in range(11):
            rates = sink._window(encode([verdict(stream_id, 5 * k + i) for i in range(5)], 100.0 + 0.2 * k))
        assert rates[stream_id][0] == "25.00"
        # 20 s later the window holds only the newest call: no span, no rate
        assert sink._window(encode([verdict(stream_id, 99)], 122.0))[stream_id][0] == ""
    finally:
        sink.close()


def test_what_another_writer_left_in_redis_is_shown_not_fatal_and_never_drives_the_terminal():
    """A non-UTF-8 stream id or faces="inf" made `dfwatch status` exit 1; escapes in a name cleared the screen."""
    from tests._redis import redis_server

    with redis_server() as server:
        client = server.client(decode_responses=False)
        evil = "evil\x1b[2J\x1b]0;owned\x07"
        hashes = {
            b"cam\xff": {b"verdict": b"REAL", b"score": b"0.2", b"updated": str(time.time()).encode()},
            evil.encode(): {
                b"verdict": b"FAKE\x1b[31m",
                b"faces": b"inf",
                b"fps": b"nan",
                b"updated": b"-inf",
                b"worker": b"host\rX",
            },
            b"plain": {b"verdict": b"REAL", b"faces": b"1e400", b"updated": str(time.time()).encode()},
        }
        for sid, fields in hashes.items():
            client.sadd(STREAMS_KEY.encode(), sid)
            client.hset(STATE_KEY.encode().replace(b"{stream}", sid), mapping=fields)
        proc = _status("--redis", server.url, "--once")
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "\x1b" not in out and "\x07" not in out and "\r" not in out
    assert "cam\\xff" in out and "evil\\x1b[2J\\x1b]0;owned\\x07" in out and "host\\x0dX" in out
    assert "3 streams" in out


def test_a_key_of_the_wrong_type_is_skipped_and_counted_and_the_other_streams_shown():
    """Issue 23 item 7: `SET dfwatch:state:x` + `SADD dfwatch:streams x` gave `--once` rc 1 and no table; the live
    table showed only "Redis does not answer". A throwaway redis-server: the shared one's streams set is left alone."""
    from tests._redis import redis_server

    with redis_server() as server:
        client = server.client()
        sink = RedisSink(server.url)
        try:
            sink.publish(encode([verdict("good-a", 0), verdict("good-b", 0, VerdictState.FAKE, changed=True)]))
        finally:
            sink.close()
        client.set(STATE_KEY.format(stream="x"), "not a hash")
        client.sadd(STREAMS_KEY, "x")
        client.sadd(STREAMS_KEY, "l\x1b[2J")
        client.rpush(STATE_KEY.format(stream="l\x1b[2J"), "a list")  # the skipped key's name is shown escaped
        once = _status("--redis", server.url, "--once")
        live = _Terminal(frames=1)
        assert watch_status(server.url, interval=0.01, out=live) == 0
        client.delete(STREAMS_KEY)
        client.set(STREAMS_KEY, "not a set")  # the index itself: nothing can be listed, and the table says why
        broken = _status("--redis", server.url, "--once")
    assert once.returncode == 0, once.stderr
    assert sorted(_rows(once.stdout)) == ["good-a", "good-b"] and "2 streams: 1 FAKE" in once.stdout
    assert "(2 keys skipped: not of the type dfwatch writes" in once.stdout
    assert "dfwatch:state:x" in once.stdout and "dfwatch:state:l\\x1b[2J" in once.stdout
    assert "\x1b" not in once.stdout
    assert "good-a" in live.getvalue() and "2 keys skipped" in live.getvalue()
    assert "does not answer" not in live.getvalue()
    assert broken.returncode == 0, broken.stderr
    assert f"(1 keys skipped: not of the type dfwatch writes (a set of ids, a hash per stream): {STREAMS_KEY})" in (
        broken.stdout
    )
