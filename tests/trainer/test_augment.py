"""Augmentation: shape and dtype kept, repeatable with a seed, and never a path to a label."""

from __future__ import annotations

import numpy as np
import pytest

from trainer.paper.augment import PRESETS, augment_batch, build_augment
from trainer.store import FaceDataset, FaceStore


def _faces(n: int = 16, size: int = 48) -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (n, size, size, 3), dtype=np.uint8)


@pytest.mark.parametrize("preset", PRESETS)
@pytest.mark.parametrize("size", [32, 64, 77])
def test_presets_keep_shape_and_dtype(preset: str, size: int):
    images = _faces(8, size)
    out = augment_batch(images, build_augment(preset, seed=3))
    assert out.shape == images.shape and out.dtype == np.uint8
    np.testing.assert_array_equal(images, _faces(8, size))  # the input is never changed in place
    if preset == "none":
        np.testing.assert_array_equal(out, images)
    elif preset == "flip":  # each image as it was or mirrored left-right, nothing else
        same = [np.array_equal(o, i) for o, i in zip(out, images)]
        mirrored = [np.array_equal(o, i[:, ::-1]) for o, i in zip(out, images)]
        assert all(s or m for s, m in zip(same, mirrored)) and any(same) and any(mirrored)
    else:
        assert (out != images).any(axis=(1, 2, 3)).sum() >= 4  # most images actually changed


def test_seeded_augmentation_is_repeatable_and_seeds_differ():
    images = _faces()
    a = augment_batch(images, build_augment("broadcast", seed=7))
    b = augment_batch(images, build_augment("broadcast", seed=7))
    c = augment_batch(images, build_augment("broadcast", seed=8))
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


def test_bad_input_and_unknown_preset():
    with pytest.raises(ValueError, match=r"unknown augmentation 'heavy'; valid: \['none', 'paper', 'broadcast'"):
        build_augment("heavy")
    aug = build_augment("paper", seed=0)
    with pytest.raises(ValueError, match=r"expects one uint8 \(H, W, 3\) RGB image, got float32 \(8, 8, 3\)"):
        aug(np.zeros((8, 8, 3), np.float32))
    with pytest.raises(ValueError, match=r"got uint8 \(2, 8, 8, 3\)"):
        aug(np.zeros((2, 8, 8, 3), np.uint8))


def test_offline_copies_carry_their_originals_labels_and_splits(mini_faces_h5):
    """Label safety of the stored copies: everything but the pixels comes from the original row."""
    with FaceStore(mini_faces_h5) as store:
        aug = store.meta("augmented")
        origin = store.meta("origin")
        copies = np.flatnonzero(aug > 0)
        assert len(copies) == int((aug == 0)[store.meta("split") == 0].sum())  # one copy per train original
        assert (aug[origin[copies]] == 0).all()  # a copy points at an original
        for name in ("label", "split", "video", "identity", "identity_src", "frame", "box"):
            np.testing.assert_array_equal(store.meta(name)[copies], store.meta(name)[origin[copies]], err_msg=name)
        assert set(store.meta("split")[copies].tolist()) == {0}  # only train gets copies by default
        originals = np.flatnonzero(aug == 0)
        assert (origin[originals] == originals).all()
        changed = (store.crops(copies) != store.crops(origin[copies])).any(axis=(1, 2, 3))
        assert changed.mean() > 0.5  # the copies are augmented, not duplicated


def test_on_the_fly_augmentation_never_changes_labels(mini_faces_h5):
    plain = FaceDataset(mini_faces_h5, "train")
    augmented = FaceDataset(mini_faces_h5, "train", augment=build_augment("broadcast", seed=0))
    assert len(plain) == len(augmented) > 0
    xs_differ = 0
    for i in range(len(plain)):
        (x0, y0), (x1, y1) = plain[i], augmented[i]
        assert float(y0) == float(y1)
        assert x0.shape == x1.shape
        xs_differ += int(not bool((x0 == x1).all()))
    assert xs_differ > len(plain) // 2
    with FaceStore(mini_faces_h5) as store:
        np.testing.assert_array_equal(augmented.labels, store.meta("label")[store.indices("train")])
