"""search: suggest_config, a real (tiny) study, pruning, the latency objective, a Redis-backed
study shared by two worker processes, storage errors."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from pathlib import Path

import optuna
import pytest

from tests.conftest import REDIS_URL, ROOT
from tests.trainer._tiny import write_tiny_store
from trainer.fit import TrainConfig
from trainer.paper.search import SearchError, SearchSpace, make_storage, run_search, suggest_config

SMALL = SearchSpace(families=("paper_cnn",), cnn_blocks=(2, 2), augments=("none",))
FAST = {"epochs": 1, "batch_size": 8}


@pytest.fixture(scope="module")
def tiny_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_store(tmp_path_factory.mktemp("search") / "faces.h5")


def test_suggest_config_builds_the_paper_cnn_family_from_fixed_params():
    trial = optuna.trial.FixedTrial(
        {
            "family": "paper_cnn",
            "cnn_blocks": 3,
            "cnn_filters_0": 16,
            "cnn_filters_1": 64,
            "cnn_filters_2": 128,
            "cnn_kernel": 5,
            "cnn_pool_type": "avg",
            "cnn_dense_units": 64,
            "cnn_dropout_conv": 0.1,
            "cnn_dropout_dense": 0.4,
            "cnn_batch_norm": True,
            "lr": 3e-4,
            "augment": "paper",
        }
    )
    cfg = suggest_config(trial, base=TrainConfig(epochs=7, input_size=64))
    assert cfg.model == "paper_cnn" and (cfg.epochs, cfg.input_size, cfg.lr, cfg.augment) == (7, 64, 3e-4, "paper")
    assert cfg.model_args == {
        "filters": [16, 64, 128],
        "kernel": 5,
        "pool_type": "avg",
        "pool_every": True,
        "dense_units": 64,
        "dropout_conv": 0.1,
        "dropout_dense": 0.4,
        "batch_norm": True,
    }
    model = cfg.build_model()
    assert model.cfg.filters == (16, 64, 128) and model.cfg.pool_every  # 3 blocks always pool after each


def test_suggest_config_two_blocks_choose_pooling_and_skip_the_dense_layer():
    trial = optuna.trial.FixedTrial(
        {
            "family": "paper_cnn",
            "cnn_blocks": 2,
            "cnn_filters_0": 32,
            "cnn_filters_1": 64,
            "cnn_pool_every": False,
            "cnn_kernel": 3,
            "cnn_pool_type": "max",
            "cnn_dropout_conv": 0.25,
            "cnn_dropout_dense": 0.5,
            "cnn_batch_norm": False,
            "lr": 1e-3,
            "augment": "none",
        }
    )
    cfg = suggest_config(trial, base=TrainConfig(input_size=256))
    assert (
        cfg.build_model().cfg == TrainConfig(input_size=256).build_model().cfg
    )  # the paper's own pick is in the space


def test_suggest_config_efficientnet_family():
    trial = optuna.trial.FixedTrial(
        {
            "family": "efficientnet",
            "efficientnet_variant": "b2",
            "efficientnet_dropout": 0.3,
            "lr": 1e-4,
            "augment": "broadcast",
        }
    )
    cfg = suggest_config(trial, base=TrainConfig(input_size=64))
    assert (cfg.model, cfg.model_args, cfg.augment) == ("efficientnet_b2", {"dropout": 0.3}, "broadcast")
    with pytest.raises(ValueError):  # a variant outside the space is refused by Optuna's FixedTrial
        suggest_config(trial, space=SearchSpace(efficientnet_variants=("b0",)))


def test_suggest_config_builds_the_band_statistics_family_and_draws_the_input_size():
    trial = optuna.trial.FixedTrial(
        {
            "family": "spectral",
            "spec_bands": 3,
            "spec_hidden": 8,
            "spec_dropout": 0.1,
            "lr": 1e-2,
            "augment": "none",
            "input_size": 192,
        }
    )
    space = SearchSpace(input_sizes=(128, 192, 256))
    cfg = suggest_config(trial, space=space, base=TrainConfig(epochs=2, input_size=64))
    assert (cfg.model, cfg.input_size, cfg.epochs) == ("spectral", 192, 2)
    assert cfg.model_args == {"bands": 3, "hidden": 8, "dropout": 0.1}
    model = cfg.build_model()
    assert model.cfg.features == 4 and model.head[2].out_features == 8  # 2 octave pairs x (mean |.|, rms), inner face
    with pytest.raises(SearchError, match="input_sizes must be one or more sides >= 8"):
        SearchSpace(input_sizes=(4,))


def test_the_shipped_classifier_is_in_the_band_statistics_space():
    trial = optuna.trial.FixedTrial(
        {"family": "spectral", "spec_bands": 2, "spec_hidden": 0, "spec_dropout": 0.1, "lr": 1e-2, "augment": "none"}
    )
    cfg = suggest_config(trial, base=TrainConfig(input_size=256))
    shipped = TrainConfig(
        model="spectral",
        model_args={"bands": 2, "regions": "inner", "chroma": False, "statistics": "slopes"},  # the recipe's
        input_size=256,
    )
    assert cfg.build_model().cfg == shipped.build_model().cfg


def test_search_space_names_bad_choices():
    with pytest.raises(
        SearchError,
        match=r"unknown families \['vit'\]; valid: \['paper_cnn', 'efficientnet', 'efficientnet_lite', 'spectral'\]",
    ):
        SearchSpace(families=("vit",))
    with pytest.raises(SearchError, match=r"unknown EfficientNet variants \['b8'\]; valid: \['b0'"):
        SearchSpace(efficientnet_variants=("b8",))
    with pytest.raises(SearchError, match=r"unknown augmentations \['heavy'\]; valid: \['none', 'paper', 'broadcast'"):
        SearchSpace(augments=("none", "heavy"))
    with pytest.raises(SearchError, match=r"cnn_blocks must be \(fewest, most\)"):
        SearchSpace(cnn_blocks=(3, 2))


def test_search_command_runs_two_trials_and_writes_the_best_config(tiny_store, tmp_path, capsys):
    from trainer.cli import main

    argv = [
        "search",
        "--data",
        str(tiny_store),
        "--out",
        str(tmp_path),
        "--n-trials",
        "2",
        "--epochs",
        "1",
        "--families",
        "paper_cnn",
        "--cnn-blocks",
        "2-2",
        "--threads",
        "1",
        "--sampler-seed",
        "3",
    ]
    assert main(argv) == 0
    study = optuna.load_study(study_name="dfwatch", storage=f"sqlite:///{tmp_path / 'study.db'}")
    assert [t.state.name for t in study.trials] == ["COMPLETE", "COMPLETE"]
    best = json.loads((tmp_path / "best_config.json").read_text())
    assert best["trial"] == study.best_trial.number and best["val_loss"] == pytest.approx(study.best_value)
    cfg = TrainConfig.load(tmp_path / "best_config.json")  # what `fit --config` reads
    assert cfg.model == "paper_cnn" and cfg.epochs == 1 and cfg.input_size == 32
    rows = (tmp_path / "trials.csv").read_text().splitlines()
    assert rows[0].startswith("trial,state,val_loss") and len(rows) == 3
    assert "| 0 | COMPLETE |" in capsys.readouterr().out  # the trials table on stdout
    # the same study resumed with a cap of 3 finished trials runs exactly one more
    assert main([*argv, "--total-trials", "3"]) == 0
    assert len(optuna.load_study(study_name="dfwatch", storage=f"sqlite:///{tmp_path / 'study.db'}").trials) == 3
    assert main([*argv, "--total-trials", "3"]) == 0
    assert len(optuna.load_study(study_name="dfwatch", storage=f"sqlite:///{tmp_path / 'study.db'}").trials) == 3


class PruneSecondTrial(optuna.pruners.BasePruner):
    """Deterministic stand-in for a median decision: prune trial 1 at its first report."""

    def prune(self, study, trial) -> bool:
        return trial.number == 1


def test_pruning_is_reported_per_epoch_and_shows_in_the_table(tiny_store, tmp_path):
    result = run_search(
        data=tiny_store,
        out=tmp_path,
        n_trials=2,
        base=TrainConfig(epochs=2),
        space=SMALL,
        pruner=PruneSecondTrial(),
        progress=False,
        seed=0,
    )
    states = {r["trial"]: (r["state"], r["epochs_run"]) for r in result.trials}
    assert states == {0: ("COMPLETE", 2), 1: ("PRUNED", 1)}
    study = optuna.load_study(study_name="dfwatch", storage=f"sqlite:///{tmp_path / 'study.db'}")
    assert sorted(study.trials[0].intermediate_values) == [1, 2]  # val loss reported after each epoch
    assert list(study.trials[1].intermediate_values) == [1]
    assert study.trials[0].intermediate_values[2] == pytest.approx(result.trials[0]["val_loss"], abs=1.0)
    assert "| 1 | PRUNED |" in (tmp_path / "trials.md").read_text()
    assert result.best["trial"] == 0


def test_latency_objective_reports_a_pareto_front(tiny_store, tmp_path):
    result = run_search(
        data=tiny_store,
        out=tmp_path,
        n_trials=2,
        base=TrainConfig(**FAST),
        space=SMALL,
        latency=True,
        progress=False,
        seed=1,
    )
    assert all(r["latency_ms"] > 0 for r in result.trials)
    front = json.loads((tmp_path / "pareto.json").read_text())
    assert front and all({"val_loss", "latency_ms", "config"} <= set(t) for t in front)
    assert result.best["trial"] in [t["trial"] for t in front]
    with pytest.raises(SearchError, match=r"no Pareto-optimal trial runs within 1e-06 ms"):
        run_search(
            data=tiny_store,
            out=tmp_path,
            n_trials=0,
            base=TrainConfig(**FAST),
            space=SMALL,
            latency=True,
            max_latency_ms=1e-6,
            progress=False,
        )
    with pytest.raises(SearchError, match=r"\(minimize, minimize\), this search 1 \(minimize: without --latency"):
        run_search(data=tiny_store, out=tmp_path, n_trials=1, base=TrainConfig(**FAST), space=SMALL, progress=False)


def test_candidates_over_the_latency_bound_are_pruned_before_training(tiny_store, tmp_path):
    with pytest.raises(SearchError, match=r"has no complete trial \(states: \['PRUNED'\]\)"):
        run_search(
            data=tiny_store,
            out=tmp_path,
            n_trials=1,
            base=TrainConfig(**FAST),
            space=SMALL,
            max_latency_ms=1e-6,
            progress=False,
            seed=0,
        )
    (trial,) = optuna.load_study(study_name="dfwatch", storage=f"sqlite:///{tmp_path / 'study.db'}").trials
    assert trial.state.name == "PRUNED" and trial.user_attrs["latency_ms"] > 1e-6
    assert "epochs_run" not in trial.user_attrs  # pruned before any training


def test_select_makes_the_study_maximise_the_real_fake_score(tiny_store, tmp_path):
    calls: list[int] = []

    def select(size):
        calls.append(size)
        return lambda model: {"select": 0.5 + 0.1 * len(calls), "celebdf_hard_face_auc": 0.7}

    result = run_search(
        data=tiny_store,
        out=tmp_path,
        n_trials=2,
        base=TrainConfig(**FAST),
        space=SMALL,
        select=select,
        progress=False,
        seed=0,
    )
    assert calls == [32, 32]  # one validator per trial, at the trial's input size
    study = optuna.load_study(study_name="dfwatch", storage=f"sqlite:///{tmp_path / 'study.db'}")
    assert study.direction == optuna.study.StudyDirection.MAXIMIZE
    assert result.best["trial"] == 1 and result.best["select"] == pytest.approx(0.7)
    assert result.best["measures"] == {"celebdf_hard_face_auc": 0.7}
    assert result.best["objective"].startswith("selection score")
    assert all(r["latency_ms"] > 0 and r["select"] is not None for r in result.trials)
    with pytest.raises(SearchError, match=r"\(maximize\), this search 1 \(minimize: without --latency, without --sel"):
        run_search(data=tiny_store, out=tmp_path, n_trials=1, base=TrainConfig(**FAST), space=SMALL, progress=False)


def test_two_worker_processes_share_one_redis_backed_study(tiny_store, tmp_path, redis_client):
    prefix = f"dfwatch-test:{uuid.uuid4().hex[:10]}"
    name = f"study-{uuid.uuid4().hex[:8]}"
    try:
        procs = [
            subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "trainer.cli",
                    "search",
                    "--data",
                    str(tiny_store),
                    "--out",
                    str(tmp_path / f"w{i}"),
                    "--storage",
                    REDIS_URL,
                    "--redis-prefix",
                    prefix,
                    "--study-name",
                    name,
                    "--n-trials",
                    "1",
                    "--epochs",
                    "1",
                    "--families",
                    "paper_cnn",
                    "--cnn-blocks",
                    "2-2",
                    "--augments",
                    "none",
                    "--threads",
                    "1",
                    "--sampler-seed",
                    str(i),
                ],
                cwd=ROOT,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for i in range(2)
        ]
        outputs = [p.communicate(timeout=240) for p in procs]
        for p, (_, err) in zip(procs, outputs):
            assert p.returncode == 0, err[-2000:]
        study = optuna.load_study(study_name=name, storage=make_storage(REDIS_URL, redis_prefix=prefix))
        assert [t.state.name for t in study.trials] == ["COMPLETE", "COMPLETE"]
        workers = {t.user_attrs["worker"] for t in study.trials}
        assert workers == {f"{__import__('socket').gethostname()}:{p.pid}" for p in procs}
        assert redis_client.exists(f"{prefix}:log_number")
        # one study, not two: the worker that wrote its table last lists both trials
        tables = [(tmp_path / f"w{i}" / "trials.csv").read_text() for i in range(2)]
        assert max(t.count("COMPLETE") for t in tables) == 2
    finally:
        keys = list(redis_client.scan_iter(match=f"{prefix}:*"))
        if keys:
            redis_client.delete(*keys)
    assert not list(redis_client.scan_iter(match=f"{prefix}:*"))


def test_storage_urls_are_checked(tmp_path):
    with pytest.raises(SearchError, match=r"unknown storage scheme 'mongodb' in mongodb://u:\*\*\*@h/db; valid"):
        make_storage("mongodb://u:secret@h/db")
    with pytest.raises(SearchError, match=r"needs a database driver .*pip install psycopg2-binary"):
        make_storage("postgresql://u:secret@127.0.0.1:1/optuna")
    storage = make_storage(tmp_path / "sub" / "s.db")  # a plain path is an SQLite file, folders made
    assert (tmp_path / "sub" / "s.db").is_file() and storage is not None


def test_a_killed_workers_trial_is_failed_by_the_next_worker_not_left_running(tiny_store, tmp_path):
    """A search worker killed with SIGKILL left its trial RUNNING for ever: no heartbeat. Real SQLite storage,
    a real worker process killed mid-trial, then a second worker."""
    import time

    db = tmp_path / "study.db"
    worker = (
        "from trainer.fit import TrainConfig\n"
        "from trainer.paper.search import SearchSpace, run_search\n"
        f"run_search(data={str(tiny_store)!r}, out={str(tmp_path / 'w')!r}, storage={str(db)!r}, n_trials={{n}},\n"
        "           base=TrainConfig(epochs=500, batch_size=8),\n"
        "           space=SearchSpace(families=('paper_cnn',), cnn_blocks=(2, 2), augments=('none',)),\n"
        "           threads=1, progress=False, heartbeat=1)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", worker.format(n=1)], cwd=ROOT, stderr=subprocess.PIPE, text=True)
    try:
        storage = make_storage(db)
        deadline = time.monotonic() + 120
        while True:  # the trial has started (and beaten at least once)
            running = (
                [
                    t
                    for s in optuna.get_all_study_summaries(storage)
                    for t in optuna.load_study(study_name=s.study_name, storage=storage).trials
                    if t.state == optuna.trial.TrialState.RUNNING
                ]
                if db.exists()
                else []
            )
            if running:
                break
            assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read() if proc.poll() else ""
            time.sleep(0.5)
        time.sleep(2)
    finally:
        proc.kill()  # SIGKILL: no cleanup, no last state write
        proc.wait()
    time.sleep(3)  # past the grace period of two heartbeats
    second = subprocess.run(
        [sys.executable, "-c", worker.format(n=0)], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    study = optuna.load_study(study_name="dfwatch", storage=make_storage(db))
    assert [t.state.name for t in study.trials] == ["FAIL"], second.stderr[-2000:]
    # the second worker ran nothing (n_trials=0), so it reports the study has no complete trial: said, not hidden
    assert "has no complete trial (states: ['FAIL'])" in second.stderr
