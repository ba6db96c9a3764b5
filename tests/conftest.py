"""Shared fixtures: placeholder model artifacts, generated and real video, a real Redis server."""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"
REDIS_URL = os.environ.get("DFWATCH_TEST_REDIS", "redis://127.0.0.1:6379/0")


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Placeholder detector and classifier exported by the trainer's own command, into a temp dir."""
    from trainer.cli import main

    out = tmp_path_factory.mktemp("models")
    assert main(["placeholders", "--out", str(out)]) == 0
    return out


@pytest.fixture(scope="session")
def demo_clip(tmp_path_factory: pytest.TempPathFactory):
    """A short demo clip (1 s real face, 1 s manipulated face)."""
    from pipeline.demo import make_demo_clip

    return make_demo_clip(tmp_path_factory.mktemp("demo") / "demo.mp4", real_seconds=1.0, fake_seconds=1.0)


@pytest.fixture(scope="session")
def real_video() -> Path:
    """A short real talking-head clip from ../shared/data (read only)."""
    path = SHARED_DATA / "real_videos" / "liveportrait_examples" / "driving_d1.mp4"
    assert path.is_file(), f"real test media missing: {path} (see ../shared/data/README.md)"
    return path


@pytest.fixture()
def redis_client():
    """A client of the real Redis server; fails (never skips) when none answers."""
    import redis

    client = redis.Redis.from_url(REDIS_URL, decode_responses=True, socket_connect_timeout=2)
    try:
        client.ping()
    except redis.RedisError as exc:
        pytest.fail(f"no Redis at {REDIS_URL} ({exc}); .ci/run starts one: redis-server --port 6379")
    yield client
    client.close()


@pytest.fixture()
def stream_id() -> str:
    """A stream id unique to the test, so Redis keys never collide between runs."""
    return f"t{uuid.uuid4().hex[:10]}"
