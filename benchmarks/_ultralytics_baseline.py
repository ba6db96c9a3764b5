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
from dataclasses import dataclass, fields
from pathlib import Path
from typing import NoReturn

# only the flag maker: config_from_args would import pipeline.config (PyAV, Redis) into the baseline's measured memory
from pipeline.flags import add_config_flags
from pipeline.ranges import ranged

RTSP_OPTIONS = "rtsp_transport;tcp"  # the transport dfwatch uses by default; FFmpeg's default tries UDP first


@dataclass(frozen=True)
class Checkpoint:
    """``checkpoint``'s options."""

    onnx: Path  # the face_detector.onnx that dfwatch runs
    out: Path  # the .pt to write
    imgsz: int = ranged(640, 32, 4096)  # input side
    seed: int = 0  # torch seed, as `dfwatch-train placeholders --seed`


@dataclass(frozen=True)
class Predict:
    """``predict``'s options."""

    model: Path  # a .pt, or an ONNX artifact (ultralytics runs it with ONNX Runtime)
    source: Path  # .streams file, one URL a line; or a folder of clips
    out: Path  # one line '<stream> <unix time>' per Result
    imgsz: int = ranged(640, 32, 4096)  # input side
    conf: float = ranged(0.001, 0, 1)  # detector threshold
    max_det: int = ranged(1, 1, 1000)  # boxes kept per image


@dataclass(frozen=True)
class Latency:
    """``latency``'s options."""

    model: Path  # a .pt, or an ONNX artifact (ultralytics runs it with ONNX Runtime)
    source: Path  # a video file
    out: Path  # JSON: per Result its arrival time, boxes, speed
    imgsz: int = ranged(640, 32, 4096)  # input side
    batch: int = ranged(1, 1, 1024)  # frames per predict batch
    conf: float = ranged(0.001, 0, 1)  # detector threshold
    max_det: int = ranged(1, 1, 1000)  # boxes kept per image
    device: str = "cpu"  # cpu or cuda:0


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


def cmd_checkpoint(opts: Checkpoint) -> int:
    import numpy as np
    import onnxruntime as ort
    import torch
    from ultralytics import YOLO
    from ultralytics.nn.tasks import DetectionModel

    torch.manual_seed(opts.seed)  # what `dfwatch-train placeholders --seed 0` does before building the detector
    model = DetectionModel("yolov8n.yaml", nc=1, verbose=False)
    model.names = {0: "face"}
    train_args = {"task": "detect", "imgsz": opts.imgsz, "model": "yolov8n.yaml", "single_cls": True}
    torch.save({"model": model, "train_args": train_args, "epoch": -1, "date": None, "version": None}, opts.out)

    loaded = YOLO(str(opts.out))  # the way a user loads it; fails here if the checkpoint is not what YOLO wants
    net = loaded.model.eval()
    x = np.random.default_rng(1).random((1, 3, opts.imgsz, opts.imgsz), dtype=np.float32)  # (1, 3, S, S)
    with torch.no_grad():
        y = net(torch.from_numpy(x))
    y = (y[0] if isinstance(y, list | tuple) else y).numpy()  # (1, 4 + 1, anchors) boxes in pixels, score
    sess = ort.InferenceSession(str(opts.onnx), providers=["CPUExecutionProvider"])
    o = sess.run(None, {sess.get_inputs()[0].name: x})[0]  # same shape
    if o.shape != y.shape:
        print(f"shape mismatch: onnx {o.shape}, ultralytics {y.shape}", file=sys.stderr)
        return 1
    diff = float(np.abs(o - y).max())
    print(
        json.dumps(
            {
                "checkpoint": str(opts.out),
                "task": loaded.task,
                "names": loaded.names,
                "max_abs_diff_vs_onnx": diff,
                "output_shape": list(o.shape),
            }
        )
    )
    return 0 if diff < 1e-2 else 1


def cmd_predict(opts: Predict) -> int:
    if opts.source.is_file():  # a .streams list of live feeds; a folder of files keeps its real frame counts
        _live_capture()
    import torch
    from ultralytics import YOLO

    model = YOLO(str(opts.model), task="detect")  # a .pt, or the ONNX artifact dfwatch serves
    first = True
    with open(opts.out, "w", buffering=1) as out:  # line-buffered: the parent watches the file grow
        for result in model.predict(
            source=str(opts.source),
            stream=True,
            imgsz=opts.imgsz,
            conf=opts.conf,
            max_det=opts.max_det,
            device="cpu",
            verbose=False,
            **_square(opts.model),
        ):
            # result.path is the cleaned source URL, e.g. rtsp___127.0.0.1_8554_cam3: the mount name is last
            out.write(f"{result.path.rsplit('_', 1)[-1]} {time.time():.6f}\n")
            if first:  # ultralytics sets torch's threads when predict starts (select_device): say how many
                print(f"torch_threads={torch.get_num_threads()}", file=sys.stderr, flush=True)
                first = False
    _exit_now()  # every stream ended (a folder of files); live feeds are stopped with SIGTERM


def cmd_latency(opts: Latency) -> int:
    import torch
    from ultralytics import YOLO

    model = YOLO(str(opts.model), task="detect")
    rows = []
    start = time.perf_counter()
    for result in model.predict(
        source=str(opts.source),
        stream=True,
        imgsz=opts.imgsz,
        conf=opts.conf,
        max_det=opts.max_det,
        batch=opts.batch,
        device=opts.device,
        verbose=False,
        **_square(opts.model),
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
        "batch": opts.batch,
        "imgsz": opts.imgsz,
        "results": rows,
    }
    Path(opts.out).write_text(json.dumps(doc))
    _exit_now()


COMMANDS = {  # name: (options, what runs, help)
    "checkpoint": (Checkpoint, cmd_checkpoint, "save the placeholder detector as an ultralytics .pt, checked vs ONNX"),
    "predict": (Predict, cmd_predict, "YOLO(pt).predict(source=streams_file, stream=True) until SIGTERM"),
    "latency": (Latency, cmd_latency, "YOLO(pt).predict(source=video_file, stream=True, batch=B): per-Result times"),
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    for name, (cls, _, what) in COMMANDS.items():
        add_config_flags(sub.add_parser(name, help=what), cls)
    args = parser.parse_args(argv)
    cls, run, _ = COMMANDS[args.command]
    given = {f.name: getattr(args, f.name) for f in fields(cls) if getattr(args, f.name) is not None}
    try:
        opts = cls(**given)
    except TypeError as exc:  # a required flag left out
        parser.error(f"{args.command}: {exc}")
    _offline()
    return run(opts)


if __name__ == "__main__":
    raise SystemExit(main())
