"""teacher: the real MTCNN finds the one face of a real photo and none in a blank image; sure / doubtful;
a clear error naming the pip command when facenet-pytorch is missing."""

from __future__ import annotations

import sys

import cv2
import numpy as np
import pytest

from tests.conftest import SHARED_DATA
from trainer.errors import TrainerError
from trainer.teacher import INSTALL_HINT, Teacher, TeacherError, TeacherFaces

PHOTO = SHARED_DATA / "face_images" / "facenet_pytorch" / "test_images_aligned" / "angelina_jolie" / "1.png"


@pytest.fixture(scope="module")
def teacher() -> Teacher:
    return Teacher(threads=1)  # sure 0.95, unsure 0.7, min_face 20


def test_the_teacher_finds_the_one_face_of_a_single_face_photo(teacher):
    if not PHOTO.is_file():
        pytest.skip(f"the real media are missing: {PHOTO} (see ../shared/data/README.md)")
    img = cv2.cvtColor(cv2.imread(str(PHOTO)), cv2.COLOR_BGR2RGB)  # (160, 160, 3), the face fills it
    h, w = img.shape[:2]
    faces = teacher(img)
    sure = teacher.sure_faces(faces)
    assert len(sure) == 1 and not teacher.doubtful(faces)
    assert sure.xyxy.dtype == np.float32 and sure.landmarks.shape == (1, 5, 2) and sure.score[0] >= 0.95
    x1, y1, x2, y2 = sure.xyxy[0]
    assert 0 <= x1 < x2 <= w and 0 <= y1 < y2 <= h  # clipped to the image
    assert x2 - x1 >= 40 and y2 - y1 >= 40
    eyes = sure.landmarks[0, :2]  # left and right eye (x, y) lie inside the box, in its upper half
    assert ((eyes[:, 0] > x1) & (eyes[:, 0] < x2) & (eyes[:, 1] > y1) & (eyes[:, 1] < (y1 + y2) / 2)).all()


def test_the_teacher_finds_nothing_in_a_uniform_grey_image(teacher):
    faces = teacher(np.full((240, 320, 3), 128, np.uint8))
    assert len(faces) == 0
    assert faces.xyxy.shape == (0, 4) and faces.score.shape == (0,) and faces.landmarks.shape == (0, 5, 2)
    assert len(teacher.sure_faces(faces)) == 0 and not teacher.doubtful(faces)


def _faces(*scores: float) -> TeacherFaces:
    n = len(scores)
    xyxy = np.arange(n * 4, dtype=np.float32).reshape(n, 4)
    return TeacherFaces(xyxy, np.asarray(scores, np.float32), np.arange(n * 10, dtype=np.float32).reshape(n, 5, 2))


@pytest.mark.parametrize(
    ("scores", "doubtful", "sure"),
    [
        ((), False, []),
        ((0.99,), False, [0]),
        ((0.95,), False, [0]),  # exactly sure: a face
        ((0.949,), True, []),
        ((0.7,), True, []),  # exactly unsure: doubtful
        ((0.69,), False, []),  # below unsure: clearly not a face
        ((0.99, 0.8, 0.97), True, [0, 2]),  # one doubtful face spoils the image
        ((0.99, 0.5, 0.96), False, [0, 2]),
    ],
)
def test_doubtful_means_a_face_between_unsure_and_sure(teacher, scores, doubtful, sure):
    faces = _faces(*scores)
    assert teacher.doubtful(faces) is doubtful
    kept = teacher.sure_faces(faces)
    np.testing.assert_array_equal(kept.xyxy, faces.xyxy[sure])
    np.testing.assert_array_equal(kept.score, faces.score[sure])
    np.testing.assert_array_equal(kept.landmarks, faces.landmarks[sure])


def test_without_facenet_pytorch_the_error_names_the_pip_command(monkeypatch):
    monkeypatch.setitem(sys.modules, "facenet_pytorch", None)  # import facenet_pytorch -> ImportError
    with pytest.raises(TeacherError) as err:
        Teacher()
    assert isinstance(err.value, TrainerError)
    assert INSTALL_HINT == "pip install --no-deps facenet-pytorch==2.6.0" and INSTALL_HINT in str(err.value)
    assert "facenet-pytorch" in str(err.value) and isinstance(err.value.__cause__, ImportError)


def test_describe_names_the_teacher_and_its_version():
    import facenet_pytorch

    described = Teacher.describe()
    assert described["teacher"] == "MTCNN (facenet-pytorch)"
    assert described["version"] == getattr(facenet_pytorch, "__version__", "2.6.0")
