"""dfwatch-train fit: train one architecture (by default the search's best) on a face store."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from pipeline.flags import add_config_flags, config_flag, config_from_args
from pipeline.ranges import check_ranges, ranged
from trainer.fit import DEVICES, OPTIMIZERS, SCHEDULES, TrainConfig

logger = logging.getLogger(__name__)

# The fields a --config file (the search's best_config.json) decides, the batch size too (a searched lr was tuned
# with it; --batch-size still wins); epochs and seed are fit's own.
CONFIG_FIELDS = (
    "model",
    "model_args",
    "input_size",
    "lr",
    "weight_decay",
    "optimizer",
    "backbone_lr",
    "augment",
    "self_blend",
    "capture",
    "capture_look",
    "blend_sharpen",
    "schedule",
    "epoch_samples",
    "batch_size",
)


# Every TrainConfig field is a flag of fit (made from the field: type, default and the comment beside it as help).
FLAG_FIELDS = (*CONFIG_FIELDS, "epochs", "seed")


@dataclass(frozen=True)
class RuntimeOptions:
    """Where and how fast a run computes, never what (trainer.fit.use_runtime): fit's, search's and evaluate's."""

    device: str = "auto"  # torch device
    threads: int | None = ranged(None, 1, 1024)  # torch CPU threads; None = torch's choice
    workers: int = ranged(0, 0, 256)  # DataLoader worker processes

    def __post_init__(self) -> None:
        check_ranges(self)


def add_runtime_options(p: argparse.ArgumentParser) -> None:
    """--device, --threads, --workers: the fields of ``RuntimeOptions``."""
    add_config_flags(p, RuntimeOptions, choices={"device": DEVICES})


def runtime_options(args: argparse.Namespace) -> dict[str, Any]:
    """The ``add_runtime_options`` flags as the keyword arguments of fit, run_search and evaluate_checkpoint."""
    return asdict(config_from_args(RuntimeOptions, args))


def parse_model_args(items: list[str]) -> dict[str, Any]:
    """KEY=VALUE pairs; VALUE is JSON when it parses (16, 0.5, [16, 32], true), else a string."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"--model-arg {item!r}: expected KEY=VALUE, e.g. filters=[16,32] or dropout_dense=0.3")
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = value
    return out


def resolve_config(args: argparse.Namespace) -> Any:
    """TrainConfig from --config (what to train) and the flags (which win where given)."""
    cfg = TrainConfig()
    if args.config is not None:
        loaded = TrainConfig.load(args.config)
        cfg = replace(cfg, **{k: getattr(loaded, k) for k in CONFIG_FIELDS})
    if args.model is not None and args.model != cfg.model:
        cfg = replace(cfg, model=args.model, model_args={})  # the config's args belong to its own model
    # each config field's flag wins where given; model is handled above, model_args merged below
    flags = [k for k in CONFIG_FIELDS if k not in ("model", "model_args")]
    overrides = {k: getattr(args, k) for k in flags if getattr(args, k) is not None}
    model_args = {**cfg.model_args, **parse_model_args(args.model_arg)}
    own = {k: getattr(args, k) if getattr(args, k) is not None else getattr(TrainConfig, k) for k in ("epochs", "seed")}
    return replace(cfg, **overrides, model_args=model_args, **own)


@dataclass(frozen=True)
class SelectOptions:
    """Model selection on real manipulated faces (trainer.pack.realval): fit's and search's."""

    # the shared data folder (../shared/data): pick the best epoch (and trial) by AUC on its real manipulated faces
    # (Celeb-DF hard segments, DFDC), never trained on; other labelled sets are measured alongside. None = pick by
    # validation loss
    select_media: Path | None = None
    select_detector: Path = Path("models/face_detector.onnx")  # face detector that cuts the held-out faces
    select_cache: Path = Path("runs/realval-cache")  # where the detector's boxes of the held-out sets are cached


def add_select_options(p: argparse.ArgumentParser) -> None:
    """--select-media, --select-detector, --select-cache: the fields of ``SelectOptions``."""
    add_config_flags(p, SelectOptions)


def make_selector(args: argparse.Namespace, *, size: int, margin: float, device: str, measure_all: bool = True) -> Any:
    """The ``fit(select=...)`` callable for --select-media, or None. ``measure_all``: also measure (never select
    on) the report-only sets each epoch; the search leaves them out."""
    o = config_from_args(SelectOptions, args)
    if o.select_media is None:
        return None
    from trainer.pack.realval import SELECT, SET_NAMES, RealFakeValidator

    return RealFakeValidator(
        o.select_media,
        o.select_detector,
        size=size,
        margin=margin,
        cache=o.select_cache,
        device=device,
        sets=SET_NAMES if measure_all else SELECT,
    )


def cmd_fit(args: argparse.Namespace) -> int:
    os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")  # albumentations asks PyPI at import otherwise
    from trainer.fit import dataset_info, fit, resolve_device

    cfg = resolve_config(args)
    runtime = runtime_options(args)
    info = dataset_info(args.data)
    if cfg.input_size is None:
        cfg = replace(cfg, input_size=info["crop_size"])
    device = resolve_device(runtime["device"])
    select = make_selector(args, size=cfg.input_size, margin=info["crop_margin"], device=device)
    try:
        result = fit(cfg, data=args.data, out=args.out, resume=args.resume, **runtime, select=select)
    except KeyboardInterrupt:
        print(f"fit: interrupted; finished epochs are in {args.out}: rerun with --resume", file=sys.stderr)
        return 130
    best = result.history[result.best_epoch - 1]
    last = result.history[-1]
    picked = f", select {best['select']:.4f}" if "select" in best else ""
    print(
        f"fit: {cfg.model}, {len(result.history)} epochs; best epoch {result.best_epoch}: val loss "
        f"{best['val_loss']:.4f}, acc {best['val_acc']:.4f}{picked} (last: {last['val_loss']:.4f}, "
        f"{last['val_acc']:.4f}); "
        f"checkpoint {result.checkpoint}\nnext: dfwatch-train evaluate --checkpoint {result.checkpoint} "
        f"--out {Path(args.out).parent / 'eval'}",
        file=sys.stderr,
    )
    return 0


def add_fit_options(p: argparse.ArgumentParser) -> None:
    """What to train and how long; shared with `dfwatch-train all`."""
    p.add_argument(
        "--config",
        type=Path,
        default=None,
        help="training config JSON, e.g. the search's best_config.json: model, its args, input size, "
        "lr, augment, self-blend (flags below win)",
    )
    choices = {"optimizer": OPTIMIZERS, "schedule": SCHEDULES}
    for name in FLAG_FIELDS:
        if name == "model_args":
            p.add_argument(
                "--model-arg",
                action="append",
                default=[],
                metavar="KEY=VALUE",
                help="override a field of the architecture's config, e.g. filters=[16,32] (repeatable)",
            )
            continue
        note = "or the config's" if name in CONFIG_FIELDS else ""
        config_flag(p, "--" + name.replace("_", "-"), TrainConfig, name, name, choices=choices.get(name), note=note)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "fit",
        help="train a classifier on a face store (Adam, binary cross-entropy, batch 8, 20 epochs)",
        description="Train on the store's train split, validate on val after every epoch; checkpoint.pt in "
        "--out carries model (last and best epoch), optimiser, epoch, config, dataset fingerprint and history.",
    )
    p.add_argument("--data", type=Path, required=True, help="face store (HDF5) from `dfwatch-train dataset`")
    p.add_argument("--out", type=Path, required=True, help="run directory for checkpoint.pt")
    add_fit_options(p)
    add_select_options(p)
    p.add_argument(
        "--resume", action="store_true", help="continue --out/checkpoint.pt (same store and config; --epochs may grow)"
    )
    add_runtime_options(p)
    p.set_defaults(func=cmd_fit)
