"""Letterbox, YOLOv8 decode, NMS and crops against hand-checked numbers."""

from __future__ import annotations

import numpy as np
import pytest

from engines import Detections, crop_faces
from engines.letterbox import letterbox, letterbox_batch, unletterbox_boxes
from engines.yolo import decode_yolov8, nms


def test_letterbox_wide_frame_is_scaled_and_padded_top_and_bottom():
    frame = np.full((100, 200, 3), 7, np.uint8)  # H=100, W=200
    boxed, info = letterbox(frame, 64)
    assert boxed.shape == (64, 64, 3)
    assert info.scale == pytest.approx(0.32)
    assert (info.pad_x, info.pad_y) == (0.0, 16.0)  # 200*0.32 = 64 wide, 100*0.32 = 32 high
    assert (boxed[:16] == 114).all() and (boxed[48:] == 114).all() and (boxed[16:48] == 7).all()


def test_letterbox_into_a_rectangle_with_its_own_padding():
    frame = np.full((96, 128, 3), 7, np.uint8)  # H=96, W=128 into a 64 x 64 annotated video (black bars)
    boxed, info = letterbox(frame, (64, 64), pad=0)
    assert boxed.shape == (64, 64, 3) and info.scale == 0.5 and (info.pad_x, info.pad_y) == (0.0, 8.0)
    assert (boxed[:8] == 0).all() and (boxed[56:] == 0).all() and (boxed[8:56] == 7).all()
    tall, info = letterbox(np.full((64, 64, 3), 7, np.uint8), (128, 96), pad=0)  # (width, height)
    assert tall.shape == (96, 128, 3) and info.scale == 1.5 and (info.pad_x, info.pad_y) == (16.0, 0.0)
    assert (tall[:, :16] == 0).all() and (tall[:, 112:] == 0).all() and (tall[:, 16:112] == 7).all()


def test_unletterbox_maps_input_pixels_back_to_the_frame():
    _, info = letterbox(np.zeros((100, 200, 3), np.uint8), 64)
    in_input = np.array([[16, 24, 48, 40]], np.float32)  # frame box (50, 25, 150, 75) seen by the net
    np.testing.assert_allclose(unletterbox_boxes(in_input, info), [[50, 25, 150, 75]])
    outside = np.array([[-10, 0, 80, 70]], np.float32)
    np.testing.assert_allclose(unletterbox_boxes(outside, info), [[0, 0, 200, 100]])  # clipped


def test_letterbox_batch_mixes_frame_sizes_and_scales_to_unit_range():
    batch, infos = letterbox_batch([np.full((48, 64, 3), 255, np.uint8), np.zeros((64, 32, 3), np.uint8)], 32)
    assert batch.shape == (2, 3, 32, 32) and batch.dtype == np.float32
    assert batch[0, :, 16, 16].tolist() == [1.0, 1.0, 1.0]
    assert batch[1, 0, 16, 0] == pytest.approx(114 / 255)  # left padding of the tall frame
    assert [i.scale for i in infos] == [0.5, 0.5]


@pytest.mark.parametrize(
    "boxes, scores, iou, expected",
    [
        ([[0, 0, 10, 10], [1, 1, 11, 11], [20, 20, 30, 30]], [0.9, 0.8, 0.7], 0.45, [0, 2]),  # IoU(0,1) = 0.68
        ([[0, 0, 10, 10], [1, 1, 11, 11]], [0.8, 0.9], 0.7, [1, 0]),  # below threshold: both, by score
        ([[0, 0, 10, 10], [0, 0, 10, 10]], [0.5, 0.6], 0.99, [1]),  # identical boxes
        (np.zeros((0, 4)), [], 0.5, []),  # empty
    ],
)
def test_nms(boxes, scores, iou, expected):
    keep = nms(np.asarray(boxes, np.float32).reshape(-1, 4), np.asarray(scores, np.float32), iou)
    assert keep.tolist() == expected


def test_decode_yolov8_filters_by_confidence_and_suppresses_overlaps():
    anchors = np.array(  # cx, cy, w, h, score
        [[5, 5, 10, 10, 0.9], [6, 6, 10, 10, 0.8], [25, 25, 10, 10, 0.7], [50, 50, 4, 4, 0.1]], np.float32
    )
    output = anchors.T[None]  # (1, 5, 4)
    [(xyxy, score)] = decode_yolov8(output, conf=0.25, iou=0.45)
    np.testing.assert_allclose(xyxy, [[0, 0, 10, 10], [20, 20, 30, 30]])
    np.testing.assert_allclose(score, [0.9, 0.7])
    [(xyxy, _)] = decode_yolov8(output, conf=0.95, iou=0.45)
    assert xyxy.shape == (0, 4)


def test_detections_columns_masks_and_empty():
    d = Detections([[0, 0, 1, 1], [1, 1, 2, 2], [2, 2, 3, 3]], [0.9, 0.5, 0.7], [0, 1, 0])
    assert len(d) == 3 and d.xyxy.dtype == np.float32 and d.frame_index.dtype == np.int64
    assert d.for_frame(0).score.tolist() == pytest.approx([0.9, 0.7])
    assert len(d[d.score > 0.8]) == 1
    assert len(Detections.empty()) == 0 and Detections.concatenate([]).xyxy.shape == (0, 4)
    with pytest.raises(ValueError, match="differ in length"):
        Detections([[0, 0, 1, 1]], [0.5, 0.6], [0])


def _position_frame(h: int = 100, w: int = 100) -> np.ndarray:
    yy, xx = np.mgrid[0:h, 0:w]
    return np.stack([yy, xx, np.full_like(yy, 200)], axis=-1).astype(np.uint8)  # pixel = (y, x, 200)


def test_crop_without_margin_is_the_box_itself():
    frame = _position_frame()
    crops = crop_faces([frame], Detections([[40, 40, 60, 60]], [1.0], [0]), size=20, margin=0.0)
    np.testing.assert_array_equal(crops[0], frame[40:60, 40:60])


def test_crop_is_square_around_a_tall_box_with_margin():
    frame = _position_frame()
    crops = crop_faces([frame], Detections([[45, 40, 55, 60]], [1.0], [0]), size=40, margin=0.5)
    np.testing.assert_array_equal(crops[0], frame[30:70, 30:70])  # side 20 * 2 = 40, centred on (50, 50)


def test_crop_of_a_box_whose_corners_round_differently_in_x_and_y_stays_square():
    frame = _position_frame()
    # side 10.5: x rounds 14.75..25.25 to 15..25 (10 px), y 5.0..15.5 to 5..16 (11 px): square, 10 px
    crops = crop_faces([frame], Detections([[14.75, 5.0, 25.25, 15.5]], [1.0], [0]), size=10, margin=0.0)
    np.testing.assert_array_equal(crops[0], frame[5:15, 15:25])


def test_crop_outside_the_frame_is_black_and_keeps_the_face_in_place():
    frame = _position_frame()
    crops = crop_faces([frame], Detections([[0, 0, 20, 20]], [1.0], [0]), size=40, margin=0.5)
    assert (crops[0][:10] == 0).all() and (crops[0][:, :10] == 0).all()
    np.testing.assert_array_equal(crops[0][10:, 10:], frame[0:30, 0:30])


def test_crop_picks_each_detections_own_frame_and_handles_empty():
    frames = [np.zeros((50, 50, 3), np.uint8), np.full((50, 50, 3), 9, np.uint8)]
    crops = crop_faces(frames, Detections([[10, 10, 20, 20]] * 2, [1, 1], [1, 0]), size=8, margin=0.1)
    assert crops.shape == (2, 8, 8, 3) and (crops[0] == 9).all() and (crops[1] == 0).all()
    assert crop_faces(frames, Detections.empty(), size=8, margin=0.1).shape == (0, 8, 8, 3)
