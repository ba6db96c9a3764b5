"""detector_data: the detector's ultralytics dataset from a miniature real-media tree, with the real teacher.

WIDER FACE train is linked with its human labels; frames of the train and val clips and the
photos are labelled by MTCNN; the test clip never enters; val is WIDER FACE val only; a rerun
reuses the teacher's labels.
"""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml

from tests.conftest import SHARED_DATA
from tests.trainer._realtree import CLIPS, NEEDS_SHARED_DATA, PHOTOS, WIDER_TRAIN, WIDER_VAL, make_real_tree
from trainer.detector.data import PreparedData, prepare, yolo_line
from trainer.paper.frames import sample_frames
from trainer.realmedia import MediaError, clip_split

pytestmark = NEEDS_SHARED_DATA

FRAMES = 2


def _stem(rel: str) -> str:
    return "pl__" + rel.replace("/", "__").rsplit(".", 1)[0]


@pytest.fixture(scope="module")
def prepared(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, PreparedData]:
    from trainer.teacher import Teacher

    root = tmp_path_factory.mktemp("detdata")
    media = make_real_tree(root / "media")
    out = root / "data"
    return media, out, prepare(media, out, frames_per_clip=FRAMES, teacher=Teacher(threads=1), progress=False)


def test_data_yaml_points_at_the_output_folder(prepared):
    _, out, data = prepared
    assert data.yaml == out / "data.yaml"
    spec = yaml.safe_load(data.yaml.read_text())
    assert spec == {"path": str(out.resolve()), "train": "train/images", "val": "val/images", "names": {0: "face"}}


def test_train_links_the_wider_images_with_their_labels(prepared):
    _, out, data = prepared
    assert data.wider_train == len(WIDER_TRAIN) == 3
    wider = sorted(p for p in (out / "train" / "images").iterdir() if not p.name.startswith("pl__"))
    assert [p.name for p in wider] == sorted(WIDER_TRAIN)
    for p in wider:
        src = SHARED_DATA / "widerface" / "train" / "images" / p.name
        assert p.is_symlink() and p.resolve() == src.resolve()
        label = out / "train" / "labels" / f"{p.stem}.txt"
        src_label = SHARED_DATA / "widerface" / "train" / "labels" / f"{p.stem}.txt"
        if src_label.is_file():
            assert not label.is_symlink() and label.read_bytes() == src_label.read_bytes()
        else:  # the one WIDER train image without a label file stays without one (an image of no face)
            assert p.name == "0_Parade_Parade_0_452.jpg" and not label.exists()


def test_train_holds_teacher_labelled_frames_of_train_and_val_clips_and_the_photos_only(prepared):
    media, out, data = prepared
    assert {rel: clip_split(rel) for rel in CLIPS} == CLIPS and sorted(CLIPS.values()) == ["test", "train", "val"]
    expected = {_stem(rel) for rel in PHOTOS}
    for rel, split in CLIPS.items():
        if split != "test":
            expected |= {f"{_stem(rel)}__{int(i):05d}" for i in sample_frames(media / rel, FRAMES).index}
    assert len(expected) == 2 * FRAMES + len(PHOTOS) == 6
    pseudo = {p.stem for p in (out / "train" / "images").iterdir() if p.name.startswith("pl__")}
    assert pseudo == expected  # every frame and photo has a sure face here: none dropped
    assert (data.pseudo_images, data.pseudo_faces, data.dropped_doubtful, data.dropped_empty) == (6, 6, 0, 0)
    test_clips = [Path(rel).stem for rel, split in CLIPS.items() if split == "test"]
    everything = [p.name for p in out.rglob("*")] + [out.joinpath("pseudo_labels.json").read_text()]
    assert not any(clip in text for clip in test_clips for text in everything)


def test_every_pseudo_label_is_a_yolo_line_of_the_recorded_teacher_boxes(prepared):
    _, out, _ = prepared
    record = json.loads((out / "pseudo_labels.json").read_text())
    assert record["sure"] == 0.95 and record["unsure"] == 0.7 and record["frames_per_clip"] == FRAMES
    assert record["teacher"]["teacher"] == "MTCNN (facenet-pytorch)"
    assert record["dropped_doubtful"] == [] and record["dropped_empty"] == []
    assert len(record["images"]) == 6
    for name, entry in record["images"].items():
        img = cv2.imread(str(out / "train" / "images" / f"{name}.jpg"))
        h, w = img.shape[:2]
        assert entry["size"] == [w, h] and min(entry["scores"]) >= 0.95
        lines = (out / "train" / "labels" / f"{name}.txt").read_text().splitlines()
        assert len(lines) == len(entry["boxes"]) >= 1
        for line, box in zip(lines, entry["boxes"]):
            fields = line.split()
            assert len(fields) == 5 and fields[0] == "0"
            cx, cy, bw, bh = (float(v) for v in fields[1:])
            edges = np.array([cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2])  # normalised xyxy
            assert bw > 0 and bh > 0 and (edges >= -1e-6).all() and (edges <= 1 + 1e-6).all()
            # the record keeps boxes to 0.1 px, the label file to 1e-6 of the side
            want = [float(v) for v in yolo_line(np.asarray(box), w, h).split()[1:]]
            np.testing.assert_allclose([cx, cy, bw, bh], want, atol=0.1 / min(w, h) + 1e-6)


def test_val_is_wider_val_only(prepared):
    _, out, _ = prepared
    images = sorted((out / "val" / "images").iterdir())
    assert [p.name for p in images] == sorted(WIDER_VAL)
    assert all(p.is_symlink() for p in images)
    assert sorted(p.name for p in (out / "val" / "labels").iterdir()) == sorted(
        f"{Path(n).stem}.txt" for n in WIDER_VAL
    )


class _NoTeacher:
    """Stands in for the teacher where it must not run."""

    def __call__(self, image: np.ndarray) -> None:
        raise AssertionError("the teacher ran although pseudo_labels.json was there")

    def __getattr__(self, name: str) -> None:
        raise AssertionError(f"the teacher was asked for {name!r} although pseudo_labels.json was there")


def test_a_second_call_reuses_the_pseudo_labels_without_the_teacher(prepared):
    media, out, data = prepared
    before = (out / "pseudo_labels.json").read_bytes()
    files = sorted(p.relative_to(out) for p in out.rglob("*"))
    again = prepare(media, out, frames_per_clip=FRAMES, teacher=_NoTeacher(), progress=False)
    assert again == data
    assert (out / "pseudo_labels.json").read_bytes() == before
    assert sorted(p.relative_to(out) for p in out.rglob("*")) == files


def test_a_tree_without_wider_face_is_refused(tmp_path):
    with pytest.raises(MediaError, match=str(tmp_path / "media" / "widerface")):
        prepare(tmp_path / "media", tmp_path / "out", teacher=_NoTeacher(), progress=False)
