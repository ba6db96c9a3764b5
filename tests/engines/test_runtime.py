"""Detector and Classifier through ONNX Runtime on real frames: shapes, ranges, parity with torch, bad input."""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np
import pytest
import torch

from engines import Classifier, Detections, Detector, InputError, crop_faces
from engines.export import export_classifier, load_yolo_detector
from engines.letterbox import letterbox_batch


@pytest.fixture(scope="module")
def real_frames(real_video: Path) -> np.ndarray:
    with av.open(str(real_video)) as container:
        frames = [f.to_ndarray(format="rgb24") for _, f in zip(range(4), container.decode(video=0))]
    return np.stack(frames)  # (4, H, W, 3)


def test_detector_on_real_frames_returns_boxes_inside_each_frame(model_dir: Path, real_frames: np.ndarray):
    detector = Detector(model_dir / "face_detector.onnx", conf=0.001)  # untrained: scores are tiny
    dets = detector(real_frames)
    assert len(dets) > 0 and set(dets.frame_index.tolist()) <= {0, 1, 2, 3}
    h, w = real_frames.shape[1:3]
    assert (dets.xyxy >= 0).all() and (dets.xyxy[:, [0, 2]] <= w).all() and (dets.xyxy[:, [1, 3]] <= h).all()
    assert ((dets.score > 0.001) & (dets.score <= 1)).all()
    assert len(dets.for_frame(0)) <= detector.max_det


def test_detector_onnx_matches_torch_on_real_frames(model_dir: Path, real_frames: np.ndarray):
    torch.manual_seed(0)  # the placeholder fixture exported yolov8n.yaml with seed 0
    model = load_yolo_detector("yolov8n.yaml")
    detector = Detector(model_dir / "face_detector.onnx")
    batch, _ = letterbox_batch(list(real_frames), detector.input_size)
    with torch.no_grad():
        expected = model(torch.from_numpy(batch)).numpy()
    got = detector.artifact.run(batch)[0]
    assert got.shape == expected.shape == (4, 5, 8400)
    assert np.abs(got - expected).max() < 1e-2  # boxes in pixels of a 640 input


def test_classifier_onnx_matches_torch_on_real_face_crops(tmp_path: Path, real_frames: np.ndarray):
    from trainer.models import create_model

    torch.manual_seed(1)
    model = create_model("paper_cnn", input_size=64, filters=(8, 16)).eval()
    export_classifier(model, tmp_path / "c.onnx", name="paper_cnn", input_size=64, crop_margin=0.25, placeholder=True)
    classifier = Classifier(tmp_path / "c.onnx")
    h, w = real_frames.shape[1:3]
    boxes = Detections([[w * 0.3, h * 0.2, w * 0.7, h * 0.8]] * 4, [1] * 4, [0, 1, 2, 3])
    crops = crop_faces(list(real_frames), boxes, size=64, margin=0.25)
    with torch.no_grad():
        expected = torch.sigmoid(model(torch.from_numpy(crops).permute(0, 3, 1, 2).float() / 255)).numpy().ravel()
    got = classifier(crops)
    np.testing.assert_allclose(got, expected, atol=1e-5)
    big = np.repeat(crops, 20, axis=0)  # 80 crops: more than the artifact's batch_max of 64
    np.testing.assert_allclose(classifier(big), np.repeat(got, 20), atol=1e-5)


def test_empty_batches_give_empty_results(model_dir: Path):
    detector = Detector(model_dir / "face_detector.onnx")
    assert len(detector([])) == 0
    assert len(detector(np.zeros((0, 480, 640, 3), np.uint8))) == 0
    classifier = Classifier(model_dir / "deepfake_classifier.onnx")
    assert classifier(np.zeros((0, 256, 256, 3), np.uint8)).shape == (0,)


@pytest.mark.parametrize(
    "frames",
    [np.zeros((2, 64, 64, 3), np.float32), np.zeros((64, 64, 3), np.uint8), np.zeros((1, 64, 64, 4), np.uint8)],
    ids=["float32", "single-frame-3d", "rgba"],
)
def test_detector_rejects_bad_frames(model_dir: Path, frames: np.ndarray):
    with pytest.raises(InputError, match=r"uint8 RGB frames \(N, H, W, 3\)"):
        Detector(model_dir / "face_detector.onnx")(frames)


def test_classifier_rejects_crops_of_the_wrong_size(model_dir: Path):
    with pytest.raises(InputError, match=r"\(n, 256, 256, 3\), got uint8 \(1, 128, 128, 3\)"):
        Classifier(model_dir / "deepfake_classifier.onnx")(np.zeros((1, 128, 128, 3), np.uint8))


@pytest.mark.parametrize("content", [b"PK\x03\x04 truncated", None], ids=["truncated", "not-a-detector"])
def test_a_bad_detector_checkpoint_is_an_export_error_naming_it(tmp_path: Path, content: bytes | None):
    from engines import ExportError

    path = tmp_path / "face.pt"
    if content is None:
        torch.save({"weights": torch.zeros(1)}, path)  # a checkpoint without an ultralytics 'model'
    else:
        path.write_bytes(content)
    with pytest.raises(ExportError, match=r"face\.pt is not an ultralytics YOLOv8 detector checkpoint"):
        load_yolo_detector(path)
