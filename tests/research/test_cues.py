"""Training-free swap cues (research/cues.py): what each one measures, and the script that measures them on
held-out real fakes."""

from __future__ import annotations

import json
import subprocess
import sys

import cv2
import numpy as np
import pytest

from research.cues import CUES, Cue
from tests.conftest import ROOT, SHARED_DATA
from trainer.errors import TrainerError


def _texture(seed: int = 0, size: int = 128) -> np.ndarray:
    """(size, size, 3) uint8 noise: energy in every octave, as a sharp real face has."""
    rng = np.random.default_rng(seed)
    return np.clip(128 + rng.normal(0, 30, (size, size, 3)), 0, 255).astype(np.uint8)


def test_both_cues_rise_for_a_face_without_its_finest_octave_and_only_the_slope_ignores_contrast():
    real = _texture()
    soft = cv2.GaussianBlur(real, (0, 0), 1.5)  # out of focus
    low = cv2.resize(cv2.resize(real, (64, 64), interpolation=cv2.INTER_AREA), (128, 128))
    generated = cv2.addWeighted(low, 2.0, cv2.GaussianBlur(low, (0, 0), 1.2), -1.0, 0)  # upscaled, then sharpened
    dim = (real.astype(np.float32) * 0.5 + 64).astype(np.uint8)  # the same face at half the contrast
    crops = np.stack([real, soft, generated, dim])
    sharp, slope = Cue("inner_sharpness", input_size=128)(crops), Cue("octave_slope", input_size=128)(crops)
    assert sharp[1] > sharp[0] + 1.0 and sharp[2] > sharp[0] + 1.0  # softer than the real face in the finest octave
    assert slope[1] > slope[0] + 1.0 and slope[2] > slope[0] + 1.0  # its finest octave weak against the next one
    assert sharp[3] > sharp[0] + 0.5  # a dimmer real face looks softer to the sharpness cue
    assert abs(slope[3] - slope[0]) < 0.05  # but not to the slope, a ratio of two octaves
    with pytest.raises(TrainerError, match=r"unknown cue 'blur'; valid: \['inner_sharpness', 'octave_slope', 'mouth"):
        Cue("blur")


def test_cues_script_runs_from_the_repository_root_and_names_a_bad_cue():
    script = [sys.executable, "research/cues.py"]
    proc = subprocess.run([*script, "--help"], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert proc.returncode == 0 and "--sets" in proc.stdout, proc.stderr[-2000:]
    proc = subprocess.run([*script, "--cues", "blur"], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert proc.returncode == 2 and "unknown cue 'blur'; valid: ['inner_sharpness'" in proc.stderr


def test_mouth_detail_rises_when_the_mouth_is_sharper_than_the_eyes_of_the_same_face():
    from research.cues import EYES, MOUTH

    real = _texture(1, 256)
    soft = cv2.GaussianBlur(real, (0, 0), 1.2)
    box = 256 / 1.5  # crop_faces' face box at margin 0.25, centred

    def rows(rect):
        return slice(int(128 + rect[2] * box), int(128 + rect[3] * box))

    lipsync = soft.copy()
    lipsync[rows(MOUTH)] = real[rows(MOUTH)]  # a soft face whose mouth was rendered again, sharp
    blurred_eyes = real.copy()
    blurred_eyes[rows(EYES)] = soft[rows(EYES)]
    cue = Cue("mouth_detail")(np.stack([real, soft, lipsync, blurred_eyes]))
    assert abs(cue[0]) < 0.1 and abs(cue[1]) < 0.1  # sharp or soft all over: the face is its own reference
    assert cue[2] > cue[0] + 0.5 and cue[3] > cue[0] + 0.5


@pytest.mark.skipif(not (SHARED_DATA / "labelled").is_dir(), reason=f"real media missing: {SHARED_DATA}")
def test_cues_script_measures_each_cue_on_the_served_crops(tmp_path):
    from engines import Detector
    from trainer.pack import realval

    out = tmp_path / "cues.json"
    cmd = [
        sys.executable,
        "research/cues.py",
        "--media",
        str(SHARED_DATA),
        "--sets",
        "dfdc_test",
        "--cache",
        str(tmp_path / "cache"),
        "--out",
        str(out),
        "--threads",
        "2",
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "dfdc_test" in proc.stderr and "face AUC / face AUC between faces of about the same size" in proc.stderr
    report = json.loads(out.read_text())
    detector = Detector(ROOT / "models" / "face_detector.onnx")
    faces = realval.load_set(
        "dfdc_test",
        SHARED_DATA,
        detector,
        detector_sha=detector.manifest.sha256,
        size=256,
        margin=0.25,
        cache=tmp_path / "cache",
    )
    for name in CUES:
        expected = realval.measure(faces, Cue(name)(faces.images))
        assert report[name]["dfdc_test"]["face_auc"] == pytest.approx(expected["face_auc"])
        assert report[name]["dfdc_test"]["face_auc_size_matched"] == pytest.approx(expected["face_auc_size_matched"])
        assert report[name]["dfdc_test"]["faces"] == len(faces) > 30
