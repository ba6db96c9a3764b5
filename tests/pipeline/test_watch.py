"""`dfwatch watch` end to end: real video decoded by PyAV, ONNX Runtime models, JSON lines, a real Redis."""

from __future__ import annotations

import json
from pathlib import Path

import av
import pytest

from pipeline.sinks import STATE_KEY, STREAM_KEY, STREAMS_KEY
from tests._rtsp import free_port
from tests.conftest import REDIS_URL

FIELDS = {
    "stream",
    "frame",
    "pts",
    "capture_time",
    "faces",
    "score",
    "verdict",
    "changed",
    "detected",
    "latency_ms",
    "placeholder_models",
}
FACE_FIELDS = {"track", "box", "det_score", "p_fake", "p_fake_last"}


def test_demo_clip_end_to_end_with_redis(dfwatch, demo_clip, redis_client, stream_id):
    key = STREAM_KEY.format(stream=stream_id)
    try:
        run = dfwatch("watch", f"{stream_id}={demo_clip.path}", "--redis", REDIS_URL)
        assert run.returncode == 0, run.stderr
        records = run.records
        assert [r["frame"] for r in records] == list(range(demo_clip.n_frames))
        assert all(r.keys() == FIELDS and r["stream"] == stream_id and r["placeholder_models"] for r in records)
        assert [r["pts"] for r in records] == pytest.approx([i / demo_clip.fps for i in range(demo_clip.n_frames)])
        faces = [f for r in records for f in r["faces"]]
        assert len(faces) == 2 * demo_clip.n_frames  # --max-faces 2: crop and classify ran on every frame
        assert all(f.keys() == FACE_FIELDS and 0 <= f["p_fake"] <= 1 and len(f["box"]) == 4 for f in faces)
        assert all(r["score"] == max(f["p_fake"] for f in r["faces"]) and r["detected"] for r in records)
        assert {r["verdict"] for r in records} <= {"UNKNOWN", "REAL", "FAKE", "NO_FACE"}
        assert records[0]["verdict"] == "UNKNOWN" and records[-1]["verdict"] in {"REAL", "FAKE"}
        assert all(
            {"decode", "queue", "detect", "classify", "capture_to_publish"} <= r["latency_ms"].keys() for r in records
        )
        # Redis holds one stream entry per verdict, identical to what stdout printed.
        entries = redis_client.xrange(key)
        assert [json.loads(fields["json"]) for _, fields in entries] == records
        assert [fields["verdict"] for _, fields in entries] == [r["verdict"] for r in records]
        state = redis_client.hgetall(STATE_KEY.format(stream=stream_id))
        assert json.loads(state["json"]) == records[-1] and state["verdict"] == records[-1]["verdict"]
        assert redis_client.sismember(STREAMS_KEY, stream_id)
        assert "dfwatch summary  (PLACEHOLDER models" in run.stderr and "Traceback" not in run.stderr
    finally:
        redis_client.delete(key, STATE_KEY.format(stream=stream_id))
        redis_client.srem(STREAMS_KEY, stream_id)


def test_real_video_through_the_whole_path(dfwatch, real_video: Path):
    with av.open(str(real_video)) as container:
        declared = container.streams.video[0].frames
    run = dfwatch("watch", f"real={real_video}")
    assert run.returncode == 0, run.stderr
    assert len(run.records) == declared > 0
    assert all(len(r["faces"]) == 2 for r in run.records)


def test_bad_streams_do_not_stop_the_others(dfwatch, demo_clip, tmp_path: Path):
    corrupt = tmp_path / "corrupt.mp4"
    data = demo_clip.path.read_bytes()
    keep = len(data) // 3
    garbage = (bytes(range(256)) * (len(data) // 256 + 1))[: len(data) - keep]
    corrupt.write_bytes(data[:keep] + garbage)  # a valid index and first third, then garbage
    run = dfwatch("watch", f"good={demo_clip.path}", f"gone={tmp_path / 'missing.mp4'}", f"corrupt={corrupt}")
    assert run.returncode == 1
    assert sum(r["stream"] == "good" for r in run.records) == demo_clip.n_frames
    assert 0 < sum(r["stream"] == "corrupt" for r in run.records) < demo_clip.n_frames
    errors = sorted(run.error_lines, key=lambda line: "corrupt" in line)
    assert len(errors) == 2 and "stream 'gone'" in errors[0] and "stream 'corrupt'" in errors[1], run.stderr


def _bad_inputs(tmp_path: Path, demo_clip) -> dict[str, tuple[str, str]]:
    text = tmp_path / "notes.mp4"
    text.write_text("this is not a video\n" * 100)
    return {
        "missing file": (str(tmp_path / "nope.mp4"), "no such file"),
        "not a video": (str(text), "cannot open"),
        "directory": (str(tmp_path), "is a directory"),
        "unreachable rtsp": (f"rtsp://127.0.0.1:{free_port()}/live", "cannot open"),
    }


@pytest.mark.parametrize("case", ["missing file", "not a video", "directory", "unreachable rtsp"])
def test_bad_input_gives_one_clear_error_line(dfwatch, demo_clip, tmp_path: Path, case: str):
    source, reason = _bad_inputs(tmp_path, demo_clip)[case]
    run = dfwatch("watch", source, "--open-timeout", "5", "--no-reconnect")
    assert run.returncode == 1
    assert run.records == []
    assert len(run.error_lines) == 1, run.stderr
    assert source in run.error_lines[0] and reason in run.error_lines[0]
    assert "Traceback" not in run.stderr


def test_truncated_video_yields_verdicts_for_the_frames_that_decoded(dfwatch, demo_clip, tmp_path: Path):
    cut = tmp_path / "cut.mp4"
    data = demo_clip.path.read_bytes()
    cut.write_bytes(data[: len(data) * 6 // 10])
    run = dfwatch("watch", f"cut={cut}")
    assert run.returncode == 1
    assert 0 < len(run.records) < demo_clip.n_frames
    assert [r["frame"] for r in run.records] == list(range(len(run.records)))
    assert len(run.error_lines) == 1 and str(cut) in run.error_lines[0]
    assert f"of {demo_clip.n_frames} frames" in run.error_lines[0] or "broke after" in run.error_lines[0]
    assert "Traceback" not in run.stderr


def test_debug_shows_the_traceback(dfwatch, tmp_path: Path):
    run = dfwatch("--debug", "watch", str(tmp_path / "nope.mp4"))
    assert run.returncode == 1 and "Traceback" in run.stderr


@pytest.mark.parametrize(
    "args, message",
    [
        (["watch", "--frobnicate"], "unrecognized arguments: --frobnicate"),
        (["watch", "--rtsp-transport", "sctp"], "invalid choice: 'sctp'"),
        (["launch"], "invalid choice: 'launch'"),
    ],
)
def test_usage_errors_are_one_line_with_exit_code_2(dfwatch, args, message):
    run = dfwatch(*args, models=False)
    assert run.returncode == 2
    assert run.stderr.count("\n") == 1 and message in run.stderr and "see dfwatch" in run.stderr


def test_missing_models_say_how_to_rebuild(dfwatch, demo_clip, tmp_path: Path):
    run = dfwatch("watch", str(demo_clip.path), "--models", str(tmp_path), "--metrics-port", "0", models=False)
    assert run.returncode == 1
    assert len(run.error_lines) == 1 and "face_detector.onnx does not exist" in run.error_lines[0]
    assert "dfwatch-train" in run.error_lines[0] and "Traceback" not in run.stderr


def test_unreachable_redis_is_a_clear_error(dfwatch, demo_clip):
    run = dfwatch("watch", str(demo_clip.path), "--redis", f"redis://127.0.0.1:{free_port()}/0")
    assert run.returncode == 1 and run.records == []
    assert len(run.error_lines) == 1 and "Redis at redis://127.0.0.1:" in run.error_lines[0]


def test_config_file_with_flag_overrides_and_detect_every(dfwatch, demo_clip, tmp_path: Path):
    config = tmp_path / "streams.toml"
    config.write_text(
        f"""
[schedule]
detect_every = 5
max_detect_every = 5
[[streams]]
id = "fromconfig"
url = "{demo_clip.path}"
"""
    )
    run = dfwatch("watch", "--config", str(config), "--detect-every", "2", "--max-detect-every", "2")
    assert run.returncode == 0, run.stderr
    records = run.records
    assert {r["stream"] for r in records} == {"fromconfig"} and len(records) == demo_clip.n_frames
    assert [r["detected"] for r in records[:6]] == [True, False] * 3  # the flag overrode detect_every = 5
    assert all(len(r["faces"]) == 2 for r in records)  # the tracker carries faces between detections
    carried = records[1]["faces"]
    assert [f["box"] for f in carried] == [f["box"] for f in records[0]["faces"]]


def test_config_errors_name_the_field(dfwatch, tmp_path: Path):
    config = tmp_path / "bad.toml"
    config.write_text("[runner]\nmax_bach = 4\n")
    run = dfwatch("watch", "--config", str(config))
    assert run.returncode == 1
    assert len(run.error_lines) == 1 and "unknown field 'max_bach'; valid: ['max_batch'" in run.error_lines[0]


def test_debug_tracebacks_and_errors_never_show_a_camera_password(dfwatch, tmp_path: Path):
    """A URL with a password in an exception, a traceback or a log line from any call site is redacted by the log
    formatter (engines.urls.RedactingFormatter), not by each call site (issue 23: --debug printed it)."""
    from tests._rtsp import free_port

    url = f"rtsp://admin:s3cretpw@127.0.0.1:{free_port()}/cam?token=t0k3n"  # nothing listens: refused at once
    for flags in (["--debug"], []):
        run = dfwatch(*flags, "watch", f"cam={url}", "--no-reconnect", "--open-timeout", "2")
        assert run.returncode == 1, run.stderr
        assert "s3cretpw" not in run.stderr and "t0k3n" not in run.stderr
        assert "rtsp://admin:***@127.0.0.1" in run.stderr
        assert ("Traceback" in run.stderr) == bool(flags)


def test_the_redacting_formatter_covers_exception_text():
    import logging
    import sys

    from engines.urls import RedactingFormatter, redact_text

    text = "open http://u:pw@h/x?sig=abc failed\nnext line"
    assert redact_text(text) == "open http://u:***@h/x?sig=*** failed\nnext line"
    try:
        raise ValueError("cannot open rtsp://admin:hunter2@cam.local/stream")
    except ValueError:
        record = logging.LogRecord("x", logging.ERROR, __file__, 1, "lost %s", ("rtsp://a:pw2@h",), sys.exc_info())
    text = RedactingFormatter("%(message)s").format(record)
    assert "hunter2" not in text and "pw2" not in text and "Traceback" in text and "admin:***@cam.local" in text
