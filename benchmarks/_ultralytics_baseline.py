"""The baseline a user would otherwise pick: ultralytics' own streaming predict. Run as a subprocess by streams.py.

    python benchmarks/_ultralytics_baseline.py checkpoint --onnx models/face_detector.onnx --out det.pt --imgsz 640
    python benchmarks/_ultralytics_baseline.py predict --model models/face_detector.onnx --source feeds.streams \
        --imgsz 416 --out ev.txt

``checkpoint`` saves the same untrained one-class YOLOv8n that ``dfwatch-train placeholders`` exports
(``DetectionModel("yolov8n.yaml", nc=1)`` right after ``torch.manual_seed(0)``) as an ultralytics
checkpoint, loads it back with ``YOLO(path)`` and checks its raw output against the ONNX artifact
dfwatch runs; it prints the largest difference (pixels) as JSON on stdout.

``predict`` runs ``YOLO(model).predict(source=..., stream=True, ...)`` (a .streams file of URLs, or a folder
of clips) until SIGTERM or the end, and writes one line ``<stream> <time.time()>`` per Result to ``--out``.
The model is a .pt, or an ONNX file (ultralytics then runs it with ONNX Runtime): streams.py passes the
detector dfwatch serves.

``latency`` (for latency.py) runs ``YOLO(pt).predict(source=clip.mp4, stream=True, batch=B, ...)`` over a video
file and writes JSON to ``--out``: per Result the time it arrived (``time.perf_counter()``), its boxes, and
ultralytics' own per-image preprocess / inference / postprocess milliseconds (``Result.speed``).

ultralytics is kept at this edge: offline, its settings in a temporary folder, explicit local paths. Two
adjustments make its stream loader read the RTSP test feeds like live cameras (see ``_live_capture``).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import NoReturn

RTSP_OPTIONS = "rtsp_transport;tcp"  # the transport dfwatch uses by default; FFmpeg's default tries UDP first


def _offline() -> None:
    """Before ultralytics is imported: no network, no settings file in the home folder."""
    os.environ["YOLO_OFFLINE"] = "1"
    if not os.environ.get("YOLO_CONFIG_DIR"):  # streams.py passes one inside its temporary folder
        os.environ["YOLO_CONFIG_DIR"] = tempfile.mkdtemp(prefix="dfwatch-bench-ultralytics-")
    os.environ.setdefault("OPENCV_FFMPEG_CAPTURE_OPTIONS", RTSP_OPTIONS)


def _live_capture() -> None:
    """Make cv2.VideoCapture report a network stream as endless, as a live camera does.

    The GStreamer test server announces each looped mount with the clip's range (``a=range:npt=0-4``), so
    FFmpeg gives the stream a duration and OpenCV a frame count (100). ultralytics' LoadStreams reads
    only ``frame count - 1`` frames and then ends the stream: predict would stop after 4 s. A real
    camera announces an open range and OpenCV reports 0 frames, which LoadStreams takes as endless.
    """
    import cv2

    base = cv2.VideoCapture

    class LiveCapture(base):  # type: ignore[misc, valid-type]
        def get(self, prop: int) -> float:
            return 0.0 if prop == cv2.CAP_PROP_FRAME_COUNT else super().get(prop)

    cv2.VideoCapture = LiveCapture  # ultralytics.data.loaders calls cv2.VideoCapture(...) through the module


def _exit_now() -> NoReturn:
    """Exit 0 without interpreter teardown, once every result is written and flushed: with an ONNX model,
    ultralytics (torch, OpenCV and ONNX Runtime in one process) segfaulted at exit here after all 200 frames."""
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def _square(model: Path) -> dict[str, bool]:
    """An ONNX detector takes only its square input (dfwatch letterboxes to it too): no rectangular batches.

    ultralytics sees the dynamic batch axis and would letterbox a 854x480 frame to 416x256.
    """
    return {"rect": False} if str(model).endswith(".onnx") else {}


def cmd_checkpoint(args: argparse.Namespace) -> int:
    import numpy as np
    import onnxruntime as ort
    import torch
    from ultralytics import YOLO
    from ultralytics.nn.tasks import DetectionModel

    torch.manual_seed(args.seed)  # what `dfwatch-train placeholders --seed 0` does before building the detector
    model = DetectionModel("yolov8n.yaml", nc=1, verbose=False)
    model.names = {0: "face"}
    train_args = {"task": "detect", "imgsz": args.imgsz, "model": "yolov8n.yaml", "single_cls": True}
    torch.save({"model": model, "train_args": train_args, "epoch": -1, "date": None, "version": None}, args.out)

    loaded = YOLO(str(args.out))  # the way a user loads it; fails here if the checkpoint is not what YOLO wants
    net = loaded.model.eval()
    x = np.random.default_rng(1).random((1, 3, args.imgsz, args.imgsz), dtype=np.float32)  # (1, 3, S, S)
    with torch.no_grad():
        y = net(torch.from_numpy(x))
    y = (y[0] if isinstance(y, list | tuple) else y).numpy()  # (1, 4 + 1, anchors) boxes in pixels, score
    sess = ort.InferenceSession(str(args.onnx), providers=["CPUExecutionProvider"])
    o = sess.run(None, {sess.get_inputs()[0].name: x})[0]  # same shape
    if o.shape != y.shape:
        print(f"shape mismatch: onnx {o.shape}, ultralytics {y.shape}", file=sys.stderr)
        return 1
    diff = float(np.abs(o - y).max())
    print(
        json.dumps(
            {
                "checkpoint": str(args.out),
                "task": loaded.task,
                "names": loaded.names,
                "max_abs_diff_vs_onnx": diff,
                "output_shape": list(o.shape),
            }
        )
    )
    return 0 if diff < 1e-2 else 1


def cmd_predict(args: argparse.Namespace) -> int:
    if args.source.is_file():  # a .streams list of live feeds; a folder of files keeps its real frame counts
        _live_capture()
    import torch
    from ultralytics import YOLO

    model = YOLO(str(args.model), task="detect")  # a .pt, or the ONNX artifact dfwatch serves
    first = True
    with open(args.out, "w", buffering=1) as out:  # line-buffered: the parent watches the file grow
        for result in model.predict(
            source=str(args.source),
            stream=True,
            imgsz=args.imgsz,
            conf=args.conf,
            max_det=args.max_det,
            device="cpu",
            verbose=False,
            **_square(args.model),
        ):
            # result.path is the cleaned source URL, e.g. rtsp___127.0.0.1_8554_cam3: the mount name is last
            out.write(f"{result.path.rsplit('_', 1)[-1]} {time.time():.6f}\n")
            if first:  # ultralytics sets torch's threads when predict starts (select_device): say how many
                print(f"torch_threads={torch.get_num_threads()}", file=sys.stderr, flush=True)
                first = False
    _exit_now()  # every stream ended (a folder of files); live feeds are stopped with SIGTERM


def cmd_latency(args: argparse.Namespace) -> int:
    import torch
    from ultralytics import YOLO

    model = YOLO(str(args.model), task="detect")
    rows = []
    start = time.perf_counter()
    for result in model.predict(
        source=str(args.source),
        stream=True,
        imgsz=args.imgsz,
        conf=args.conf,
        max_det=args.max_det,
        batch=args.batch,
        device=args.device,
        verbose=False,
        **_square(args.model),
    ):
        s = result.speed  # ms per image of this Result's batch
        rows.append(
            {
                "t": time.perf_counter(),
                "boxes": len(result.boxes),
                "preprocess": s["preprocess"],
                "inference": s["inference"],
                "postprocess": s["postprocess"],
            }
        )
    doc = {
        "start": start,
        "torch_threads": torch.get_num_threads(),
        "batch": args.batch,
        "imgsz": args.imgsz,
        "results": rows,
    }
    Path(args.out).write_text(json.dumps(doc))
    _exit_now()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    c = sub.add_parser("checkpoint", help="save the placeholder detector as an ultralytics .pt, checked vs ONNX")
    c.add_argument("--onnx", type=Path, required=True, help="the face_detector.onnx that dfwatch runs")
    c.add_argument("--out", type=Path, required=True, help="the .pt to write")
    c.add_argument("--imgsz", type=int, default=640)
    c.add_argument("--seed", type=int, default=0)
    c.set_defaults(func=cmd_checkpoint)
    p = sub.add_parser("predict", help="YOLO(pt).predict(source=streams_file, stream=True) until SIGTERM")
    p.add_argument("--model", type=Path, required=True)
    p.add_argument("--source", type=Path, required=True, help=".streams file, one URL a line")
    p.add_argument("--out", type=Path, required=True, help="one line '<stream> <unix time>' per Result")
    p.add_argument("--imgsz", type=int, default=640)
    p.add_argument("--conf", type=float, default=0.001)
    p.add_argument("--max-det", type=int, default=1)
    p.set_defaults(func=cmd_predict)
    q = sub.add_parser("latency", help="YOLO(pt).predict(source=video_file, stream=True, batch=B): per-Result times")
    q.add_argument("--model", type=Path, required=True)
    q.add_argument("--source", type=Path, required=True, help="a video file")
    q.add_argument("--out", type=Path, required=True, help="JSON: per Result its arrival time, boxes, speed")
    q.add_argument("--imgsz", type=int, default=640)
    q.add_argument("--batch", type=int, default=1)
    q.add_argument("--conf", type=float, default=0.001)
    q.add_argument("--max-det", type=int, default=1)
    q.add_argument("--device", default="cpu", help="cpu or cuda:0")
    q.set_defaults(func=cmd_latency)
    args = parser.parse_args(argv)
    _offline()
    return args.func(args)


if __name__ == "__main__":
    raise SystemExit(main())
