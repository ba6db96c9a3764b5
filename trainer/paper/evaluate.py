"""Evaluation of trained checkpoints: the paper's table at frame and video level, ROC, EER,
confusion matrices, plots, and a JSON + markdown report.

One run is a checkpoint scored on one split of a face store (by default the store it was
trained on, its "test" split). Several runs go side by side in one table; with
``compare_protocols`` the runs must be one identity-disjoint and one of the paper's random
80/20 protocol, and the table adds their difference: the leakage of the paper's protocol.
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from trainer.errors import EvaluateError
from trainer.metrics import REDUCTIONS, BinaryMetrics, binary_metrics, pool_by_video, roc_curve
from trainer.paper.config import PROTOCOLS

logger = logging.getLogger(__name__)

TABLE_ROWS = (
    ("accuracy", "Accuracy"),
    ("precision", "Precision"),
    ("recall", "Recall"),
    ("f1", "F1"),
    ("roc_auc", "ROC AUC"),
    ("eer", "EER"),
)
LEVELS = ("frame", "video")


@dataclass(frozen=True)
class RunSpec:
    label: str  # column name in the table
    checkpoint: Path
    data: Path | None = None  # face store; None = the one the checkpoint was trained on


@dataclass
class RunResult:
    label: str
    checkpoint: str
    data: str
    split: str
    split_protocol: str  # "identity" or "paper", from the store
    weights: str  # "best" or "last"
    model: str
    epochs: int
    best_epoch: int
    video_reduce: str  # how frame scores became a video score
    frame: BinaryMetrics
    video: BinaryMetrics
    frame_roc: tuple[np.ndarray, np.ndarray] | None  # (fpr, tpr)
    video_roc: tuple[np.ndarray, np.ndarray] | None
    history: list[dict[str, float]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "label": self.label,
            "checkpoint": self.checkpoint,
            "data": self.data,
            "split": self.split,
            "split_protocol": self.split_protocol,
            "weights": self.weights,
            "model": self.model,
            "epochs": self.epochs,
            "best_epoch": self.best_epoch,
            "video_reduce": self.video_reduce,
            "frame": self.frame.to_dict(),
            "video": self.video.to_dict(),
            "history": self.history,
        }


def parse_run(text: str) -> RunSpec:
    """``LABEL=CHECKPOINT`` or ``LABEL=CHECKPOINT,DATA.h5`` (DATA defaults to the checkpoint's store)."""
    label, sep, rest = text.partition("=")
    if not sep or not label or not rest:
        raise EvaluateError(f"--run {text!r}: expected LABEL=CHECKPOINT or LABEL=CHECKPOINT,DATA.h5")
    if not re.fullmatch(r"[\w.+-]+", label):
        raise EvaluateError(f"--run {text!r}: the label {label!r} may hold letters, digits and _ . + - only")
    ckpt, _, data = rest.partition(",")
    return RunSpec(label=label, checkpoint=Path(ckpt), data=Path(data) if data else None)


def evaluate_checkpoint(
    spec: RunSpec,
    *,
    split: str = "test",
    weights: str = "best",
    reduce: str = "mean",
    threshold: float = 0.5,
    batch_size: int = 64,
    device: str = "auto",
    threads: int | None = None,
    workers: int = 0,
    progress: bool = True,
) -> RunResult:
    """Score every original crop of ``split`` and compute frame- and video-level metrics."""
    from trainer.fit import load_checkpoint, make_loader, model_from_checkpoint, predict, use_runtime
    from trainer.store import FaceStore

    if reduce not in REDUCTIONS:
        raise EvaluateError(f"unknown video pooling {reduce!r}; valid: {list(REDUCTIONS)}")
    dev = use_runtime(device, threads)
    ckpt = load_checkpoint(spec.checkpoint)
    data = spec.data or Path(ckpt["dataset"]["path"])
    with FaceStore(data) as store:
        fingerprint, protocol = store.fingerprint(), str(store.attrs["split_protocol"])
        videos_all = store.meta("video")
    if fingerprint != ckpt["dataset"]["fingerprint"]:
        logger.warning(
            "%s: evaluating on %s, not the store it was trained on (%s)", spec.checkpoint, data, ckpt["dataset"]["path"]
        )
    model = model_from_checkpoint(ckpt, weights=weights).to(dev)
    loader = make_loader(
        data, split, input_size=model.cfg.input_size, batch_size=batch_size, shuffle=False, workers=workers
    )
    logits = predict(model, loader, device=dev, desc=f"{spec.label} {split}", progress=progress)
    scores = 1.0 / (1.0 + np.exp(-logits))  # (n,) P(fake)
    labels = loader.dataset.labels.astype(np.int64)
    videos = videos_all[loader.dataset.rows]
    names, vlabels, vscores = pool_by_video(videos, labels, scores, reduce=reduce)
    frame = binary_metrics(labels, scores, threshold=threshold)
    video = binary_metrics(vlabels, vscores, threshold=threshold)
    logger.info(
        "%s: %d frames of %d videos; frame accuracy %.4f, video accuracy %.4f",
        spec.label,
        len(labels),
        len(names),
        frame.accuracy,
        video.accuracy,
    )
    return RunResult(
        label=spec.label,
        checkpoint=str(spec.checkpoint),
        data=str(data),
        split=split,
        split_protocol=protocol,
        weights=weights,
        model=ckpt["config"]["model"],
        epochs=len(ckpt["history"]),
        best_epoch=int(ckpt["best"]["epoch"]),
        video_reduce=reduce,
        frame=frame,
        video=video,
        frame_roc=_roc(labels, scores),
        video_roc=_roc(vlabels, vscores),
        history=list(ckpt["history"]),
    )


def _roc(labels: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    if not 0 < labels.sum() < len(labels):
        return None
    fpr, tpr, _ = roc_curve(labels, scores)
    return fpr, tpr


def order_for_comparison(results: list[RunResult]) -> list[RunResult]:
    """The two runs of ``--compare-protocols``, identity first; EvaluateError unless they pair up."""
    protocols = sorted(r.split_protocol for r in results)
    if len(results) != 2 or protocols != sorted(PROTOCOLS):
        got = [f"{r.label}: {r.split_protocol}" for r in results]
        raise EvaluateError(
            f"--compare-protocols needs two runs, one per split protocol {list(PROTOCOLS)}; got {got} "
            "(build the stores with `dfwatch-train dataset --split identity` and `--split paper`)"
        )
    return sorted(results, key=lambda r: PROTOCOLS.index(r.split_protocol))


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4f}"


def markdown_table(results: list[RunResult], *, compare_protocols: bool = False) -> str:
    """The paper's table (plus AUC and EER), one column per run and level; with
    ``compare_protocols`` also the paper-minus-identity difference per level."""
    header = ["metric"]
    for r in results:
        header += [f"{r.label} {level}" for level in LEVELS]
    if compare_protocols:
        header += [f"paper - identity {level}" for level in LEVELS]
    lines = ["| " + " | ".join(header) + " |", "|---" + "|--:" * (len(header) - 1) + "|"]
    for key, name in TABLE_ROWS:
        cells = [name]
        for r in results:
            cells += [_fmt(getattr(getattr(r, level), key)) for level in LEVELS]
        if compare_protocols:
            ident, paper = results
            for level in LEVELS:
                a, b = getattr(getattr(ident, level), key), getattr(getattr(paper, level), key)
                cells.append("n/a" if a is None or b is None else f"{b - a:+.4f}")
        lines.append("| " + " | ".join(cells) + " |")
    counts = ["samples (fake)"]
    for r in results:
        counts += [f"{getattr(r, level).n} ({getattr(r, level).positives})" for level in LEVELS]
    if compare_protocols:
        counts += ["", ""]
    lines.append("| " + " | ".join(counts) + " |")
    return "\n".join(lines) + "\n"


def markdown_report(results: list[RunResult], *, compare_protocols: bool, plots: dict[str, str]) -> str:
    parts = ["# Evaluation\n\n"]
    if compare_protocols:
        parts.append(
            "Two protocols side by side. *identity*: the official Celeb-DF test list is the test set and no "
            "person is on both sides of the train/validation split. *paper*: the paper's random 80/20 split "
            "of frames, so frames of one video (and one person) land in training and test alike. The last "
            "columns are paper minus identity: what the leakage adds.\n\n"
        )
    parts.append(markdown_table(results, compare_protocols=compare_protocols))
    parts.append(
        f"\nThreshold {results[0].frame.threshold:g} on P(fake); a video's score is the {results[0].video_reduce} "
        "of its frame scores. EER: equal error rate.\n"
    )
    parts.append("\n## Runs\n")
    for r in results:
        parts.append(
            f"\n### {r.label}\n\n- checkpoint `{r.checkpoint}` ({r.model}, {r.weights} weights: epoch "
            f"{r.best_epoch if r.weights == 'best' else r.epochs} of {r.epochs})\n- store `{r.data}`, split "
            f"`{r.split}`, protocol `{r.split_protocol}`\n"
        )
        for level in LEVELS:
            (tn, fp), (fn, tp) = getattr(r, level).confusion
            parts.append(
                f"\n{level} confusion matrix:\n\n| | called real | called fake |\n|---|--:|--:|\n"
                f"| real | {tn} | {fp} |\n| fake | {fn} | {tp} |\n"
            )
    if plots:
        parts.append("\n## Plots\n\n" + "".join(f"![{name}]({file})\n" for name, file in plots.items()))
    return "".join(parts)


def write_report(results: list[RunResult], out: str | Path, *, compare_protocols: bool = False) -> dict[str, Path]:
    """Write report.json, report.md, roc.png and history_<label>.png into ``out``; returns the paths."""
    from trainer.paper.plots import plot_history, plot_roc

    if not results:
        raise EvaluateError("no runs to report")
    labels = [r.label for r in results]
    if len(set(labels)) != len(labels):
        raise EvaluateError(f"run labels must differ, got {labels}")
    if compare_protocols:
        results = order_for_comparison(results)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    paths: dict[str, Path] = {}
    curves = {}
    for r in results:
        for level in LEVELS:
            roc = getattr(r, f"{level}_roc")
            if roc is not None:
                curves[f"{r.label} {level}"] = (*roc, getattr(r, level).roc_auc)
    if curves:
        paths["roc"] = plot_roc(curves, out / "roc.png", title=f"ROC ({results[0].split} split)")
    for r in results:
        if r.history:
            paths[f"history_{r.label}"] = plot_history(
                r.history, out / f"history_{r.label}.png", title=f"{r.label}: {r.model}"
            )
    plots = {name: p.name for name, p in paths.items()}
    report = {
        "compare_protocols": compare_protocols,
        "runs": [r.to_dict() for r in results],
        "table_markdown": markdown_table(results, compare_protocols=compare_protocols),
        "plots": plots,
    }
    paths["json"] = out / "report.json"
    paths["json"].write_text(json.dumps(report, indent=2) + "\n")
    paths["markdown"] = out / "report.md"
    paths["markdown"].write_text(markdown_report(results, compare_protocols=compare_protocols, plots=plots))
    return paths
