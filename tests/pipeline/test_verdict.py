"""The stream verdict: hysteresis and a minimum duration, so a verdict does not flicker."""

from __future__ import annotations

import pytest

from pipeline.messages import VerdictState as S
from pipeline.verdict import StreamVerdict, VerdictConfig


def states(scores, **cfg):
    v = StreamVerdict(VerdictConfig(**cfg))
    return [v.update(s)[0] for s in scores]


def test_unknown_until_enough_face_frames_then_by_threshold():
    assert states([0.1, 0.1, 0.1, 0.1], min_face_frames=3) == [S.UNKNOWN, S.UNKNOWN, S.REAL, S.REAL]
    assert states([0.9, 0.9, 0.9], min_face_frames=3) == [S.UNKNOWN, S.UNKNOWN, S.FAKE]


def test_switch_needs_confirm_frames_in_a_row():
    out = states([0.1] * 3 + [0.9, 0.9, 0.2, 0.9, 0.9, 0.9], min_face_frames=3, confirm_frames=3)
    assert out == [S.UNKNOWN, S.UNKNOWN, S.REAL, S.REAL, S.REAL, S.REAL, S.REAL, S.REAL, S.FAKE]


def test_hysteresis_keeps_fake_between_leave_and_enter():
    v = StreamVerdict(VerdictConfig(enter_fake=0.6, leave_fake=0.4, min_face_frames=1, confirm_frames=1))
    assert v.update(0.9) == (S.FAKE, True)
    assert [v.update(x)[0] for x in (0.55, 0.45, 0.5)] == [S.FAKE] * 3  # between the thresholds: stays
    assert v.update(0.39) == (S.REAL, True)
    assert v.update(0.55) == (S.REAL, False)  # below enter: stays REAL


def test_changed_is_reported_once():
    v = StreamVerdict(VerdictConfig(min_face_frames=1, confirm_frames=2))
    assert [v.update(x)[1] for x in (0.1, 0.9, 0.9, 0.9)] == [True, False, True, False]


def test_no_face_after_enough_faceless_frames_and_evidence_restarts():
    v = StreamVerdict(VerdictConfig(no_face_frames=3, min_face_frames=2))
    for x in (0.2, 0.2):
        v.update(x)
    assert [v.update(None)[0] for _ in range(3)] == [S.REAL, S.REAL, S.NO_FACE]
    assert v.score is None
    assert v.update(0.9)[0] == S.NO_FACE  # one face frame is not enough evidence
    assert v.update(0.9)[0] == S.FAKE


@pytest.mark.parametrize(
    "cfg, message",
    [
        ({"enter_fake": 0.3, "leave_fake": 0.5}, "leave_fake <= enter_fake"),
        ({"leave_fake": float("nan")}, r"leave_fake must be in \[0, 1\], got nan"),
        ({"confirm_frames": 0}, r"confirm_frames must be in \[1, 10000\], got 0"),
    ],
)
def test_invalid_config_names_the_field(cfg, message):
    with pytest.raises(ValueError, match=message):
        VerdictConfig(**cfg)


def test_unset_thresholds_come_from_the_classifiers_calibration_else_the_fallback():
    from pipeline.verdict import FALLBACK

    calibrated = {"fake": 0.5, "verdict_enter": 0.82, "verdict_leave": 0.55, "verdict_frames": 8.0}
    cfg = VerdictConfig().resolved(calibrated)
    assert (cfg.enter_fake, cfg.leave_fake, cfg.confirm_frames) == (0.82, 0.55, 8)
    assert isinstance(cfg.confirm_frames, int)
    assert VerdictConfig().source(calibrated) == "the classifier's calibration"
    own = VerdictConfig(enter_fake=0.7, confirm_frames=3)
    assert own.resolved(calibrated) == VerdictConfig(enter_fake=0.7, leave_fake=0.55, confirm_frames=3)
    assert VerdictConfig(enter_fake=0.5).resolved(calibrated).leave_fake == 0.5  # capped: leave <= enter
    assert VerdictConfig(leave_fake=0.9).resolved(calibrated).enter_fake == 0.9
    bare = VerdictConfig().resolved({"fake": 0.5})  # an uncalibrated classifier
    assert (bare.enter_fake, bare.leave_fake, bare.confirm_frames) == tuple(FALLBACK.values())
    assert "run dfwatch-train calibrate" in VerdictConfig().source({"fake": 0.5})
    assert VerdictConfig(enter_fake=0.6, leave_fake=0.4, confirm_frames=5).source(None) == "the configuration"
    # a stream built from an unresolved config runs on the fallback
    assert StreamVerdict(VerdictConfig()).cfg.enter_fake == FALLBACK["enter_fake"]
