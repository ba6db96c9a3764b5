"""The Redis control hash as an attacker and a bad day would use it, against the real `dfwatch watch --control`.

Each test runs its own redis-server (never the shared 6379 one, whose control hash other services poll) and
the real GStreamer RTSP server.
"""

from __future__ import annotations

import json
import re
import socket
import time
from pathlib import Path

import pytest

from pipeline.control import CONTROL_KEY, EPOCH_KEY
from pipeline.lograte import BURST
from tests._redis import redis_server
from tests._rtsp import free_port, requires_rtsp, rtsp_server, rtsp_server_process

pytestmark = [pytest.mark.timeout(180), requires_rtsp]


def _errors(svc, stream: str) -> list[str]:
    return [line for line in svc.stderr.splitlines() if " ERROR: " in line and repr(stream) in line]


def test_hostile_entries_are_refused_one_line_each_and_the_good_one_runs(service, demo_clip, tmp_path):
    """Local files, devices, other schemes, a listening socket, a 100,000-character URL: none is opened."""
    listen_port = free_port()
    hostile = {
        "passwd": "/etc/passwd",
        "shadow": "/etc/shadow",
        "zero": "/dev/zero",
        "local": str(demo_clip.path),
        "fileurl": "file:///etc/passwd",
        "concat": "concat:/etc/passwd|/etc/hostname",
        "listen": f"tcp://127.0.0.1:{listen_port}?listen=1",
        "long": "rtsp://127.0.0.1/" + "a" * 100_000,
        "long_url": "rtsp://127.0.0.1/" + "a" * 5_000,
        "json_local": json.dumps({"url": "/etc/hostname", "read_timeout": 2}),
    }
    with redis_server() as redis_srv, rtsp_server({"cam": demo_clip.path}, loop=True) as base:
        client = redis_srv.client()
        client.hset(CONTROL_KEY, mapping={**hostile, "good": f"{base}/cam"})
        svc = service("--control", "--redis", redis_srv.url)
        svc.wait_for(lambda: len(svc.of("good")) >= 10, 90, "verdicts of the allowed RTSP stream")
        svc.wait_for(lambda: all(_errors(svc, sid) for sid in hostile), 30, "one error per hostile entry")
        with socket.socket() as probe:  # nothing listens where the entry asked for a listening socket
            assert probe.connect_ex(("127.0.0.1", listen_port)) != 0
        code, took = svc.stop()
    assert code == 0 and took < 15
    assert {r["stream"] for r in svc.records} == {"good"}
    stderr = svc.stderr
    for sid in hostile:
        assert len(_errors(svc, sid)) == 1, (sid, _errors(svc, sid))  # once, not at every poll
    assert "local files are not accepted from the control hash" in _errors(svc, "passwd")[0]
    assert "scheme 'tcp' is not allowed" in _errors(svc, "listen")[0]
    assert "a value of 100017 characters is over 16384" in _errors(svc, "long")[0]
    assert "more than [sources] max_url_length = 2048" in _errors(svc, "long_url")[0]
    assert max(len(line) for line in stderr.splitlines()) < 2000  # the long URL never went whole into the log
    assert "root:" not in stderr  # nothing of /etc/passwd was read


def test_garbage_in_the_hash_never_ends_the_control_plane_and_a_hung_redis_times_out(service, demo_clip):
    """One non-UTF-8 value killed the control thread for good; its client had no socket timeout."""
    with redis_server() as redis_srv, rtsp_server({"cam": demo_clip.path}, loop=True) as base:
        client = redis_srv.client(decode_responses=False)
        client.hset(
            CONTROL_KEY,
            mapping={
                b"bad-value": b"rtsp://\xff\xfe/x",
                b"bad-\xffid": b"rtsp://x/y",
                b"bad-json": b'{"url": 1e999999, "read_timeout": NaN}',
            },
        )
        svc = service("--control", "--redis", redis_srv.url)
        svc.wait_for(lambda: "bad-json" in svc.stderr, 30, "the bad entries reported")
        client.hset(CONTROL_KEY, "cam1", f"{base}/cam")  # the control plane still listens
        svc.wait_for(lambda: len(svc.of("cam1")) >= 5, 60, "verdicts of the stream added after the garbage")
        redis_srv.pause()  # a Redis that holds the connection and answers nothing
        try:
            svc.wait_for(
                lambda: "control hash dfwatch:control:streams unreadable" in svc.stderr,
                20,
                "the control plane noticing the hung Redis (socket timeout)",
            )
        finally:
            redis_srv.resume()
        svc.wait_for(lambda: "readable again" in svc.stderr, 30, "the control plane back")
        client.hset(CONTROL_KEY, "cam2", f"{base}/cam")
        svc.wait_for(lambda: len(svc.of("cam2")) >= 5, 60, "verdicts of a stream added after the outage")
        code, _ = svc.stop()
    assert code == 0
    stderr = svc.stderr
    assert "the value is not UTF-8 text" in stderr and "a stream id that is not UTF-8" in stderr
    assert "bad-json" in stderr and "Traceback" not in stderr


def test_a_redis_that_loses_its_data_stops_no_stream(service, demo_clip):
    """Restarted without persistence: every stream added through the hash was removed within 2 s, logged at INFO."""
    with redis_server() as redis_srv, rtsp_server({"cam": demo_clip.path}, loop=True) as base:
        client = redis_srv.client()
        entries = {f"cam{i}": f"{base}/cam" for i in range(3)}
        client.hset(CONTROL_KEY, mapping=entries)
        svc = service("--control", "--redis", redis_srv.url)
        svc.wait_for(lambda: all(len(svc.of(s)) >= 3 for s in entries), 90, "verdicts of the three streams")
        redis_srv.kill()
        redis_srv.start()  # same port, empty: no persistence
        svc.wait_for(lambda: "Redis lost its data" in svc.stderr, 30, "the data loss noticed")
        counts = {s: len(svc.of(s)) for s in entries}
        time.sleep(6)  # three polls
        assert all(len(svc.of(s)) >= counts[s] + 10 for s in entries), "a stream stopped after the data loss"
        assert client.hgetall(CONTROL_KEY) == entries  # written back, so an operator sees them again
        assert client.get(EPOCH_KEY)
        client.hdel(CONTROL_KEY, "cam0")  # and deleting a field still stops its stream
        svc.wait_for(lambda: "stream 'cam0' removed" in svc.stderr, 30, "cam0 removed by HDEL")
        code, _ = svc.stop()
    assert code == 0
    assert not any(f"stream '{s}' removed" in svc.stderr for s in ("cam1", "cam2"))


def test_camera_passwords_never_reach_the_log(service, demo_clip):
    """rtsp://admin:secret@... was logged on add, up, down and every reconnect."""
    secret = "s3cr3t-Qz81"
    with redis_server() as redis_srv, rtsp_server_process({"cam": demo_clip.path}, loop=True) as server:
        url = server.url.replace("rtsp://", f"rtsp://admin:{secret}@") + "/cam"
        redis_srv.client().hset(CONTROL_KEY, "ctl", json.dumps({"url": url, "read_timeout": 2}))
        svc = service(f"cli={url}", "--read-timeout", "2", "--control", "--redis", redis_srv.url)
        svc.wait_for(lambda: len(svc.of("ctl")) >= 5 and len(svc.of("cli")) >= 5, 90, "verdicts of both streams")
        server.proc.kill()  # down, then reconnect attempts against a closed port
        svc.wait_for(lambda: svc.stderr.count("reconnect attempt") >= 4, 60, "reconnect attempts")
        code, _ = svc.stop()
    assert code == 0
    stderr = svc.stderr
    assert secret not in stderr
    assert "rtsp://admin:***@127.0.0.1" in stderr and "is down" in stderr and "added" in stderr


def test_a_backoff_without_a_floor_cannot_flood_the_log(service):
    """backoff_initial = 1e-9 wrote 73,526 log lines in 4.5 s."""
    dead = f"rtsp://127.0.0.1:{free_port()}/x"  # nothing listens: every attempt fails at once
    with redis_server() as redis_srv:
        redis_srv.client().hset(
            CONTROL_KEY, "dead", json.dumps({"url": dead, "backoff_initial": 1e-9, "backoff_max": 1e-9})
        )
        svc = service("--control", "--redis", redis_srv.url)
        svc.wait_for(lambda: "reconnect attempt" in svc.stderr, 60, "the first reconnect attempt")
        time.sleep(4)
        code, _ = svc.stop()
    assert code == 0
    times = [line[:8] for line in svc.stderr.splitlines() if "stream 'dead': reconnect attempt" in line]
    per_second = max(times.count(t) for t in set(times))
    assert per_second <= 5, f"{per_second} reconnect lines in one second"  # the floor is 0.25 s
    assert re.search(r"reconnect attempt \d+ in 0\.[23] s", svc.stderr)  # logged with one decimal


def _threads(svc) -> int:
    status = Path(f"/proc/{svc.proc.pid}/status").read_text()
    return int(re.search(r"^Threads:\s+(\d+)", status, re.M)[1])


def test_a_flood_of_entries_is_held_to_max_streams_and_the_rest_wait_their_turn(service, demo_clip):
    """1,000 entries were all started: 1,015 threads, the running feed 25 -> 16 verdicts/s, 392 log lines/s."""
    dead = f"rtsp://127.0.0.1:{free_port()}/x"  # nothing listens: these reconnect for ever
    flood = {f"flood{i:03d}": dead for i in range(200)}
    with redis_server() as redis_srv, rtsp_server({"cam": demo_clip.path}, loop=True) as base:
        client = redis_srv.client()
        client.hset(CONTROL_KEY, mapping={**flood, "a-good": f"{base}/cam"})  # ids start in sorted order
        svc = service("--control", "--redis", redis_srv.url, "--max-streams", "5")
        svc.wait_for(lambda: len(svc.of("a-good")) >= 10, 90, "verdicts of the feed that got in first")
        svc.wait_for(lambda: "entries refused" in svc.stderr, 30, "the line about the refused entries")
        time.sleep(3)  # a few more polls: nothing more is started, nothing more is said
        threads = _threads(svc)
        added = re.findall(r"stream '(\S+)' \(.*\) added", svc.stderr)
        client.hdel(CONTROL_KEY, "a-good")
        svc.wait_for(
            lambda: "flood004" in re.findall(r"stream '(\S+)' \(.*\) added", svc.stderr),
            30,
            "the next entry taking the freed place",
        )
        code, took = svc.stop()
    assert code == 0 and took < 15
    assert added == ["a-good", "flood000", "flood001", "flood002", "flood003"], added
    assert threads < 40, threads  # 5 readers, the stage loop, sinks, control, ONNX Runtime's pool; not 200
    refused = [line for line in svc.stderr.splitlines() if "entries refused" in line]
    assert len(refused) == 2, refused  # once for the flood, once more when one got in: not at every poll
    assert "196 entries refused (flood004, flood005" in refused[0] and "max_streams" in refused[0]
    assert "195 entries refused (flood005," in refused[1]


def test_a_flapping_stream_writes_at_most_its_burst_of_log_lines(service):
    """A reconnecting stream logs a bounded number of lines per minute, then says how many it held back."""
    dead = f"rtsp://127.0.0.1:{free_port()}/x"
    with redis_server() as redis_srv:
        redis_srv.client().hset(
            CONTROL_KEY, "flap", json.dumps({"url": dead, "backoff_initial": 1e-9, "backoff_max": 1e-9})
        )
        svc = service("--control", "--redis", redis_srv.url)
        svc.wait_for(lambda: "reconnect attempt" in svc.stderr, 60, "the first reconnect attempt")
        time.sleep(12)  # at the 0.25 s floor: about 50 attempts, each with its lines
        code, _ = svc.stop()
    assert code == 0
    lines = [line for line in svc.stderr.splitlines() if "stream 'flap'" in line]
    assert 10 <= len(lines) <= BURST + 2, len(lines)  # + the removal and shutdown lines of other threads
