"""realval: the labelled real-fake sets as served crops (shipped detector, one resize), cached boxes, face- and
clip-level AUC, and the per-epoch selector that may only select on the validation-role sets."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
import torch

from tests.conftest import ROOT, SHARED_DATA
from tests.trainer._realtree import NEEDS_SHARED_DATA
from trainer.errors import TrainerError
from trainer.pack import realval

pytestmark = NEEDS_SHARED_DATA
DETECTOR = ROOT / "models" / "face_detector.onnx"


@pytest.mark.parametrize(
    ("name", "reals", "fakes", "clips"),
    [
        ("celebdf_hard", 7, 7, 14),
        ("inswapper", 150, 154, 304),
        ("fewshot_gan", 150, 317, 467),
        ("deepfacelive", 4, 4, 8),  # each clip's left half real, right half swapped
        ("lipsync", 2, 4, 6),
        ("deeperforensics", 2, 2, 4),
    ],
)
def test_sets_list_their_files_with_labels_and_clips(name, reals, fakes, clips):
    items = realval.items(name, SHARED_DATA)
    labels = Counter(i.label for i in items)
    assert (labels[0], labels[1]) == (reals, fakes)
    assert len({i.group for i in items}) == clips


def test_dfdc_halves_follow_realmedia_and_share_no_video():
    select, test = realval.items("dfdc_select", SHARED_DATA), realval.items("dfdc_test", SHARED_DATA)
    assert len(select) + len(test) == 89 and {i.group for i in select}.isdisjoint({i.group for i in test})
    assert all(i.group.startswith("dfdc:") for i in select + test)


def test_within_source_auc_counts_only_pairs_of_one_source():
    labels = np.array([0, 0, 1, 0, 1, 1])
    sources = np.array(["a", "a", "a", "b", "b", "b"])
    scores = np.array([0.9, 0.8, 0.95, 0.1, 0.2, 0.05])  # source a looks fake, source b real
    assert realval.within_source_auc(labels, scores, sources) == pytest.approx((1.0 * 2 + 0.5 * 2) / 4)
    assert realval.within_source_auc(labels, scores, None) == realval._auc(labels, scores)
    items = realval.items("dfdc_select", SHARED_DATA)
    assert {i.source for i in items} == {"aaronchong888", "genconvit"}  # DFDC mixes two repositories


def test_unknown_set_names_the_valid_ones():
    with pytest.raises(TrainerError, match=r"unknown held-out set 'ff\+\+'; valid: \['celebdf_hard', 'dfdc_select'"):
        realval.items("ff++", SHARED_DATA)


class _Counting:
    def __init__(self, detector) -> None:
        self.detector, self.calls = detector, 0

    def __call__(self, frames):
        self.calls += 1
        return self.detector(frames)


@pytest.fixture(scope="module")
def detector():
    from engines import Detector

    return Detector(DETECTOR)


def test_celebdf_segments_are_cut_as_served_and_boxes_are_cached(detector, tmp_path):
    from engines import crop_faces
    from trainer.paper.frames import sample_frames

    counting = _Counting(detector)
    kwargs = {"detector_sha": detector.manifest.sha256, "margin": 0.25, "cache": tmp_path, "frames_per_video": 2}
    face_set = realval.load_set("celebdf_hard", SHARED_DATA, counting, size=96, **kwargs)
    assert counting.calls == 28 and face_set.missed == 0  # 14 clips x 2 frames, one detector call each
    assert face_set.images.shape == (28, 96, 96, 3) and face_set.images.dtype == np.uint8
    assert Counter(face_set.labels.tolist()) == {0: 14, 1: 14}
    # the first frame of the first clip: the detector's most confident face, cut by crop_faces at 96 directly
    first = realval.items("celebdf_hard", SHARED_DATA)[0]
    frame = sample_frames(first.path, 2).images[0]
    found = detector([frame])
    best = found[np.array([int(np.argmax(found.score))])]
    np.testing.assert_array_equal(face_set.images[0], crop_faces([frame], best, size=96, margin=0.25)[0])
    again = realval.load_set("celebdf_hard", SHARED_DATA, counting, size=64, **kwargs)
    assert counting.calls == 28  # boxes from the cache; crops cut again at the new size
    assert again.images.shape == (28, 64, 64, 3)
    np.testing.assert_array_equal(again.groups, face_set.groups)
    with np.load(next(tmp_path.glob("celebdf_hard-*.npz"))) as z:
        heights = np.concatenate([z[k][:, 3] - z[k][:, 1] for k in z.files])  # (28,) the cached boxes
    cut = float(np.median(heights))
    sized = realval.load_set("celebdf_hard", SHARED_DATA, counting, size=64, min_face=cut, **kwargs)
    assert sized.small == int((heights < cut).sum()) > 0 and len(sized) == int((heights >= cut).sum())  # as served
    np.testing.assert_allclose(np.sort(sized.heights), np.sort(heights[heights >= cut]))  # each served face's size
    assert counting.calls == 28 and sized.missed == 0  # too small is not "no face found"


def test_measure_gives_face_and_clip_auc():
    images = np.zeros((6, 8, 8, 3), np.uint8)
    face_set = realval.FaceSet("t", images, np.array([0, 0, 0, 1, 1, 1]), np.array(["a", "a", "b", "c", "c", "d"]), 0)
    scores = np.array([0.1, 0.9, 0.2, 0.8, 0.3, 0.7])
    labels, mean = realval.clip_scores(face_set, scores)
    np.testing.assert_array_equal(labels, [0, 0, 1, 1])
    np.testing.assert_allclose(mean, [0.5, 0.2, 0.55, 0.7])
    m = realval.measure(face_set, scores)
    assert m["clip_auc"] == 1.0 and m["face_auc"] == pytest.approx(6 / 9)
    assert (m["faces"], m["clips"], m["fake_clips"]) == (6, 4, 2)
    one_class = realval.measure(realval.FaceSet("r", images[:2], np.array([0, 0]), np.array(["a", "b"]), 0), scores[:2])
    assert one_class["face_auc"] is None and one_class["mean_p_fake_fake"] is None


def test_size_matched_auc_sees_through_a_score_that_only_follows_the_face_size():
    # small faces are mostly fake, large ones mostly real: face size alone ranks the set well
    heights = np.array([100.0] * 4 + [200.0] * 4 + [300.0] * 4)
    labels = np.array([1, 1, 1, 0, 1, 0, 1, 0, 1, 0, 0, 0])
    follows_size = 1.0 / heights  # a small face, upscaled into the crop, looks soft
    assert realval._auc(labels, follows_size) > 0.7
    assert realval.size_matched_auc(labels, follows_size, heights, bins=3) == pytest.approx(0.5)  # ties in every bin
    knows = labels + 0.01 * heights / 300  # separates reals from fakes of the same size
    assert realval.size_matched_auc(labels, knows, heights, bins=3) == 1.0
    # bins are per source: a source of only small fakes and one of only large reals have no matched pair
    sources = np.array(["a"] * 6 + ["b"] * 6)
    assert realval.size_matched_auc(np.array([1] * 6 + [0] * 6), follows_size, heights, sources) is None
    assert realval.size_matched_auc(labels, follows_size, None) is None
    face_set = realval.FaceSet(
        "t", np.zeros((12, 8, 8, 3), np.uint8), labels, np.arange(12).astype(str), 0, heights=heights
    )
    m = realval.measure(face_set, follows_size)
    assert m["size_alone_auc"] == pytest.approx(m["face_auc"]) and m["face_auc_size_matched"] is not None


def test_selector_scores_a_torch_model_and_selects_on_validation_sets_only(tmp_path):
    validator = realval.RealFakeValidator(
        SHARED_DATA,
        DETECTOR,
        size=32,
        margin=0.25,
        cache=tmp_path,
        sets=("celebdf_hard",),
        select=("celebdf_hard",),
        frames_per_video=1,
    )

    class Brightness(torch.nn.Module):  # P(fake) rises with the crop's mean brightness
        def forward(self, x):
            return (x.mean(dim=(1, 2, 3)) * 20 - 10).reshape(-1, 1)

    record = validator(Brightness())
    face_set = validator.sets["celebdf_hard"]
    expected = realval.measure(face_set, face_set.images.reshape(len(face_set), -1).mean(axis=1) / 255.0)
    assert record["celebdf_hard_face_auc"] == pytest.approx(expected["face_auc"])
    assert record["celebdf_hard_clip_auc"] == pytest.approx(expected["clip_auc"])
    assert record["select"] == record["celebdf_hard_face_auc"]
    with pytest.raises(TrainerError, match=r"\['inswapper'\] are for reporting only; selection may use"):
        realval.RealFakeValidator(
            SHARED_DATA, DETECTOR, size=32, margin=0.25, cache=tmp_path, sets=(), select=("inswapper",)
        )
