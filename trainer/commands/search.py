"""dfwatch-train search: Optuna architecture search over the paper's CNN family, EfficientNet B0-B7 and a
residual CNN with a high-pass front end, with input size, under a measured latency bound."""

from __future__ import annotations

import argparse
import logging
import math
import os
import sys
from dataclasses import dataclass
from pathlib import Path

from pipeline.flags import add_config_file, add_config_flags, config_from_args, field_help
from pipeline.ranges import check_ranges, ranged
from trainer.commands.fit import add_runtime_options, add_select_options, make_selector, runtime_options
from trainer.errors import SearchError
from trainer.fit import SCHEDULES, TrainConfig, dataset_info, resolve_device
from trainer.paper.search import DEFAULT_REDIS_PREFIX, EFFICIENTNET_VARIANTS, FAMILIES, PRUNERS, SearchSpace

logger = logging.getLogger(__name__)

STORAGE_ENV = "DFWATCH_SEARCH_STORAGE"
BATCH_NORM = {"search": (False, True), "on": (True,), "off": (False,)}  # --cnn-batch-norm -> the space's choices


@dataclass(frozen=True)
class SearchOptions:
    """`dfwatch-train search`: the study, its space and each trial's training. ``--config`` is a TOML table of these
    fields; the --select-* and --device, --threads, --workers flags are fit's (trainer.commands.fit)."""

    data: Path  # face store (HDF5) from `dfwatch-train dataset`
    out: Path  # directory for best_config.json and the trials table
    n_trials: int = ranged(5, 0, math.inf)  # trials this process runs
    # stop once the study has this many finished trials over all workers and reruns
    total_trials: int | None = ranged(None, 0, math.inf)
    epochs: int = ranged(10, 1, math.inf)  # epochs per trial
    batch_size: int = ranged(8, 1, math.inf)  # crops per step
    input_size: int | None = ranged(None, 8, math.inf)  # network input side; none = the store's crop size
    input_sizes: tuple[int, ...] | None = None  # input sides to search, e.g. 128,192,256; none = input_size only
    # every trial adds one self-blended fake (SBI) per real crop of train and val, made on the fly
    self_blend: bool = False
    capture: bool = False  # trials show crops as a feed would, blends at the native size (trainer.pack.capture)
    schedule: str = "constant"  # learning rate schedule
    # train items per epoch and trial, a new random subset each epoch; none = all
    epoch_samples: int | None = ranged(None, 1, math.inf)
    pruner: str = "median"  # prune trials per epoch
    # second objective: measured inference latency (ONNX Runtime, batch 8, ms per face) on this machine; reports the
    # Pareto front (no pruning: Optuna prunes single-objective studies only)
    latency: bool = False
    # prune candidates slower than this (ms per face, ONNX Runtime, batch 8) before they train; with latency also
    # pick the best Pareto trial within it
    max_latency_ms: float | None = ranged(None, 0, math.inf, open_lo=True)
    max_params: int | None = ranged(None, 1, math.inf)  # prune candidates with more parameters than this
    families: tuple[str, ...] = FAMILIES  # architecture families
    efficientnet_variants: tuple[str, ...] = EFFICIENTNET_VARIANTS  # EfficientNet variants to search
    cnn_blocks: tuple[int, int] = (2, 4)  # conv blocks of the paper's CNN family, FEWEST-MOST
    lr_range: tuple[float, float] = (1e-5, 1e-2)  # Adam learning rates to search, LOW,HIGH, log scale
    # BatchNorm in the paper's CNN family: searched (search), always (on), never (off, the paper's own)
    cnn_batch_norm: str = "search"
    augments: tuple[str, ...] | None = None  # on-the-fly augmentation presets to choose from; none = all, with none
    # Optuna storage: SQLite file (none: OUT/study.db), sqlite:///, postgresql://, redis:// (journal storage; several
    # workers share one study); or set DFWATCH_SEARCH_STORAGE
    storage: str | None = None
    study_name: str = "dfwatch"  # study name; workers of one study share it
    redis_prefix: str = DEFAULT_REDIS_PREFIX  # key prefix of a Redis-backed study
    seed: int = 0  # training seed of every trial
    sampler_seed: int | None = None  # TPE sampler seed; none = random (give each worker its own)

    def __post_init__(self) -> None:
        check_ranges(self)

    def space(self) -> SearchSpace:
        if self.cnn_batch_norm not in BATCH_NORM:
            raise SearchError(f"unknown cnn_batch_norm {self.cnn_batch_norm!r}; valid: {list(BATCH_NORM)}")
        return SearchSpace(
            families=self.families,
            efficientnet_variants=self.efficientnet_variants,
            cnn_blocks=self.cnn_blocks,
            cnn_batch_norm=BATCH_NORM[self.cnn_batch_norm],
            augments=self.augments,
            input_sizes=self.input_sizes,
            lr=self.lr_range,
        )

    def base(self) -> TrainConfig:
        """Each trial's training config before the searched fields are drawn."""
        return TrainConfig(
            epochs=self.epochs,
            batch_size=self.batch_size,
            input_size=self.input_size,
            seed=self.seed,
            self_blend=self.self_blend,
            capture=self.capture,
            schedule=self.schedule,
            epoch_samples=self.epoch_samples,
        )


def _blocks(text: str) -> tuple[int, int]:
    lo, _, hi = text.partition("-")
    try:
        return int(lo), int(hi or lo)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected FEWEST-MOST, e.g. 2-4, got {text!r}") from None


def cmd_search(args: argparse.Namespace) -> int:
    os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")  # albumentations asks PyPI at import otherwise
    from functools import cache

    from trainer.paper.search import redact, run_search, trials_markdown

    o = config_from_args(SearchOptions, args, file=args.config)
    space, base, runtime = o.space(), o.base(), runtime_options(args)
    select = None
    if args.select_media is not None:
        margin, device = dataset_info(o.data)["crop_margin"], resolve_device(runtime["device"])
        select = cache(lambda size: make_selector(args, size=size, margin=margin, device=device, measure_all=False))
    storage = o.storage or os.environ.get(STORAGE_ENV) or None
    try:
        result = run_search(
            data=o.data,
            out=o.out,
            storage=storage,
            study_name=o.study_name,
            n_trials=o.n_trials,
            total_trials=o.total_trials,
            base=base,
            space=space,
            pruner=o.pruner,
            latency=o.latency,
            max_latency_ms=o.max_latency_ms,
            max_params=o.max_params,
            seed=o.sampler_seed,
            **runtime,
            redis_prefix=o.redis_prefix,
            select=select,
        )
    except KeyboardInterrupt:
        print("search: interrupted; finished trials are kept in the study: rerun to go on", file=sys.stderr)
        return 130
    print(trials_markdown(result.trials), end="")
    best = result.best
    states = [r["state"] for r in result.trials]
    latency = f", {best['latency_ms']:.2f} ms per face" if best.get("latency_ms") is not None else ""
    score = f"select {best['select']:.4f}, " if best.get("select") is not None else ""
    print(
        f"search: study {result.study_name!r} ({redact(str(storage or o.out / 'study.db'))}): "
        f"{len(states)} trials ({states.count('COMPLETE')} complete, {states.count('PRUNED')} pruned, "
        f"{states.count('FAIL')} failed); best trial {best['trial']}: {best['config']['model']}, {score}val loss "
        f"{best['val_loss']:.4f}{latency}\nwrote {result.paths['best_config']}, {result.paths['trials_csv']}"
        + (f", {result.paths['pareto']} (Pareto front: {len(result.pareto)} trials)" if result.pareto else "")
        + f"\nnext: dfwatch-train fit --data {o.data} --config {result.paths['best_config']} --out RUN_DIR",
        file=sys.stderr,
    )
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "search",
        help="Optuna architecture search (paper's CNN, EfficientNet B0-B7 and Lite0-2, the frequency head), "
        "objective validation loss or AUC on real manipulated faces (--select-media)",
        description="Trials train with `fit`'s own training loop on the train split, scored on val. Writes "
        "OUT/best_config.json (feed it to `fit --config`), OUT/trials.csv and trials.md; the trials table "
        "goes to stdout. Several processes (machines) with one --storage URL and --study-name share the trials.",
    )
    choices = {"schedule": SCHEDULES, "pruner": PRUNERS, "cnn_batch_norm": tuple(BATCH_NORM)}
    add_config_flags(p, SearchOptions, choices=choices, skip=("cnn_blocks",))
    p.add_argument(  # FEWEST-MOST, as before
        "--cnn-blocks",
        type=_blocks,
        default=None,
        metavar="FEWEST-MOST",
        help=f"{field_help(SearchOptions)['cnn_blocks']} (default 2-4)",
    )
    add_config_file(p, "the search options")
    add_select_options(p)
    add_runtime_options(p)
    p.set_defaults(func=cmd_search)
