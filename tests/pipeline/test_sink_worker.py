"""SinkWorker, the buffer and thread behind every sink: real pipes for stdout, a real redis-server for Redis."""

from __future__ import annotations

import fcntl
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator

import pytest

from pipeline.messages import Publication, StreamRemoved, Verdict, VerdictState
from pipeline.queues import BoundedQueue, DropPolicy
from pipeline.sink_worker import GRACE, SinkWorker, Writer
from pipeline.sinks import RedisSink, StdoutSink
from tests._redis import RedisServer, redis_server
from tests.pipeline._faces import faces

F_SETPIPE_SZ = 1031  # fcntl: set a pipe's buffer size (Linux)
PIPE_SIZE = 4096


@pytest.fixture()
def pipe() -> Iterator[tuple[int, int]]:
    """A real pipe of one page; nobody reads it unless a test does."""
    r, w = os.pipe()
    fcntl.fcntl(w, F_SETPIPE_SZ, PIPE_SIZE)
    yield r, w
    for fd in (r, w):
        try:
            os.close(fd)
        except OSError:
            pass


class PipeWriter(Writer[bytes]):
    """Writes each item to a pipe with a blocking os.write: stuck while the pipe is full."""

    name = "pipe"

    def __init__(self, fd: int) -> None:
        self.fd = fd

    def write(self, items: list[bytes]) -> None:
        for item in items:
            view = memoryview(item)
            while view:
                view = view[os.write(self.fd, view) :]


def read_all(fd: int) -> bytes:
    """Everything in the pipe now, without waiting."""
    os.set_blocking(fd, False)
    chunks = []
    while True:
        try:
            chunk = os.read(fd, 65536)
        except BlockingIOError:
            break
        if not chunk:
            break
        chunks.append(chunk)
    return b"".join(chunks)


def wait_for(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.01)


def publications(n: int, *, pad: int = 0) -> list[Publication]:
    verdicts = [
        Verdict(
            stream_id="cam" + "x" * pad,
            frame_index=i,
            pts=i / 25,
            capture_time=1_700_000_000.0 + i / 25,
            faces=faces((1, (10.0, 20.0, 110.0, 140.0), 0.9, 0.1, 0.1)),
            score=0.1,
            state=VerdictState.REAL,
            changed=False,
            detected=True,
            latency={"decode": 0.001},
            placeholder_models=False,
        )
        for i in range(n)
    ]
    return Publication.of(verdicts, published=time.time())


def test_a_failed_write_goes_back_to_the_head_and_a_marker_is_never_dropped() -> None:
    q: BoundedQueue[int | StreamRemoved] = BoundedQueue(3, DropPolicy.DROP_OLDEST, marker=StreamRemoved)
    q.put(1)
    q.put(2)
    q.put(StreamRemoved("a"), policy=DropPolicy.MARKER)
    taken = q.get_all(limit=2)  # in flight: [1, 2]
    for i in (3, 4, 5):
        assert q.put(i) == 0  # the marker takes no room
    assert q.requeue(taken) == 2  # 5 items for 3 places: the two oldest go
    assert list(q.items) == [StreamRemoved("a"), 3, 4, 5] and (q.dropped, q.pending) == (2, 3)
    assert q.put(6) == 1 and list(q.items) == [StreamRemoved("a"), 4, 5, 6]  # dropped past the marker, not it
    assert q.clear() == 3 and q.dropped == 6  # the marker is not counted as an item


def test_a_full_buffer_drops_its_oldest_and_counts_them(pipe: tuple[int, int]) -> None:
    r, w = pipe
    worker = SinkWorker(PipeWriter(w), size=3, policy=DropPolicy.DROP_OLDEST)
    first = b"0" * (2 * PIPE_SIZE) + b"\n"  # more than the pipe holds: the writer is stuck in it
    assert worker.put([first]) == 0
    wait_for(lambda: worker.health().buffered == 1 and not worker.queue.pending)  # taken: in flight
    assert worker.put([f"{i}\n".encode() for i in range(1, 10)]) == 6  # 9 for 3 places
    h = worker.health()
    assert (h.buffered, h.dropped, h.written) == (4, 6, 0)  # 3 queued + 1 in flight
    received = bytearray()
    reader = threading.Thread(target=lambda: received.extend(_read_to_eof(r)), daemon=True)
    reader.start()
    assert worker.close(timeout=5) == 6  # nothing else lost
    os.close(w)
    reader.join(5)
    assert bytes(received).split(b"\n")[1:] == [b"7", b"8", b"9", b""]  # the newest kept, in order
    h = worker.health()
    assert (h.written, h.buffered, h.unflushed, h.lost) == (4, 0, 0, 6)


def _read_to_eof(fd: int) -> bytes:
    chunks = []
    while chunk := os.read(fd, 65536):
        chunks.append(chunk)
    return b"".join(chunks)


def test_close_returns_what_a_stuck_writer_did_not_write(pipe: tuple[int, int]) -> None:
    r, w = pipe
    worker = SinkWorker(PipeWriter(w), size=10, policy=DropPolicy.DROP_OLDEST)
    worker.put([b"0" * (2 * PIPE_SIZE)])  # the writer is stuck in this one: nobody reads
    wait_for(lambda: not worker.queue.pending)
    worker.put([b"1", b"2", b"3", b"4"])
    start = time.monotonic()
    assert worker.close(timeout=0.3) == 5  # the stuck write and the four behind it
    assert time.monotonic() - start < 0.3 + GRACE + 0.5
    h = worker.health()
    assert (h.unflushed, h.written, h.dropped, h.buffered) == (5, 0, 0, 0) and worker.running
    read_all(r)  # lets the stuck write end, so the thread does not outlive the test
    wait_for(lambda: not worker.running)


def test_stdout_gives_up_on_a_stalled_reader_and_counts_every_line(pipe: tuple[int, int]) -> None:
    r, w = pipe
    sink = StdoutSink(w, buffer_size=30, close_timeout=0.3)
    sent = publications(40, pad=300)  # ~600-byte lines: a few fill the pipe
    start = time.monotonic()
    for i in range(0, 40, 4):
        sink.publish(sent[i : i + 4])  # never waits for the reader
    assert time.monotonic() - start < 0.5
    sink.close()
    assert time.monotonic() - start < 0.3 + GRACE + 1.0
    h = sink.health()
    lines = read_all(r).split(b"\n")
    whole = lines[:-1]  # the last piece is a line cut short by the give-up, or b""
    assert h.dropped > 0 and h.unflushed > 0  # 40 lines for 30 places (+ the few written and in flight)
    assert h.written == len(whole) and h.written + h.dropped + h.unflushed == 40  # every line accounted for
    frames = [int(line.split(b'"frame":')[1].split(b",")[0]) for line in whole]
    assert frames == list(range(frames[0], frames[0] + len(frames)))  # in order, none twice, only the oldest dropped


def test_stdout_whose_reader_went_away_is_disconnected_and_counts_what_comes(
    pipe: tuple[int, int], caplog: pytest.LogCaptureFixture
) -> None:
    r, w = pipe
    os.close(r)  # `| head -1` exited
    sink = StdoutSink(w)
    sink.publish(publications(3))
    wait_for(lambda: sink.health().connected is False)
    sink.publish(publications(5))
    sink.close()
    h = sink.health()
    assert (h.connected, h.written, h.dropped, h.unflushed) == (False, 0, 8, 0)
    assert sum("stdout was closed by its reader" in r.getMessage() for r in caplog.records) == 1


@pytest.fixture()
def server() -> Iterator[RedisServer]:
    with redis_server() as s:
        yield s


def test_health_follows_a_redis_that_goes_away_and_comes_back(
    server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="pipeline.sinks")
    sink = RedisSink(server.url, buffer_size=4)
    try:
        assert sink.health().connected is True
        server.kill()
        sink.publish(publications(6))
        wait_for(lambda: sink.health().connected is False)
        h = sink.health()
        assert (h.written, h.buffered, h.dropped) == (0, 4, 2) and h.failures >= 1  # the two oldest dropped
        server.start()
        wait_for(lambda: sink.health().written == 4)
        h = sink.health()
        assert (h.connected, h.buffered, h.dropped, h.unflushed, h.lost) == (True, 0, 2, 0, 2)
    finally:
        sink.close()
    with server.client() as c:
        assert [int(f["frame"]) for _, f in c.xrange("dfwatch:verdicts:cam")] == [2, 3, 4, 5]
    text = [r.getMessage() for r in caplog.records]
    assert sum("connection lost" in t for t in text) == 1 and sum("connection back" in t for t in text) == 1


def test_closing_while_the_destination_is_down_retries_at_the_backoff_floor_not_in_a_spin():
    """close() keeps retrying a refused write until its deadline, but at the shortest backoff, never in a busy loop
    (the wait was on the very event that closing sets, so it returned at once and the retries spun)."""

    class Refused(Writer[int]):
        name = "refused"
        retry_on = (ConnectionError,)

        def __init__(self) -> None:
            self.tries = 0

        def write(self, items: list[int]) -> None:
            self.tries += 1
            raise ConnectionError("refused")

    writer = Refused()
    worker = SinkWorker(writer, size=10, policy=DropPolicy.DROP_OLDEST, backoff=(0.25, 5.0))
    worker.put([1, 2, 3])
    time.sleep(0.1)
    t0 = time.monotonic()
    assert worker.close(timeout=1.0) == 3  # nothing could be written: all three lost, counted
    assert time.monotonic() - t0 < 1.0 + GRACE + 0.5
    assert writer.tries <= 8  # about one try per 0.25 s over the second it had; it spun thousands of times
