"""dfwatch-train evaluate: the paper's table (and AUC, EER) at frame and video level, plots, reports."""

from __future__ import annotations

import argparse
import logging
import math
import sys
from dataclasses import dataclass
from pathlib import Path

from pipeline.flags import add_config_file, add_config_flags, config_from_args, field_help
from pipeline.ranges import check_ranges, ranged
from trainer.commands.fit import add_runtime_options, runtime_options
from trainer.metrics import REDUCTIONS
from trainer.store import SPLITS

logger = logging.getLogger(__name__)

WEIGHTS = ("best", "last")


@dataclass(frozen=True)
class EvaluateOptions:
    """`dfwatch-train evaluate`: which runs, scored how, written where. ``--config`` is a TOML table of these fields;
    --device, --threads and --workers are fit's (trainer.commands.fit)."""

    out: Path  # directory for the report and plots
    checkpoint: Path | None = None  # checkpoint.pt from `dfwatch-train fit`
    data: Path | None = None  # face store; none = the one the checkpoint trained on
    label: str = "model"  # the run's column name with --checkpoint
    run: tuple[str, ...] = ()  # a run to put in the table, LABEL=CHECKPOINT[,DATA] (repeatable)
    compare_protocols: bool = False  # two runs, identity and paper protocol, side by side with their difference
    split: str = "test"  # split to score
    weights: str = "best"  # the epoch with the lowest validation loss, or the last
    video_score: str = "mean"  # a video's score from its frames' scores
    threshold: float = ranged(0.5, 0, 1)  # P(fake) at or above which a face is fake
    batch_size: int = ranged(64, 1, math.inf)  # crops per forward pass

    def __post_init__(self) -> None:
        check_ranges(self)


def cmd_evaluate(args: argparse.Namespace) -> int:
    from trainer.paper.evaluate import (
        EvaluateError,
        RunSpec,
        evaluate_checkpoint,
        markdown_table,
        parse_run,
        write_report,
    )

    o = config_from_args(EvaluateOptions, args, file=args.config)
    if bool(o.checkpoint) == bool(o.run):
        raise EvaluateError("give either --checkpoint (one run) or one or more --run LABEL=CHECKPOINT[,DATA]")
    if o.checkpoint is not None:
        specs = [RunSpec(label=o.label, checkpoint=o.checkpoint, data=o.data)]
    else:
        if o.data is not None:
            raise EvaluateError("--data goes with --checkpoint; with --run write LABEL=CHECKPOINT,DATA")
        specs = [parse_run(text) for text in o.run]
    results = [
        evaluate_checkpoint(
            spec,
            split=o.split,
            weights=o.weights,
            reduce=o.video_score,
            threshold=o.threshold,
            batch_size=o.batch_size,
            **runtime_options(args),
        )
        for spec in specs
    ]
    paths = write_report(results, o.out, compare_protocols=o.compare_protocols)
    if o.compare_protocols:
        from trainer.paper.evaluate import order_for_comparison

        results = order_for_comparison(results)
    print(markdown_table(results, compare_protocols=o.compare_protocols), end="")
    print(
        f"evaluate: {len(results)} run(s) on the {o.split} split; wrote {paths['markdown']}, {paths['json']}, "
        + ", ".join(str(p) for k, p in paths.items() if p.suffix == ".png"),
        file=sys.stderr,
    )
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "evaluate",
        help="accuracy, precision, recall, F1, ROC AUC, EER at frame and video level; plots; JSON + markdown",
        description="Score checkpoints on a split of their face store. One run: --checkpoint [--data]. Several "
        "side by side: --run LABEL=CHECKPOINT[,DATA] (repeatable). --compare-protocols takes two runs, one "
        "trained on an identity-split store and one on a paper-split (random 80/20) store, and adds their "
        "difference: the leakage of the paper's protocol. Writes OUT/report.md, report.json, roc.png and "
        "history_<label>.png; the table goes to stdout.",
    )
    choices = {"split": SPLITS, "weights": WEIGHTS, "video_score": REDUCTIONS}
    add_config_flags(p, EvaluateOptions, choices=choices, skip=("run",))
    p.add_argument(  # repeated, not comma-separated: a run holds a comma
        "--run",
        action="append",
        default=None,
        metavar="LABEL=CHECKPOINT[,DATA]",
        help=field_help(EvaluateOptions)["run"],
    )
    add_config_file(p, "the evaluate options")
    add_runtime_options(p)
    p.set_defaults(func=cmd_evaluate)
