"""dfwatch calibrate: thresholds replayed with the service's own state machine, so that no real stream alerts,
written into the classifier's manifest, where dfwatch watch reads them."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from pipeline.calibrate import calibrate, ever_fake, lowest_quiet_enter, read_series
from pipeline.cli import main
from pipeline.verdict import VerdictConfig


def _lines(stream: str, scores: list[float | None]) -> list[str]:
    return [json.dumps({"stream": stream, "frame": i, "score": s, "verdict": "REAL"}) for i, s in enumerate(scores)]


def test_quiet_threshold_is_where_the_state_machine_stops_alerting():
    series = [0.2] * 5 + [0.7] * 6 + [0.3] * 5  # six frames at 0.7
    assert lowest_quiet_enter(series, 5) == pytest.approx(0.7, abs=1e-3)  # at or above 0.7 five in a row: alert
    assert lowest_quiet_enter(series, 8) == pytest.approx(0.3, abs=1e-3)  # 8 in a row only at <= 0.3
    for frames in (5, 8):
        quiet = lowest_quiet_enter(series, frames)
        assert not ever_fake(series, VerdictConfig(enter_fake=quiet, leave_fake=0.0, confirm_frames=frames))
        assert ever_fake(series, VerdictConfig(enter_fake=quiet - 0.01, leave_fake=0.0, confirm_frames=frames))
    # the first decision after min_face_frames needs one frame only: a high third frame alerts at once
    assert lowest_quiet_enter([0.1, 0.1, 0.9, 0.1, 0.1], 12) == pytest.approx(0.9, abs=1e-3)
    assert lowest_quiet_enter([None] * 20, 5) == 0.0  # no face, never FAKE


def test_calibration_keeps_every_real_quiet_and_prefers_what_catches_fakes():
    real = [[0.1] * 10 + [0.5] * 6 + [0.1] * 10, [0.2] * 30]  # a 6-frame burst to 0.5
    fake = [[0.1] * 5 + [0.8] * 7 + [0.1] * 5, [0.3] * 3 + [0.62] * 20]
    result = calibrate(real, fake, margin=0.05)
    by_frames = {c["confirm_frames"]: c for c in result.candidates}
    assert by_frames[5]["quiet_enter"] == pytest.approx(0.5, abs=1e-3)  # the burst lasts 6 >= 5 frames
    assert by_frames[8]["quiet_enter"] == pytest.approx(0.2, abs=1e-3)  # 8 in a row: only the second clip's 0.2
    # 8 frames: enter 0.25 catches only the long fake (0.8 lasts 7 frames); 5 frames: enter 0.55 catches both
    assert by_frames[8]["fakes_caught"] == 1 and by_frames[5]["fakes_caught"] == 2
    assert result.confirm_frames == 5 and result.enter_fake == pytest.approx(0.55, abs=1e-3)
    assert result.fakes_caught == 2 and result.leave_fake == pytest.approx(0.4, abs=1e-3)
    assert calibrate(real, [fake[1]]).confirm_frames == 5  # a tie (both catch it): fewer frames, a faster alert
    cfg = VerdictConfig().resolved(result.thresholds())
    assert not any(ever_fake(s, cfg) for s in real)
    with pytest.raises(ValueError, match="at least one real clip"):
        calibrate([], fake)


def test_read_series_refuses_lines_that_are_not_verdicts():
    got = read_series(_lines("a", [0.1, None]) + _lines("b", [0.4]))
    assert got == {"a": [0.1, None], "b": [0.4]}
    from pipeline.errors import ConfigError

    with pytest.raises(ConfigError, match=r"x.jsonl line 2: not a dfwatch verdict line"):
        read_series(['{"stream": "a", "score": 0.1}', '{"frame": 3}'], where="x.jsonl")


def test_calibrate_command_writes_the_manifest_and_watch_uses_it(model_dir, tmp_path, demo_clip, capsys):
    from engines import Classifier
    from engines.manifest import load_manifest, sha256_file

    models = tmp_path / "models"
    shutil.copytree(model_dir, models)
    real, fake = tmp_path / "real.jsonl", tmp_path / "fake.jsonl"
    real.write_text("\n".join(_lines("cam", [0.2] * 30 + [0.45] * 3 + [0.2] * 10)) + "\n")
    fake.write_text("\n".join(_lines("swap", [0.9] * 40)) + "\n")
    classifier = models / "deepfake_classifier.onnx"
    before = sha256_file(classifier)
    argv = ["calibrate", "--real", str(real), "--fake", str(fake), "--classifier", str(classifier)]
    assert main([*argv, "--dry-run"]) == 0
    assert "verdict_enter" not in Classifier(classifier).manifest.thresholds
    assert main(argv) == 0
    manifest = Classifier(classifier).manifest  # loads: the artifact's sha256 still matches
    assert sha256_file(classifier) == before
    t = manifest.thresholds
    assert t["verdict_frames"] == 5 and t["verdict_enter"] == pytest.approx(0.25, abs=1e-3)  # 3 frames of 0.45 < 5
    assert manifest.training["calibration"]["real"] == [str(real)]
    # the torch reference of the same network, beside it, serves the same thresholds
    assert load_manifest(classifier.with_suffix(".pt2"), kind="classifier").thresholds == t
    capsys.readouterr()
    assert main(["watch", str(demo_clip.path), "--models", str(models), "--metrics-port", "0"]) == 0
    assert (
        "verdict: FAKE at 0.250 for 5 frames in a row, back to REAL at 0.100 (from the classifier's calibration)"
        in capsys.readouterr().err
    )
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    assert main(["calibrate", "--real", str(empty), "--classifier", str(classifier)]) == 1  # one error line
    assert main(["calibrate", "--real", str(Path(tmp_path / "missing.jsonl")), "--classifier", str(classifier)]) == 1
