"""`dfwatch watch --shard i/N`: rendezvous hashing of stream names to workers, on the CLI and the control hash."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections import Counter
from pathlib import Path

import pytest

from pipeline.config import parse_config
from pipeline.errors import ConfigError
from pipeline.shard import Shard, owner

NAMES = [f"cam-{i:04d}" for i in range(1000)]


@pytest.mark.parametrize("count", [1, 2, 3, 5, 8, 16])
def test_each_stream_belongs_to_exactly_one_worker_and_the_load_is_even(count):
    shards = [Shard(i, count) for i in range(count)]
    owners = [[s.index for s in shards if s.owns(name)] for name in NAMES]
    assert all(len(o) == 1 for o in owners)
    per_worker = Counter(o[0] for o in owners)
    assert sorted(per_worker) == list(range(count))
    expected = len(NAMES) / count
    assert all(0.6 * expected < n < 1.4 * expected for n in per_worker.values()), per_worker


@pytest.mark.parametrize("count", [1, 2, 3, 4, 7, 10])
def test_adding_a_worker_moves_about_one_in_n_plus_one_streams_and_only_to_the_new_worker(count):
    before = [owner(name, count) for name in NAMES]
    after = [owner(name, count + 1) for name in NAMES]
    moved = [(b, a) for b, a in zip(before, after) if b != a]
    assert all(a == count for _, a in moved)  # nothing moves between the old workers
    share = len(moved) / len(NAMES)
    assert 0.5 / (count + 1) < share < 2 / (count + 1), share


def test_the_assignment_is_the_same_in_every_process():
    """Not Python's salted hash(): another interpreter with another PYTHONHASHSEED agrees."""
    code = "from pipeline.shard import owner; print(','.join(str(owner(f'cam-{i:04d}', 5)) for i in range(200)))"
    env = os.environ | {"PYTHONHASHSEED": "12345"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True).stdout
    assert out.strip() == ",".join(str(owner(name, 5)) for name in NAMES[:200])


@pytest.mark.parametrize(
    ("text", "expected"),
    [("0/1", Shard(0, 1)), ("2/5", Shard(2, 5)), (" 3 / 4 ", Shard(3, 4)), ("09/10", Shard(9, 10))],
)
def test_parse(text, expected):
    assert Shard.parse(text) == expected and str(expected) == f"{expected.index}/{expected.count}"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("3/3", "shard 3/3 is out of range"),
        ("1/0", "shard 1/0 is out of range"),
        ("-1/2", "is not I/N"),
        ("1", "is not I/N"),
        ("one/3", "is not I/N"),
        ("1/3/5", "is not I/N"),
        ("", "is not I/N"),
        (2, "is not I/N"),
    ],
)
def test_bad_shards_name_the_value_and_the_form(text, message):
    with pytest.raises(ConfigError, match=message) as err:
        Shard.parse(text)
    assert "I/N" in str(err.value)


def test_config_key_shard():
    cfg = parse_config({"shard": "1/3", "streams": [{"id": "a", "url": "a.mp4"}]}, where="x.toml")
    assert cfg.shard == Shard(1, 3)
    assert parse_config({}).shard is None
    with pytest.raises(ConfigError, match=r"x.toml: shard '1-3' is not I/N"):
        parse_config({"shard": "1-3"}, where="x.toml")


def test_the_flag_overrides_the_config_key(tmp_path):
    from pipeline.cli import build_parser, resolve_config

    config = tmp_path / "w.toml"
    config.write_text('shard = "0/2"\n\n[[streams]]\nid = "a"\nurl = "a.mp4"\n')
    assert resolve_config(build_parser().parse_args(["watch", "--config", str(config)])).shard == Shard(0, 2)
    args = build_parser().parse_args(["watch", "--config", str(config), "--shard", "3/4"])
    assert resolve_config(args).shard == Shard(3, 4)
    assert resolve_config(build_parser().parse_args(["watch", "x.mp4"])).shard is None


@pytest.mark.parametrize("value", ["3/3", "x", "1/0", "2"])
def test_bad_shard_flag_is_a_usage_error(value):
    proc = subprocess.run(
        [sys.executable, "-m", "pipeline.cli", "watch", f"--shard={value}"], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.startswith("dfwatch watch: error: argument --shard: shard ") and "I/N" in proc.stderr


@pytest.fixture(scope="module")
def tiny_clip(tmp_path_factory: pytest.TempPathFactory):
    from pipeline.demo import make_demo_clip

    return make_demo_clip(tmp_path_factory.mktemp("shard") / "tiny.mp4", real_seconds=0.2, fake_seconds=0.2)


def test_watch_keeps_only_the_streams_of_its_shard(dfwatch, tiny_clip):
    names = [f"feed{i}" for i in range(6)]
    shard = Shard(1, 3)
    owned = shard.select(names)
    assert 0 < len(owned) < len(names)  # the test means something for these names
    run = dfwatch("watch", *(f"{n}={tiny_clip.path}" for n in names), "--shard", str(shard))
    assert run.returncode == 0, run.stderr
    assert Counter(r["stream"] for r in run.records) == {n: tiny_clip.n_frames for n in owned}
    assert f"shard 1/3: this worker owns {len(owned)} of 6 configured streams ({', '.join(owned)})" in run.stderr


def test_a_shard_that_owns_nothing_says_so_and_exits_0(dfwatch, tiny_clip):
    name = next(n for n in NAMES if owner(n, 4) != 2)
    run = dfwatch("watch", f"{name}={tiny_clip.path}", "--shard", "2/4")
    assert run.returncode == 0 and run.records == []
    assert "shard 2/4 owns none of the configured streams and --control is off: nothing to watch" in run.stderr


def test_control_hash_streams_are_taken_only_by_their_worker(fast_models: Path, tiny_clip, redis_client):
    """A real Runner and the real Redis: of 12 streams in the control hash, the worker starts only its own."""
    from engines import Classifier, Detector
    from pipeline.control import RedisControl
    from pipeline.observer import NullObserver
    from pipeline.policy import SourcePolicy
    from pipeline.processor import BatchProcessor
    from pipeline.runner import Runner

    key = f"dfwatch:test:control:{uuid.uuid4().hex[:10]}"  # not the live control hash other services poll
    names = [f"ctl{i}" for i in range(12)]
    shard = Shard(0, 3)
    observer = NullObserver()
    processor = BatchProcessor(
        Detector(fast_models / "face_detector.onnx"), Classifier(fast_models / "deepfake_classifier.onnx"), observer
    )
    runner = Runner([], processor, [], observer, until_stopped=True)
    control = RedisControl(
        redis_client,
        runner,
        key=key,
        epoch_key=f"{key}:epoch",
        owns=shard.owns,
        policy=SourcePolicy(allow_dirs=(tiny_clip.path.parent,)),
    )  # local files: allowed here
    try:
        redis_client.hset(key, mapping={n: str(tiny_clip.path) for n in names})
        control.poll_once()
        assert sorted(runner.stream_ids) == sorted(shard.select(names)) and runner.stream_ids
        added = f"{names[0]}-late"
        redis_client.hset(key, added, str(tiny_clip.path))  # added at run time: taken only by its owner
        control.poll_once()
        assert (added in runner.stream_ids) == shard.owns(added)
        assert sorted(control.managed) == sorted(shard.select([*names, added]))
    finally:
        redis_client.delete(key, f"{key}:epoch")
        runner.stop.set()
        for stream in list(runner.streams.values()):
            stream.stop.set()
            if stream.thread is not None:
                stream.thread.join(timeout=10)
