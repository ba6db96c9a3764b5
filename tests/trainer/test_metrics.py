"""Metrics against values worked out by hand."""

from __future__ import annotations

import numpy as np
import pytest

from trainer.metrics import (
    MetricsError,
    binary_metrics,
    confusion_matrix,
    equal_error_rate,
    pool_by_video,
    roc_auc,
    roc_curve,
)


def test_the_papers_table_on_four_samples():
    # labels 1 = fake; at 0.5 only 0.8 is called fake: tn 2, fp 0, fn 1, tp 1
    m = binary_metrics(np.array([0, 0, 1, 1]), np.array([0.1, 0.4, 0.35, 0.8]))
    assert m.confusion == [[2, 0], [1, 1]]
    assert (m.n, m.positives) == (4, 2)
    assert m.accuracy == pytest.approx(0.75)
    assert m.precision == pytest.approx(1.0)
    assert m.recall == pytest.approx(0.5)
    assert m.f1 == pytest.approx(2 / 3)
    # ROC by descending score: 0.8 fake, 0.4 real, 0.35 fake, 0.1 real
    # points (0,0) (0,.5) (.5,.5) (.5,1) (1,1): AUC = .5*.5 + .5*1 = .75
    assert m.roc_auc == pytest.approx(0.75)
    # FNR 1 .5 .5 0 0 vs FPR 0 0 .5 .5 1: they meet at (.5, .5), threshold 0.4
    assert m.eer == pytest.approx(0.5) and m.eer_threshold == pytest.approx(0.4)


def test_threshold_moves_the_calls():
    m = binary_metrics(np.array([0, 0, 1, 1]), np.array([0.1, 0.4, 0.35, 0.8]), threshold=0.3)
    assert m.confusion == [[1, 1], [0, 2]]  # 0.4, 0.35, 0.8 called fake
    assert (m.precision, m.recall) == (pytest.approx(2 / 3), 1.0)
    assert m.roc_auc == pytest.approx(0.75)  # the ranking did not change


def test_roc_curve_merges_tied_scores():
    fpr, tpr, thr = roc_curve(np.array([0, 1, 0, 1]), np.array([0.5, 0.5, 0.2, 0.9]))
    np.testing.assert_allclose(fpr, [0, 0, 0.5, 1])
    np.testing.assert_allclose(tpr, [0, 0.5, 1, 1])
    np.testing.assert_allclose(thr, [np.inf, 0.9, 0.5, 0.2])
    # pairs (fake, real): (.5,.5) half, (.5,.2) 1, (.9,.5) 1, (.9,.2) 1 -> 3.5 / 4
    assert roc_auc(np.array([0, 1, 0, 1]), np.array([0.5, 0.5, 0.2, 0.9])) == pytest.approx(0.875)


def test_equal_error_rate_interpolates_between_roc_points():
    # fake .9 .4, real .6 .3 .1: FPR 0 0 1/3 1/3 2/3 1, FNR 1 .5 .5 0 0 0; FPR - FNR crosses zero between
    # points 2 (-1/6) and 3 (+1/3), a third of the way: FPR stays 1/3, FNR .5 -> 1/3
    eer, thr = equal_error_rate(np.array([1, 0, 1, 0, 0]), np.array([0.9, 0.6, 0.4, 0.3, 0.1]))
    assert eer == pytest.approx(1 / 3) and thr == pytest.approx(0.4)


def test_perfect_and_inverted_rankings():
    y = np.array([0, 0, 1, 1])
    assert roc_auc(y, np.array([0.1, 0.2, 0.8, 0.9])) == pytest.approx(1.0)
    assert roc_auc(y, np.array([0.9, 0.8, 0.2, 0.1])) == pytest.approx(0.0)
    assert equal_error_rate(y, np.array([0.1, 0.2, 0.8, 0.9]))[0] == pytest.approx(0.0)


def test_one_class_leaves_auc_and_eer_undefined_and_ratios_zero():
    m = binary_metrics(np.array([0, 0, 0]), np.array([0.2, 0.7, 0.1]))
    assert m.roc_auc is None and m.eer is None
    assert m.confusion == [[2, 1], [0, 0]]
    assert (m.precision, m.recall, m.f1) == (0.0, 0.0, 0.0)  # no true fake: scikit-learn's zero_division=0
    with pytest.raises(MetricsError, match="needs real and fake samples, got 3 real and 0 fake"):
        roc_curve(np.array([0, 0, 0]), np.array([0.2, 0.7, 0.1]))


def test_confusion_matrix_counts():
    cm = confusion_matrix(np.array([0, 1, 1, 0, 1]), np.array([1, 1, 0, 0, 1]))
    assert cm.tolist() == [[1, 1], [1, 2]]


@pytest.mark.parametrize(
    ("reduce", "expected"), [("mean", [0.3, 0.7, 0.7]), ("median", [0.3, 0.7, 0.7]), ("max", [0.4, 0.9, 0.7])]
)
def test_pool_by_video(reduce, expected):
    videos = np.array(["b", "a", "b", "a", "c"])
    names, labels, scores = pool_by_video(
        videos, np.array([1, 0, 1, 0, 1]), np.array([0.9, 0.2, 0.5, 0.4, 0.7]), reduce=reduce
    )
    assert names.tolist() == ["a", "b", "c"] and labels.tolist() == [0, 1, 1]
    np.testing.assert_allclose(scores, expected)


def test_pool_by_video_median_of_three():
    _, _, scores = pool_by_video(np.array(["v"] * 3), np.ones(3, int), np.array([0.1, 0.9, 0.3]), reduce="median")
    np.testing.assert_allclose(scores, [0.3])


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: binary_metrics(np.array([0, 2]), np.array([0.1, 0.2])), r"labels must be 0 \(real\) or 1 \(fake\)"),
        (lambda: binary_metrics(np.array([0, 1]), np.array([0.1])), r"labels \(2\) and scores \(1\) differ"),
        (lambda: binary_metrics(np.array([0, 1]), np.array([0.1, np.nan])), r"1 scores are NaN"),
        (lambda: binary_metrics(np.array([], int), np.array([])), r"no samples"),
        (
            lambda: pool_by_video(np.array(["a"]), np.array([1]), np.array([0.5]), reduce="mode"),
            r"unknown video pooling 'mode'; valid: \['mean', 'median', 'max'\]",
        ),
        (
            lambda: pool_by_video(np.array(["a", "a"]), np.array([0, 1]), np.array([0.5, 0.5])),
            r"videos with frames of both labels: \['a'\]",
        ),
    ],
)
def test_bad_input_is_named(call, message):
    with pytest.raises(MetricsError, match=message):
        call()
