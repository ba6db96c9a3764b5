"""Architecture search with Optuna: ``suggest_config(trial)`` draws a TrainConfig (family, its
hyper-parameters, input size, learning rate, augmentation) and the objective trains it with the
normal ``trainer.fit.fit`` on the store's train split, minimising the validation loss, or, with
a ``select`` callable (trainer.pack.realval: AUC on real manipulated faces), maximising its score.

Pruning (median or Hyperband) sees the objective after every epoch. Every candidate's inference
time is measured on this machine as served (ONNX Runtime, batch 8, ms per face); candidates
over ``max_latency_ms`` are pruned before they train (a hardware-aware bound). With
``latency`` the study has that time as a second objective, and the result is a Pareto front.

Storage: an SQLite file by default; a ``redis://`` URL uses
Optuna's journal storage on Redis and a ``postgresql://`` URL its RDB storage, so several
processes or machines can run trials of one study (``study_name``).
"""

from __future__ import annotations

import csv
import json
import logging
import os
import socket
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from engines.urls import redact  # the one definition of URL redaction (pipeline uses it too)
from trainer.errors import SearchError
from trainer.fit import FitError, TrainConfig

logger = logging.getLogger(__name__)

FAMILIES = ("paper_cnn", "efficientnet", "efficientnet_lite", "spectral")
# = trainer.models.efficientnet.VARIANTS, repeated so that building the CLI parser never imports torch
EFFICIENTNET_VARIANTS = ("b0", "b1", "b2", "b3", "b4", "b5", "b6", "b7")
LITE_VARIANTS = ("lite0", "lite1", "lite2")  # = trainer.models.efficientnet_lite.PARAMS, ImageNet-pretrained
PRUNERS = ("median", "hyperband", "none")
CNN_FILTERS = (16, 32, 64, 128)
CNN_DENSE = (0, 64, 128, 256)
LATENCY_BATCH = 8
DEFAULT_REDIS_PREFIX = "dfwatch:optuna"
HEARTBEAT = 60  # seconds between trial heartbeats (RDB storages); a trial silent for twice this is failed
RDB_SCHEMES = ("postgresql", "postgres", "mysql", "sqlite")
REDIS_SCHEMES = ("redis", "rediss", "unix")


@dataclass(frozen=True)
class SearchSpace:
    """What ``suggest_config`` may draw from."""

    families: tuple[str, ...] = FAMILIES  # architecture families to search
    efficientnet_variants: tuple[str, ...] = EFFICIENTNET_VARIANTS
    cnn_blocks: tuple[int, int] = (2, 4)  # fewest and most conv blocks of the paper's CNN
    cnn_batch_norm: tuple[bool, ...] = (False, True)  # BatchNorm in the paper's CNN: searched when both are given
    augments: tuple[str, ...] | None = None  # on-the-fly augmentation presets; None = every preset
    lr: tuple[float, float] = (1e-5, 1e-2)  # Adam learning rate range (log scale)
    input_sizes: tuple[int, ...] | None = None  # network input sides to choose from; None = the base config's

    def __post_init__(self) -> None:
        bad = [f for f in self.families if f not in FAMILIES]
        if bad or not self.families:
            raise SearchError(f"unknown families {bad or '(none)'}; valid: {list(FAMILIES)}")
        bad = [v for v in self.efficientnet_variants if v not in EFFICIENTNET_VARIANTS]
        if bad or not self.efficientnet_variants:
            raise SearchError(f"unknown EfficientNet variants {bad or '(none)'}; valid: {list(EFFICIENTNET_VARIANTS)}")
        from trainer.paper.augment import PRESETS

        bad = [a for a in (self.augments or ()) if a not in PRESETS]
        if bad or self.augments == ():
            raise SearchError(f"unknown augmentations {bad or '(none)'}; valid: {list(PRESETS)}")
        if not self.cnn_batch_norm or set(self.cnn_batch_norm) - {False, True}:
            raise SearchError(f"cnn_batch_norm must hold False and/or True, got {self.cnn_batch_norm}")
        if len(self.cnn_blocks) != 2 or not 1 <= self.cnn_blocks[0] <= self.cnn_blocks[1]:
            raise SearchError(f"cnn_blocks must be (fewest, most) with 1 <= fewest <= most, got {self.cnn_blocks}")
        if len(self.lr) != 2 or not 0 < self.lr[0] <= self.lr[1]:
            raise SearchError(f"lr must be (low, high) with 0 < low <= high, got {self.lr}")
        if self.input_sizes is not None and (not self.input_sizes or min(self.input_sizes) < 8):
            raise SearchError(f"input_sizes must be one or more sides >= 8, got {self.input_sizes}")


def suggest_config(trial: Any, *, space: SearchSpace = SearchSpace(), base: TrainConfig = TrainConfig()) -> TrainConfig:
    """A candidate: ``base`` (epochs, batch, input size, seed) with the searched fields filled in.

    Parameters (Optuna names): ``family``; paper_cnn: ``cnn_blocks``, ``cnn_filters_<i>`` (16-128),
    ``cnn_kernel``, ``cnn_pool_type``, ``cnn_pool_every`` (only with 2 blocks; deeper stacks pool
    after every block), ``cnn_dense_units`` (only with 3+ blocks, to bound the dense layer),
    ``cnn_dropout_conv``, ``cnn_dropout_dense``, ``cnn_batch_norm`` (when the space allows both);
    efficientnet: ``efficientnet_variant``, ``efficientnet_dropout``; efficientnet_lite (ImageNet weights,
    AdamW): ``lite_variant``, ``lite_frozen_stages`` (0-3), ``lite_dropout``, ``lite_backbone_lr``; spectral (octave
    slopes of the inner face, as shipped): ``spec_bands`` (2-4), ``spec_hidden``, ``spec_dropout``; all: ``lr``,
    ``augment``, and ``input_size`` when the space lists sizes.
    """
    from trainer.fit import augment_choices

    family = trial.suggest_categorical("family", list(space.families))
    if family == "paper_cnn":
        blocks = trial.suggest_int("cnn_blocks", *space.cnn_blocks)
        filters = [trial.suggest_categorical(f"cnn_filters_{i}", list(CNN_FILTERS)) for i in range(blocks)]
        pool_every = trial.suggest_categorical("cnn_pool_every", [False, True]) if blocks <= 2 else True
        model, args = (
            "paper_cnn",
            {
                "filters": filters,
                "kernel": trial.suggest_categorical("cnn_kernel", [3, 5]),
                "pool_type": trial.suggest_categorical("cnn_pool_type", ["max", "avg"]),
                "pool_every": pool_every,
                "dense_units": trial.suggest_categorical("cnn_dense_units", list(CNN_DENSE)) if blocks > 2 else 0,
                "dropout_conv": trial.suggest_float("cnn_dropout_conv", 0.0, 0.5),
                "dropout_dense": trial.suggest_float("cnn_dropout_dense", 0.0, 0.6),
                "batch_norm": bool(
                    trial.suggest_categorical("cnn_batch_norm", list(space.cnn_batch_norm))
                    if len(space.cnn_batch_norm) > 1
                    else space.cnn_batch_norm[0]
                ),
            },
        )
    elif family == "spectral":
        model, args = (
            "spectral",
            {
                "bands": trial.suggest_int("spec_bands", 2, 4),  # 4 octaves need an input of 64 px or more
                "hidden": trial.suggest_categorical("spec_hidden", [0, 8, 16]),
                "dropout": trial.suggest_float("spec_dropout", 0.0, 0.3),
            },
        )
    elif family == "efficientnet_lite":  # fine-tuned from ImageNet: AdamW, a slower backbone, early stages frozen
        variant = trial.suggest_categorical("lite_variant", list(LITE_VARIANTS))
        model, args = (
            f"efficientnet_{variant}",
            {
                "frozen_stages": trial.suggest_int("lite_frozen_stages", 0, 3),
                "dropout": trial.suggest_float("lite_dropout", 0.1, 0.5),
            },
        )
        base = replace(base, optimizer="adamw", backbone_lr=trial.suggest_float("lite_backbone_lr", 0.1, 1.0, log=True))
    else:
        variant = trial.suggest_categorical("efficientnet_variant", list(space.efficientnet_variants))
        model, args = f"efficientnet_{variant}", {"dropout": trial.suggest_float("efficientnet_dropout", 0.1, 0.5)}
    augments = list(space.augments) if space.augments is not None else augment_choices()
    if space.input_sizes is not None:
        base = replace(base, input_size=int(trial.suggest_categorical("input_size", list(space.input_sizes))))
    return replace(
        base,
        model=model,
        model_args=args,
        lr=trial.suggest_float("lr", *space.lr, log=True),
        augment=trial.suggest_categorical("augment", augments),
    )


def measure_latency_ms(cfg: TrainConfig, *, threads: int | None = None, runs: int = 30, warmup: int = 3) -> float:
    """Ms per face of an untrained ``cfg`` model as served: exported to ONNX, ONNX Runtime on this CPU,
    batches of ``LATENCY_BATCH`` (the cost does not depend on the weights). The best of ``runs``: other
    load on the machine (a training run beside the search) only ever adds time, so the minimum is what the
    model itself costs."""
    import tempfile

    import numpy as np
    import onnxruntime as ort
    import torch

    from engines.export import export_onnx

    model = cfg.build_model().eval()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "candidate.onnx"
        export_onnx(
            torch.nn.Sequential(model, torch.nn.Sigmoid()).eval(),
            path,
            input_size=cfg.input_size,
            input_name="crops",
            output_name="p_fake",
        )
        opts = ort.SessionOptions()
        if threads:
            opts.intra_op_num_threads = threads
        session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    x = np.random.default_rng(0).random((LATENCY_BATCH, 3, cfg.input_size, cfg.input_size), dtype=np.float32)
    times = []
    for i in range(warmup + runs):
        start = time.perf_counter()
        session.run(None, {"crops": x})
        if i >= warmup:
            times.append((time.perf_counter() - start) * 1000.0 / LATENCY_BATCH)
    return float(min(times))


def make_storage(storage: str | Path, *, redis_prefix: str = DEFAULT_REDIS_PREFIX, heartbeat: int = HEARTBEAT) -> Any:
    """An Optuna storage: a path (SQLite file), ``sqlite:///...``, ``postgresql://...`` (RDB) or
    ``redis://...`` (journal storage on Redis, keys under ``redis_prefix``).

    RDB storages get a trial heartbeat every ``heartbeat`` seconds: a trial whose worker was killed
    (SIGKILL, a lost node) stops beating and is marked FAIL after ``2 * heartbeat`` s by the next
    worker (``fail_stale_trials``) instead of staying RUNNING for ever. Optuna's journal storage
    (Redis) has no heartbeat: there a killed worker's trial stays RUNNING (logged once).
    """
    import optuna

    text = str(storage)
    scheme = text.split("://", 1)[0].split("+", 1)[0].lower() if "://" in text else ""
    if scheme in REDIS_SCHEMES:
        from optuna.storages.journal import JournalRedisBackend, JournalStorage

        logger.info(
            "Redis (journal) storage: Optuna has no trial heartbeat for it; a trial of a killed worker "
            "stays RUNNING (use SQLite or PostgreSQL storage to have them failed and rerun)"
        )
        try:
            with warnings.catch_warnings():  # "experimental" since Optuna 3.1; the interface is what we use
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                return JournalStorage(JournalRedisBackend(text, prefix=redis_prefix))
        except Exception as exc:
            raise SearchError(f"cannot use Redis storage {redact(text)}: {exc}") from exc
    if scheme and scheme not in RDB_SCHEMES:
        raise SearchError(
            f"unknown storage scheme {scheme!r} in {redact(text)}; valid: a file path (SQLite), "
            f"{[s + '://' for s in ('sqlite', 'postgresql', 'mysql', 'redis', 'rediss', 'unix')]}"
        )
    if not scheme:
        path = Path(text).resolve()
        path.parent.mkdir(parents=True, exist_ok=True)
        text = f"sqlite:///{path}"
    kwargs = {"connect_args": {"timeout": 60}} if text.startswith("sqlite") else {}  # workers share the file
    try:
        with warnings.catch_warnings():  # heartbeat_interval is "experimental"
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return optuna.storages.RDBStorage(
                text, engine_kwargs=kwargs, heartbeat_interval=heartbeat, grace_period=2 * heartbeat
            )
    except ImportError as exc:
        raise SearchError(
            f"storage {redact(text)} needs a database driver that is not installed ({exc}); for PostgreSQL: "
            "pip install psycopg2-binary"
        ) from exc
    except Exception as exc:
        raise SearchError(f"cannot open storage {redact(text)}: {exc}") from exc


def make_pruner(name: str, *, epochs: int) -> Any:
    import optuna

    if name == "median":
        # steps are epochs from 1: no verdict on a trial's first epoch, nor before two trials finished
        return optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=2)
    if name == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=1, max_resource=epochs, reduction_factor=3)
    if name == "none":
        return optuna.pruners.NopPruner()
    raise SearchError(f"unknown pruner {name!r}; valid: {list(PRUNERS)}")


@dataclass
class SearchResult:
    study_name: str
    best: dict[str, Any]  # trial number, values, config of the chosen trial
    trials: list[dict[str, Any]]  # one row per trial of the study (all workers)
    pareto: list[dict[str, Any]] = field(default_factory=list)  # with the latency objective: the front
    paths: dict[str, Path] = field(default_factory=dict)


def run_search(
    *,
    data: str | Path,
    out: str | Path,
    storage: str | Path | None = None,
    study_name: str = "dfwatch",
    n_trials: int = 5,
    total_trials: int | None = None,
    base: TrainConfig = TrainConfig(epochs=10),
    space: SearchSpace = SearchSpace(),
    pruner: str | Any = "median",
    latency: bool = False,
    max_latency_ms: float | None = None,
    max_params: int | None = None,
    seed: int | None = None,
    device: str = "auto",
    threads: int | None = None,
    workers: int = 0,
    progress: bool = True,
    redis_prefix: str = DEFAULT_REDIS_PREFIX,
    select: Callable[[int], Callable[[Any], dict[str, float]]] | None = None,
    heartbeat: int = HEARTBEAT,
) -> SearchResult:
    """Run ``n_trials`` trials of the study (this process's share), then write best_config.json,
    trials.csv and trials.md (and pareto.json with ``latency``) into ``out``.

    ``total_trials`` caps the finished (complete or pruned) trials of the study over all workers
    and reruns, so an interrupted search resumed with the same cap runs only what is missing.
    ``pruner`` is a name of PRUNERS or an Optuna pruner object. ``select(input_size)`` gives the
    ``fit(select=...)`` callable for a candidate's input size; the study then maximises its
    ``"select"`` score. ``max_latency_ms`` prunes slower candidates before they train.
    ``heartbeat``: see make_storage; trials of killed workers are failed before this worker counts what
    is left to run.
    """
    import optuna
    from tqdm import tqdm

    from trainer.fit import dataset_info, fit, use_runtime
    from trainer.models import ModelConfigError, count_parameters

    dev = use_runtime(device, threads)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    info = dataset_info(Path(data))  # fails early on a bad store, not once per trial
    empty = [s for s in ("train", "val") if not info["rows"][s]]
    if empty:
        raise SearchError(f"{data}: no rows in split(s) {empty}; the search trains on train and scores val")
    if base.input_size is None:
        base = replace(base, input_size=info["crop_size"])
    storage_text = str(storage) if storage is not None else str(out / "study.db")
    goal = "maximize" if select is not None else "minimize"
    directions = [goal, "minimize"] if latency else [goal]
    pruner_obj = make_pruner(pruner, epochs=base.epochs) if isinstance(pruner, str) else pruner
    if latency and pruner != "none":
        logger.info("pruning is off: Optuna prunes single-objective studies only (here: loss and latency)")
    sampler = optuna.samplers.TPESampler(seed=seed, n_startup_trials=max(1, min(10, (total_trials or n_trials) // 2)))
    try:
        study = optuna.create_study(
            storage=make_storage(storage_text, redis_prefix=redis_prefix, heartbeat=heartbeat),
            sampler=sampler,
            pruner=pruner_obj,
            study_name=study_name,
            directions=directions,
            load_if_exists=True,
        )
    except ValueError as exc:
        raise SearchError(f"study {study_name!r} in {redact(storage_text)}: {exc}") from exc
    if [d.name.lower() for d in study.directions] != directions:
        theirs = [d.name.lower() for d in study.directions]
        raise SearchError(
            f"study {study_name!r} in {redact(storage_text)} has {len(theirs)} objective(s) ({', '.join(theirs)}), "
            f"this search {len(directions)} ({', '.join(directions)}: {'with' if latency else 'without'} --latency, "
            f"{'with' if select else 'without'} --select-media); use another --study-name"
        )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)  # a killed worker's RUNNING trial -> FAIL (RDB storages)
    finished_states = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
    callbacks = []
    to_run = n_trials
    if total_trials is not None:
        done = len(study.get_trials(deepcopy=False, states=finished_states))
        to_run = max(0, min(n_trials, total_trials - done))
        callbacks.append(optuna.study.MaxTrialsCallback(total_trials, states=finished_states))
        if not to_run:
            logger.info(
                "study %r already has %d finished trials (cap %d): nothing to run", study_name, done, total_trials
            )
    worker = f"{socket.gethostname()}:{os.getpid()}"
    bar = tqdm(total=to_run, desc="search", unit="trial", file=sys.stderr, disable=None if progress else True)

    def objective(trial: Any) -> Any:
        cfg = suggest_config(trial, space=space, base=base)
        trial.set_user_attr("config", cfg.to_dict())
        trial.set_user_attr("worker", worker)
        try:
            n_params = count_parameters(cfg.model, input_size=cfg.input_size, **cfg.model_args)
        except ModelConfigError as exc:
            raise optuna.TrialPruned(f"config does not fit input {cfg.input_size}: {exc}") from exc
        trial.set_user_attr("parameters", n_params)
        if max_params is not None and n_params > max_params:
            raise optuna.TrialPruned(f"{n_params:,} parameters > --max-params {max_params:,}")
        latency_ms = measure_latency_ms(cfg, threads=threads)
        trial.set_user_attr("latency_ms", latency_ms)
        if max_latency_ms is not None and latency_ms > max_latency_ms:
            raise optuna.TrialPruned(f"{latency_ms:.2f} ms per face > --max-latency-ms {max_latency_ms}")
        key = "select" if select is not None else "val_loss"

        def report(record: dict[str, float]) -> None:
            trial.set_user_attr("epochs_run", int(record["epoch"]))
            if latency:
                return
            trial.report(record[key], step=int(record["epoch"]))
            if trial.should_prune():
                raise optuna.TrialPruned(f"pruned after epoch {record['epoch']}: {key} {record[key]:.4f}")

        logger.info(
            "trial %d: %s %s input %d lr %.2g augment %s (%s parameters, %.2f ms per face)",
            trial.number,
            cfg.model,
            json.dumps(cfg.model_args),
            cfg.input_size,
            cfg.lr,
            cfg.augment,
            f"{n_params:,}",
            latency_ms,
        )
        result = fit(
            cfg,
            data=data,
            out=None,
            device=dev,
            workers=workers,
            progress=progress,
            on_epoch=report,
            select=select(cfg.input_size) if select is not None else None,
        )
        best = result.history[result.best_epoch - 1]
        trial.set_user_attr("best_epoch", result.best_epoch)
        trial.set_user_attr("val_loss", best["val_loss"])
        trial.set_user_attr("val_acc", best["val_acc"])
        if select is not None:
            trial.set_user_attr("select", best["select"])
            trial.set_user_attr("measures", {k: v for k, v in best.items() if k.endswith("_auc")})
        value = best[key]
        return (value, latency_ms) if latency else value

    def tick(study: Any, trial: Any) -> None:
        bar.update(1)

    try:
        if to_run:
            study.optimize(
                objective,
                n_trials=to_run,
                callbacks=[*callbacks, tick],
                catch=(RuntimeError, FitError),
                gc_after_trial=True,
            )
    finally:
        bar.close()
    return write_results(study, out, latency=latency, max_latency_ms=max_latency_ms, storage=storage_text)


def trial_rows(study: Any) -> list[dict[str, Any]]:
    """The trials table: one dict per trial of the study, every worker's."""
    rows = []
    for t in study.get_trials(deepcopy=False):
        cfg = t.user_attrs.get("config", {})
        values = t.values or []
        duration = None
        if t.datetime_complete and t.datetime_start:
            duration = (t.datetime_complete - t.datetime_start).total_seconds()
        rows.append(
            {
                "trial": t.number,
                "state": t.state.name,
                "val_loss": t.user_attrs.get(
                    "val_loss", values[0] if values and "select" not in t.user_attrs else None
                ),
                "select": t.user_attrs.get("select"),
                "latency_ms": t.user_attrs.get("latency_ms"),
                "input_size": cfg.get("input_size"),
                "val_acc": t.user_attrs.get("val_acc"),
                "epochs_run": t.user_attrs.get("epochs_run", 0),
                "model": cfg.get("model"),
                "parameters": t.user_attrs.get("parameters"),
                "lr": cfg.get("lr"),
                "augment": cfg.get("augment"),
                "model_args": json.dumps(cfg.get("model_args", {}), sort_keys=True),
                "seconds": round(duration, 1) if duration is not None else None,
                "worker": t.user_attrs.get("worker"),
            }
        )
    return rows


def _cell(v: Any) -> str:
    if v is None:
        return ""
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def trials_markdown(rows: list[dict[str, Any]]) -> str:
    keys = [
        "trial",
        "state",
        "val_loss",
        "select",
        "latency_ms",
        "val_acc",
        "epochs_run",
        "model",
        "input_size",
        "parameters",
        "lr",
        "augment",
    ]
    lines = ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
    lines += ["| " + " | ".join(_cell(r[k]) for k in keys) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def _trial_summary(t: Any) -> dict[str, Any]:
    out = {
        "trial": t.number,
        "val_loss": t.user_attrs.get("val_loss", t.values[0]),
        "latency_ms": t.user_attrs.get("latency_ms"),
        "val_acc": t.user_attrs.get("val_acc"),
        "config": t.user_attrs["config"],
        "params": t.params,
    }
    if "select" in t.user_attrs:
        out.update(select=t.user_attrs["select"], measures=t.user_attrs.get("measures", {}))
    return out


def write_results(study: Any, out: Path, *, latency: bool, max_latency_ms: float | None, storage: str) -> SearchResult:
    """Pick the best trial (lowest validation loss; with latency: on the Pareto front, within
    ``max_latency_ms`` if given) and write best_config.json, trials.csv, trials.md, pareto.json."""
    import optuna

    rows = trial_rows(study)
    paths = {"trials_csv": out / "trials.csv", "trials_md": out / "trials.md"}
    with open(paths["trials_csv"], "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]) if rows else ["trial"])
        writer.writeheader()
        writer.writerows(rows)
    paths["trials_md"].write_text(trials_markdown(rows))
    complete = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    if not complete:
        states = sorted({r["state"] for r in rows})
        raise SearchError(
            f"study {study.study_name!r} has no complete trial (states: {states}); see {paths['trials_md']}"
        )
    pareto: list[dict[str, Any]] = []
    if latency:
        sign = -1 if study.directions[0] == optuna.study.StudyDirection.MAXIMIZE else 1
        front = sorted(study.best_trials, key=lambda t: sign * t.values[0])
        pareto = [_trial_summary(t) for t in front]
        pick = front
        if max_latency_ms is not None:
            pick = [t for t in front if t.values[1] <= max_latency_ms]
            if not pick:
                got = [round(t.values[1], 2) for t in front]
                raise SearchError(f"no Pareto-optimal trial runs within {max_latency_ms} ms (front latencies: {got})")
        chosen = pick[0]
        paths["pareto"] = out / "pareto.json"
        paths["pareto"].write_text(json.dumps(pareto, indent=2) + "\n")
    else:
        chosen = study.best_trial
    maximise = study.directions[0] == optuna.study.StudyDirection.MAXIMIZE
    objective = "selection score (AUC on real manipulated faces)" if maximise else "validation loss"
    if latency:
        objective += " and latency (ms per face, ONNX Runtime, batch 8)"
    best = {**_trial_summary(chosen), "study": study.study_name, "storage": redact(storage), "objective": objective}
    paths["best_config"] = out / "best_config.json"
    tmp = paths["best_config"].with_suffix(".json.tmp")
    tmp.write_text(json.dumps(best, indent=2) + "\n")
    os.replace(tmp, paths["best_config"])
    return SearchResult(study_name=study.study_name, best=best, trials=rows, pareto=pareto, paths=paths)
