"""dfwatch-train detector: train, measure and export the YOLOv8n face detector of the default model pack.

Stages (each resumable; ``--out`` keeps them): the dataset (WIDER FACE train plus teacher-
labelled real frames, trainer.detector.data), ultralytics training within a wall-clock budget
(trainer.detector.train), then for each candidate serving size an ONNX export measured on WIDER
FACE val and on held-out clips (trainer.detector.evaluate). The serving size is the smallest whose
recall of faces >= 32 px, on WIDER val and on the clips, is within ``--recall-slack`` of the best
size's; it is exported to ``--export`` with a manifest that records all of this.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import math
import shlex
import sys
from dataclasses import dataclass
from pathlib import Path

from pipeline.flags import add_config_file, add_config_flags, config_from_args, field_help
from pipeline.ranges import ranged
from trainer.commands._common import machine, offline_ultralytics
from trainer.detector.train import DetectorTrainConfig
from trainer.errors import TrainerError

logger = logging.getLogger(__name__)

SIZES = (320, 416, 640)


@dataclass(frozen=True)
class DetectorOptions(DetectorTrainConfig):
    """`dfwatch-train detector`: the training config (DetectorTrainConfig's fields) and what is done around it;
    ``--config`` is one TOML table of both."""

    media: Path = Path("../shared/data")  # the shared real-media folder
    out: Path = Path("runs/detector")  # work folder (dataset, weights, report)
    export: Path | None = None  # write the serving ONNX here (e.g. models/face_detector.onnx)
    frames_per_clip: int = ranged(6, 1, math.inf)  # frames of each training clip for the teacher
    eval_frames: int = ranged(8, 1, math.inf)  # frames of each held-out clip to measure recall on
    sizes: tuple[int, ...] = SIZES  # serving sizes to measure
    serving_size: int | None = None  # force the serving size (one of the sizes)
    recall_slack: float = ranged(0.02, 0, 1)  # recall a smaller size may lose
    threads: int | None = ranged(None, 1, 1024)  # ONNX Runtime threads for the measurements
    resume: bool = False  # continue an interrupted training run
    retrain: bool = False  # train again even if the work folder holds trained weights
    torch_reference: bool = True  # the .pt2 torch reference beside the export

    def __post_init__(self) -> None:
        super().__post_init__()
        bad = [s for s in self.sizes if s not in SIZES]
        if bad or not self.sizes:
            raise TrainerError(f"--sizes {list(self.sizes)}: each must be one of {list(SIZES)}")
        if self.serving_size is not None and self.serving_size not in self.sizes:
            raise TrainerError(
                f"--serving-size {self.serving_size} is not among --sizes {list(self.sizes)}: add it to --sizes"
            )

    def train_config(self) -> DetectorTrainConfig:
        return DetectorTrainConfig(**{f.name: getattr(self, f.name) for f in dataclasses.fields(DetectorTrainConfig)})


def choose_size(rows: dict[int, dict], *, slack: float) -> int:
    """The smallest size whose WIDER and clip recall (>= 32 px) are both within ``slack`` of the best.

    A recall that could not be measured (no reference face: None) counts as 0.
    """

    def recall(r: dict, key: str) -> float:
        return r[key]["recall"] or 0.0

    best_wider = max(recall(r, "wider_recall32") for r in rows.values())
    best_clips = max(recall(r, "clips_recall32") for r in rows.values())
    for size in sorted(rows):
        r = rows[size]
        if recall(r, "wider_recall32") >= best_wider - slack and recall(r, "clips_recall32") >= best_clips - slack:
            return size
    return max(rows)


def cmd_detector(args: argparse.Namespace) -> int:
    o = config_from_args(DetectorOptions, args, file=args.config)
    offline_ultralytics()
    from engines import Detector
    from engines.export import export_detector
    from trainer import realmedia
    from trainer.detector import evaluate as ev
    from trainer.detector.data import labelled_sources, prepare
    from trainer.detector.train import train_detector
    from trainer.teacher import Teacher

    out = o.out
    out.mkdir(parents=True, exist_ok=True)
    teacher = Teacher()  # labels the training frames (first run) and the held-out clips' reference boxes
    data = prepare(o.media, out / "data", frames_per_clip=o.frames_per_clip, teacher=teacher)
    logger.info(
        "dataset: %d WIDER train images + %d teacher-labelled images (%d faces); dropped %d doubtful",
        data.wider_train,
        data.pseudo_images,
        data.pseudo_faces,
        data.dropped_doubtful,
    )
    summary_path = out / "train_summary.json"
    if summary_path.is_file() and not o.retrain:
        trained = json.loads(summary_path.read_text())
        logger.info("reusing the trained weights of %s (--retrain trains again)", summary_path)
    else:
        trained = train_detector(o.train_config(), data_yaml=data.yaml, out=out, resume=o.resume)
        summary_path.write_text(json.dumps(trained, indent=1))
    weights = Path(trained["weights"])

    record = json.loads((out / "data" / "pseudo_labels.json").read_text())
    trained_on = labelled_sources(record, [s.rel for s in realmedia.real_videos(o.media)])
    frames = ev.clip_frames(o.media, per_clip=o.eval_frames, exclude=trained_on)
    refs = [teacher.sure_faces(teacher(img)).xyxy for _, img in frames]
    rows: dict[int, dict] = {}
    thresholds: dict[int, float] = {}  # the manifest confidence each size was measured at
    for size in o.sizes:
        onnx = out / "eval" / f"face_detector_{size}.onnx"
        onnx.parent.mkdir(exist_ok=True)
        export_detector(weights, onnx, input_size=size, placeholder=False, torch_reference=False)
        det = Detector(onnx, threads=o.threads)
        thresholds[size] = float(det.conf)
        wider = ev.match_recall(ev.wider_pairs(det, o.media / "widerface" / "val"), min_height=32)
        clips = ev.match_recall([(r, det([img]).xyxy) for r, (_, img) in zip(refs, frames)], min_height=32)
        rows[size] = {
            **ev.wider_map(weights, data.yaml, imgsz=size),
            "wider_recall32": wider.to_dict(),
            "clips_recall32": clips.to_dict(),
            "ms_per_720p_frame": ev.latency_ms(det),
        }
        logger.info("size %d: %s", size, json.dumps(rows[size]))
    size = o.serving_size or choose_size(rows, slack=o.recall_slack)
    report = {
        "command": "dfwatch-train " + shlex.join(sys.argv[1:]) if sys.argv[0].endswith("dfwatch-train") else None,
        "machine": machine(),
        "data": {
            "wider_train": data.wider_train,
            "pseudo_images": data.pseudo_images,
            "pseudo_faces": data.pseudo_faces,
            "dropped_doubtful": data.dropped_doubtful,
            "clip_eval_frames": len(frames),
            "clip_eval_faces": int(sum(len(r) for r in refs)),
        },
        "training": trained,
        "sizes": {str(k): v for k, v in rows.items()},
        "serving_size": size,
        "threshold": thresholds[size],
    }
    (out / "detector_report.json").write_text(json.dumps(report, indent=1))
    if o.export:
        o.export.parent.mkdir(parents=True, exist_ok=True)
        training = {
            "data": "WIDER FACE train subset + MTCNN-labelled real frames (../shared/data)",
            "seconds": trained["seconds"],
            "epochs": trained["epochs_run"],
            "imgsz": trained["config"]["imgsz"],
            "machine": report["machine"],
            "metrics": {"serving_size": size, **rows[size]},
        }
        export_detector(
            weights,
            o.export,
            input_size=size,
            placeholder=False,
            training=training,
            torch_reference=o.torch_reference,
        )
        logger.info("exported %s at %d", o.export, size)
    _print_table(rows, size)
    return 0


def _print_table(rows: dict[int, dict], chosen: int) -> None:
    print(
        "| size | mAP50 | mAP50-95 | WIDER recall >=32 px | held-out clips recall | ms / 720p frame |", file=sys.stderr
    )
    print("|--:|--:|--:|--:|--:|--:|", file=sys.stderr)
    for size, r in sorted(rows.items()):
        mark = " (serving)" if size == chosen else ""
        print(
            f"| {size}{mark} | {r['map50']:.3f} | {r['map50_95']:.3f} | {r['wider_recall32']['recall']:.3f} | "
            f"{r['clips_recall32']['recall']:.3f} | {r['ms_per_720p_frame']} |",
            file=sys.stderr,
        )


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("detector", help="train, measure and export the YOLOv8n face detector (ultralytics, offline)")
    add_config_flags(p, DetectorOptions, skip=("sizes",))  # its DetectorTrainConfig fields too
    p.add_argument(  # a list of sizes, as before: --sizes 320 416
        "--sizes",
        type=int,
        nargs="+",
        choices=SIZES,
        default=None,
        help=f"{field_help(DetectorOptions)['sizes']} (default {' '.join(map(str, DetectorOptions.sizes))})",
    )
    add_config_file(p, "the detector options and training config")
    p.set_defaults(func=cmd_detector)
