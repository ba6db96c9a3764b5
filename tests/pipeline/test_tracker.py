"""The per-stream face tracker: IoU matching, track life and death, carried frames, score smoothing."""

from __future__ import annotations

import numpy as np
import pytest

from engines.boxes import iou_matrix
from pipeline.messages import Faces
from pipeline.tracker import FaceTracker, TrackerConfig


def box(x: float, y: float, size: float = 100) -> list[float]:
    return [x, y, x + size, y + size]


def on_screen(faces: Faces) -> dict[int, tuple[float, ...]]:
    """{track id: box} of the faces a tracker step returned."""
    return {t: tuple(b) for t, b in zip(faces.track_id.tolist(), faces.xyxy.tolist())}


def detect(tracker: FaceTracker, *boxes: list[float]):
    """One detection round; returns {track id: box} of the faces on screen."""
    xyxy = np.array(boxes, np.float32).reshape(-1, 4)  # (n, 4)
    return on_screen(tracker.update(xyxy, np.full(len(xyxy), 0.9, np.float32)))


@pytest.mark.parametrize(
    "a, b, expected",
    [
        ([0, 0, 10, 10], [0, 0, 10, 10], 1.0),  # identical
        ([0, 0, 10, 10], [20, 20, 30, 30], 0.0),  # disjoint
        ([0, 0, 10, 10], [10, 0, 20, 10], 0.0),  # touching edges
        ([0, 0, 10, 10], [5, 0, 15, 10], 50 / 150),  # half-shifted: inter 50, union 150
        ([0, 0, 10, 10], [2, 2, 6, 6], 16 / 100),  # contained
        ([0, 0, 0, 0], [0, 0, 0, 0], 0.0),  # degenerate: empty union is 0, not nan
    ],
)
def test_iou_matrix_hand_checked(a, b, expected):
    assert iou_matrix(np.array([a]), np.array([b]))[0, 0] == pytest.approx(expected, abs=1e-6)


def test_iou_matrix_is_all_pairs():
    a = np.array([[0, 0, 10, 10], [5, 0, 15, 10]], np.float32)  # (2, 4)
    b = np.array([[0, 0, 10, 10], [20, 20, 30, 30], [5, 0, 15, 10]], np.float32)  # (3, 4)
    expected = [[1, 0, 1 / 3], [1 / 3, 0, 1]]
    np.testing.assert_allclose(iou_matrix(a, b), expected, atol=1e-6)


@pytest.mark.parametrize("n, m", [(0, 3), (2, 0), (0, 0)])
def test_iou_matrix_empty_inputs(n, m):
    out = iou_matrix(np.zeros((n, 4)), np.zeros((m, 4)))
    assert out.shape == (n, m) and out.dtype == np.float32


def test_a_face_moving_a_few_pixels_per_round_keeps_its_id():
    tracker = FaceTracker()
    ids = [list(detect(tracker, box(100 + 5 * i, 50 + 3 * i))) for i in range(10)]
    assert ids == [[0]] * 10
    (track,) = tracker.tracks
    assert track.box == (145, 77, 245, 177) and track.hits == 10 and track.age == 9


def test_two_faces_crossing_apart_keep_their_ids():
    tracker = FaceTracker()
    assert detect(tracker, box(200, 100), box(260, 100)) == {0: (200, 100, 300, 200), 1: (260, 100, 360, 200)}
    for step in range(1, 6):  # they drift apart 20 px a round; detections come in swapped order
        seen = detect(tracker, box(260 + 20 * step, 100), box(200 - 20 * step, 100))
        assert seen == {0: tuple(box(200 - 20 * step, 100)), 1: tuple(box(260 + 20 * step, 100))}


def test_a_new_face_gets_a_new_id_and_ids_are_never_reused():
    tracker = FaceTracker(TrackerConfig(max_missed=0))
    assert list(detect(tracker, box(0, 0))) == [0]
    assert list(detect(tracker, box(0, 0), box(500, 0))) == [0, 1]
    assert list(detect(tracker)) == []  # both dropped at once with max_missed=0
    assert tracker.tracks == []
    assert list(detect(tracker, box(0, 0))) == [2]  # same place as track 0, but a new face


@pytest.mark.parametrize("max_missed", [0, 1, 2, 5])
def test_a_face_survives_max_missed_rounds_and_is_dropped_after_one_more(max_missed):
    tracker = FaceTracker(TrackerConfig(max_missed=max_missed))
    detect(tracker, box(0, 0))
    for _ in range(max_missed):
        assert detect(tracker) == {}  # not on screen, but kept
    assert [(t.track_id, t.missed) for t in tracker.tracks] == [(0, max_missed)]
    assert list(detect(tracker, box(4, 4))) == [0]  # back in time: same id, missed reset
    assert tracker.tracks[0].missed == 0 and tracker.tracks[0].hits == 2

    for _ in range(max_missed + 1):
        detect(tracker)
    assert tracker.tracks == []
    assert list(detect(tracker, box(4, 4))) == [1]


def test_no_match_below_iou_threshold():
    tracker = FaceTracker(TrackerConfig(iou_match=0.5))
    detect(tracker, box(0, 0))
    assert list(detect(tracker, box(40, 0))) == [1]  # IoU 60/140 = 0.43 < 0.5: a new face
    assert [t.track_id for t in tracker.tracks] == [0, 1] and tracker.tracks[0].missed == 1


def test_update_rejects_columns_of_different_length():
    with pytest.raises(ValueError, match="2 boxes but det_score has 1"):
        FaceTracker().update(np.zeros((2, 4)), np.zeros(1))


def test_carry_keeps_boxes_and_counts_frames():
    tracker = FaceTracker(TrackerConfig(max_missed=3))
    detect(tracker, box(0, 0), box(300, 0))
    detect(tracker, box(2, 0))  # face 1 missed this round: tracked but not on screen
    before = {t.track_id: t for t in tracker.tracks}
    for k in range(1, 4):
        carried = on_screen(tracker.carry())
        assert list(carried.items()) == [(0, before[0].box)]
        for t in tracker.tracks:
            assert t.box == before[t.track_id].box
            assert (t.age, t.since_classified) == (before[t.track_id].age + k, before[t.track_id].since_classified + k)
            assert (t.hits, t.missed) == (before[t.track_id].hits, before[t.track_id].missed)


def test_carry_and_update_on_an_empty_tracker():
    tracker = FaceTracker()
    assert on_screen(tracker.carry()) == {} and detect(tracker) == {} and len(tracker.carry(classify_every=1)) == 0


@pytest.mark.parametrize(
    "every, due_frames",
    [(1, [0, 1, 2, 3, 4, 5, 6]), (2, [0, 2, 4, 6]), (3, [0, 3, 6]), (10, [0])],
)
def test_due_for_classification_respects_every(every, due_frames):
    tracker = FaceTracker()
    got = []
    for frame in range(7):
        if frame % 2 == 0:  # detect every other frame, carry in between
            faces = tracker.update(np.array([box(frame, 0)]), np.array([0.9]), classify_every=every)
        else:
            faces = tracker.carry(classify_every=every)
        due = faces.track_id[faces.due].tolist()
        if due:
            got.append(frame)
            tracker.add_scores(due, np.full(len(due), 0.5))
    assert got == due_frames


def test_due_lists_new_tracks_but_not_missed_ones():
    tracker = FaceTracker()
    detect(tracker, box(0, 0), box(300, 0))
    tracker.add_scores([0, 1], np.array([0.1, 0.2]))
    detect(tracker, box(0, 0), box(600, 0))  # 1 missed, 2 new
    for _ in range(4):
        tracker.carry()
    faces = tracker.carry(classify_every=3)
    assert faces.track_id[faces.due].tolist() == [0, 2]


def test_due_rejects_every_below_one():
    with pytest.raises(ValueError, match="every must be >= 1"):
        FaceTracker().carry(classify_every=0)


@pytest.mark.parametrize(
    "alpha, scores, expected",
    [
        (0.5, [0.2], 0.2),  # the first score initialises the average
        (0.5, [0.2, 1.0], 0.6),
        (0.5, [0.2, 1.0, 0.0], 0.3),
        (0.3, [1.0, 0.0], 0.7),
        (1.0, [0.2, 0.9], 0.9),  # alpha 1: no smoothing
    ],
)
def test_add_scores_ema(alpha, scores, expected):
    tracker = FaceTracker(TrackerConfig(ema_alpha=alpha))
    detect(tracker, box(0, 0))
    for p in scores:
        tracker.carry()
        tracker.add_scores([0], np.array([p]))
    (t,) = tracker.tracks
    assert t.score == pytest.approx(expected) and t.last_score == scores[-1] and t.since_classified == 0


def test_add_scores_touches_only_the_given_tracks():
    tracker = FaceTracker(TrackerConfig(ema_alpha=0.5))
    detect(tracker, box(0, 0), box(300, 0))
    tracker.add_scores([1], np.array([0.8]))
    tracker.add_scores([], np.zeros(0))  # nothing due: a no-op
    t0, t1 = tracker.tracks
    assert (t0.score, t0.last_score) == (None, None) and (t1.score, t1.last_score) == (0.8, 0.8)
    assert tracker.visible.score == pytest.approx(0.8)  # the frame score the decide stage reads


@pytest.mark.parametrize(
    "ids, p_fake, message",
    [
        ([0, 7], [0.1, 0.2], r"unknown track ids \[7\]; live ids are \[0\]"),
        ([0], [0.1, 0.2], "1 track ids but 2 scores"),
        ([0], [1.5], r"p_fake must lie in \[0, 1\]"),
        ([0], [float("nan")], r"p_fake must lie in \[0, 1\]"),
    ],
)
def test_add_scores_rejects_bad_input(ids, p_fake, message):
    tracker = FaceTracker()
    detect(tracker, box(0, 0))
    with pytest.raises(ValueError, match=message):
        tracker.add_scores(ids, np.array(p_fake))
    assert tracker.tracks[0].score is None  # nothing half-applied


@pytest.mark.parametrize(
    "cfg, message",
    [
        ({"iou_match": 0}, r"iou_match must be in \(0, 1\], got 0"),
        ({"iou_match": 1.5}, r"iou_match must be in \(0, 1\], got 1.5"),
        ({"max_missed": -1}, r"max_missed must be in \[0, 1000\], got -1"),
        ({"ema_alpha": 0}, r"ema_alpha must be in \(0, 1\], got 0"),
        ({"ema_alpha": 1.2}, r"ema_alpha must be in \(0, 1\], got 1.2"),
    ],
)
def test_invalid_config_names_the_field(cfg, message):
    with pytest.raises(ValueError, match=message):
        TrackerConfig(**cfg)


def test_the_closest_detection_wins_the_track():
    tracker = FaceTracker()
    detect(tracker, box(0, 0))
    seen = detect(tracker, box(30, 0), box(10, 0))  # IoU 70/130 and 90/110: both pass, the second is closer
    assert seen == {0: tuple(box(10, 0)), 1: tuple(box(30, 0))}
