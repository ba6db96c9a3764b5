"""trainer.holdout (behind `dfwatch-train validate`): held-out AUCs from a face store, and whole videos
through the real `dfwatch watch` with the committed model pack."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import ROOT
from tests.trainer._realtree import NEEDS_SHARED_DATA, make_real_tree
from trainer import holdout
from trainer.realfaces import build_real_faces
from trainer.store import FaceStore

pytestmark = NEEDS_SHARED_DATA


class _Scorer:
    """A classifier stand-in with the engines.Classifier surface: P(fake) = mean brightness of the centre."""

    input_size, threshold = 32, 0.5

    def __call__(self, crops: np.ndarray) -> np.ndarray:
        assert crops.dtype == np.uint8 and crops.shape[1:] == (32, 32, 3)  # resized to the input size
        return crops[:, 8:24, 8:24].mean(axis=(1, 2, 3)).astype(np.float32) / 255.0


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    import torch

    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("holdout")
    out = root / "faces.h5"
    build_real_faces(make_real_tree(root / "media"), out, crop_size=64, frames_per_clip=2, progress=False)
    return out


def test_self_blend_auc_pairs_every_pristine_test_clip_crop_with_its_blend(store: Path):
    with FaceStore(store) as s:
        test = s.indices("test")
        n_clip = sum(str(i).startswith("clip:") for i in s.meta("identity")[test])
    result = holdout.self_blend_auc(_Scorer(), store)
    assert result["pairs"] == n_clip and n_clip > 0
    assert 0.0 <= result["roc_auc"] <= 1.0 and result["threshold"] == 0.5
    assert result == holdout.self_blend_auc(_Scorer(), store)  # fixed seed: the same blends every time


def test_labelled_auc_scores_the_held_out_dfdc_crops_with_their_labels(store: Path):
    with FaceStore(store) as s:
        test = s.indices("test")
        dfdc = [r for r, i in zip(test, s.meta("identity")[test]) if str(i).startswith("dfdc:")]
        labels = s.meta("label")[dfdc]
    result = holdout.labelled_auc(_Scorer(), store)
    assert (result["crops"], result["fakes"]) == (len(dfdc), int(labels.sum()))


def test_labelled_auc_names_a_missing_group(store: Path):
    with pytest.raises(Exception, match="no test rows of 'nobody:' identities"):
        holdout.labelled_auc(_Scorer(), store, prefix="nobody:")


def test_pipeline_videos_runs_the_service_on_whole_files(demo_clip):
    summary, raw = holdout.pipeline_videos(ROOT / "models", [demo_clip.path])
    video = summary[str(demo_clip.path)]
    assert video["frames"] == demo_clip.n_frames  # files: nothing dropped
    assert sum(video["verdicts"].values()) == video["frames"]
    assert video["face_scores"] == len(raw[str(demo_clip.path)]) > 0
    assert video["mean_p_fake"] == round(float(raw[str(demo_clip.path)].mean()), 4)
    json.dumps(summary)  # the report is plain JSON
