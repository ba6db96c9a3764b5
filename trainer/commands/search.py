"""dfwatch-train search: Optuna architecture search over the paper's CNN family, EfficientNet B0-B7 and a
residual CNN with a high-pass front end, with input size, under a measured latency bound."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from trainer.commands.fit import add_runtime_options, add_select_options, make_selector, runtime_options

logger = logging.getLogger(__name__)

STORAGE_ENV = "DFWATCH_SEARCH_STORAGE"


def _csv(text: str) -> tuple[str, ...]:
    return tuple(s.strip() for s in text.split(",") if s.strip())


def _blocks(text: str) -> tuple[int, int]:
    lo, _, hi = text.partition("-")
    try:
        return int(lo), int(hi or lo)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected FEWEST-MOST, e.g. 2-4, got {text!r}") from None


def _range(text: str) -> tuple[float, float]:
    lo, _, hi = text.partition(",")
    try:
        low, high = float(lo), float(hi)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected LOW,HIGH, e.g. 3e-4,3e-3, got {text!r}") from None
    if not 0 < low <= high:
        raise argparse.ArgumentTypeError(f"need 0 < LOW <= HIGH, got {text!r}")
    return low, high


def _sizes(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(v) for v in _csv(text))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected sides like 128,192,256, got {text!r}") from None


def cmd_search(args: argparse.Namespace) -> int:
    os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")  # albumentations asks PyPI at import otherwise
    from functools import cache

    from trainer.fit import TrainConfig, dataset_info, resolve_device
    from trainer.paper.search import SearchSpace, redact, run_search, trials_markdown

    space = SearchSpace(
        families=args.families,
        efficientnet_variants=args.efficientnet_variants,
        cnn_blocks=args.cnn_blocks,
        cnn_batch_norm={"search": (False, True), "on": (True,), "off": (False,)}[args.cnn_batch_norm],
        augments=args.augments,
        input_sizes=args.input_sizes,
        lr=args.lr_range,
    )
    base = TrainConfig(
        epochs=args.epochs,
        batch_size=args.batch_size,
        input_size=args.input_size,
        seed=args.seed,
        self_blend=args.self_blend,
        capture=args.capture,
        schedule=args.schedule,
        epoch_samples=args.epoch_samples,
    )
    select = None
    if args.select_media is not None:
        margin, device = dataset_info(args.data)["crop_margin"], resolve_device(args.device)
        select = cache(lambda size: make_selector(args, size=size, margin=margin, device=device, measure_all=False))
    storage = args.storage or os.environ.get(STORAGE_ENV) or None
    try:
        result = run_search(
            data=args.data,
            out=args.out,
            storage=storage,
            study_name=args.study_name,
            n_trials=args.n_trials,
            total_trials=args.total_trials,
            base=base,
            space=space,
            pruner=args.pruner,
            latency=args.latency,
            max_latency_ms=args.max_latency_ms,
            max_params=args.max_params,
            seed=args.sampler_seed,
            **runtime_options(args),
            redis_prefix=args.redis_prefix,
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
        f"search: study {result.study_name!r} ({redact(str(storage or Path(args.out) / 'study.db'))}): "
        f"{len(states)} trials ({states.count('COMPLETE')} complete, {states.count('PRUNED')} pruned, "
        f"{states.count('FAIL')} failed); best trial {best['trial']}: {best['config']['model']}, {score}val loss "
        f"{best['val_loss']:.4f}{latency}\nwrote {result.paths['best_config']}, {result.paths['trials_csv']}"
        + (f", {result.paths['pareto']} (Pareto front: {len(result.pareto)} trials)" if result.pareto else "")
        + f"\nnext: dfwatch-train fit --data {args.data} --config {result.paths['best_config']} --out RUN_DIR",
        file=sys.stderr,
    )
    return 0


def add_search_options(p: argparse.ArgumentParser) -> None:
    """Everything but --data and --out; shared with `dfwatch-train all`."""
    from trainer.paper.search import DEFAULT_REDIS_PREFIX, EFFICIENTNET_VARIANTS, FAMILIES, PRUNERS

    p.add_argument("--n-trials", type=int, default=5, help="trials this process runs (default: 5)")
    p.add_argument(
        "--total-trials",
        type=int,
        default=None,
        help="stop once the study has this many finished trials over all workers and reruns",
    )
    p.add_argument("--epochs", type=int, default=10, help="epochs per trial (default: 10)")
    p.add_argument("--batch-size", type=int, default=8, help="crops per step (default: 8)")
    p.add_argument("--input-size", type=int, default=None, help="network input side (default: the store's crop size)")
    p.add_argument(
        "--input-sizes",
        type=_sizes,
        default=None,
        metavar="S1,S2",
        help="input sides to search, e.g. 128,192,256 (default: --input-size only)",
    )
    p.add_argument(
        "--self-blend",
        action="store_true",
        help="every trial adds one self-blended fake (SBI) per real crop of train and val, made on the fly",
    )
    p.add_argument(
        "--capture",
        action="store_true",
        help="trials show crops as a feed would, blends at the native size (trainer.pack.capture)",
    )
    p.add_argument("--schedule", choices=("constant", "cosine"), default="constant", help="learning rate schedule")
    p.add_argument(
        "--epoch-samples",
        type=int,
        default=None,
        metavar="N",
        help="train items per epoch and trial, a new random subset each epoch (default: all)",
    )
    p.add_argument("--pruner", default="median", choices=PRUNERS, help="prune trials per epoch (default: median)")
    p.add_argument(
        "--latency",
        action="store_true",
        help="second objective: measured inference latency (ONNX Runtime, batch 8, ms per face) on this machine; "
        "reports the Pareto front (no pruning: Optuna prunes single-objective studies only)",
    )
    p.add_argument(
        "--max-latency-ms",
        type=float,
        default=None,
        help="prune candidates slower than this (ms per face, ONNX Runtime, batch 8) before they train; with "
        "--latency also pick the best Pareto trial within it",
    )
    p.add_argument("--max-params", type=int, default=None, help="prune candidates with more parameters than this")
    p.add_argument(
        "--families",
        type=_csv,
        default=FAMILIES,
        metavar="A,B",
        help=f"architecture families (default: {','.join(FAMILIES)})",
    )
    p.add_argument(
        "--efficientnet-variants",
        type=_csv,
        default=EFFICIENTNET_VARIANTS,
        metavar="b0,b1,...",
        help="EfficientNet variants to search (default: b0-b7)",
    )
    p.add_argument(
        "--cnn-blocks",
        type=_blocks,
        default=(2, 4),
        metavar="FEWEST-MOST",
        help="conv blocks of the paper's CNN family (default: 2-4)",
    )
    p.add_argument(
        "--lr-range",
        type=_range,
        default=(1e-5, 1e-2),
        metavar="LOW,HIGH",
        help="Adam learning rates to search, log scale (default: 1e-5,1e-2)",
    )
    p.add_argument(
        "--cnn-batch-norm",
        choices=("search", "on", "off"),
        default="search",
        help="BatchNorm in the paper's CNN family: searched (default), always, never (the paper's own)",
    )
    p.add_argument(
        "--augments",
        type=_csv,
        default=None,
        metavar="A,B",
        help="on-the-fly augmentation presets to choose from (default: all, with none)",
    )
    p.add_argument(
        "--storage",
        default=None,
        help=f"Optuna storage: SQLite file (default: OUT/study.db), sqlite:///, postgresql://, "
        f"redis:// (journal storage; several workers share one study); or set {STORAGE_ENV}",
    )
    p.add_argument("--study-name", default="dfwatch", help="study name; workers of one study share it")
    p.add_argument("--redis-prefix", default=DEFAULT_REDIS_PREFIX, help="key prefix of a Redis-backed study")
    p.add_argument("--seed", type=int, default=0, help="training seed of every trial (default: 0)")
    p.add_argument(
        "--sampler-seed", type=int, default=None, help="TPE sampler seed (default: random; give each worker its own)"
    )
    add_select_options(p)
    add_runtime_options(p)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "search",
        help="Optuna architecture search (paper's CNN, EfficientNet B0-B7 and Lite0-2, the frequency head), "
        "objective validation loss or AUC on real manipulated faces (--select-media)",
        description="Trials train with `fit`'s own training loop on the train split, scored on val. Writes "
        "OUT/best_config.json (feed it to `fit --config`), OUT/trials.csv and trials.md; the trials table "
        "goes to stdout. Several processes (machines) with one --storage URL and --study-name share the trials.",
    )
    p.add_argument("--data", type=Path, required=True, help="face store (HDF5) from `dfwatch-train dataset`")
    p.add_argument("--out", type=Path, required=True, help="directory for best_config.json and the trials table")
    add_search_options(p)
    p.set_defaults(func=cmd_search)
