"""realfaces: the classifier's face store from a miniature real-media tree, with the real teacher and with
the shipped face detector.

Splits follow trainer.realmedia (the test clip's rows are test), DFDC rows carry their folder's
label, WIDER FACE rows are its human boxes of at least ``min_face`` px, UTKFace photos are one
person each, and a rerun adds nothing.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import ROOT
from tests.trainer._realtree import (
    CLIPS,
    DFDC,
    NEEDS_SHARED_DATA,
    PHOTOS,
    UTKFACE,
    WIDER_TRAIN,
    WIDER_VAL,
    make_real_tree,
)
from trainer import realmedia
from trainer.pack.realfaces import SOURCE, RealFacesSummary, build_real_faces, wider_boxes
from trainer.store import FaceStore, split_code

pytestmark = NEEDS_SHARED_DATA

CROP, FRAMES, MIN_FACE = 64, 2, 64
TEACHER = {"boxes": "teacher", "dfdc": True, "utkface": 0}  # the previous pack's recipe
DETECTOR = ROOT / "models" / "face_detector.onnx"


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, RealFacesSummary]:
    import torch

    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("realfaces")
    media = make_real_tree(root / "media")
    out = root / "real_faces.h5"
    summary = build_real_faces(
        media, out, crop_size=CROP, frames_per_clip=FRAMES, min_face=MIN_FACE, progress=False, **TEACHER
    )
    return media, out, summary


def _wider_expected(media: Path) -> dict[str, np.ndarray]:
    """video name -> the human boxes >= MIN_FACE px high (xyxy, at most 4) of each WIDER image in the tree."""
    import cv2

    out = {}
    for split, names in (("train", WIDER_TRAIN), ("val", WIDER_VAL)):
        for name in names:
            img = cv2.imread(str(media / "widerface" / split / "images" / name))
            label = media / "widerface" / split / "labels" / f"{Path(name).stem}.txt"
            boxes = wider_boxes(label, img.shape[1], img.shape[0])
            out[f"widerface/{split}/{name}"] = boxes[boxes[:, 3] - boxes[:, 1] >= MIN_FACE][:4]
    return out


def test_rows_follow_the_media_splits_and_labels(built):
    media, out, summary = built
    with FaceStore(out) as store:
        video, split, label = store.meta("video"), store.meta("split"), store.meta("label")
        identity = store.meta("identity")
        per_video = Counter(video.tolist())
        for rel, clip_split in CLIPS.items():  # one sure face per frame in these clips
            rows = video == rel
            assert per_video[rel] == FRAMES and (split[rows] == split_code(clip_split)).all()
            assert (label[rows] == 0).all() and (identity[rows] == "clip:" + rel[len("real_videos/") :][:-4]).all()
        test_clips = {v for v in video[split == split_code("test")] if v.startswith("real_videos/")}
        assert test_clips == {"real_videos/liveportrait_examples/driving_d2.mp4"}
        for rel in PHOTOS:
            rows = video == rel
            assert per_video[rel] == 1 and split[rows][0] == split_code("train") and label[rows][0] == 0
        for rel, (fake, dfdc_split) in DFDC.items():
            rows = video == rel
            assert per_video[rel] == 1, rel  # one face per crop, the largest
            assert label[rows][0] == fake and split[rows][0] == split_code(dfdc_split)
        assert set(per_video) <= {*CLIPS, *PHOTOS, *DFDC, *_wider_expected(media)}
    assert summary.rows == {"train/real": 7, "train/fake": 1, "val/real": 3, "test/real": 3, "test/fake": 1}
    assert summary.sources == {"clips": 6, "photos": 2, "dfdc": 4, "wider": 3}


def test_wider_rows_are_its_human_boxes_of_at_least_min_face(built):
    media, out, summary = built
    expected = _wider_expected(media)
    with FaceStore(out) as store:
        video, box, split = store.meta("video"), store.meta("box"), store.meta("split")
        for name, boxes in expected.items():
            rows = video == name
            np.testing.assert_array_equal(box[rows], boxes.astype(np.float32))
            assert (split[rows] == split_code(name.split("/")[1])).all()
        wider = box[np.char.startswith(video, "widerface/")]
        assert len(wider) == 3 and (wider[:, 3] - wider[:, 1] >= MIN_FACE).all()
        log = {row["path"]: row["status"] for row in store.video_log()}
    no_face = {name for name, boxes in expected.items() if len(boxes) == 0}
    # the train image without a label file and the val image of small faces only
    assert no_face == {"widerface/train/0_Parade_Parade_0_452.jpg", "widerface/val/1_Handshaking_Handshaking_1_664.jpg"}
    assert {name for name, status in log.items() if status != "ok"} == no_face
    assert all(log[name] == "no_face" for name in no_face) and len(summary.skipped) == 2
    assert sum(len(b) for b in expected.values()) == summary.sources["wider"] == 3
    # image 199 holds 3 faces, 1 of them >= 64 px high: the 2 smaller ones are left out
    label = media / "widerface" / "train" / "labels" / "1_Handshaking_Handshaking_1_199.txt"
    assert len(wider_boxes(label, 1, 1)) == 3
    assert len(expected["widerface/train/1_Handshaking_Handshaking_1_199.jpg"]) == 1


def test_crops_are_uint8_faces_of_the_asked_size(built):
    _, out, _ = built
    with FaceStore(out) as store:
        assert len(store) == 15 and store.crop_size == CROP
        assert store.attrs["source"] == SOURCE and store.attrs["min_face"] == MIN_FACE
        assert store.attrs["frames_per_video"] == FRAMES and not store.attrs["whole_frames"]
        crops = store.crops(np.arange(len(store)))
        assert crops.dtype == np.uint8 and crops.shape == (15, CROP, CROP, 3)
        assert (crops.reshape(15, -1).std(axis=1) > 10).all()  # image content, not blank canvases
        score = store.meta("det_score")
        teacher_rows = ~np.char.startswith(store.meta("video"), "widerface/")
        assert (score[teacher_rows] >= 0.95).all() and (score[~teacher_rows] == 1).all()


def test_a_second_run_adds_nothing(built):
    media, out, _ = built
    with FaceStore(out) as store:
        rows, fingerprint = len(store), store.fingerprint()
    again = build_real_faces(
        media, out, crop_size=CROP, frames_per_clip=FRAMES, min_face=MIN_FACE, progress=False, **TEACHER
    )
    assert again.rows == {} and again.sources == {} and again.skipped == []
    with FaceStore(out) as store:
        assert len(store) == rows and store.fingerprint() == fingerprint


def test_detector_boxes_cut_the_serving_crop_and_utkface_photos_are_one_person_each(built, tmp_path):
    from engines import Detector, crop_faces

    media, _, _ = built
    out = tmp_path / "faces.h5"
    summary = build_real_faces(
        media, out, crop_size=CROP, frames_per_clip=FRAMES, min_face=MIN_FACE, progress=False, detector=DETECTOR
    )
    assert "dfdc" not in summary.sources and summary.sources["utkface"] == len(UTKFACE)  # DFDC stays for validation
    detector = Detector(DETECTOR)
    splits = {s.rel: s.split for s in realmedia.utkface(media)}
    with FaceStore(out) as store:
        assert store.attrs["detector_sha256"] == detector.manifest.sha256
        video, identity, split = store.meta("video"), store.meta("identity"), store.meta("split")
        for rel in UTKFACE:
            (row,) = np.flatnonzero(video == rel)  # one face per photo, the most confident
            assert identity[row] == f"utk:{Path(rel).stem}" and split[row] == split_code(splits[rel])
            import cv2

            img = cv2.cvtColor(cv2.imread(str(media / rel)), cv2.COLOR_BGR2RGB)
            found = detector([img])
            best = found[np.array([int(np.argmax(found.score))])]
            np.testing.assert_array_equal(store.crops(int(row)), crop_faces([img], best, size=CROP, margin=0.25)[0])
        clip_scores = store.meta("det_score")[np.char.startswith(video, "real_videos/")]
        assert len(clip_scores) and (clip_scores < 1).all() and (clip_scores >= detector.conf).all()


TOOL_CLIPS = (
    "labelled/wild_swaps/deepfacelive/side_by_side/Kim_Jarrey_1.mp4",
    "labelled/wild_swaps/lipsync_wav2lip/real/video_8s.mp4",
    "labelled/wild_swaps/lipsync_wav2lip/fake/result_voice.mp4",
)


def test_real_tools_outputs_join_train_with_their_real_inputs_and_unknown_tools_are_refused(tmp_path):
    import os

    from tests.conftest import SHARED_DATA
    from trainer.errors import TrainerError

    media = tmp_path / "media"
    for rel in (*TOOL_CLIPS, *CLIPS):
        (media / rel).parent.mkdir(parents=True, exist_ok=True)
        os.symlink(SHARED_DATA / rel, media / rel)
    for folder in ("face_images", "utkface"):
        (media / folder).mkdir()
    out = tmp_path / "faces.h5"
    with pytest.raises(TrainerError, match="unknown tool set.*inswapper"):
        build_real_faces(media, out, tools=["inswapper"], progress=False, detector=DETECTOR)
    with pytest.raises(TrainerError, match="unknown tool set.*celebdf_hard"):  # validation only: never a tool
        build_real_faces(media, out, tools=["celebdf_hard"], progress=False, detector=DETECTOR)
    summary = build_real_faces(
        media,
        out,
        crop_size=CROP,
        frames_per_clip=FRAMES,
        min_face=MIN_FACE,
        utkface=0,
        tools=["deepfacelive", "lipsync"],
        tool_frames=3,
        progress=False,
        detector=DETECTOR,
    )
    assert summary.sources["tool:deepfacelive"] == 6 and summary.sources["tool:lipsync_wav2lip"] == 6
    with FaceStore(out) as store:
        video, label, split = store.meta("video"), store.meta("label"), store.meta("split")
        identity, frame = store.meta("identity"), store.meta("frame")
    dfl = "labelled/wild_swaps/deepfacelive/side_by_side/Kim_Jarrey_1.mp4"
    from trainer.paper.frames import sample_frames

    sampled = list(sample_frames(media / dfl, 3).index)
    for half in ("left", "right"):  # both halves of one decoded frame carry its frame number
        assert sorted(frame[video == f"{dfl}:{half}"].tolist()) == sorted(sampled)
    expect = {f"{dfl}:left": 0, f"{dfl}:right": 1, TOOL_CLIPS[1]: 0, TOOL_CLIPS[2]: 1}
    for name, want in expect.items():
        rows = np.flatnonzero(video == name)
        assert len(rows) == 3 and (label[rows] == want).all() and (split[rows] == split_code("train")).all()
        assert (np.char.startswith(identity[rows], "tool:")).all()
    assert len(np.flatnonzero(np.char.startswith(video, "real_videos/"))) > 0  # the real clips are still there
