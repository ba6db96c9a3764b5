"""trainer.pack.conditions: a real clip as a broadcast chain delivers it (compressed, rescaled, sharpened, denoised),
written by PyAV and decoded back, for counting false alerts under those conditions."""

from __future__ import annotations

import av
import cv2
import numpy as np
import pytest

from tests.conftest import SHARED_DATA
from tests.trainer._realtree import NEEDS_SHARED_DATA
from trainer.pack import conditions, holdout

pytestmark = NEEDS_SHARED_DATA
CLIP = SHARED_DATA / "real_videos/liveportrait_examples/driving_d1.mp4"  # 16 frames, 512x512, a real face


def _frames(path) -> np.ndarray:
    with av.open(str(path)) as c:
        return np.stack([f.to_ndarray(format="rgb24") for f in c.decode(video=0)])  # (n, H, W, 3)


def _detail(frames: np.ndarray) -> float:
    grey = [cv2.cvtColor(f, cv2.COLOR_RGB2GRAY) for f in frames]
    return float(np.mean([cv2.Laplacian(g, cv2.CV_64F).var() for g in grey]))


def test_every_condition_keeps_every_frame_and_changes_the_detail_as_named(tmp_path):
    source = _frames(CLIP)
    out = {c: _frames(conditions.write_condition(CLIP, tmp_path / f"{c}.mp4", c)) for c in conditions.CONDITIONS}
    assert all(len(f) == len(source) for f in out.values())
    assert out["small"].shape[1:3] == (306, 306)  # 0.6 x 512, even
    assert all(out[c].shape[1:3] == (512, 512) for c in ("crf35", "crf18", "sharpen", "denoise"))
    base = _detail(source)
    assert _detail(out["sharpen"]) > 1.5 * base
    assert _detail(out["denoise"]) < base and _detail(out["crf18"]) < 0.7 * base and _detail(out["crf35"]) < base
    # the picture is the same scene: mean absolute difference small against the source
    assert np.abs(out["crf35"].astype(int) - source).mean() < 8


def test_variants_are_written_once_and_named_by_clip_and_condition(tmp_path):
    made = conditions.variants([CLIP], tmp_path, conditions=("crf35", "small"))
    assert sorted(made.values()) == ["driving_d1.mp4:crf35", "driving_d1.mp4:small"]
    stamps = {p: p.stat().st_mtime_ns for p in made}
    again = conditions.variants([CLIP], tmp_path, conditions=("crf35", "small"))
    assert again == made and all(p.stat().st_mtime_ns == stamps[p] for p in again)  # kept, not rewritten
    with pytest.raises(ValueError, match=r"unknown broadcast condition 'vhs'; valid: \['crf35', 'crf18'"):
        conditions.write_condition(CLIP, tmp_path / "x.mp4", "vhs")


def test_broadcast_set_is_the_held_out_real_clips_under_every_condition(tmp_path, monkeypatch):
    written = []

    def fake_write(src, dst, condition):  # the listing is under test here, not the encoder (tested above)
        written.append((src, condition))
        dst.parent.mkdir(parents=True, exist_ok=True)
        dst.write_bytes(b"x")

    monkeypatch.setattr(conditions, "write_condition", fake_write)
    real = holdout.clips("real_clips", SHARED_DATA, tmp_path)
    broadcast = holdout.clips("real_broadcast", SHARED_DATA, tmp_path)
    assert len(broadcast) == len(real) * len(conditions.CONDITIONS) and all(c.label == 0 for c in broadcast)
    assert {src for src, _ in written} == {c.path for c in real}
    cal_real, _ = holdout.calibration_clips(SHARED_DATA, tmp_path)
    plain, _ = holdout.calibration_clips(SHARED_DATA)
    assert len(cal_real) == len(plain) * (1 + len(conditions.CONDITIONS))
    assert not {c.path for c in broadcast} & set(cal_real)  # the val clips' variants, never the reported ones
