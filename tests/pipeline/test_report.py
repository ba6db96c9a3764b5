"""`dfwatch report`: the chart's series match the verdict messages of the same run; no face, no chart."""

from __future__ import annotations

import json
import math
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np
import pytest

from pipeline.demo import make_demo_clip
from pipeline.report import clip_verdict, timeline
from pipeline.verdict import VerdictConfig

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _report(dfwatch, fast_models: Path, *args: str, faces: bool = True):
    extra = ["--models", str(fast_models)] + (["--det-conf", "0.001", "--max-faces", "2"] if faces else [])
    return dfwatch("report", *args, *extra, models=False)


def _grey_clip(path: Path, n: int = 10) -> Path:
    """A clip of flat grey frames: nothing a detector could call a face."""
    with av.open(str(path), "w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=25)
        stream.width, stream.height, stream.pix_fmt = 160, 128, "yuv420p"
        for i in range(n):
            frame = av.VideoFrame.from_ndarray(np.full((128, 160, 3), 128, np.uint8), format="rgb24")
            frame.pts, frame.time_base = i, Fraction(1, 25)
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    return path


def test_png_report_plots_exactly_what_the_verdicts_said(dfwatch, fast_models: Path, demo_clip, tmp_path: Path):
    out, verdicts = tmp_path / "out" / "demo.png", tmp_path / "verdicts.jsonl"
    run = _report(dfwatch, fast_models, str(demo_clip.path), "--out", str(out), "--verdicts", str(verdicts))
    assert run.returncode == 0, run.stderr
    records = [json.loads(line) for line in verdicts.read_text().splitlines()]
    assert [r["frame"] for r in records] == list(range(demo_clip.n_frames))
    assert out.read_bytes()[:8] == PNG_MAGIC
    assert cv2.imread(str(out)).shape == (850, 1200, 3)
    series = json.loads(out.with_suffix(".json").read_text())
    assert series["x"] == "pts" and series["frames"] == len(records)
    assert series["thresholds"] == {"enter_fake": 0.6, "leave_fake": 0.4}
    # The verdict timeline: contiguous runs that tile the clip, each holding one verdict.
    segs = series["segments"]
    assert segs[0]["start_frame"] == 0 and segs[-1]["end_frame"] == records[-1]["frame"]
    for a, b in zip(segs, segs[1:]):
        assert b["start_frame"] == a["end_frame"] + 1 and a["verdict"] != b["verdict"]
    for seg in segs:
        inside = records[seg["start_frame"] : seg["end_frame"] + 1]
        assert {r["verdict"] for r in inside} == {seg["verdict"]}
        assert (seg["start_t"], seg["end_t"]) == (inside[0]["pts"], inside[-1]["pts"])
    changes = [{"frame": r["frame"], "t": r["pts"], "verdict": r["verdict"]} for r in records if r["changed"]]
    assert series["changes"] == changes and changes
    # Each face track's curve: the track's smoothed score at every frame it was on screen.
    expected: dict[str, list] = {}
    for r in records:
        for f in r["faces"]:
            expected.setdefault(str(f["track"]), []).append((r["frame"], r["pts"], f["p_fake"]))
    assert {k: list(zip(v["frame"], v["t"], v["p_fake"])) for k, v in series["tracks"].items()} == expected
    assert series["score"]["score"] == [r["score"] for r in records]
    # Thumbnails: the highest-scoring faces, at most one per track and second.
    p_at = {(f["track"], r["frame"]): f["p_fake"] for r in records for f in r["faces"]}
    thumbs = series["thumbnails"]
    best: dict[tuple[int, int], float] = {}  # (track, second) -> its highest score
    for r in records:
        for f in (f for f in r["faces"] if f["p_fake"] is not None):
            key = (f["track"], math.floor(r["pts"]))
            best[key] = max(best.get(key, 0.0), f["p_fake"])
    assert [t["p_fake"] for t in thumbs] == sorted(best.values(), reverse=True)[:6]  # the top 6, best first
    assert all(p_at[(t["track"], t["frame"])] == t["p_fake"] for t in thumbs)
    assert len({(t["track"], math.floor(t["t"])) for t in thumbs}) == len(thumbs)
    # The summary line states the verdict and when it changed.
    verdict = "FAKE" if any(r["verdict"] == "FAKE" for r in records) else records[-1]["verdict"]
    (summary,) = run.stdout.splitlines()
    assert summary.startswith(f"{demo_clip.path.name}: verdict {verdict}")
    assert "verdict changes: " + ", ".join(f"{c['verdict']} at {c['t']:.2f} s" for c in changes) in summary
    assert "PLACEHOLDER" in summary


def test_html_report_inlines_the_chart(dfwatch, fast_models: Path, tmp_path: Path):
    clip = make_demo_clip(tmp_path / "short.mp4", real_seconds=0.2, fake_seconds=0.2, size=(320, 240))
    out = tmp_path / "short.html"
    run = _report(dfwatch, fast_models, str(clip.path), "--out", str(out))
    assert run.returncode == 0, run.stderr
    page = out.read_text()
    assert page.startswith("<!doctype html>") and "src='data:image/png;base64,iVBORw0KGgo" in page
    assert json.loads((tmp_path / "short.json").read_text())["frames"] == clip.n_frames


def test_a_clip_without_a_face_gets_no_chart_and_exit_3(dfwatch, fast_models: Path, tmp_path: Path):
    clip = _grey_clip(tmp_path / "grey.mp4")
    out = tmp_path / "grey.png"
    run = _report(dfwatch, fast_models, str(clip), "--out", str(out), faces=False)
    assert run.returncode == 3, run.stderr
    assert run.stdout.strip().startswith("grey.mp4: no face found in 10 frames")
    assert "no report written" in run.stdout and not out.exists() and not out.with_suffix(".json").exists()


def test_bad_input_is_one_clear_error(dfwatch, fast_models: Path, demo_clip, tmp_path: Path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    cases = {
        "missing clip": ([str(tmp_path / "nope.mp4")], f"clip {tmp_path / 'nope.mp4'}: no such file"),
        "bad suffix": ([str(demo_clip.path), "--out", str(tmp_path / "r.pdf")], "written as .png or .html"),
        "unwritable": ([str(demo_clip.path), "--out", str(blocker / "r.png")], "cannot write the report r.png in"),
    }
    for name, (args, message) in cases.items():
        run = _report(dfwatch, fast_models, *args)
        assert run.returncode == 1, name
        assert len(run.error_lines) == 1 and message in run.error_lines[0], (name, run.stderr)
        assert run.stdout == "" and "Traceback" not in run.stderr


def test_a_clip_that_breaks_off_is_reported_up_to_the_break_and_exits_1(
    dfwatch, fast_models: Path, demo_clip, tmp_path: Path
):
    data = demo_clip.path.read_bytes()
    keep = len(data) // 3
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(data[:keep] + bytes(range(256)) * ((len(data) - keep) // 256))  # index intact, then garbage
    out = tmp_path / "broken.png"
    run = _report(dfwatch, fast_models, str(broken), "--out", str(out))
    assert run.returncode == 1, run.stderr
    frames = json.loads(out.with_suffix(".json").read_text())["frames"]
    assert 0 < frames < demo_clip.n_frames and out.read_bytes()[:8] == PNG_MAGIC
    assert f"the clip broke off after {frames} frames" in run.stdout
    assert len(run.error_lines) == 1 and "stream 'broken'" in run.error_lines[0]


def _record(frame: int, verdict: str, faces=(), *, changed: bool = False, pts: float | None = 0.0) -> dict:
    faces = [{"track": t, "p_fake": p} for t, p in faces]
    score = max((p for _, p in faces if p is not None), default=None) if faces else None
    return {"frame": frame, "pts": pts, "faces": faces, "score": score, "verdict": verdict, "changed": changed}


def test_timeline_table():
    records = [
        _record(0, "UNKNOWN", [(1, None)], pts=None),
        _record(1, "UNKNOWN", [(1, 0.7)], pts=None),
        _record(2, "FAKE", [(1, 0.8), (2, 0.1)], changed=True, pts=None),
        _record(3, "FAKE", [], pts=None),
        _record(4, "REAL", [(2, 0.2)], changed=True, pts=None),
    ]
    s = timeline(records, verdict=VerdictConfig(enter_fake=0.7, leave_fake=0.3))
    assert s["x"] == "frame"  # no pts: frames on the x axis
    assert s["tracks"] == {
        "1": {"frame": [1, 2], "t": [1.0, 2.0], "p_fake": [0.7, 0.8]},
        "2": {"frame": [2, 4], "t": [2.0, 4.0], "p_fake": [0.1, 0.2]},
    }
    assert [(g["verdict"], g["start_frame"], g["end_frame"]) for g in s["segments"]] == [
        ("UNKNOWN", 0, 1),
        ("FAKE", 2, 3),
        ("REAL", 4, 4),
    ]
    assert s["changes"] == [{"frame": 2, "t": 2.0, "verdict": "FAKE"}, {"frame": 4, "t": 4.0, "verdict": "REAL"}]
    assert s["thresholds"] == {"enter_fake": 0.7, "leave_fake": 0.3} and s["faces"] == 5


@pytest.mark.parametrize(
    ("verdicts", "expected"),
    [([], "UNKNOWN"), (["UNKNOWN", "REAL"], "REAL"), (["REAL", "FAKE", "REAL"], "FAKE"), (["NO_FACE"], "NO_FACE")],
)
def test_clip_verdict_is_fake_if_ever_fake(verdicts, expected):
    assert clip_verdict([_record(i, v) for i, v in enumerate(verdicts)]) == expected


def test_no_progress_bar_noise_when_stderr_is_a_log_file(dfwatch, fast_models: Path, demo_clip, tmp_path: Path):
    """tqdm bars wrote carriage-return noise into log files when stderr was not a terminal."""
    run = _report(dfwatch, fast_models, str(demo_clip.path), "--out", str(tmp_path / "r.png"))
    assert run.returncode == 0, run.stderr
    assert "\r" not in run.stderr and "frame/s" not in run.stderr


def test_a_clip_name_with_terminal_escapes_is_printed_escaped(dfwatch, fast_models: Path, tmp_path: Path):
    """Issue 23 item 9: a clip name holding terminal escapes was printed raw (it could clear the screen or retitle
    the terminal); now it is shown as everywhere else, by engines.urls.printable."""
    evil = "evil\x1b[2J\x1b]0;owned\x07"
    clip = make_demo_clip(tmp_path / f"{evil}.mp4", real_seconds=0.2, fake_seconds=0.2, size=(320, 240))
    run = _report(dfwatch, fast_models, str(clip.path), "--out", str(tmp_path / "r.png"))
    assert run.returncode == 0, run.stderr
    assert run.stdout.startswith("evil\\x1b[2J\\x1b]0;owned\\x07.mp4: ")
    missing = _report(dfwatch, fast_models, str(tmp_path / f"gone{evil}.mp4"))
    assert missing.returncode == 1 and "gone" + "evil\\x1b[2J" in missing.stderr
    for text in (run.stdout, run.stderr, missing.stdout, missing.stderr):
        assert "\x1b" not in text and "\x07" not in text


@pytest.mark.parametrize("planted", ["r.png", "r.json", "verdicts.jsonl"])
def test_out_and_verdicts_never_write_through_a_symlink(
    dfwatch, fast_models: Path, demo_clip, tmp_path: Path, planted: str
):
    """Issue 23 item 9: `--out`, its series file and `--verdicts` followed symlinks and overwrote their targets;
    now each is refused with one line before the run, as the annotator refuses its files, and the target is kept."""
    precious = tmp_path / "precious"
    precious.write_text("keep me")
    (tmp_path / planted).symlink_to(precious)
    args = [str(demo_clip.path), "--out", str(tmp_path / "r.png"), "--verdicts", str(tmp_path / "verdicts.jsonl")]
    run = _report(dfwatch, fast_models, *args)
    assert run.returncode == 1, run.stderr
    assert len(run.error_lines) == 1 and f"{tmp_path / planted}" in run.error_lines[0], run.stderr
    assert "symbolic link" in run.error_lines[0] and "never writes through one" in run.error_lines[0]
    assert precious.read_text() == "keep me" and run.stdout == ""
