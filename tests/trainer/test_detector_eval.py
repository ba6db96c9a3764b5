"""detector_eval and the detector command's size choice: IoU, one-to-one recall matching, smallest good size."""

from __future__ import annotations

import math

import numpy as np
import pytest

from engines.boxes import iou_matrix as _iou_matrix
from trainer.commands.detector import choose_size
from trainer.detector.evaluate import RecallResult, match_recall


def iou_matrix(a, b):
    return _iou_matrix(a, b, dtype=np.float64)  # the detector measurement works in float64


def boxes(*spans: tuple[float, float], y1: float = 0.0, y2: float = 10.0) -> np.ndarray:
    """xyxy (n, 4) of boxes with the given x spans, all from y1 to y2 (so IoU is the 1-D overlap ratio)."""
    return np.array([[x1, y1, x2, y2] for x1, x2 in spans], np.float64).reshape(-1, 4)


NONE = np.zeros((0, 4))
SMALL_AND_BIG = np.vstack([boxes((0, 10)), boxes((20, 40), y2=20)])  # faces 10 and 20 px high


@pytest.mark.parametrize(
    ("a", "b", "expected"),
    [
        (boxes((0, 10)), boxes((0, 10)), [[1.0]]),  # identical
        (boxes((0, 10)), boxes((20, 30)), [[0.0]]),  # apart
        (boxes((0, 10)), boxes((10, 20)), [[0.0]]),  # touching edges
        (boxes((0, 10)), boxes((5, 15)), [[5 / 15]]),  # half overlap
        (np.array([[0, 0, 4, 4]]), np.array([[1, 1, 3, 3]]), [[4 / 16]]),  # one inside the other
        (np.array([[0, 0, 2, 2]]), np.array([[0, 0, 2, 1]]), [[0.5]]),  # different heights
        (
            boxes((0, 10), (3, 13)),
            boxes((3, 12), (-3.5, 7.5), (50, 60)),
            [[7 / 12, 7.5 / 13.5, 0], [9 / 10, 4.5 / 16.5, 0]],
        ),  # (2, 3) in order
        (NONE, boxes((0, 10), (5, 15)), np.zeros((0, 2))),
        (boxes((0, 10)), NONE, np.zeros((1, 0))),
        (NONE, NONE, np.zeros((0, 0))),
    ],
)
def test_iou_matrix(a, b, expected):
    iou = iou_matrix(a, b)
    expected = np.asarray(expected, np.float64).reshape(len(a), len(b))
    assert iou.shape == expected.shape
    np.testing.assert_allclose(iou, expected, atol=1e-12)
    np.testing.assert_allclose(iou_matrix(b, a), expected.T, atol=1e-12)  # symmetric


# (case, pairs, min_height, (faces, found, detections, true_detections))
RECALL_CASES = [
    ("hit", [(boxes((0, 10)), boxes((0, 10)))], 5, (1, 1, 1, 1)),
    ("miss far away", [(boxes((0, 10)), boxes((40, 50)))], 5, (1, 0, 1, 0)),
    ("IoU 1/3 is no match", [(boxes((0, 10)), boxes((5, 15)))], 5, (1, 0, 1, 0)),
    ("IoU exactly 0.5 matches", [(boxes((0, 10)), boxes((0, 10), y2=5))], 5, (1, 1, 1, 1)),
    ("nothing detected", [(boxes((0, 10), (20, 30)), NONE)], 5, (2, 0, 0, 0)),
    ("no faces, two detections", [(NONE, boxes((0, 10), (20, 30)))], 5, (0, 0, 2, 0)),
    ("empty image", [(NONE, NONE)], 5, (0, 0, 0, 0)),
    ("no images", [], 5, (0, 0, 0, 0)),
    # a face below min_height is not counted in recall, but the detection matching it is a true one
    ("small face found", [(boxes((0, 10)), boxes((0, 10)))], 11, (0, 0, 1, 1)),
    ("small and big face, small found", [(SMALL_AND_BIG, boxes((60, 70), (0, 10)))], 15, (1, 0, 2, 1)),
    ("small and big face, both found", [(SMALL_AND_BIG, SMALL_AND_BIG[::-1])], 15, (1, 1, 2, 2)),
    # one detection over two faces (IoU 1 and 0.82) counts once: one face found, one true detection
    ("one detection, two faces", [(boxes((0, 10), (1, 11)), boxes((0, 10)))], 5, (2, 1, 1, 1)),
    # two detections of one face: the second is a false detection
    ("duplicate detection", [(boxes((0, 10)), boxes((0, 10), (0.5, 10)))], 5, (1, 1, 2, 1)),
    # greedy by IoU over the image, not face by face: face 0's best detection (0.58) goes to face 1 (0.9),
    # and face 0 takes its second (0.56), so both are found
    ("highest IoU first", [(boxes((0, 10), (3, 13)), boxes((3, 12), (-3.5, 7.5)))], 5, (2, 2, 2, 2)),
    (
        "images add up",
        [(boxes((0, 10)), boxes((0, 10))), (boxes((0, 10), (20, 30)), boxes((20, 30), (60, 70))), (NONE, NONE)],
        5,
        (3, 2, 3, 2),
    ),
]


@pytest.mark.parametrize(
    ("pairs", "min_height", "expected"), [c[1:] for c in RECALL_CASES], ids=[c[0] for c in RECALL_CASES]
)
def test_match_recall(pairs, min_height, expected):
    result = match_recall(pairs, min_height=min_height)
    assert (result.faces, result.found, result.detections, result.true_detections) == expected


def test_recall_and_precision_are_nan_with_nothing_to_count_and_rounded_in_the_dict():
    empty = match_recall([(NONE, NONE)], min_height=32)
    assert math.isnan(empty.recall) and math.isnan(empty.precision)
    r = RecallResult(faces=3, found=2, detections=7, true_detections=5)
    assert r.recall == 2 / 3 and r.precision == 5 / 7
    assert r.to_dict() == {"faces": 3, "found": 2, "recall": 0.6667, "detections": 7, "precision": 0.7143}


def rows(**recalls: tuple[float, float]) -> dict[int, dict]:
    """{size: row} from s320=(wider recall, clips recall), ... as the command builds them."""
    return {
        int(k[1:]): {"wider_recall32": {"recall": w}, "clips_recall32": {"recall": c}} for k, (w, c) in recalls.items()
    }


@pytest.mark.parametrize(
    ("table", "slack", "expected"),
    [
        (rows(s320=(0.9, 0.9), s416=(0.9, 0.9), s640=(0.9, 0.9)), 0.0, 320),  # a tie: the smallest
        (rows(s640=(0.9, 0.9), s320=(0.5, 0.5), s416=(0.875, 0.875)), 0.03125, 416),  # order of the dict ignored
        (rows(s320=(0.75, 0.75), s416=(1.0, 1.0)), 0.25, 320),  # exactly the slack below the best is within
        (rows(s320=(0.74, 1.0), s416=(1.0, 1.0)), 0.25, 416),  # WIDER recall too low at 320
        (rows(s320=(1.0, 0.74), s416=(1.0, 1.0)), 0.25, 416),  # clip recall too low at 320
        (rows(s320=(0.80, 0.95), s416=(0.89, 0.94), s640=(0.90, 0.90)), 0.02, 416),  # bests at different sizes
        (rows(s320=(0.95, 0.5), s416=(0.5, 0.95), s640=(0.6, 0.6)), 0.02, 640),  # none within on both: largest
        (rows(s416=(0.3, 0.2)), 0.0, 416),  # one size measured
    ],
)
def test_choose_size_takes_the_smallest_size_within_slack_on_both_recalls(table, slack, expected):
    assert choose_size(table, slack=slack) == expected
