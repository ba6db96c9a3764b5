"""trainer.pack.holdout (behind `dfwatch-train validate`): held-out real-fake sets scored as served, and whole videos
through the real `dfwatch watch` with the committed model pack: clip AUC, alerts and catches per set."""

from __future__ import annotations

import functools
import json

import av
import numpy as np
import pytest

from tests.conftest import ROOT, SHARED_DATA
from tests.trainer._realtree import NEEDS_SHARED_DATA
from trainer import realmedia
from trainer.pack import holdout, realval

pytestmark = NEEDS_SHARED_DATA
MODELS = ROOT / "models"


def test_pipeline_videos_runs_the_service_on_whole_files(demo_clip):
    run = holdout.pipeline_videos(MODELS, [demo_clip.path])
    summary, raw = run.summary, run.face_scores
    video = summary[str(demo_clip.path)]
    series = run.frame_scores[str(demo_clip.path)]
    assert len(series) == demo_clip.n_frames and max(s for s in series if s is not None) == video["max_stream_score"]
    assert video["frames"] == demo_clip.n_frames  # files: nothing dropped
    assert sum(video["verdicts"].values()) == video["frames"]
    assert video["face_scores"] == len(raw[str(demo_clip.path)]) > 0
    assert video["mean_p_fake"] == round(float(raw[str(demo_clip.path)].mean()), 4)
    assert video["ever_fake"] == ("FAKE" in video["verdicts"])
    assert (video["first_fake_frame"] is not None) == video["ever_fake"]
    assert 0.0 <= video["max_stream_score"] <= 1.0
    json.dumps(summary)  # the report is plain JSON


def test_deepfacelive_clips_are_cut_into_real_and_swapped_halves(tmp_path):
    halves = holdout.clips("deepfacelive", SHARED_DATA, tmp_path)
    assert len(halves) == 8 and sorted(c.label for c in halves) == [0] * 4 + [1] * 4
    src = realval.items("deepfacelive", SHARED_DATA)[0].path
    with av.open(str(src)) as c:
        width, frames = c.streams.video[0].codec_context.width, sum(1 for _ in c.decode(video=0))
    left = next(c for c in halves if c.name.endswith(f"{src.name}:left"))
    assert left.label == 0
    with av.open(str(left.path)) as c:
        assert c.streams.video[0].codec_context.width == width // 2 // 2 * 2
        assert sum(1 for _ in c.decode(video=0)) == frames


def test_real_clips_are_the_held_out_split_only(tmp_path):
    test = holdout.clips("real_clips", SHARED_DATA, tmp_path)
    expected = {s.rel for s in realmedia.real_videos(SHARED_DATA) if s.split == "test"}
    assert {c.name for c in test} == expected and all(c.label == 0 for c in test)
    with pytest.raises(Exception, match=r"unknown video set 'ff'; valid: \['celebdf_hard'"):
        holdout.clips("ff", SHARED_DATA, tmp_path)


def test_calibration_clips_stay_apart_from_the_reported_real_clips(tmp_path):
    real, fake = holdout.calibration_clips(SHARED_DATA)
    reported = {c.path for c in holdout.clips("real_clips", SHARED_DATA, tmp_path)}
    assert real and reported and not reported & set(real)
    assert {realmedia.clip_split(p.relative_to(SHARED_DATA).as_posix()) for p in real} == {"val"}
    assert len(fake) == 7 and all(p.parent.name == "fake" for p in fake)


def test_face_sets_score_the_served_crops(tmp_path):
    from engines import Classifier, Detector

    classifier, detector = Classifier(MODELS / "deepfake_classifier.onnx"), Detector(MODELS / "face_detector.onnx")
    result = holdout.face_sets(classifier, detector, SHARED_DATA, cache=tmp_path, sets=("dfdc_test",))
    m = result["dfdc_test"]
    served = {"size": classifier.input_size, "margin": classifier.crop_margin, "cache": tmp_path}
    load = functools.partial(
        realval.load_set, "dfdc_test", SHARED_DATA, detector, detector_sha=detector.manifest.sha256, **served
    )
    face_set = load(min_face=classifier.min_face)
    expected = realval.measure(face_set, classifier(face_set.images).astype(np.float64))
    assert m["face_auc"] == pytest.approx(expected["face_auc"]) and m["faces"] == len(face_set)
    assert m["role"] == "report" and m["missed_faces"] == face_set.missed and m["small_faces"] == face_set.small
    assert face_set.heights.min() >= classifier.min_face  # the pack's min_face: no face it would not score
    unfiltered = load(min_face=128)
    assert unfiltered.small > 0 and len(unfiltered) + unfiltered.small == len(face_set) + face_set.small
    assert m["face_auc_size_matched"] == pytest.approx(expected["face_auc_size_matched"])
    alerts = {"real_alerted": 0, "real_clips": 0, "fake_caught": 0, "fake_clips": 0}
    row = next(
        line
        for line in holdout.report_markdown({"face_sets": result, "video_sets": {}, "alerts": alerts}).splitlines()
        if line.startswith("| dfdc_test")
    )
    cells = [c.strip() for c in row.split("|")[1:-1]]  # set, role, faces, clips, face AUC, size-matched, clip, size
    assert cells[4:] == [f"{m[k]:.3f}" for k in ("face_auc", "face_auc_size_matched", "clip_auc", "size_alone_auc")]


def test_video_sets_count_alerts_and_catches_per_clip():
    result = holdout.video_sets(MODELS, SHARED_DATA, sets=("celebdf_hard",))
    m = result["celebdf_hard"]
    assert (m["clips"], m["fake_clips"]) == (14, 7)
    rows = m["rows"]
    assert all(r["frames"] == 24 for r in rows)  # every frame of every segment got a verdict
    reals, fakes = [r for r in rows if r["label"] == 0], [r for r in rows if r["label"] == 1]
    assert m["real_alert_rate"] == pytest.approx(np.mean([r["ever_fake"] for r in reals]))
    assert m["fake_catch_rate"] == pytest.approx(np.mean([r["ever_fake"] for r in fakes]))
    assert m["verdicts_right"] == sum(not r["ever_fake"] for r in reals) + sum(r["ever_fake"] for r in fakes)
    summary = holdout.alert_summary(result)
    assert summary["real_clips"] == 7 and summary["real_alerted"] == len(summary["real_alerted_clips"])
    markdown = holdout.report_markdown({"face_sets": {}, "video_sets": result, "alerts": summary})
    assert "| celebdf_hard | 7 / 7 |" in markdown
    assert f"{summary['real_alerted']} of {summary['real_clips']} real clips ever turned FAKE" in markdown


def test_calibrate_command_runs_the_service_in_process(tmp_path, demo_clip, monkeypatch):
    """`dfwatch-train calibrate` runs its clips through the service in this process (no `dfwatch watch` child, no
    verdict lines to replay) and writes what pipeline.calibrate makes of their stream scores into the manifest."""
    import shutil
    import subprocess

    from engines.manifest import load_manifest
    from pipeline.calibrate import calibrate
    from trainer.cli import build_parser, main

    models = tmp_path / "models"
    models.mkdir()
    for pattern in (
        "deepfake_classifier.onnx*",
        "deepfake_classifier.pt2*",
        "face_detector.onnx*",
        "face_detector.int8.*",
    ):
        for path in MODELS.glob(pattern):
            shutil.copy(path, models)
    monkeypatch.setattr(holdout, "calibration_clips", lambda media, work=None: ([demo_clip.path], [demo_clip.path]))

    build_parser()  # every command's module loaded first (h5py asks `uname -p` once, at import)

    def no_child(*args, **kwargs):
        raise AssertionError(f"a child process: {args}")

    monkeypatch.setattr(subprocess, "run", no_child)
    monkeypatch.setattr(subprocess, "Popen", no_child)
    argv = ["calibrate", "--models", str(models), "--media", str(tmp_path), "--work", str(tmp_path / "work")]
    assert main([*argv, "--margin", "0.02", "--threads", "2"]) == 0
    series = holdout.pipeline_videos(models, [demo_clip.path]).frame_scores[str(demo_clip.path)]
    expected = calibrate([series], [series], margin=0.02)
    for artifact in ("deepfake_classifier.onnx", "deepfake_classifier.pt2"):  # every build serves the same thresholds
        manifest = load_manifest(models / artifact, kind="classifier")  # (the .pt2 checked without torch)
        assert {k: manifest.thresholds[k] for k in expected.thresholds()} == expected.thresholds()
        assert manifest.training["calibration"]["real"] == [str(demo_clip.path)]
    assert not list(tmp_path.rglob("*.jsonl"))  # nothing replays verdict lines any more
