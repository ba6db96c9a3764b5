"""Self-blended images: fakes change the face region only, repeat for one rng state, and enter
training as one extra fake per real crop (train drawn per epoch, val fixed)."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from tests.trainer._tiny import write_tiny_store
from trainer.fit import CHECKPOINT_NAME, TrainConfig, fit, load_checkpoint, make_loader, model_from_checkpoint
from trainer.pack.selfblend import FIXED_SEED, SelfBlendDataset, blend_mask, self_blend, source_transform
from trainer.store import FaceDataset

CFG = TrainConfig(model="paper_cnn", model_args={"filters": [8, 16], "pool_every": True}, lr=3e-3, epochs=1)


def _face(size: int, seed: int) -> np.ndarray:
    """(size, size, 3) uint8: smooth random colour patches plus fine noise, a stand-in for a crop."""
    rng = np.random.default_rng(seed)
    low = rng.uniform(40, 220, (6, 6, 3)).astype(np.float32)
    img = cv2.resize(low, (size, size), interpolation=cv2.INTER_CUBIC) + rng.normal(0, 12, (size, size, 3))
    return np.clip(img, 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def tiny_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_store(tmp_path_factory.mktemp("sbi") / "faces.h5")  # crop 32, margin 0.25


@pytest.mark.parametrize(("size", "margin"), [(128, 0.25), (64, 0.5), (32, 0.25)])
def test_fakes_change_the_face_region_and_leave_the_border_band(size, margin):
    band = int(round(margin / (1 + 2 * margin) * size))  # the crop's margin around the face-box square
    inside = np.zeros((size, size), bool)
    inside[band : size - band, band : size - band] = True
    corner = max(size // 10, 2)
    outside_sum = inside_sum = 0.0
    for seed in range(12):
        img = _face(size, seed)
        before = img.copy()
        fake = self_blend(img, np.random.default_rng(seed), margin=margin)
        assert fake.shape == img.shape and fake.dtype == np.uint8
        np.testing.assert_array_equal(img, before)  # the input is never changed in place
        diff = np.abs(fake.astype(np.int16) - img).mean(axis=2)  # (S, S)
        assert diff[inside].mean() > 1.0  # every fake actually changed the face
        outside_sum += diff[~inside].mean()
        inside_sum += diff[inside].mean()
        for rows in (slice(0, corner), slice(size - corner, size)):  # the mask is exactly 0 in the corners
            for cols in (slice(0, corner), slice(size - corner, size)):
                np.testing.assert_array_equal(fake[rows, cols], img[rows, cols])
    assert outside_sum < inside_sum / 10


def test_mask_is_soft_bounded_and_peaks_at_a_blend_ratio():
    peaks = set()
    for seed in range(40):
        mask = blend_mask(96, np.random.default_rng(seed), margin=0.25)
        assert mask.shape == (96, 96, 1) and mask.dtype == np.float32
        assert mask.min() == 0.0 and mask.max() <= 1.0
        assert mask[48, 48, 0] > 0.0  # the face centre is always blended
        assert ((mask > 0.02) & (mask < mask.max() - 0.02)).any()  # a soft edge, not a hard cut
        peaks.add(round(float(mask.max()), 2))
    assert peaks == {0.25, 0.5, 0.75, 1.0}


def test_same_rng_state_same_fake_other_seeds_other_fakes():
    img = _face(64, 0)
    a = self_blend(img, np.random.default_rng(7), margin=0.25)
    b = self_blend(img, np.random.default_rng(7), margin=0.25)
    np.testing.assert_array_equal(a, b)
    others = [self_blend(img, np.random.default_rng(s), margin=0.25) for s in (8, 9, 10)]
    assert all(not np.array_equal(a, o) for o in others)
    rng = np.random.default_rng(7)  # a generator's next draw is another fake
    assert not np.array_equal(self_blend(img, rng, margin=0.25), self_blend(img, rng, margin=0.25))


def test_sharpen_share_picks_sharpened_or_blurred_sources_and_nothing_else():
    img = _face(96, 3)

    def detail(x: np.ndarray) -> float:  # high-frequency energy
        return float(cv2.Laplacian(cv2.cvtColor(x, cv2.COLOR_RGB2GRAY), cv2.CV_32F).var())

    for seed in range(12):
        sharp = source_transform(img, np.random.default_rng(seed), margin=0.25, sharpen=1.0)
        soft = source_transform(img, np.random.default_rng(seed), margin=0.25, sharpen=0.0)
        assert detail(sharp) > detail(soft)  # the same draws but the sharpen-or-blur branch
    a = self_blend(img, np.random.default_rng(5), margin=0.25)
    np.testing.assert_array_equal(a, self_blend(img, np.random.default_rng(5), margin=0.25, sharpen=0.5))
    with pytest.raises(ValueError, match=r"sharpen is a chance in \[0, 1\], got 1.5"):
        self_blend(img, np.random.default_rng(0), margin=0.25, sharpen=1.5)


def test_bad_input_is_refused_with_the_expected_shape():
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match=r"square uint8 \(S, S, 3\) RGB crop with S >= 8, got float32 \(32, 32, 3\)"):
        self_blend(np.zeros((32, 32, 3), np.float32), rng, margin=0.25)
    with pytest.raises(ValueError, match=r"got uint8 \(32, 40, 3\)"):
        self_blend(np.zeros((32, 40, 3), np.uint8), rng, margin=0.25)
    with pytest.raises(ValueError, match=r"margin must be >= 0 \(the store's crop_margin\), got -0.1"):
        self_blend(np.zeros((32, 32, 3), np.uint8), rng, margin=-0.1)


def _flip(img: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(img[:, ::-1])


def test_dataset_adds_one_fake_per_real_row_blended_before_augment_and_resize(tiny_store):
    base = FaceDataset(tiny_store, "val", augment=_flip, input_size=48)
    ds = SelfBlendDataset(base, margin=0.25)
    real = np.flatnonzero(base.labels == 0)
    n = len(base)
    assert (n, len(real)) == (16, 8) and len(ds) == n + len(real)
    assert ds.labels.dtype == np.float32
    np.testing.assert_array_equal(ds.labels, [*base.labels.tolist(), *[1.0] * len(real)])
    for i in (0, 1, n - 1):  # the base's own rows, untouched
        np.testing.assert_array_equal(ds.image(i), base.image(i))
        assert float(ds[i][1]) == base.labels[i]
    for k in (0, 5):
        x, y = ds[n + k]
        assert x.shape == (3, 48, 48) and x.dtype == torch.float32 and float(y) == 1.0
        raw = base.raw_crop(int(real[k]))  # (32, 32, 3): blended at the stored size, then flipped and resized
        expected = base.finish(self_blend(raw, np.random.default_rng([FIXED_SEED, k]), margin=0.25))
        np.testing.assert_array_equal(ds.image(n + k), expected)
        assert not np.array_equal(ds.image(n + k), base.image(int(real[k])))
    with pytest.raises(IndexError, match=r"item 24 out of range 0\.\.23"):
        ds.image(len(ds))


def test_val_fakes_are_fixed_and_train_fakes_follow_the_epoch_seed(tiny_store):
    def fakes(split: str, seed: int) -> np.ndarray:
        loader = make_loader(tiny_store, split, input_size=32, batch_size=64, shuffle=False, seed=seed, self_blend=True)
        ds = loader.dataset
        assert isinstance(ds, SelfBlendDataset) and ds.margin == 0.25  # the store's crop_margin
        return np.stack([ds.image(i) for i in range(len(ds.base), len(ds))])

    np.testing.assert_array_equal(fakes("val", 1), fakes("val", 2))  # val: the same fakes every epoch
    first = fakes("train", 1)
    assert len(first) == 12  # 6 train videos, half real, 4 frames each
    np.testing.assert_array_equal(first, fakes("train", 1))  # a resumed epoch draws the same fakes
    assert not np.array_equal(first, fakes("train", 2))  # the next epoch draws new ones
    plain = make_loader(tiny_store, "val", input_size=32, batch_size=64, shuffle=False)
    assert isinstance(plain.dataset, FaceDataset) and len(plain.dataset) == 16  # off by default (evaluate)


def test_fit_with_self_blend_checkpoints_it_and_resumes_exactly(tiny_store, tmp_path):
    cfg = replace(CFG, self_blend=True)
    result = fit(cfg, data=tiny_store, out=tmp_path / "a", progress=False, threads=1)
    assert len(result.history) == 1 and np.isfinite(result.history[0]["val_loss"])
    ckpt = load_checkpoint(tmp_path / "a" / CHECKPOINT_NAME)
    assert ckpt["config"]["self_blend"] is True
    assert TrainConfig.from_dict(ckpt["config"]) == replace(cfg, input_size=32)
    model_from_checkpoint(ckpt)
    resumed = fit(replace(cfg, epochs=2), data=tiny_store, out=tmp_path / "a", resume=True, progress=False, threads=1)
    whole = fit(replace(cfg, epochs=2), data=tiny_store, out=None, progress=False, threads=1)
    for a, b in zip(whole.history, resumed.history):
        assert a["val_loss"] == pytest.approx(b["val_loss"], rel=1e-5)


def test_configs_and_checkpoints_from_before_self_blend_still_load_and_resume(tiny_store, tmp_path):
    raw = CFG.to_dict()
    del raw["self_blend"]
    assert TrainConfig.from_dict(raw).self_blend is False
    fit(CFG, data=tiny_store, out=tmp_path, progress=False, threads=1)
    ckpt = torch.load(tmp_path / CHECKPOINT_NAME, weights_only=True)
    del ckpt["config"]["self_blend"]
    torch.save(ckpt, tmp_path / CHECKPOINT_NAME)
    model_from_checkpoint(load_checkpoint(tmp_path / CHECKPOINT_NAME))
    resumed = fit(replace(CFG, epochs=2), data=tiny_store, out=tmp_path, resume=True, progress=False, threads=1)
    assert len(resumed.history) == 2


def test_fit_and_search_flags_reach_the_training_config(tiny_store, tmp_path, monkeypatch):
    from trainer.cli import build_parser, main
    from trainer.commands.fit import resolve_config
    from trainer.paper import search

    argv = ["fit", "--data", str(tiny_store), "--out", str(tmp_path / "run")]
    assert resolve_config(build_parser().parse_args(argv)).self_blend is False
    assert resolve_config(build_parser().parse_args([*argv, "--self-blend"])).self_blend is True
    best = tmp_path / "best_config.json"
    best.write_text(json.dumps({"trial": 0, "config": {**CFG.to_dict(), "self_blend": True}}))
    assert resolve_config(build_parser().parse_args([*argv, "--config", str(best)])).self_blend is True  # the search's
    assert (
        resolve_config(build_parser().parse_args([*argv, "--config", str(best), "--no-self-blend"])).self_blend is False
    )
    assert resolve_config(build_parser().parse_args(argv)).batch_size == 8  # the paper's
    best.write_text(json.dumps({"trial": 0, "config": {**CFG.to_dict(), "batch_size": 64}}))
    assert resolve_config(build_parser().parse_args([*argv, "--config", str(best)])).batch_size == 64  # searched with
    flag = build_parser().parse_args([*argv, "--config", str(best), "--batch-size", "16"])
    assert resolve_config(flag).batch_size == 16

    bases: list[TrainConfig] = []

    def run_search(**kwargs):
        bases.append(kwargs["base"])
        raise KeyboardInterrupt  # stop the command before any work

    monkeypatch.setattr(search, "run_search", run_search)
    for flags in ([], ["--self-blend"]):
        assert main(["search", "--data", str(tiny_store), "--out", str(tmp_path / "s"), *flags]) == 130
    assert [b.self_blend for b in bases] == [False, True]


def test_all_forwards_self_blend_and_keeps_stages_recorded_before_the_flag(tmp_path, capsys):
    from pipeline.flags import config_from_args
    from trainer.cli import build_parser, main
    from trainer.commands.all import STAGES, AllOptions, _options, plan, stage_namespace

    base = ["all", "--celebdf", str(tmp_path / "tree"), "--work", str(tmp_path), "--until", "search"]
    args = build_parser().parse_args([*base, "--search-self-blend", "--fit-self-blend"])
    chain = config_from_args(AllOptions, args)
    assert stage_namespace("search", ["--data", "d", "--out", "o"], args, chain).self_blend is True
    assert stage_namespace("fit", ["--data", "d", "--out", "o"], args, chain).self_blend is True
    plain = build_parser().parse_args(base)
    state = {}
    for key, stage, managed in plan(chain, list(STAGES)):
        ns = stage_namespace(stage, managed, plain, chain)
        options = json.loads(json.dumps(_options(ns), default=str))
        options.pop("self_blend", None)  # written by a dfwatch without the flag
        state[key] = {"finished": "", "seconds": 0, "options": options}
    (tmp_path / "all_state.json").write_text(json.dumps(state))
    assert main(base) == 0  # finished stages stay finished: the new flag is at its default
    assert "0 stage(s) run (none), 2 skipped" in capsys.readouterr().err
    assert main([*base, "--search-self-blend"]) == 1  # on the old study it is a changed search
    assert "search options ['self_blend'] changed" in capsys.readouterr().err
