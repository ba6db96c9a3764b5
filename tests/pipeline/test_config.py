"""The TOML config: every field reaches its component; bad fields are named with the valid ones."""

from __future__ import annotations

import dataclasses
import math
import typing
from pathlib import Path

import pytest

from pipeline.cli import EXIT_USAGE, main
from pipeline.config import SECTIONS, load_config, parse_config
from pipeline.errors import ConfigError
from pipeline.ranges import range_of
from pipeline.shard import Shard
from pipeline.sources import SourceSpec
from pipeline.tracker import TrackerConfig

ROOT = Path(__file__).resolve().parents[2]


def test_example_config_loads():
    cfg = load_config(ROOT / "deploy" / "streams.example.toml")
    assert len(cfg.streams) >= 2 and len({s.stream_id for s in cfg.streams}) == len(cfg.streams)
    assert cfg.metrics.host == "127.0.0.1"


def test_fields_reach_their_components(tmp_path: Path):
    path = tmp_path / "c.toml"
    path.write_text(
        """
[models]
dir = "/opt/models"
threads = 2
[runner]
max_batch = 4
[verdict]
enter_fake = 0.7
leave_fake = 0.3
[sinks]
redis = "redis://127.0.0.1:6379/0"
[metrics]
port = 0
[[streams]]
id = "lobby"
url = "rtsp://192.0.2.1/live"
read_timeout = 3
"""
    )
    cfg = load_config(path)
    assert cfg.models.detector_path == Path("/opt/models/face_detector.onnx") and cfg.models.threads == 2
    assert cfg.runner.max_batch == 4 and (cfg.verdict.enter_fake, cfg.verdict.leave_fake) == (0.7, 0.3)
    assert cfg.sinks.redis == "redis://127.0.0.1:6379/0" and cfg.metrics.port == 0
    [stream] = cfg.streams
    assert (stream.stream_id, stream.url, stream.read_timeout) == ("lobby", "rtsp://192.0.2.1/live", 3.0)


@pytest.mark.parametrize(
    "raw, message",
    [
        ({"runner": {"max_bach": 4}}, r"\[runner\]: unknown field 'max_bach'; valid: \['max_batch'"),
        ({"runner": {"max_batch": "4"}}, r"\[runner\] max_batch: expected int, got '4'"),
        ({"runner": {"max_batch": 0}}, r"max_batch must be in \[1, 256\], got 0"),
        ({"verdict": {"enter_fake": 0.1, "leave_fake": 0.3}}, "leave_fake <= enter_fake"),
        ({"verdict": {"enter_fake": 1.5}}, r"enter_fake must be in \[0, 1\], got 1.5"),
        ({"models": {"threads": 1.5}}, r"threads: expected int, got 1.5"),
        ({"sinks": {"redis": 6379}}, r"redis: expected str, got 6379"),
        ({"streams": [{"url": "a.mp4"}]}, r"#1: missing field 'id'"),
        ({"streams": [{"id": "a", "url": "a.mp4"}, {"id": "a", "url": "b.mp4"}]}, r"\['a'\] appear more than once"),
        ({"streams": {"id": "a"}}, r"array of tables"),
        ({"camera": {}}, r"unknown section\(s\) \['camera'\]"),
        # inf and nan are valid TOML (and JSON, in the control hash): max_wait_ms = inf and drain_seconds = nan
        # crashed the stage loop, a negative idle_wait made it spin
        ({"runner": {"max_wait_ms": float("inf")}}, r"\[runner\] max_wait_ms: expected a finite number, got inf"),
        ({"runner": {"drain_seconds": float("nan")}}, r"drain_seconds: expected a finite number, got nan"),
        ({"runner": {"idle_wait": -0.05}}, r"idle_wait must be in \(0, 1\] seconds, got -0.05"),
        ({"streams": [{"id": "a", "url": "rtsp://x/y", "read_timeout": float("inf")}]}, r"expected a finite number"),
        ({"sinks": {"redis_ttl": -1.0}}, r"sinks.redis_ttl must be in \[0, 3.1536e\+08\] seconds, got -1.0"),
        ({"sources": {"allow_schemes": ["rtsp", "file"]}}, r"not the 'file' scheme"),
        ({"sources": {"max_pixels": 10}}, r"\[sources\] max_pixels must be in \[4096, 2.68435e\+08\], got 10"),
    ],
)
def test_bad_fields_are_named(raw, message):
    with pytest.raises(ConfigError, match=message):
        parse_config(raw)


def test_unreadable_files(tmp_path: Path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "none.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[runner\nmax_batch = 1")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(bad)


def test_every_number_field_declares_its_range():
    """A numeric config field without a declared range would take nan, inf or 2**63 from a file or a flag."""
    for cls in [*SECTIONS.values(), SourceSpec, TrackerConfig, Shard]:
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            if {int, float} & {hints[f.name], *typing.get_args(hints[f.name])}:
                assert range_of(cls, f.name) is not None, f"{cls.__name__}.{f.name} declares no range"


# What issue 23 found accepted: detection switched off (FAKE -> NO_FACE, rc 0), a hang, every XADD refused, a
# traceback. The file's key and the flag (where there is one) meet the same declared range.
OUT_OF_RANGE = [
    ("models", "det_conf", float("nan"), "--det-conf", r"models.det_conf must be in \(0, 1\], got nan"),
    ("models", "det_conf", -1.0, "--det-conf", r"models.det_conf must be in \(0, 1\], got -1.0"),
    ("schedule", "latency_budget", float("inf"), "--latency-budget", r"latency_budget must be in \(0, 60\] seconds"),
    ("sinks", "redis_maxlen", 10**20 // 10**2, None, r"sinks.redis_maxlen must be in \[1, 1e\+08\]"),
    ("sinks", "redis_ttl", 1e18, None, r"sinks.redis_ttl must be in \[0, 3.1536e\+08\] seconds, got 1e\+18"),
    ("annotate", "keyframe_every", 2**31, None, r"annotate.keyframe_every must be in \[1, 600\], got 2147483648"),
    ("runner", "max_wait_ms", float("inf"), "--max-wait-ms", r"max_wait_ms must be in \[0, 1000\] ms"),
    ("runner", "max_wait_ms", -1.0, "--max-wait-ms", r"max_wait_ms must be in \[0, 1000\] ms, got -1.0"),
    ("metrics", "port", 70000, "--metrics-port", r"metrics.port must be in \[0, 65535\], got 70000"),
]


@pytest.mark.parametrize(("section", "key", "value", "flag", "message"), OUT_OF_RANGE)
def test_out_of_range_values_are_refused_from_the_file_and_the_flag_alike(section, key, value, flag, message, capsys):
    if isinstance(value, float) and not math.isfinite(value):
        message = r"expected a finite number"  # TOML's inf and nan stop at the type check, before the range
    with pytest.raises(ConfigError, match=message):
        parse_config({section: {key: value}})
    if flag is None:
        return
    with pytest.raises(SystemExit) as stop:
        main(["watch", "demo.mp4", flag, repr(value)])
    err = capsys.readouterr().err.strip()
    assert stop.value.code == EXIT_USAGE and len(err.splitlines()) == 1, err
    assert f"argument {flag}: must be in" in err and repr(value) in err, err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["status", "--redis", "redis://127.0.0.1:1", "--interval", "nan"], "argument --interval: must be in [0.05,"),
        (["status", "--redis", "redis://127.0.0.1:1", "--interval", "1e-300"], "argument --interval: must be in"),
        (["status", "--redis", "redis://127.0.0.1:1", "--stale", "inf"], "argument --stale: must be in (0, 86400]"),
        (["watch", "--shard", "0/1000000000"], "shard 0/1000000000 is out of range: expected I/N with 1 <= N <= 4096"),
        (["watch", "--max-batch", "1.5"], "argument --max-batch: expected an integer, got '1.5'"),
        (["health", "--max-age", "-1"], "argument --max-age: must be in (0, 86400] seconds"),
    ],
)
def test_flags_that_would_spin_hang_or_switch_work_off_are_usage_errors(argv, message, capsys):
    """``status --interval 1e-300`` was a busy loop, ``--shard 0/1000000000`` a hang (a hash per worker)."""
    with pytest.raises(SystemExit) as stop:
        main(argv)
    err = capsys.readouterr().err
    assert stop.value.code == EXIT_USAGE and message in err, err
