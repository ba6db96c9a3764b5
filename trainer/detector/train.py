"""Train the YOLOv8n face detector with ultralytics, wrapped at this one edge.

ultralytics runs offline (``YOLO_OFFLINE=1``, set by the command before import) from the model
definition ``yolov8n.yaml`` that ships inside the package: no pretrained weights exist here and
none are fetched. Every path is explicit, plots are off (they would fetch a font), and a
wall-clock budget (``hours``) sets the number of epochs so a CPU run ends when it was planned
to, with the learning-rate schedule fitted to that budget.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from pipeline.ranges import check_ranges, ranged
from trainer.errors import TrainerError

logger = logging.getLogger(__name__)


class DetectorTrainError(TrainerError):
    """Detector training failed or left no weights."""


@dataclass(frozen=True)
class DetectorTrainConfig:
    """How the detector is trained; recorded in the run's summary and the model card."""

    model: str = "yolov8n.yaml"  # ultralytics model definition (untrained) or a .pt to continue from
    imgsz: int = ranged(416, 32, 4096)  # training input side
    epochs: int = ranged(300, 1, math.inf)  # most epochs (the budget usually ends first)
    # training wall-clock budget (sets the epochs); 0 = no budget: run all epochs (recorded as None)
    hours: float | None = ranged(1.0, 0, math.inf, unit="hours")
    batch: int = 16  # images per training batch (ultralytics: -1 = as many as fit)
    workers: int = ranged(2, 0, 256)  # dataloader processes
    cache: bool = True  # decoded images kept in RAM
    close_mosaic: int = ranged(5, 0, math.inf)  # last epochs without mosaic augmentation
    patience: int = ranged(100, 0, math.inf)  # early stop after this many epochs without a better val fitness
    seed: int = 0  # ultralytics training seed
    device: str = "cpu"  # ultralytics training device: cpu, 0 (the first GPU), ...

    def __post_init__(self) -> None:
        check_ranges(self)
        if self.hours == 0:
            object.__setattr__(self, "hours", None)  # one form of "no budget" in the summary and the card


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
