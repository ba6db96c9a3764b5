"""fit: training learns, checkpoints describe themselves, resume continues exactly, foreign data is refused."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.trainer._tiny import write_tiny_store
from trainer.fit import CHECKPOINT_NAME, FitError, TrainConfig, fit, load_checkpoint, model_from_checkpoint
from trainer.store import FaceStore

CFG = TrainConfig(model="paper_cnn", model_args={"filters": [8, 16], "pool_every": True}, lr=3e-3, epochs=4)


@pytest.fixture(scope="module")
def tiny_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_store(tmp_path_factory.mktemp("fit") / "faces.h5")


def test_fit_learns_the_tiny_store_and_checkpoints_every_epoch(tiny_store, tmp_path):
    result = fit(CFG, data=tiny_store, out=tmp_path, progress=False, threads=1)
    assert result.config.input_size == 32  # resolved from the store's crop size
    assert [r["epoch"] for r in result.history] == [1, 2, 3, 4]
    assert result.history[-1]["train_loss"] < result.history[0]["train_loss"]
    assert result.history[-1]["val_loss"] < result.history[0]["val_loss"]
    assert result.history[result.best_epoch - 1]["val_acc"] >= 0.9  # bright checkerboard fakes vs dark reals
    ckpt = load_checkpoint(tmp_path / CHECKPOINT_NAME)
    with FaceStore(tiny_store) as store:
        assert ckpt["dataset"]["fingerprint"] == store.fingerprint()
    assert ckpt["dataset"]["rows"] == {"train": 24, "val": 16, "test": 16}
    assert ckpt["config"] == {**CFG.to_dict(), "input_size": 32}
    assert ckpt["epoch"] == 4 and ckpt["history"] == result.history
    assert ckpt["best"]["epoch"] == result.best_epoch and ckpt["optimizer"]["state"]
    assert ckpt["model_config"]["filters"] == (8, 16)
    last = model_from_checkpoint(ckpt, weights="last")
    for name, value in result.model.state_dict().items():
        torch.testing.assert_close(last.state_dict()[name], value)


def test_resume_continues_exactly_where_an_uninterrupted_run_would_be(tiny_store, tmp_path):
    whole = fit(replace(CFG, epochs=3), data=tiny_store, out=tmp_path / "whole", progress=False)
    fit(replace(CFG, epochs=1), data=tiny_store, out=tmp_path / "split", progress=False)
    resumed = fit(replace(CFG, epochs=3), data=tiny_store, out=tmp_path / "split", resume=True, progress=False)
    assert len(resumed.history) == 3
    for a, b in zip(whole.history, resumed.history):
        assert a["val_loss"] == pytest.approx(b["val_loss"], rel=1e-5)
    for name, value in whole.model.state_dict().items():
        torch.testing.assert_close(resumed.model.state_dict()[name], value, rtol=1e-5, atol=1e-6)


def test_resume_refuses_another_dataset_and_another_config(tiny_store, tmp_path):
    fit(replace(CFG, epochs=1), data=tiny_store, out=tmp_path, progress=False)
    other = write_tiny_store(tmp_path / "other.h5", frames=3)
    with pytest.raises(
        FitError, match=r"trained on another dataset \(fingerprint [0-9a-f]{12}\.\.\., from .*faces\.h5"
    ):
        fit(replace(CFG, epochs=2), data=other, out=tmp_path, resume=True, progress=False)
    with pytest.raises(
        FitError, match=r"another config \(lr: checkpoint 0\.003, now 0\.01\); only --epochs may change"
    ):
        fit(replace(CFG, epochs=2, lr=0.01), data=tiny_store, out=tmp_path, resume=True, progress=False)
    with pytest.raises(FitError, match=r"checkpoint\.pt exists; pass --resume"):
        fit(CFG, data=tiny_store, out=tmp_path, progress=False)


def test_bad_input_fails_before_training(tiny_store, tmp_path):
    with pytest.raises(ValueError, match=r"unknown augmentation 'heavy'; valid: \['none', 'paper', 'broadcast'"):
        fit(replace(CFG, augment="heavy"), data=tiny_store, out=None, progress=False)
    with pytest.raises(Exception, match=r"unknown model 'resnet'; valid"):
        fit(replace(CFG, model="resnet"), data=tiny_store, out=None, progress=False)
    no_val = write_tiny_store(tmp_path / "noval.h5", videos={"train": 2, "test": 2})
    with pytest.raises(FitError, match=r"the 'val' split is empty"):
        fit(CFG, data=no_val, out=None, progress=False)
    spectral = replace(CFG, model="spectral", model_args={"bands": 2, "margin": 0.3}, epochs=1)
    with pytest.raises(
        FitError,
        match=r"places its regions for crop margin 0.3, but .*faces.h5 was cut with margin "
        r"0.25; pass --model-arg margin=0.25",
    ):
        fit(spectral, data=tiny_store, out=None, progress=False)
    with pytest.raises(FitError, match=r"unknown training config fields \['epoch'\]; valid: \['model'"):
        TrainConfig.from_dict({"epoch": 3})
    # the shipped pack's manifest and checkpoint name stored_share (a study, research/README.md) at 0.0
    assert TrainConfig.from_dict({"stored_share": 0.0, "epochs": 3}) == TrainConfig(epochs=3)
    with pytest.raises(FitError, match=r"stored_share was a study that did not ship .*; valid: \[0.0\]"):
        TrainConfig.from_dict({"stored_share": 0.3})
    with pytest.raises(FitError, match=r"is not a dfwatch classifier checkpoint"):
        torch.save({"weights": 1}, tmp_path / "x.pt")
        load_checkpoint(tmp_path / "x.pt")


def test_the_band_statistics_family_trains_only_its_head(tiny_store):
    cfg = replace(CFG, model="spectral", model_args={"bands": 2}, epochs=1)
    result = fit(cfg, data=tiny_store, out=None, progress=False, threads=1)
    trained = {n for n, p in result.model.named_parameters()}
    assert trained and all(n.startswith("head.") for n in trained)  # the frequency front end has no weights
    assert np.isfinite(result.history[0]["train_loss"])


def test_fit_command_takes_the_search_config_and_flags(tiny_store, tmp_path):
    from trainer.cli import main

    best = {"trial": 3, "config": {**CFG.to_dict(), "epochs": 10, "lr": 0.002, "augment": "paper"}}
    (tmp_path / "best_config.json").write_text(json.dumps(best))
    argv = [
        "fit",
        "--data",
        str(tiny_store),
        "--out",
        str(tmp_path / "run"),
        "--config",
        str(tmp_path / "best_config.json"),
        "--model-arg",
        "dense_units=4",
        "--threads",
        "1",
    ]
    assert main([*argv, "--epochs", "1"]) == 0
    ckpt = load_checkpoint(tmp_path / "run" / CHECKPOINT_NAME)
    assert ckpt["config"]["lr"] == 0.002 and ckpt["config"]["augment"] == "paper"  # from the search
    assert ckpt["config"]["epochs"] == 1 and ckpt["config"]["batch_size"] == 8  # fit's own flags
    assert ckpt["config"]["model_args"] == {"filters": [8, 16], "pool_every": True, "dense_units": 4}
    assert main([*argv, "--epochs", "1"]) == 1  # exists, no --resume: refused with an error line
    assert main([*argv, "--epochs", "2", "--resume", "--lr", "0.1"]) == 1  # another config: refused
    assert main([*argv, "--epochs", "2", "--resume"]) == 0
    assert len(load_checkpoint(tmp_path / "run" / CHECKPOINT_NAME)["history"]) == 2


def test_select_picks_the_best_epoch_by_its_score_and_records_the_measures(tiny_store, tmp_path):
    scores = iter([0.6, 0.9, 0.7, 0.9])  # epoch 2 and 4 tie: the lower validation loss wins; here epoch 2 then

    def select(model):
        assert not model.training  # measured in eval mode
        return {"select": next(scores), "celebdf_hard_face_auc": 0.5}

    result = fit(CFG, data=tiny_store, out=tmp_path, progress=False, threads=1, select=select)
    assert [r["select"] for r in result.history] == [0.6, 0.9, 0.7, 0.9]
    assert all(r["celebdf_hard_face_auc"] == 0.5 for r in result.history)
    losses = {r["epoch"]: r["val_loss"] for r in result.history}
    assert result.best_epoch == (4 if losses[4] < losses[2] else 2)
    ckpt = load_checkpoint(tmp_path / CHECKPOINT_NAME)
    assert ckpt["best"]["epoch"] == result.best_epoch and ckpt["best"]["select"] == 0.9


def test_cosine_schedule_warms_up_then_decays_to_zero():
    from trainer.fit import lr_factor

    assert lr_factor("constant", 3.3, epochs=5) == 1.0
    assert lr_factor("cosine", 0.0, epochs=5) == pytest.approx(0.01)  # warm-up starts low
    assert lr_factor("cosine", 0.5, epochs=5) == pytest.approx(0.5)
    assert lr_factor("cosine", 1.0, epochs=5) == pytest.approx(1.0)  # peak after the first epoch
    assert lr_factor("cosine", 3.0, epochs=5) == pytest.approx(0.5)  # halfway through the decay
    assert lr_factor("cosine", 5.0, epochs=5) == pytest.approx(0.0, abs=1e-12)
    factors = [lr_factor("cosine", t / 10, epochs=5) for t in range(10, 51)]
    assert all(a >= b for a, b in zip(factors, factors[1:]))  # monotone after warm-up
    with pytest.raises(FitError, match=r"unknown schedule 'step'; valid: \['constant', 'cosine'\]"):
        TrainConfig(schedule="step")


def test_cosine_fit_sets_the_learning_rate_per_step_and_an_interrupted_run_resumes_exactly(tiny_store, tmp_path):
    from trainer.fit import lr_factor

    cfg = replace(CFG, schedule="cosine", epochs=3)
    whole = fit(cfg, data=tiny_store, out=None, progress=False, threads=1)

    def stop_after_first(record):
        if record["epoch"] == 1:
            raise KeyboardInterrupt  # after epoch 1's checkpoint, as Ctrl-C would

    with pytest.raises(KeyboardInterrupt):
        fit(cfg, data=tiny_store, out=tmp_path, progress=False, threads=1, on_epoch=stop_after_first)
    ckpt = load_checkpoint(tmp_path / CHECKPOINT_NAME)
    steps = 24 * 1 // 8  # 24 train crops, batch 8: the warm-up's last step set lr * 2/3
    assert ckpt["optimizer"]["param_groups"][0]["lr"] == pytest.approx(
        cfg.lr * lr_factor("cosine", 2 / steps, epochs=3)
    )
    resumed = fit(cfg, data=tiny_store, out=tmp_path, resume=True, progress=False, threads=1)
    for a, b in zip(whole.history, resumed.history):
        assert a["val_loss"] == pytest.approx(b["val_loss"], rel=1e-5)
    with pytest.raises(FitError, match=r"another config \(schedule: checkpoint 'cosine', now 'constant'\)"):
        fit(replace(CFG, epochs=3), data=tiny_store, out=tmp_path, resume=True, progress=False, threads=1)


def test_epoch_samples_draws_a_new_subset_each_epoch(tiny_store):
    from trainer.fit import make_loader

    def order(seed: int) -> list[float]:
        loader = make_loader(tiny_store, "train", input_size=32, batch_size=4, shuffle=True, seed=seed, samples=10)
        labels = [y for _, ys in loader for y in ys.tolist()]
        assert len(labels) == 10
        return [float(x.sum()) for x, _ in loader]

    assert order(1) == order(1) and order(1) != order(2)
    with pytest.raises(FitError, match="epoch_samples must be >= 1"):
        TrainConfig(epoch_samples=0)


def test_precise_bn_replaces_trailing_running_stats_by_the_current_weights_batch_average(tiny_store):
    from trainer.fit import make_loader, precise_bn

    model = TrainConfig(model="spectral", input_size=32).build_model()
    bn = model.head[0]
    bn.running_mean.fill_(5.0)  # stale statistics, as after weights moved under them
    loader = make_loader(tiny_store, "train", input_size=32, batch_size=8, shuffle=False)
    batches = [x for x, _ in loader][:2]
    assert precise_bn(model, loader, device="cpu", batches=2)
    with torch.no_grad():
        means = [model.statistics(x).mean(dim=0) for x in batches]  # (F,) per batch, before the BN
    torch.testing.assert_close(bn.running_mean, torch.stack(means).mean(0), rtol=1e-4, atol=1e-5)
    assert bn.momentum == 0.1  # training's own momentum is back
    plain = TrainConfig(model="paper_cnn", model_args={"filters": [4]}, input_size=32).build_model()
    assert not precise_bn(plain, loader, device="cpu")  # nothing to do without BatchNorm


def test_fit_flags_are_made_from_train_config_so_their_help_follows_its_defaults():
    import dataclasses
    import re
    import subprocess
    import sys

    from pipeline.flags import field_help
    from trainer.commands.fit import FLAG_FIELDS
    from trainer.fit import TrainConfig

    out = subprocess.run([sys.executable, "-m", "trainer.cli", "fit", "--help"], capture_output=True, text=True)
    text = re.sub(r"\s+", " ", out.stdout)
    defaults = {f.name: f.default for f in dataclasses.fields(TrainConfig)}
    for name in FLAG_FIELDS:
        if name == "model_args":
            continue
        value = defaults[name]
        shown = {None: "none", True: "on", False: "off"}[value] if value is None or isinstance(value, bool) else value
        shown = f"{shown:g}" if isinstance(shown, float) else str(shown)
        *_, last = re.finditer(re.escape("--" + name.replace("_", "-")) + r"( [A-Z{]|, --no-)", text)
        after = text[last.start() : last.start() + 500]
        assert " ".join(field_help(TrainConfig)[name].split()[:3]) in after and f"(default {shown}" in after, name
