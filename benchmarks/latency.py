"""Per-frame latency against the paper's 6.4 ms and ultralytics' predict: stage by stage, per backend.

    .venv/bin/python benchmarks/latency.py                         # what `make bench` runs (CPU, ~5 min here)
    .venv/bin/python benchmarks/latency.py --sizes 320 --frames 48 # a quick look

On one generated clip (the demo clip: 640x480, 25 fps, H.264, a real face), for each detector input
size (320, 416, 640), each backend available (ONNX Runtime artifacts built by engines.export; torch
eager on the same weights; any --detector-artifact given) and each batch (1 and the pipeline's
max_batch, 8): decode -> letterbox -> detect -> track -> crop -> classify -> verdict -> publish (a real
Redis), timed per stage (benchmarks/_latency_pass.py). Then, in the same run on the same frames,
ultralytics' ``YOLO(pt).predict(source=clip, stream=True, batch=B)`` on the same network
(benchmarks/_ultralytics_baseline.py latency), detector only.

The models are a pack given by --models (``make bench``: the shipped one, its detector at its own size),
or else untrained placeholders (``yolov8n.yaml`` unless --weights PATH.pt; the paper's CNN at 256), whose
face count per frame is noise. The detector threshold is fixed (--det-conf 0.001) and at
most --faces boxes are kept (1), so every frame has exactly one face to crop and classify, as with one
real face on screen (the JSON records the count per frame). Writes benchmarks/results/latency-<machine>
.json, .md and .png and prints the table.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parent.parent
BASELINE_SCRIPT = ROOT / "benchmarks" / "_ultralytics_baseline.py"
TARGET_MS = 6.4  # the paper's per-frame time
BUSY_OTHERS_PCT = 25.0  # a config during which other processes took more CPU than this (% of a core) is redone
BACKENDS = ("onnxruntime", "torch", "tensorrt")

logger = logging.getLogger("latency")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    from pipeline.runner import RunnerConfig

    def ints(text: str) -> list[int]:
        try:
            values = [int(v) for v in text.split(",") if v.strip()]
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None
        if not values or min(values) < 1:
            raise argparse.ArgumentTypeError(f"expected positive integers, got {text!r}")
        return values

    def backends(text: str) -> list[str]:
        names = [v.strip() for v in text.split(",") if v.strip()]
        bad = [n for n in names if n not in BACKENDS]
        if bad or not names:
            raise argparse.ArgumentTypeError(f"unknown backend(s) {bad or text!r}; valid: {', '.join(BACKENDS)}")
        return names

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", type=ints, default=[320, 416, 640], help="detector input sides (default 320,416,640)")
    batch = RunnerConfig().max_batch
    p.add_argument(
        "--batches",
        type=ints,
        default=[1, batch],
        help=f"batch sizes (default 1 and the pipeline's max_batch, {batch})",
    )
    p.add_argument(
        "--backends",
        type=backends,
        default=list(BACKENDS),
        help="onnxruntime,torch,tensorrt (default: each one available here)",
    )
    p.add_argument(
        "--device",
        choices=("cpu", "cuda"),
        default=None,
        help="ONNX Runtime and torch device (default: the artifact's own); ultralytics' too",
    )
    p.add_argument("--trt-precision", choices=("fp16", "fp32"), default="fp16", help="TensorRT plans' precision")
    p.add_argument(
        "--detector-artifact",
        type=Path,
        action="append",
        default=[],
        metavar="PATH",
        help="also time this detector artifact (any backend; at its manifest's input size)",
    )
    p.add_argument("--frames", type=int, default=120, help="frames per configuration; the first batch warms up")
    p.add_argument(
        "--models",
        type=Path,
        default=None,
        help="a model pack (e.g. models: the shipped one) instead of exported placeholders",
    )
    p.add_argument("--weights", default="yolov8n.yaml", help="yolov8n.yaml (untrained, default) or a face .pt")
    p.add_argument("--classifier", default="paper_cnn", help="registered classifier architecture (untrained)")
    p.add_argument("--classifier-size", type=int, default=256)
    p.add_argument("--faces", type=int, default=1, help="faces kept per frame (the detector's max_det)")
    p.add_argument("--det-conf", type=float, default=0.001, help="detector threshold, fixed (default 0.001)")
    p.add_argument("--threads", type=int, default=None, help="ONNX Runtime and torch threads (default: all cores)")
    p.add_argument("--redis", default="redis://127.0.0.1:6379/0", help="Redis for the publish stage; 'none' skips it")
    p.add_argument("--no-baseline", dest="baseline", action="store_false", help="skip ultralytics' predict")
    p.add_argument("--retries", type=int, default=1, help="reruns of a configuration other processes disturbed")
    p.add_argument(
        "--retry-budget",
        type=float,
        default=60.0,
        help="seconds the reruns may take in all (keeps `make bench` under 10 minutes; default 60)",
    )
    p.add_argument("--max-load", type=float, default=1.0, help="wait for a 1-minute load average below this")
    p.add_argument(
        "--quiet-wait",
        type=float,
        default=0.0,
        help="seconds to wait for that before measuring (default 0: go ahead, and record the load)",
    )
    p.add_argument("--seed", type=int, default=0, help="torch seed of the untrained weights")
    p.add_argument("--out-dir", type=Path, default=ROOT / "benchmarks" / "results")
    p.add_argument("--machine", default=None, help="results file name part (default: the machine's slug)")
    args = p.parse_args(argv)
    if args.frames < 2 * max(args.batches):
        p.error(f"--frames {args.frames} is too few: at least two batches of {max(args.batches)} are needed")
    return args


# -- models -----------------------------------------------------------------------------------------------------


def pack_models(args: argparse.Namespace) -> tuple[dict, dict, dict]:
    """The model pack of --models (the shipped one by default): its ONNX artifacts and torch references, at the
    detector's own size; FLOPs from the references. Same return as build_models."""
    import torch

    from benchmarks._floor import model_flops
    from engines import load_manifest

    det, cls = args.models / "face_detector.onnx", args.models / "deepfake_classifier.onnx"
    size, cls_size = load_manifest(det).input_size, load_manifest(cls).input_size
    if args.sizes != [size]:
        logger.info("--models: the detector runs at its own size %d (--sizes %s left aside)", size, args.sizes)
        args.sizes = [size]
    artifacts: dict = {"onnxruntime": {"detectors": {size: det}, "classifier": cls}}
    if "torch" in args.backends:
        artifacts["torch"] = {"detectors": {size: det.with_suffix(".pt2")}, "classifier": cls.with_suffix(".pt2")}
    flops = {
        f"detector_{size}": model_flops(torch.export.load(str(det.with_suffix(".pt2"))).module(), size),
        f"classifier_{cls_size}": model_flops(torch.export.load(str(cls.with_suffix(".pt2"))).module(), cls_size),
    }
    args.classifier_size = cls_size
    return artifacts, flops, {} if "tensorrt" not in args.backends else {"tensorrt": "not built for --models"}


def build_models(args: argparse.Namespace, tmp: Path) -> tuple[dict, dict, dict]:
    """Artifacts per backend and size, on the same weights; FLOPs of the networks; backends skipped and why.

    engines.export writes the ONNX artifact and, beside it, the torch reference ``.pt2`` (a torch.export
    program, fp32) that engines' torch backend runs; TensorRT plans are built from the ONNX where TensorRT
    and a GPU are. Returns ({backend: {"detectors": {size: path}, "classifier": path}}, flops, skipped).
    """
    import torch

    from benchmarks._floor import model_flops
    from engines.export import export_classifier, export_detector, load_yolo_detector
    from trainer.models import create_model

    placeholder = not str(args.weights).endswith(".pt")
    with_torch = "torch" in args.backends
    onnx: dict = {"detectors": {}}
    for size in args.sizes:
        torch.manual_seed(args.seed)  # the same untrained weights at every size (and in the modules below)
        path = tmp / f"face_detector-{size}.onnx"
        _, diff = export_detector(
            args.weights, path, input_size=size, placeholder=placeholder, torch_reference=with_torch
        )
        onnx["detectors"][size] = path
        logger.info("exported %s (max |onnx - torch| = %.2g px)", path.name, diff)
    torch.manual_seed(args.seed)
    cls_module = create_model(args.classifier, input_size=args.classifier_size).eval()
    onnx["classifier"] = tmp / "deepfake_classifier.onnx"
    export_classifier(
        cls_module,
        onnx["classifier"],
        name=args.classifier,
        input_size=args.classifier_size,
        crop_margin=0.25,
        placeholder=True,
        torch_reference=with_torch,
    )
    artifacts: dict = {}
    skipped: dict[str, str] = {}
    if "onnxruntime" in args.backends:
        artifacts["onnxruntime"] = onnx
    if with_torch:
        artifacts["torch"] = {
            "detectors": {s: p.with_suffix(".pt2") for s, p in onnx["detectors"].items()},
            "classifier": onnx["classifier"].with_suffix(".pt2"),
        }
    if "tensorrt" in args.backends:
        from engines.rebuild import tensorrt_available

        why = tensorrt_available()
        if why:
            skipped["tensorrt"] = why
            logger.info("TensorRT skipped: %s", why)
        else:
            from engines.build_tensorrt import build_engine

            def plan(onnx_path: Path) -> Path:
                return build_engine(onnx_path, precision=args.trt_precision)[0]

            artifacts["tensorrt"] = {
                "detectors": {s: plan(p) for s, p in onnx["detectors"].items()},
                "classifier": plan(onnx["classifier"]),
            }
    torch.manual_seed(args.seed)
    det_module = load_yolo_detector(args.weights)
    flops = {f"detector_{s}": model_flops(det_module, s) for s in args.sizes}
    flops[f"classifier_{args.classifier_size}"] = model_flops(cls_module, args.classifier_size)
    return artifacts, flops, skipped


def baseline_checkpoint(args: argparse.Namespace, tmp: Path, onnx_640: Path, env: dict) -> tuple[Path, dict | None]:
    """The detector as an ultralytics .pt: --weights itself, or the seeded yolov8n.yaml checked against the ONNX."""
    if str(args.weights).endswith(".pt"):
        return Path(args.weights), None
    size = max(args.sizes)
    out = tmp / "yolov8n-face-placeholder.pt"
    cmd = [
        sys.executable,
        str(BASELINE_SCRIPT),
        "checkpoint",
        "--onnx",
        str(onnx_640),
        "--out",
        str(out),
        "--imgsz",
        str(size),
        "--seed",
        str(args.seed),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300, cwd=ROOT)
    if proc.returncode != 0:
        raise RuntimeError(f"ultralytics checkpoint failed: {shlex.join(cmd)}\n{proc.stderr[-3000:]}")
    return out, json.loads(proc.stdout.strip().splitlines()[-1])


def run_baseline(
    pt: Path, clip: Path, *, size: int, batch: int, args: argparse.Namespace, env: dict, tmp: Path
) -> dict:
    """ultralytics' predict over the clip in a subprocess; per-frame times like timed_pass's."""
    from pipeline.summary import percentiles

    out = tmp / f"ultralytics-{size}-b{batch}.json"
    cmd = [
        sys.executable,
        str(BASELINE_SCRIPT),
        "latency",
        "--model",
        str(pt),
        "--source",
        str(clip),
        "--imgsz",
        str(size),
        "--batch",
        str(batch),
        "--conf",
        str(args.det_conf),
        "--max-det",
        str(args.faces),
        "--device",
        "cuda:0" if args.device == "cuda" else "cpu",
        "--out",
        str(out),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600, cwd=ROOT)
    if proc.returncode != 0:
        raise RuntimeError(f"ultralytics predict failed: {shlex.join(cmd)}\n{proc.stderr[-3000:]}")
    doc = json.loads(out.read_text())
    rows = doc["results"][: (args.frames // batch) * batch]
    ends = [rows[i]["t"] for i in range(batch - 1, len(rows), batch)]  # the last Result of each batch
    batch_ms = [(b - a) * 1000 for a, b in zip(ends, ends[1:])]  # the first batch warms up, as in timed_pass

    def pct(values: list[float]) -> dict[str, float | None]:
        return {k: None if v is None else round(v, 3) for k, v in percentiles(values).items()}

    timed = rows[batch:]
    return {
        "command": shlex.join(["python", "benchmarks/_ultralytics_baseline.py", *cmd[2:-2]]),
        "torch_threads": doc["torch_threads"],
        "frames_timed": len(batch_ms) * batch,
        "per_frame_ms": {
            "end_to_end": pct([v / batch for v in batch_ms]),
            **{k: pct([r[k] for r in timed]) for k in ("preprocess", "inference", "postprocess")},
        },
        "batch_ms": {"end_to_end": pct(batch_ms)},
        "boxes_per_frame": {str(n): sum(r["boxes"] == n for r in timed) for n in sorted({r["boxes"] for r in timed})},
    }


# -- the run ----------------------------------------------------------------------------------------------------


def configurations(args: argparse.Namespace, artifacts: dict) -> list[tuple[str, int, tuple]]:
    """(backend name, detector size, (Detector, Classifier)) for every backend and size, and --detector-artifact."""
    from engines import Classifier, Detector

    def detector(path: Path) -> Detector:
        return Detector(path, threads=args.threads, device=args.device, conf=args.det_conf, max_det=args.faces)

    out = []
    for paths in artifacts.values():
        classifier = Classifier(paths["classifier"], threads=args.threads, device=args.device)
        for size in args.sizes:
            det = detector(paths["detectors"][size])
            out.append((det.backend_name, size, (det, classifier)))
    if args.detector_artifact:
        first = next(iter(artifacts.values()))
        classifier = Classifier(first["classifier"], threads=args.threads, device=args.device)
        for path in args.detector_artifact:
            det = detector(path)
            out.append((f"{det.backend_name} ({path.name})", det.input_size, (det, classifier)))
    return out


def check_same_network(configs: list, clip: Path) -> dict:
    """Largest difference between backends' raw detector outputs on the clip's first frame, per size."""
    import numpy as np

    from pipeline.sources import SourceSpec, read_frames

    frames = read_frames(SourceSpec.parse(f"check={clip}"))
    image = next(frames).image
    frames.close()
    ref: dict[int, tuple[str, np.ndarray]] = {}
    diffs: dict[str, float] = {}
    for backend, size, (detector, _) in configs:
        y = detector.infer(detector.prepare([image])[0])  # (1, 4 + 1, anchors)
        if size not in ref:
            ref[size] = (backend, y)
            continue
        diffs[f"{backend} vs {ref[size][0]} @ {size}"] = round(float(np.abs(y - ref[size][1]).max()), 5)
    return diffs


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S", stream=sys.stderr
    )
    command = shlex.join([".venv/bin/python", "benchmarks/latency.py", *(sys.argv[1:] if argv is None else argv)])
    if str(ROOT) not in sys.path:  # run as a script: import dfwatch and the benchmarks from the checkout
        sys.path.insert(0, str(ROOT))
    args = parse_args(argv)
    from tqdm import tqdm

    from benchmarks._floor import measured_peak
    from benchmarks._latency_pass import SyncRedis, timed_pass
    from benchmarks._latency_report import markdown_report, plot
    from benchmarks._machine import LoadWindow, machine_facts, wait_until_quiet

    threads = args.threads or psutil.cpu_count(logical=True)
    os.environ.setdefault("YOLO_OFFLINE", "1")
    if args.quiet_wait > 0:
        quiet = wait_until_quiet(max_load=args.max_load, max_wait_s=args.quiet_wait, log=logger.info)
    else:
        quiet = {"quiet": None, "waited_s": 0.0, "loadavg": [round(x, 2) for x in os.getloadavg()]}
    machine = machine_facts()
    started = time.monotonic()
    retry_left = args.retry_budget
    redis = None if args.redis == "none" else SyncRedis(args.redis)
    try:
        with tempfile.TemporaryDirectory(prefix="dfwatch-bench-latency-") as tmp_name:
            tmp = Path(tmp_name)
            env = os.environ | {"YOLO_OFFLINE": "1", "YOLO_CONFIG_DIR": str(tmp / "ultralytics")}
            os.environ["YOLO_CONFIG_DIR"] = env["YOLO_CONFIG_DIR"]  # export imports ultralytics in this process
            from pipeline.demo import make_demo_clip

            seconds = args.frames / 25 / 2 + 0.2  # a little more than --frames frames at 25 fps
            clip = make_demo_clip(tmp / "clip.mp4", fps=25, real_seconds=seconds, fake_seconds=seconds)
            logger.info("clip %s: %d frames, %dx%d", clip.path.name, clip.n_frames, *clip.size)
            artifacts, flops, skipped = pack_models(args) if args.models else build_models(args, tmp)
            import torch

            torch.set_num_threads(threads)
            peak = measured_peak(threads=threads)
            logger.info("measured peak: %s GFLOP/s (%s, %d threads)", peak["gflops"], peak["what"], peak["threads"])
            configs = configurations(args, artifacts)
            same = check_same_network(configs, clip.path)
            onnx_640 = tmp / f"face_detector-{max(args.sizes)}.onnx"
            if args.models:  # ultralytics runs the pack's own ONNX detector (its ONNX Runtime backend)
                pt, pt_check = args.models / "face_detector.onnx", None
            else:
                pt, pt_check = baseline_checkpoint(args, tmp, onnx_640, env) if args.baseline else (None, None)
            jobs = [(b, s, e, batch) for b, s, e in configs for batch in args.batches]
            if args.baseline:
                jobs += [("ultralytics", s, None, batch) for s in args.sizes for batch in args.batches]
            rows = []
            peak = max(peak, measured_peak(threads=threads), key=lambda p: p["gflops"])  # the quieter of two
            for backend, size, eng, batch in tqdm(jobs, desc="latency", unit="config", file=sys.stderr, disable=None):
                for attempt in range(args.retries + 1):
                    with LoadWindow() as window:
                        if eng is None:
                            result = run_baseline(pt, clip.path, size=size, batch=batch, args=args, env=env, tmp=tmp)
                        else:
                            eng[0].infer(_warm_input(size, batch))
                            result = timed_pass(clip.path, *eng, redis, batch=batch, frames=args.frames)
                    disturbed = window.others_cpu_pct > BUSY_OTHERS_PCT
                    if not disturbed or attempt == args.retries or retry_left < window.seconds:
                        break
                    retry_left -= window.seconds
                    logger.info(
                        "%s %d b%d: other processes took %.0f%% of a core; running it again",
                        backend,
                        size,
                        batch,
                        window.others_cpu_pct,
                    )
                rows.append(
                    {
                        "system": "ultralytics" if eng is None else "dfwatch",
                        "backend": backend,
                        "size": size,
                        "batch": batch,
                        **result,
                        "seconds": window.seconds,
                        "others_cpu_pct": window.others_cpu_pct,
                        "disturbed": disturbed,
                        "attempts": attempt + 1,
                    }
                )
    finally:
        if redis is not None:
            redis.close()
    peak = max(peak, measured_peak(threads=threads), key=lambda p: p["gflops"])  # and a third, at the end
    elapsed = round(time.monotonic() - started, 1)
    machine["loadavg_at_end"] = [round(x, 2) for x in os.getloadavg()]
    doc = {
        "benchmark": "latency",
        "command": command,
        "machine": machine,
        "quiet_wait": quiet,
        "elapsed_s": elapsed,
        "target_ms": TARGET_MS,
        "setup": {
            "clip": f"pipeline.demo.make_demo_clip: {clip.n_frames} frames, {clip.size[0]}x{clip.size[1]}, 25 fps, "
            "H.264, one real face",
            "frames_per_config": args.frames,
            "weights": str(args.models) if args.models else str(args.weights),
            "placeholder": not args.models and not str(args.weights).endswith(".pt"),
            "classifier": (
                f"the pack's, at {args.classifier_size}"
                if args.models
                else f"{args.classifier} at {args.classifier_size} (untrained)"
            ),
            "faces_per_frame": f"detector threshold fixed at {args.det_conf}, at most {args.faces} kept: the classify "
            "stage sees that many faces a frame whatever the detector scores",
            "threads": threads,
            "redis": None if args.redis == "none" else args.redis,
            "batching": "a batch of B consecutive frames spread round-robin over B streams (one tracker and "
            "verdict each); the classifier scores the whole batch's faces in one call",
            "per_frame": "batch time / B (the first batch warms up and is not counted)",
            "same_network_max_abs_diff_px": same,
            "backends_skipped": skipped,
            "device": args.device or "the artifact's own (ONNX Runtime: CUDA if its provider is there; torch: cpu)",
            "baseline_checkpoint_check": pt_check,
        },
        "flops": flops,
        "peak": peak,
        "floor_ms": {k: round(v / (peak["gflops"] * 1e9) * 1000, 3) for k, v in flops.items()},
        "rows": rows,
    }
    args.out_dir.mkdir(parents=True, exist_ok=True)
    stem = args.out_dir / f"latency-{args.machine or machine['slug']}"
    Path(f"{stem}.json").write_text(json.dumps(doc, indent=1) + "\n")
    Path(f"{stem}.md").write_text(markdown_report(doc))
    plot(doc, Path(f"{stem}.png"))
    print(markdown_report(doc, tables_only=True))
    disturbed = sum(r["disturbed"] for r in rows)
    logger.info(
        "wrote %s.{json,md,png} in %.0f s (%d configurations; %d disturbed by other processes)",
        stem,
        elapsed,
        len(rows),
        disturbed,
    )
    return 0


def _warm_input(size: int, batch: int):
    import numpy as np

    return np.zeros((batch, 3, size, size), np.float32)  # (B, 3, S, S)


if __name__ == "__main__":
    raise SystemExit(main())
