"""A classifier's ``min_face``: faces lower than it are tracked and published but never scored, so a stream
whose faces are all too small reads NO_FACE, never REAL or FAKE."""

from __future__ import annotations

import io
import json
import shutil
from pathlib import Path

import pytest

from engines import Classifier, Detector
from engines.errors import ManifestError
from pipeline.metrics import PrometheusObserver
from pipeline.processor import BatchProcessor
from pipeline.runner import Runner
from pipeline.sinks import JsonLinesSink
from pipeline.sources import SourceSpec


def _models(fast_models: Path, tmp_path: Path, min_face) -> Path:
    out = tmp_path / f"models-{min_face}"
    shutil.copytree(fast_models, out)
    manifest = out / "deepfake_classifier.onnx.json"
    raw = json.loads(manifest.read_text())
    raw["preprocess"]["min_face"] = min_face
    manifest.write_text(json.dumps(raw))
    return out


def _records(models: Path, clip: Path) -> list[dict]:
    out = io.StringIO()
    processor = BatchProcessor(
        Detector(models / "face_detector.onnx", conf=0.001, max_det=1), Classifier(models / "deepfake_classifier.onnx")
    )
    stats = Runner([SourceSpec("demo", str(clip))], processor, [JsonLinesSink(out)], PrometheusObserver()).run()
    assert stats.failed == []
    return [json.loads(line) for line in out.getvalue().splitlines()]


def test_faces_below_the_classifiers_min_face_are_tracked_not_scored(fast_models: Path, demo_clip, tmp_path):
    heights = [f["box"][3] - f["box"][1] for r in _records(fast_models, demo_clip.path) for f in r["faces"]]
    assert len(heights) == demo_clip.n_frames and min(heights) > 100  # the demo face, on every frame
    tall = _records(_models(fast_models, tmp_path, 50), demo_clip.path)  # below every face: all scored as before
    assert all(f["p_fake"] is not None for r in tall[5:] for f in r["faces"])
    assert {r["verdict"] for r in tall[5:]} <= {"REAL", "FAKE"}
    small = _records(_models(fast_models, tmp_path, int(max(heights)) + 1), demo_clip.path)  # above every face
    assert [len(r["faces"]) for r in small] == [1] * demo_clip.n_frames  # still found and tracked...
    assert all(f["p_fake"] is None and f["p_fake_last"] is None for r in small for f in r["faces"])  # ...not scored
    assert {r["score"] for r in small} == {None}  # no score: for the verdict, no face it can judge
    assert {r["verdict"] for r in small} == {"UNKNOWN", "NO_FACE"} and small[-1]["verdict"] == "NO_FACE"


@pytest.mark.parametrize("value", [-1, 12.5, "64", True])
def test_a_bad_min_face_in_the_manifest_is_refused(fast_models: Path, tmp_path, value):
    models = _models(fast_models, tmp_path, value)
    with pytest.raises(ManifestError, match=r"preprocess.min_face must be a whole number of pixels >= 0"):
        Classifier(models / "deepfake_classifier.onnx")


def test_a_face_that_shrinks_below_min_face_loses_its_score_until_it_grows_back(fast_models: Path, tmp_path):
    import numpy as np

    from pipeline.messages import Batch, Faces, Frame
    from pipeline.stages import TrackStage

    stage = TrackStage(Classifier(_models(fast_models, tmp_path, 100) / "deepfake_classifier.onnx"))
    image = np.random.default_rng(0).integers(0, 255, (320, 320, 3), np.uint8)
    frames = iter(range(10))

    def step(side: float) -> dict:  # one frame, its face detected as a centred square of ``side`` px
        box = np.array([[160 - side / 2, 160 - side / 2, 160 + side / 2, 160 + side / 2]], np.float32)
        frame = Frame("s", next(frames), None, 0.0, image)
        batch = Batch((frame,), 0.0, np.array([True]), 1, faces=Faces.of(box, np.ones(1, np.float32), np.zeros(1)))
        (face,) = stage.process(batch).faces.to_records()
        return face

    large = step(140)
    assert large["p_fake"] is not None  # scored
    shrunk = step(90)  # the same track (IoU 0.41), now below min_face
    assert shrunk["track"] == large["track"] and shrunk["p_fake"] is None and shrunk["p_fake_last"] is None
    back = step(140)
    assert back["track"] == large["track"] and back["p_fake"] is not None  # scored again, its EMA going on
