"""The stream verdict: smoothing and hysteresis, so a verdict does not flicker."""

from __future__ import annotations

import pytest

from pipeline.messages import VerdictState as S
from pipeline.verdict import StreamVerdict, VerdictConfig


def run(scores, **cfg):
    v = StreamVerdict(VerdictConfig(**cfg))
    return [v.update(s) for s in scores]


def test_unknown_until_enough_face_frames_then_real():
    states = [s for s, _ in run([0.1, 0.1, 0.1, 0.1], min_face_frames=3)]
    assert states == [S.UNKNOWN, S.UNKNOWN, S.REAL, S.REAL]


def test_turns_fake_once_the_smoothed_score_crosses_enter():
    out = run([0.1] * 3 + [0.95] * 6, ema_alpha=0.5, enter_fake=0.6, min_face_frames=3)
    states = [s for s, _ in out]
    assert states[:4] == [S.UNKNOWN, S.UNKNOWN, S.REAL, S.REAL]  # ema 0.1 -> 0.525 after one 0.95
    assert states[4] == S.FAKE and out[4][1] is True  # ema 0.7375: the change is reported once
    assert all(s == S.FAKE and not changed for s, changed in out[5:])


def test_hysteresis_keeps_fake_between_leave_and_enter():
    v = StreamVerdict(VerdictConfig(ema_alpha=1.0, enter_fake=0.6, leave_fake=0.4, min_face_frames=1))
    assert v.update(0.9)[0] == S.FAKE
    assert [v.update(x)[0] for x in (0.55, 0.45, 0.5)] == [S.FAKE] * 3  # between the thresholds: stays
    assert v.update(0.39) == (S.REAL, True)
    assert v.update(0.55)[0] == S.REAL  # below enter: stays REAL


def test_no_face_after_enough_faceless_frames_and_evidence_restarts():
    v = StreamVerdict(VerdictConfig(no_face_frames=3, min_face_frames=2, ema_alpha=1.0))
    for x in (0.2, 0.2):
        v.update(x)
    assert [v.update(None)[0] for _ in range(3)] == [S.REAL, S.REAL, S.NO_FACE]
    assert v.score is None
    assert v.update(0.9)[0] == S.NO_FACE  # one face frame is not enough evidence
    assert v.update(0.9)[0] == S.FAKE


@pytest.mark.parametrize(
    "cfg, message",
    [({"ema_alpha": 0}, "ema_alpha"), ({"enter_fake": 0.3, "leave_fake": 0.5}, "leave_fake <= enter_fake")],
)
def test_invalid_config_names_the_field(cfg, message):
    with pytest.raises(ValueError, match=message):
        VerdictConfig(**cfg)
