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
import json
import logging
import shlex
import sys
from pathlib import Path

from trainer.commands._common import machine, offline_ultralytics
from trainer.errors import TrainerError

logger = logging.getLogger(__name__)

SIZES = (320, 416, 640)


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
    offline_ultralytics()
    from engines import Detector
    from engines.export import export_detector
    from trainer import realmedia
    from trainer.detector import evaluate as ev
    from trainer.detector.data import labelled_sources, prepare
    from trainer.detector.train import DetectorTrainConfig, train_detector
    from trainer.teacher import Teacher

    if args.serving_size and args.serving_size not in args.sizes:
        raise TrainerError(f"--serving-size {args.serving_size} is not among --sizes {args.sizes}: add it to --sizes")
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    teacher = Teacher()  # labels the training frames (first run) and the held-out clips' reference boxes
    data = prepare(args.media, out / "data", frames_per_clip=args.frames_per_clip, teacher=teacher)
    logger.info(
        "dataset: %d WIDER train images + %d teacher-labelled images (%d faces); dropped %d doubtful",
        data.wider_train,
        data.pseudo_images,
        data.pseudo_faces,
        data.dropped_doubtful,
    )
    summary_path = out / "train_summary.json"
    if summary_path.is_file() and not args.retrain:
        trained = json.loads(summary_path.read_text())
        logger.info("reusing the trained weights of %s (--retrain trains again)", summary_path)
    else:
        cfg = DetectorTrainConfig(
            imgsz=args.imgsz,
            hours=args.hours or None,
            epochs=args.epochs,
            batch=args.batch,
            workers=args.workers,
            seed=args.seed,
        )
        trained = train_detector(cfg, data_yaml=data.yaml, out=out, resume=args.resume)
        summary_path.write_text(json.dumps(trained, indent=1))
    weights = Path(trained["weights"])

    record = json.loads((out / "data" / "pseudo_labels.json").read_text())
    trained_on = labelled_sources(record, [s.rel for s in realmedia.real_videos(args.media)])
    frames = ev.clip_frames(args.media, per_clip=args.eval_frames, exclude=trained_on)
    refs = [teacher.sure_faces(teacher(img)).xyxy for _, img in frames]
    rows: dict[int, dict] = {}
    thresholds: dict[int, float] = {}  # the manifest confidence each size was measured at
    for size in args.sizes:
        onnx = out / "eval" / f"face_detector_{size}.onnx"
        onnx.parent.mkdir(exist_ok=True)
        export_detector(weights, onnx, input_size=size, placeholder=False, torch_reference=False)
        det = Detector(onnx, threads=args.threads)
        thresholds[size] = float(det.conf)
        wider = ev.match_recall(ev.wider_pairs(det, args.media / "widerface" / "val"), min_height=32)
        clips = ev.match_recall([(r, det([img]).xyxy) for r, (_, img) in zip(refs, frames)], min_height=32)
        rows[size] = {
            **ev.wider_map(weights, data.yaml, imgsz=size),
            "wider_recall32": wider.to_dict(),
            "clips_recall32": clips.to_dict(),
            "ms_per_720p_frame": ev.latency_ms(det),
        }
        logger.info("size %d: %s", size, json.dumps(rows[size]))
    size = args.serving_size or choose_size(rows, slack=args.recall_slack)
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
    if args.export:
        args.export.parent.mkdir(parents=True, exist_ok=True)
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
            args.export,
            input_size=size,
            placeholder=False,
            training=training,
            torch_reference=args.torch_reference,
        )
        logger.info("exported %s at %d", args.export, size)
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
    p.add_argument("--media", type=Path, default=Path("../shared/data"), help="the shared real-media folder")
    p.add_argument("--out", type=Path, default=Path("runs/detector"), help="work folder (dataset, weights, report)")
    p.add_argument(
        "--export", type=Path, default=None, help="write the serving ONNX here (e.g. models/face_detector.onnx)"
    )
    p.add_argument("--imgsz", type=int, default=416, help="training input side")
    p.add_argument(
        "--hours",
        type=float,
        default=1.0,
        help="training wall-clock budget (sets the epochs); 0 = no budget: run all --epochs",
    )
    p.add_argument("--epochs", type=int, default=300, help="most epochs (the budget usually ends first)")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--workers", type=int, default=2, help="dataloader processes")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--frames-per-clip", type=int, default=6, help="frames of each training clip for the teacher")
    p.add_argument("--eval-frames", type=int, default=8, help="frames of each held-out clip to measure recall on")
    p.add_argument("--sizes", type=int, nargs="+", default=list(SIZES), choices=SIZES, help="serving sizes to measure")
    p.add_argument("--serving-size", type=int, default=None, choices=SIZES, help="force the serving size")
    p.add_argument("--recall-slack", type=float, default=0.02, help="recall a smaller size may lose (default 0.02)")
    p.add_argument("--threads", type=int, default=None, help="ONNX Runtime threads for the measurements")
    p.add_argument("--resume", action="store_true", help="continue an interrupted training run")
    p.add_argument("--retrain", action="store_true", help="train again even if --out holds trained weights")
    p.add_argument(
        "--no-torch-reference",
        dest="torch_reference",
        action="store_false",
        help="skip the .pt2 torch reference beside the export",
    )
    p.set_defaults(func=cmd_detector)
