"""dfwatch-train evaluate: the paper's table (and AUC, EER) at frame and video level, plots, reports."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from trainer.commands.fit import add_runtime_options, runtime_options

logger = logging.getLogger(__name__)


def cmd_evaluate(args: argparse.Namespace) -> int:
    from trainer.paper.evaluate import (
        EvaluateError,
        RunSpec,
        evaluate_checkpoint,
        markdown_table,
        parse_run,
        write_report,
    )

    if bool(args.checkpoint) == bool(args.run):
        raise EvaluateError("give either --checkpoint (one run) or one or more --run LABEL=CHECKPOINT[,DATA]")
    if args.checkpoint is not None:
        specs = [RunSpec(label=args.label, checkpoint=args.checkpoint, data=args.data)]
    else:
        if args.data is not None:
            raise EvaluateError("--data goes with --checkpoint; with --run write LABEL=CHECKPOINT,DATA")
        specs = [parse_run(text) for text in args.run]
    results = [
        evaluate_checkpoint(
            spec,
            split=args.split,
            weights=args.weights,
            reduce=args.video_score,
            threshold=args.threshold,
            batch_size=args.batch_size,
            **runtime_options(args),
        )
        for spec in specs
    ]
    paths = write_report(results, args.out, compare_protocols=args.compare_protocols)
    if args.compare_protocols:
        from trainer.paper.evaluate import order_for_comparison

        results = order_for_comparison(results)
    print(markdown_table(results, compare_protocols=args.compare_protocols), end="")
    print(
        f"evaluate: {len(results)} run(s) on the {args.split} split; wrote {paths['markdown']}, {paths['json']}, "
        + ", ".join(str(p) for k, p in paths.items() if p.suffix == ".png"),
        file=sys.stderr,
    )
    return 0


def add_evaluate_options(p: argparse.ArgumentParser) -> None:
    """Everything but what names the runs and --out; shared with `dfwatch-train all`."""
    from trainer.metrics import REDUCTIONS

    p.add_argument("--split", default="test", choices=("train", "val", "test"), help="split to score (default: test)")
    p.add_argument(
        "--weights",
        default="best",
        choices=("best", "last"),
        help="the epoch with the lowest validation loss, or the last (default: best)",
    )
    p.add_argument(
        "--video-score",
        default="mean",
        choices=REDUCTIONS,
        help="a video's score from its frames' scores (default: mean)",
    )
    p.add_argument("--threshold", type=float, default=0.5, help="P(fake) at or above which a face is fake")
    p.add_argument("--batch-size", type=int, default=64, help="crops per forward pass (default: 64)")
    add_runtime_options(p)


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
    p.add_argument("--checkpoint", type=Path, default=None, help="checkpoint.pt from `dfwatch-train fit`")
    p.add_argument("--data", type=Path, default=None, help="face store (default: the one the checkpoint trained on)")
    p.add_argument("--label", default="model", help="the run's column name with --checkpoint (default: model)")
    p.add_argument(
        "--run",
        action="append",
        default=[],
        metavar="LABEL=CHECKPOINT[,DATA]",
        help="a run to put in the table (repeatable)",
    )
    p.add_argument(
        "--compare-protocols",
        action="store_true",
        help="two runs, identity and paper protocol, side by side with their difference",
    )
    p.add_argument("--out", type=Path, required=True, help="directory for the report and plots")
    add_evaluate_options(p)
    p.set_defaults(func=cmd_evaluate)
