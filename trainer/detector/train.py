"""Train the YOLOv8n face detector with ultralytics, wrapped at this one edge.

ultralytics runs offline (``YOLO_OFFLINE=1``, set by the command before import) from the model
definition ``yolov8n.yaml`` that ships inside the package: no pretrained weights exist here and
none are fetched. Every path is explicit, plots are off (they would fetch a font), and a
wall-clock budget (``hours``) sets the number of epochs so a CPU run ends when it was planned
to, with the learning-rate schedule fitted to that budget.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from trainer.errors import TrainerError

logger = logging.getLogger(__name__)


class DetectorTrainError(TrainerError):
    """Detector training failed or left no weights."""


@dataclass(frozen=True)
class DetectorTrainConfig:
    """How the detector is trained; recorded in the run's summary and the model card."""

    model: str = "yolov8n.yaml"  # ultralytics model definition (untrained) or a .pt to continue from
    imgsz: int = 416  # training input side
    epochs: int = 300  # upper bound; ``hours`` usually ends the run first
    hours: float | None = 1.0  # wall-clock budget; None = run all ``epochs``
    batch: int = 16
    workers: int = 2  # dataloader processes
    cache: bool = True  # decoded images kept in RAM
    close_mosaic: int = 5  # last epochs without mosaic augmentation
    patience: int = 100  # early stop after this many epochs without a better val fitness
    seed: int = 0
    device: str = "cpu"


def train_detector(cfg: DetectorTrainConfig, *, data_yaml: Path, out: Path, resume: bool = False) -> dict[str, Any]:
    """Train; returns a summary (weights path, epochs run, seconds, final val metrics)."""
    from ultralytics import YOLO

    out.mkdir(parents=True, exist_ok=True)
    last = out / "train" / "weights" / "last.pt"
    started = time.monotonic()
    if resume and last.is_file():
        logger.info("resuming detector training from %s", last)
        model = YOLO(str(last))
        results = model.train(resume=True)
    else:
        model = YOLO(cfg.model, task="detect")
        results = model.train(
            data=str(data_yaml),
            imgsz=cfg.imgsz,
            epochs=cfg.epochs,
            time=cfg.hours,
            batch=cfg.batch,
            workers=cfg.workers,
            cache=cfg.cache,
            close_mosaic=cfg.close_mosaic,
            patience=cfg.patience,
            seed=cfg.seed,
            device=cfg.device,
            project=str(out.resolve()),
            name="train",
            exist_ok=True,
            pretrained=False,
            plots=False,
            amp=False,
            verbose=True,
            single_cls=True,
        )
    seconds = time.monotonic() - started
    best = out / "train" / "weights" / "best.pt"
    if not best.is_file():
        raise DetectorTrainError(f"training ended without {best}; see the log above")
    metrics = {k: float(v) for k, v in (getattr(results, "results_dict", None) or {}).items()}
    summary = {
        "config": asdict(cfg),
        "weights": str(best),
        "seconds": round(seconds, 1),
        "val_metrics": metrics,
        "epochs_run": _epochs_run(out / "train" / "results.csv"),
    }
    logger.info("detector trained in %.1f min: %s", seconds / 60, best)
    return summary


def _epochs_run(results_csv: Path) -> int:
    if not results_csv.is_file():
        return 0
    return max(len(results_csv.read_text().strip().splitlines()) - 1, 0)
