"""The TOML config: every field reaches its component; bad fields are named with the valid ones."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.config import load_config, parse_config
from pipeline.errors import ConfigError

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
        ({"runner": {"max_batch": 0}}, "max_batch must be at least 1"),
        ({"verdict": {"enter_fake": 0.1, "leave_fake": 0.3}}, "leave_fake <= enter_fake"),
        ({"verdict": {"enter_fake": 1.5}}, r"enter_fake must be a score in \[0, 1\], got 1.5"),
        ({"models": {"threads": 1.5}}, r"threads: expected int, got 1.5"),
        ({"sinks": {"redis": 6379}}, r"redis: expected str, got 6379"),
        ({"streams": [{"url": "a.mp4"}]}, r"#1: missing field 'id'"),
        ({"streams": [{"id": "a", "url": "a.mp4"}, {"id": "a", "url": "b.mp4"}]}, r"\['a'\] appear more than once"),
        ({"streams": {"id": "a"}}, r"array of tables"),
        ({"camera": {}}, r"unknown section\(s\) \['camera'\]"),
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
