"""Simulated capture: native sizes and codecs as drawn, real codecs, one resize to the input, fakes blended at
the native size, and reals and fakes through the same steps in the training dataset."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from engines.crops import resize_square
from tests.trainer._tiny import write_tiny_store
from trainer.fit import make_loader
from trainer.pack.capture import Capture, CaptureConfig, apply_look, draw_capture, encode, simulate_capture
from trainer.pack.selfblend import SelfBlendDataset
from trainer.store import FaceDataset


def _scene(size: int, seed: int = 0) -> np.ndarray:
    """(size, size, 3) uint8 with smooth shading and fine texture (what codecs and resizes act on)."""
    rng = np.random.default_rng(seed)
    low = rng.uniform(40, 220, (8, 8, 3)).astype(np.float32)
    img = cv2.resize(low, (size, size), interpolation=cv2.INTER_CUBIC) + rng.normal(0, 10, (size, size, 3))
    return np.clip(img, 0, 255).astype(np.uint8)


def test_draws_cover_native_sizes_and_codecs_in_their_shares():
    cfg = CaptureConfig()
    rng = np.random.default_rng(0)
    draws = [draw_capture(rng, 256, cfg) for _ in range(4000)]
    natives = np.array([d.native for d in draws])
    assert natives.min() >= cfg.min_native and natives.max() == 256 and (natives % 2 == 0).all()
    assert abs((natives == 256).mean() - cfg.p_full) < 0.04  # shown at the stored side
    assert (natives < 140).mean() > 0.15  # small faces are common: log-uniform down to min_native
    codecs = Counter(d.codec for d in draws)
    assert abs(codecs["jpeg"] / 4000 - cfg.p_jpeg) < 0.04 and abs(codecs["h264"] / 4000 - cfg.p_h264) < 0.04
    jpeg = [d.quality for d in draws if d.codec == "jpeg"]
    assert min(jpeg) >= cfg.jpeg_quality[0] and max(jpeg) <= cfg.jpeg_quality[1]
    assert draw_capture(rng, 48, cfg).native == 48  # a crop smaller than min_native keeps its size


@pytest.mark.parametrize("codec", ["jpeg", "h264"])
def test_codecs_are_real_and_lossier_at_lower_quality(codec):
    img = _scene(96)
    good, bad = (
        (Capture(96, codec, 95), Capture(96, codec, 30))
        if codec == "jpeg"
        else (Capture(96, codec, 18), Capture(96, codec, 40))
    )
    out_good, out_bad = encode(img, good), encode(img, bad)
    assert out_good.shape == img.shape and out_good.dtype == np.uint8
    err_good = np.abs(out_good.astype(int) - img).mean()
    err_bad = np.abs(out_bad.astype(int) - img).mean()
    assert 0 < err_good < err_bad < 40
    assert encode(img, Capture(96, "none")) is img
    with pytest.raises(ValueError, match=r"unknown codec 'vp9'; valid: \['none', 'jpeg', 'h264'\]"):
        encode(img, Capture(96, "vp9"))


def test_h264_keeps_odd_sides():
    img = _scene(64)[:63, :61]
    assert encode(np.ascontiguousarray(img), Capture(64, "h264", 23)).shape == (63, 61, 3)


def test_simulated_capture_blends_at_the_native_size_and_resizes_once():
    seen: list[int] = []

    def swap(native: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        seen.append(native.shape[0])
        return native

    img = _scene(256)
    for seed in range(30):
        rng = np.random.default_rng(seed)
        capture = draw_capture(np.random.default_rng(seed), 256)
        out = simulate_capture(img, rng, size=96, swap=swap)
        assert out.shape == (96, 96, 3) and out.dtype == np.uint8
        assert seen[-1] == capture.native  # the swap saw the crop at the drawn native side
        if capture.codec == "none" and capture.border is None:  # exactly the two resizes, native then input
            np.testing.assert_array_equal(out, resize_square(resize_square(img, capture.native), 96))


def test_a_cut_out_face_is_black_outside_its_box_and_margins():
    from trainer.pack.capture import black_outside

    img = np.full((150, 150, 3), 200, np.uint8)  # margin 0.25: the face box is the centred 100 px square
    out = black_outside(img, (0.0, 0.1, 0.2, 0.5), margin=0.25)
    rows, cols = np.flatnonzero(out[:, :, 0].any(axis=1)), np.flatnonzero(out[:, :, 0].any(axis=0))
    assert (rows[0], rows[-1] + 1, cols[0], cols[-1] + 1) == (15, 150, 25, 145)  # top 10 px, bottom clipped
    assert (out[15:150, 25:145] == 200).all() and out.sum() == 200 * 3 * 135 * 120
    rng = np.random.default_rng(0)
    draws = [draw_capture(rng, 256) for _ in range(2000)]
    with_border = [d.border for d in draws if d.border is not None]
    assert abs(len(with_border) / 2000 - CaptureConfig().p_border) < 0.04
    assert all(0.0 <= v <= 0.3 for b in with_border for v in b)


def test_capture_config_is_checked():
    with pytest.raises(ValueError, match="min_native must be >= 8"):
        CaptureConfig(min_native=4)
    with pytest.raises(ValueError, match="p_jpeg \\+ p_h264 <= 1"):
        CaptureConfig(p_jpeg=0.8, p_h264=0.4)
    with pytest.raises(ValueError, match="p_sharpen \\+ p_soften <= 1"):
        CaptureConfig(p_sharpen=0.6, p_soften=0.6)


def _detail(img: np.ndarray) -> float:
    return float(cv2.Laplacian(cv2.cvtColor(img, cv2.COLOR_RGB2GRAY), cv2.CV_64F).var())


def test_a_broadcast_look_sharpens_or_softens_the_whole_picture_in_its_share():
    cfg = CaptureConfig(p_sharpen=0.2, p_soften=0.3)
    rng = np.random.default_rng(0)
    kinds = Counter(draw_capture(rng, 256, cfg).look[0] for _ in range(4000))
    assert abs(kinds["sharpen"] / 4000 - 0.2) < 0.03 and abs((kinds["blur"] + kinds["denoise"]) / 4000 - 0.3) < 0.03
    for seed in range(50):  # the look is drawn last: sizes, codecs and borders come out as without it
        a, b = draw_capture(np.random.default_rng(seed), 256), draw_capture(np.random.default_rng(seed), 256, cfg)
        assert a.look == ("none", 0.0) and (a.native, a.codec, a.quality, a.border) == (
            b.native,
            b.codec,
            b.quality,
            b.border,
        )
    img = _scene(96)
    assert apply_look(img, ("none", 0.0)) is img
    assert _detail(apply_look(img, ("sharpen", 1.0))) > 2 * _detail(img)
    assert _detail(apply_look(img, ("blur", 1.0))) < 0.5 * _detail(img)
    assert _detail(apply_look(img, ("denoise", 0.0))) < _detail(img)
    with pytest.raises(ValueError, match="unknown look 'vhs'"):
        apply_look(img, ("vhs", 1.0))


def test_a_fake_and_its_real_twin_get_the_same_look(tiny_store):
    loader = make_loader(
        tiny_store,
        "train",
        input_size=64,
        batch_size=4,
        shuffle=True,
        seed=3,
        self_blend=True,
        capture=True,
        capture_look=1.0,
    )
    ds = loader.dataset
    assert ds.capture.p_sharpen == ds.capture.p_soften == 0.5
    n = len(ds.base)
    for k in range(min(4, len(ds.real))):
        real, fake = ds.image(int(ds.real[k])), ds.image(n + k)
        assert np.abs(real[:6, :6].astype(int) - fake[:6, :6]).max() <= 2  # outside the blend: the same pixels


@pytest.fixture(scope="module")
def tiny_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_store(tmp_path_factory.mktemp("capture") / "faces.h5", size=64)


def test_dataset_shows_reals_and_fakes_through_the_same_capture(tiny_store):
    loader = make_loader(tiny_store, "val", input_size=48, batch_size=8, shuffle=False, self_blend=True, capture=True)
    ds = loader.dataset
    assert isinstance(ds, SelfBlendDataset) and ds.capture is not None and ds.size == 48
    assert ds.base.input_size is None and ds.base.augment is None  # the capture resizes, once
    n = len(ds.base)
    for i in (0, n - 1, n, len(ds) - 1):  # reals and fakes alike arrive at the input size
        x, y = ds[i]
        assert x.shape == (3, 48, 48) and x.dtype == torch.float32 and float(y) == ds.labels[i]
    np.testing.assert_array_equal(ds.image(3), ds.image(3))  # val: fixed draws
    # a real item is its stored crop through a capture (no blend): the same as simulate_capture with its rng
    expected = simulate_capture(ds.base.raw_crop(3), ds._rng(3), size=48)
    np.testing.assert_array_equal(ds.image(3), expected)
    train = make_loader(
        tiny_store,
        "train",
        input_size=48,
        batch_size=8,
        shuffle=True,
        seed=1,
        self_blend=True,
        capture=True,
        augment="paper",
    )
    assert train.dataset.augment is not None  # the augmentation runs after the capture, at the input size
    x, y = next(iter(train))
    assert x.shape == (8, 3, 48, 48)


def test_capture_needs_the_base_to_leave_resizing_to_it(tiny_store):
    base = FaceDataset(tiny_store, "val", input_size=48)
    with pytest.raises(ValueError, match="with capture, give the input size here"):
        SelfBlendDataset(base, margin=0.25, capture=CaptureConfig(), size=48)


def test_a_fake_is_shown_as_its_real_twin_and_the_two_share_a_batch(tiny_store):
    from trainer.pack.selfblend import PairSampler

    loader = make_loader(
        tiny_store, "train", input_size=64, batch_size=4, shuffle=True, seed=3, self_blend=True, capture=True
    )
    ds = loader.dataset
    assert isinstance(loader.sampler, PairSampler)
    n = len(ds.base)
    twin_of = {n + k: int(r) for k, r in enumerate(ds.real)}
    order = list(loader.sampler)
    assert sorted(order) == list(range(len(ds)))  # every real with its fake, and the store's own fakes alone
    reals = set(twin_of.values())
    for pos, i in enumerate(order):
        if i in reals:
            assert twin_of[order[pos + 1]] == i and pos % 2 == 0  # (real, its fake), adjacent, in one even batch
    assert len(ds.base) > len(ds.real)  # (the tiny store has fakes of its own: they come alone)
    half = make_loader(
        tiny_store, "train", input_size=64, batch_size=4, shuffle=True, seed=3, self_blend=True, capture=True, samples=6
    )
    assert len(list(half.sampler)) == 6
    # the same native size and codec: pixels the blend mask never reaches are the same in both
    real, fake = ds.image(int(ds.real[0])), ds.image(n)
    corner = np.abs(real[:6, :6].astype(int) - fake[:6, :6]).max()
    assert corner <= 2 and np.abs(real.astype(int) - fake).max() > 10


def test_capture_without_self_blend_is_refused(tiny_store):
    from trainer.fit import FitError

    with pytest.raises(FitError, match="capture .* needs self_blend"):
        make_loader(tiny_store, "train", input_size=48, batch_size=8, shuffle=True, capture=True)
