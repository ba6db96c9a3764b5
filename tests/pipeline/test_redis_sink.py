"""RedisSink against its own real redis-server, which the tests kill and restart on the same port."""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis

from engines.urls import redact
from pipeline.errors import SinkError
from pipeline.messages import Publication, Verdict, VerdictState
from pipeline.sinks import ALERT_CHANNEL, STATE_KEY, STREAM_KEY, STREAMS_KEY, RedisSink
from tests._redis import RedisServer, redis_server
from tests._rtsp import free_port
from tests.pipeline._faces import faces


@pytest.fixture()
def server() -> Iterator[RedisServer]:
    with redis_server() as s:
        yield s


@pytest.fixture(autouse=True)
def no_writer_left() -> Iterator[None]:
    yield
    left = [t for t in threading.enumerate() if t.name == "dfwatch-redis-sink"]
    assert not left, "a RedisSink writer thread outlived its test"


@pytest.fixture()
def sink_log(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    caplog.set_level(logging.INFO, logger="pipeline.sinks")
    return caplog


def encode(verdicts: list[Verdict]) -> list[Publication]:
    return Publication.of(verdicts, published=time.time())


def verdict(
    stream: str, frame: int, state: VerdictState = VerdictState.REAL, *, changed: bool = False, score: float = 0.1
) -> Verdict:
    return Verdict(
        stream_id=stream,
        frame_index=frame,
        pts=frame / 25,
        capture_time=1_700_000_000.0 + frame / 25,
        faces=faces((1, (10.0, 20.0, 110.0, 140.0), 0.9, score, score)),
        score=score,
        state=state,
        changed=changed,
        detected=True,
        latency={"decode": 0.001, "queue": 0.0, "detect": 0.01, "classify": 0.005},
        placeholder_models=False,
    )


def wait_for(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.01)


def frames(client: redis.Redis, stream: str) -> list[int]:
    return [int(fields["frame"]) for _, fields in client.xrange(STREAM_KEY.format(stream=stream))]


def test_entries_state_and_streams_set(server: RedisServer) -> None:
    sink = RedisSink(server.url)
    try:
        records = encode([verdict(s, i, score=i / 10) for i in range(5) for s in ("cam1", "cam2")])
        sink.publish(records[:4])
        sink.publish(records[4:])
    finally:
        sink.close()
    h = sink.health()
    assert (h.written, h.dropped, h.buffered, h.failures, h.rejected, h.unflushed) == (10, 0, 0, 0, 0, 0)
    with pytest.raises(SinkError, match="after close"):
        sink.publish(records)
    with server.client() as c:
        entries = c.xrange(STREAM_KEY.format(stream="cam1"))
        cam1 = [p.record for p in records if p.verdict.stream_id == "cam1"]
        assert [json.loads(f["json"]) for _, f in entries] == cam1
        assert [(f["verdict"], f["score"], f["frame"]) for _, f in entries][-1] == ("REAL", "0.4000", "4")
        state = c.hgetall(STATE_KEY.format(stream="cam2"))
        last = records[-1].record
        assert state.keys() == {
            "verdict",
            "score",
            "frame",
            "pts",
            "capture_time",
            "faces",
            "updated",
            "json",
            "fps",
            "p95_ms",
            "worker",
        }
        assert json.loads(state.pop("json")) == last
        assert float(state.pop("updated")) == pytest.approx(time.time(), abs=30)
        assert state.pop("worker") == sink.worker and state.pop("worker", None) is None
        c2p = sorted(p.record["latency_ms"]["capture_to_publish"] for p in records if p.verdict.stream_id == "cam2")
        assert state.pop("p95_ms") == f"{c2p[-1]:.1f}"  # 5 verdicts: the 95th percentile is the slowest
        state.pop("fps")  # its arithmetic: tests/pipeline/test_status.py
        assert state == {
            "verdict": "REAL",
            "score": "0.4000",
            "frame": "4",
            "pts": "0.160000",
            "capture_time": f"{last['capture_time']:.6f}",
            "faces": "1",
        }
        assert c.smembers(STREAMS_KEY) == {"cam1", "cam2"}


def test_alert_only_on_a_change_to_fake(server: RedisServer) -> None:
    fake, real = VerdictState.FAKE, VerdictState.REAL
    steps = [(real, False), (fake, True), (fake, False), (real, True), (fake, True), (VerdictState.UNKNOWN, True)]
    with server.client() as c, c.pubsub(ignore_subscribe_messages=True) as sub:
        sub.subscribe(ALERT_CHANNEL)
        assert sub.get_message(timeout=5) is None  # consumes the subscribe confirmation
        sink = RedisSink(server.url)
        records = [encode([verdict("cam", i, st, changed=ch, score=i / 10)]) for i, (st, ch) in enumerate(steps)]
        try:
            for batch in records:
                sink.publish(batch)
        finally:
            sink.close()
        assert sink.health().unflushed == 0
        alerts = []
        while (message := sub.get_message(timeout=0.5)) is not None:
            alerts.append(json.loads(message["data"]))
    keys = ("stream", "frame", "pts", "score", "capture_time", "verdict")
    assert alerts == [{k: records[i][0].record[k] for k in keys} for i in (1, 4)]
    assert [a["verdict"] for a in alerts] == ["FAKE", "FAKE"]


def test_redis_restarted_mid_run(server: RedisServer, sink_log: pytest.LogCaptureFixture) -> None:
    errors: list[str] = []
    sink = RedisSink(server.url, on_error=errors.append)
    try:
        for i in range(0, 100, 10):
            sink.publish(encode([verdict("cam", j) for j in range(i, i + 10)]))
        wait_for(lambda: sink.health().written == 100)
        server.kill()
        slowest = 0.0
        for i in range(100, 400, 3):
            records = encode([verdict("cam", j) for j in range(i, i + 3)])
            start = time.perf_counter()
            sink.publish(records)
            slowest = max(slowest, time.perf_counter() - start)
            time.sleep(0.003)  # spread over ~1 s, so the writer fails and backs off a few times
        # Never waits on the dead server: a blocking write would take the 5 s socket timeout.
        assert slowest < 1.0, f"publish() took {slowest * 1000:.1f} ms with Redis down"
        wait_for(lambda: not sink.health().connected)
        assert sink.health().written == 100 and sink.health().buffered == 300
        server.start()  # empty: the first 100 entries went down with the server
        wait_for(lambda: sink.health().written == 400)  # the writer reconnects by itself, before any close()
    finally:
        sink.close(timeout=10)
    assert sink.health().unflushed == 0
    with server.client() as c:
        assert frames(c, "cam") == list(range(100, 400))
        assert c.hget(STATE_KEY.format(stream="cam"), "frame") == "399"
    assert (
        sink.health().dropped == 0 and sink.health().failures >= 1 and errors == ["connection"] * sink.health().failures
    )
    warnings = [r.getMessage() for r in sink_log.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1 and "connection lost" in warnings[0]
    backs = [r.getMessage() for r in sink_log.records if "connection back" in r.getMessage()]
    assert len(backs) == 1 and "flushing 300 buffered verdicts" in backs[0]


def test_a_full_buffer_drops_the_oldest(server: RedisServer, sink_log: pytest.LogCaptureFixture) -> None:
    sink = RedisSink(server.url, buffer_size=50)
    try:
        server.kill()
        for i in range(120):
            sink.publish(encode([verdict("cam", i)]))
        wait_for(lambda: sink.health().failures >= 1 and sink.health().dropped == 70)
        assert sink.health().buffered == 50 and sink.health().written == 0
        server.start()
        wait_for(lambda: sink.health().written == 50)
    finally:
        sink.close(timeout=10)
    assert sink.health().dropped == 70 and sink.health().unflushed == 0
    with server.client() as c:
        assert frames(c, "cam") == list(range(70, 120))
    dropped = [r.getMessage() for r in sink_log.records if "dropped" in r.getMessage()]
    assert len(dropped) == 1 and "dropped the 70 oldest during the outage" in dropped[0]


def test_a_removed_stream_is_no_verdict_in_a_full_buffer(server: RedisServer) -> None:
    sink = RedisSink(server.url, buffer_size=5)
    try:
        server.kill()
        sink.publish(encode([verdict("gone", i) for i in range(3)]))
        sink.forget_stream("gone")  # removed while Redis is down: its marker waits behind its verdicts
        sink.publish(encode([verdict("cam", i) for i in range(3)]))
        wait_for(lambda: sink.health().failures >= 1)
        assert (
            sink.health().dropped == 1 and sink.health().buffered == 5
        )  # 6 verdicts for 5 places: only the oldest went
        server.start()
        wait_for(lambda: sink.health().written == 5)
    finally:
        sink.close(timeout=10)
    assert sink.health().unflushed == 0 and sink.health().written == 5
    with server.client() as c:
        assert frames(c, "gone") == [1, 2] and frames(c, "cam") == [0, 1, 2]
        assert c.smembers(STREAMS_KEY) == {"cam"}  # the marker was kept: the removed stream left the set


def test_a_read_only_replica_is_retried_like_a_lost_connection(server: RedisServer) -> None:
    sink = RedisSink(server.url)
    try:
        with server.client() as c:
            c.replicaof("127.0.0.1", str(free_port()))  # a failover left us on a replica: READONLY
            sink.publish(encode([verdict("cam", i) for i in range(5)]))
            wait_for(lambda: not sink.health().connected)
            assert sink.health().written == 0 and sink.health().buffered == 5 and sink.health().rejected == 0
            c.replicaof("NO", "ONE")  # promoted
            wait_for(lambda: sink.health().written == 5)
    finally:
        sink.close()
    with server.client() as c:
        assert frames(c, "cam") == [0, 1, 2, 3, 4]


def test_refused_commands_are_counted_and_logged_not_retried(
    server: RedisServer, sink_log: pytest.LogCaptureFixture
) -> None:
    with server.client() as c:
        c.set(STATE_KEY.format(stream="cam"), "not a hash")  # HSET answers WRONGTYPE
    errors: list[str] = []
    sink = RedisSink(server.url, on_error=errors.append)
    try:
        sink.publish(encode([verdict("cam", i) for i in range(3)]))
    finally:
        sink.close()
    assert (sink.health().written, sink.health().rejected, sink.health().failures, sink.health().unflushed, errors) == (
        3,
        1,
        0,
        0,
        ["rejected"],
    )
    with server.client() as c:
        assert frames(c, "cam") == [0, 1, 2]  # the other commands of the batch went through, once
    refused = [r.getMessage() for r in sink_log.records if r.levelno == logging.WARNING]
    # XADD x3, HSET, 3 EXPIREs (state, stream, set), SADD: one refused
    assert len(refused) == 1 and "refused 1 of 8 commands" in refused[0] and "WRONGTYPE" in refused[0]


def test_close_gives_up_after_its_timeout_and_says_how_many(
    server: RedisServer, sink_log: pytest.LogCaptureFixture
) -> None:
    sink = RedisSink(server.url)
    try:
        server.kill()
        sink.publish(encode([verdict("cam", i) for i in range(7)]))
    finally:
        start = time.monotonic()
        sink.close(timeout=0.5)
    assert sink.health().unflushed == 7 and sink.health().written == 0 and time.monotonic() - start < 2.0
    assert any("7 verdicts still buffered" in r.getMessage() for r in sink_log.records if r.levelno == logging.ERROR)


def test_unreachable_at_start_is_a_sink_error() -> None:
    url = f"redis://127.0.0.1:{free_port()}/0"
    with pytest.raises(SinkError, match=f"Redis at {url} is unreachable"):
        RedisSink(url)


def test_unix_socket_url(tmp_path: Path) -> None:
    s = RedisServer(unix_socket=tmp_path / "redis.sock")
    s.start()
    try:
        sink = RedisSink(s.url)
        try:
            sink.publish(encode([verdict("cam", 0)]))
        finally:
            sink.close()
        with s.client() as c:
            assert frames(c, "cam") == [0]
    finally:
        s.cleanup()


def test_password_is_never_logged(sink_log: pytest.LogCaptureFixture) -> None:
    secret = "pw-Zx81q-secret"
    s = RedisServer(password=secret)
    s.start()
    try:
        wrong = s.url.replace(secret, "wrong-Kq27-secret")
        with pytest.raises(SinkError, match="is unreachable") as err:
            RedisSink(wrong)
        assert "wrong-Kq27-secret" not in str(err.value) and ":***@127.0.0.1" in str(err.value)
        no_password = s.url.replace(f":{secret}@", "")
        with pytest.raises(SinkError, match="is unreachable"):
            RedisSink(no_password)
        RedisSink(no_password, password=secret).close()  # what the CLI does with $DFWATCH_REDIS_PASSWORD
        sink = RedisSink(s.url, password="ignored-when-the-url-has-one")
        try:
            s.kill()
            sink.publish(encode([verdict("cam", 0)]))
            wait_for(lambda: not sink.health().connected)
            s.start()
            wait_for(lambda: sink.health().written == 1)
        finally:
            sink.close()
        assert sink.health().unflushed == 0 and sink.url == s.url.replace(secret, "***")
    finally:
        s.cleanup()
    text = "\n".join(r.getMessage() for r in sink_log.records)
    assert "connection lost" in text and "connection back" in text and secret not in text


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("redis://127.0.0.1:6379/0", "redis://127.0.0.1:6379/0"),
        ("redis://:pw@127.0.0.1:6379/0", "redis://:***@127.0.0.1:6379/0"),
        ("rediss://alice:p%40ss@cache.example:6380/1", "rediss://alice:***@cache.example:6380/1"),
        ("redis://a:p@ss/w@host:6379", "redis://a:***@host:6379"),  # unescaped '@' and '/' in the password
        ("redis://oldstyle@host", "redis://***@host"),
        ("unix:///run/redis.sock?db=2&password=pw", "unix:///run/redis.sock?db=2&password=***"),
        ("unix://:pw@/run/redis.sock", "unix://:***@/run/redis.sock"),
        ("", ""),
    ],
)
def test_redact(url: str, shown: str) -> None:
    assert redact(url) == shown
