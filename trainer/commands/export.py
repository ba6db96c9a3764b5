"""dfwatch-train export: a trained checkpoint -> ONNX classifier with manifest and model card."""

from __future__ import annotations

import argparse
import json
import logging
import shlex
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.errors import ConfigError
from pipeline.flags import add_config_file, add_config_flags, config_from_args
from pipeline.ranges import check_ranges, ranged
from trainer.commands._common import machine
from trainer.fit import WEIGHTS

logger = logging.getLogger(__name__)

CARD = """# {file}

Deepfake face classifier trained by dfwatch-train: P(fake) for a {size}x{size} RGB face crop
(crop margin {margin}). Manifest: `{file}.json` (sha256, thresholds, training provenance).

- architecture: `{model}` {model_args}; {params} parameters; {weights} weights (epoch {epoch} of {epochs})
- trained on: `{data}` (dataset fingerprint `{fingerprint}`, {protocol} split protocol{whole})
- training: {optimizer} lr {lr}, batch {batch}, augmentation `{augment}`, seed {seed}
- validation at that epoch: loss {val_loss:.4f}, accuracy {val_acc:.4f}
- built by: `{command}`
{metrics}"""


@dataclass(frozen=True)
class ExportOptions:
    """`dfwatch-train export`: which weights of which checkpoint go where, with which manifest fields."""

    checkpoint: Path  # checkpoint.pt from `dfwatch-train fit`
    out: Path = Path("models/deepfake_classifier.onnx")  # ONNX file to write
    report: Path | None = None  # report.json of `dfwatch-train evaluate` whose metrics go into the manifest and card
    weights: str = "best"  # epoch to export
    threshold: float = ranged(0.5, 0, 1)  # P(fake) threshold written to the manifest
    # the service scores only faces at least this many pixels high (manifest preprocess.min_face); 0 = all
    min_face: int = ranged(0, 0, 10_000, unit="px")

    def __post_init__(self) -> None:
        check_ranges(self)
        if self.weights not in WEIGHTS:
            raise ConfigError(f"weights must be one of {list(WEIGHTS)}, got {self.weights!r}")


def provenance(
    ckpt: dict[str, Any], *, checkpoint: Path, weights: str, report: Path | None, command: str
) -> dict[str, Any]:
    """The manifest's ``training`` field: where the weights came from and how good they are."""
    epoch = int(ckpt["best"]["epoch"]) if weights == "best" else len(ckpt["history"])
    training: dict[str, Any] = {
        "checkpoint": str(checkpoint.resolve()),
        "weights": weights,
        "epoch": epoch,
        "epochs": len(ckpt["history"]),
        "config": ckpt["config"],
        "dataset": {
            k: ckpt["dataset"][k]
            for k in ("path", "fingerprint", "split_protocol", "crop_size", "crop_margin", "whole_frames", "rows")
        },
        "validation": {k: ckpt["history"][epoch - 1][k] for k in ("val_loss", "val_acc")},
        "command": command,
        "seconds": round(sum(float(h.get("seconds", 0.0)) for h in ckpt["history"]), 1),  # all epochs trained
        "machine": machine(),  # where this export ran; the card names the training machine when it differs
    }
    if report is not None:
        try:
            runs = json.loads(report.read_text())["runs"]
        except (OSError, json.JSONDecodeError, KeyError) as exc:
            raise ValueError(f"--report {report}: not an evaluate report.json ({exc})") from exc
        mine = [r for r in runs if Path(r["checkpoint"]).resolve() == checkpoint.resolve()]
        if not mine:
            raise ValueError(f"--report {report} has no run of checkpoint {checkpoint}")
        scored = [r for r in mine if r.get("weights") == weights]
        if not scored:  # its metrics belong to another epoch's weights than the ones exported
            theirs = mine[0].get("weights")
            raise ValueError(
                f"--report {report} scored the {theirs!r} weights of {checkpoint}, this export the {weights!r} "
                f"ones; evaluate with --weights {weights} or export with --weights {theirs}"
            )
        mine = scored
        training["metrics"] = {
            "split": mine[0]["split"],
            "video_reduce": mine[0]["video_reduce"],
            **{
                lvl: {k: mine[0][lvl][k] for k in ("accuracy", "precision", "recall", "f1", "roc_auc", "eer", "n")}
                for lvl in ("frame", "video")
            },
        }
    return training


def _num(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4f}"


def _card(path: Path, training: dict[str, Any], *, params: int) -> str:
    from trainer.paper.evaluate import TABLE_ROWS

    cfg, data = training["config"], training["dataset"]
    metrics = ""
    if "metrics" in training:
        m = training["metrics"]
        rows = "".join(f"| {name} | {_num(m['frame'][key])} | {_num(m['video'][key])} |\n" for key, name in TABLE_ROWS)
        metrics = (
            f"\n## Evaluation ({m['split']} split; video score = {m['video_reduce']} of frames)\n\n"
            f"| metric | frame | video |\n|---|--:|--:|\n{rows}"
        )
    return CARD.format(
        file=path.name,
        size=cfg["input_size"],
        margin=data["crop_margin"],
        model=cfg["model"],
        model_args=json.dumps(cfg["model_args"]) if cfg["model_args"] else "",
        params=f"{params:,}",
        weights=training["weights"],
        epoch=training["epoch"],
        epochs=training["epochs"],
        data=data["path"],
        fingerprint=data["fingerprint"][:16],
        protocol=data["split_protocol"],
        whole=", whole frames" if data["whole_frames"] else "",
        optimizer={"adam": "Adam", "adamw": "AdamW"}[cfg.get("optimizer", "adam")],
        lr=cfg["lr"],
        batch=cfg["batch_size"],
        augment=cfg["augment"],
        seed=cfg["seed"],
        val_loss=training["validation"]["val_loss"],
        val_acc=training["validation"]["val_acc"],
        command=training["command"],
        metrics=metrics,
    )


def export_checkpoint(options: ExportOptions, *, command: str = "") -> tuple[Any, float]:
    """Export ``options.checkpoint`` to ``options.out`` (.onnx) through engines.export.export_classifier, verified
    against torch; writes the manifest (with training provenance and ``command``) and a model card (.md)."""
    from engines.export import export_classifier
    from trainer.fit import load_checkpoint, model_from_checkpoint

    checkpoint, out = options.checkpoint, options.out
    ckpt = load_checkpoint(checkpoint)
    model = model_from_checkpoint(ckpt, weights=options.weights)
    training = provenance(ckpt, checkpoint=checkpoint, weights=options.weights, report=options.report, command=command)
    if ckpt["dataset"]["whole_frames"]:
        logger.warning("%s was trained on whole frames; the service feeds it face crops", checkpoint)
    manifest, diff = export_classifier(
        model,
        out,
        name=ckpt["config"]["model"],
        input_size=int(ckpt["config"]["input_size"]),
        crop_margin=float(ckpt["dataset"]["crop_margin"]),
        threshold=options.threshold,
        placeholder=False,
        training=training,
        min_face=options.min_face,
    )
    params = sum(p.numel() for p in model.parameters())
    out.with_suffix(".md").write_text(_card(out, training, params=params))
    return manifest, diff


def command_line(o: ExportOptions) -> str:
    """The command that exports ``o`` again, flags only (a --config file's fields included): the manifest's."""
    argv = ["dfwatch-train", "export", "--checkpoint", str(o.checkpoint), "--out", str(o.out)]
    argv += ["--weights", o.weights, "--threshold", str(o.threshold)]
    argv += (["--min-face", str(o.min_face)] if o.min_face else []) + (["--report", str(o.report)] if o.report else [])
    return shlex.join(argv)


def cmd_export(args: argparse.Namespace) -> int:
    o = config_from_args(ExportOptions, args, file=args.config)
    manifest, diff = export_checkpoint(o, command=command_line(o))
    print(
        f"export: {o.out} ({o.out.stat().st_size >> 10} KiB, {manifest.name}, input {manifest.input_size}, "
        f"max |onnx - torch| = {diff:.2g}), manifest {o.out.name}.json, card {o.out.with_suffix('.md').name}\n"
        "next: dfwatch-train engines  (rebuild the TensorRT / torch engines from this ONNX file)",
        file=sys.stderr,
    )
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "export",
        help="checkpoint -> ONNX classifier with manifest (training provenance) and model card",
        description="Exports through engines.export (dynamic batch, checked against torch with ONNX Runtime). "
        "The manifest's `training` field records the checkpoint, dataset fingerprint, config, validation "
        "numbers, the evaluation metrics (--report) and this command. Afterwards run `dfwatch-train engines`.",
    )
    add_config_flags(p, ExportOptions, choices={"weights": WEIGHTS})
    add_config_file(p, "the export options")
    p.set_defaults(func=cmd_export)
