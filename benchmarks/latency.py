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

import json
import logging
import os
import shlex
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # run as a script: import dfwatch from the checkout, not benchmarks/engines.py

from pipeline.errors import ConfigError  # noqa: E402
from pipeline.flags import parse_options  # noqa: E402
from pipeline.ranges import check_ranges, ranged  # noqa: E402
from pipeline.runner import RunnerConfig  # noqa: E402

BASELINE_SCRIPT = ROOT / "benchmarks" / "_ultralytics_baseline.py"
TARGET_MS = 6.4  # the paper's per-frame time
BUSY_OTHERS_PCT = 25.0  # a config during which other processes took more CPU than this (% of a core) is redone
BACKENDS = ("onnxruntime", "torch", "tensorrt")
DEVICES = ("cpu", "cuda")
PRECISIONS = ("fp16", "fp32")

logger = logging.getLogger("latency")


@dataclass(frozen=True)
class LatencyBench:
    """What one run times and where it writes (the flags; ``--config`` a TOML table of the same fields)."""

    sizes: tuple[int, ...] = (320, 416, 640)  # detector input sides
    batches: tuple[int, ...] = (1, RunnerConfig().max_batch)  # batch sizes: 1 and the pipeline's max_batch
    backends: tuple[str, ...] = BACKENDS  # backends to time, of onnxruntime, torch, tensorrt (skipped where missing)
    device: str | None = None  # ONNX Runtime and torch device (none: the artifact's own); ultralytics' too
    trt_precision: str = "fp16"  # TensorRT plans' precision
    detector_artifact: tuple[Path, ...] = ()  # also time these detector artifacts (any backend; at their own size)
    frames: int = ranged(120, 2, 100_000)  # frames per configuration; the first batch warms up
    models: Path | None = None  # a model pack (e.g. models: the shipped one) instead of exported placeholders
    weights: str = "yolov8n.yaml"  # yolov8n.yaml (untrained) or a face .pt
    classifier: str = "paper_cnn"  # registered classifier architecture (untrained)
    classifier_size: int = ranged(256, 16, 4096)  # its input side (a pack: the pack's)
    faces: int = ranged(1, 1, 1000)  # faces kept per frame (the detector's max_det)
    det_conf: float = ranged(0.001, 0, 1)  # detector threshold, fixed
    threads: int | None = ranged(None, 1, 1024)  # ONNX Runtime and torch threads (none: all cores)
    redis: str = "redis://127.0.0.1:6379/0"  # Redis for the publish stage; 'none' skips it
    baseline: bool = True  # time ultralytics' predict too
    retries: int = ranged(1, 0, 100)  # reruns of a configuration other processes disturbed
    # seconds the reruns may take in all (keeps `make bench` under 10 minutes)
    retry_budget: float = ranged(60.0, 0, 86_400)
    max_load: float = ranged(1.0, 0, 1024)  # wait for a 1-minute load average below this
    # seconds to wait for that before measuring (0: go ahead, and record the load)
    quiet_wait: float = ranged(0.0, 0, 86_400)
    seed: int = 0  # torch seed of the untrained weights
    out_dir: Path = ROOT / "benchmarks" / "results"  # where the results go
    machine: str | None = None  # results file name part (none: the machine's slug)

    def __post_init__(self) -> None:
        check_ranges(self)
        bad = [b for b in self.backends if b not in BACKENDS]
        if bad or not self.backends:
            raise ConfigError(f"backends: unknown {bad or 'none'}; valid: {', '.join(BACKENDS)}")
        if self.device not in (None, *DEVICES):
            raise ConfigError(f"device: unknown {self.device!r}; valid: {', '.join(DEVICES)}")
        if self.trt_precision not in PRECISIONS:
            raise ConfigError(f"trt_precision: unknown {self.trt_precision!r}; valid: {', '.join(PRECISIONS)}")
        if not self.sizes or not self.batches or min(self.sizes + self.batches) < 1:
            raise ConfigError(f"sizes and batches must be positive integers, got {self.sizes} {self.batches}")
        if self.frames < 2 * max(self.batches):
            raise ConfigError(f"frames {self.frames} is too few: two batches of {max(self.batches)} are needed")


def parse_args(argv: list[str] | None) -> LatencyBench:
    return parse_options(
        LatencyBench, argv, description=__doc__, choices={"device": DEVICES, "trt_precision": PRECISIONS}
    )


# -- models -----------------------------------------------------------------------------------------------------


def at_pack_sizes(opts: LatencyBench) -> LatencyBench:
    """``opts`` at the sizes of the --models pack: its detector and classifier run at their own input sizes."""
    from engines import load_manifest

    size = load_manifest(opts.models / "face_detector.onnx").input_size
    cls_size = load_manifest(opts.models / "deepfake_classifier.onnx").input_size
    if opts.sizes != (size,):
        logger.info("--models: the detector runs at its own size %d (--sizes %s left aside)", size, opts.sizes)
    return replace(opts, sizes=(size,), classifier_size=cls_size)


def pack_models(opts: LatencyBench) -> tuple[dict, dict, dict]:
    """The model pack of --models (the shipped one by default): its ONNX artifacts and torch references, at the
    detector's own size (``at_pack_sizes``); FLOPs from the references. Same return as build_models."""
    import torch

    from benchmarks._floor import model_flops

    det, cls = opts.models / "face_detector.onnx", opts.models / "deepfake_classifier.onnx"
    (size,), cls_size = opts.sizes, opts.classifier_size
    artifacts: dict = {"onnxruntime": {"detectors": {size: det}, "classifier": cls}}
    if "torch" in opts.backends:
        artifacts["torch"] = {"detectors": {size: det.with_suffix(".pt2")}, "classifier": cls.with_suffix(".pt2")}
    flops = {
        f"detector_{size}": model_flops(torch.export.load(str(det.with_suffix(".pt2"))).module(), size),
        f"classifier_{cls_size}": model_flops(torch.export.load(str(cls.with_suffix(".pt2"))).module(), cls_size),
    }
    return artifacts, flops, {} if "tensorrt" not in opts.backends else {"tensorrt": "not built for --models"}


def build_models(opts: LatencyBench, tmp: Path) -> tuple[dict, dict, dict]:
    """Artifacts per backend and size, on the same weights; FLOPs of the networks; backends skipped and why.

    engines.export writes the ONNX artifact and, beside it, the torch reference ``.pt2`` (a torch.export
    program, fp32) that engines' torch backend runs; TensorRT plans are built from the ONNX where TensorRT
    and a GPU are. Returns ({backend: {"detectors": {size: path}, "classifier": path}}, flops, skipped).
    """
    import torch

    from benchmarks._floor import model_flops
    from engines.export import export_classifier, export_detector, load_yolo_detector
    from trainer.models import create_model

    placeholder = not str(opts.weights).endswith(".pt")
    with_torch = "torch" in opts.backends
    onnx: dict = {"detectors": {}}
    for size in opts.sizes:
        torch.manual_seed(opts.seed)  # the same untrained weights at every size (and in the modules below)
        path = tmp / f"face_detector-{size}.onnx"
        _, diff = export_detector(
            opts.weights, path, input_size=size, placeholder=placeholder, torch_reference=with_torch
        )
        onnx["detectors"][size] = path
        logger.info("exported %s (max |onnx - torch| = %.2g px)", path.name, diff)
    torch.manual_seed(opts.seed)
    cls_module = create_model(opts.classifier, input_size=opts.classifier_size).eval()
    onnx["classifier"] = tmp / "deepfake_classifier.onnx"
    export_classifier(
        cls_module,
        onnx["classifier"],
        name=opts.classifier,
        input_size=opts.classifier_size,
        crop_margin=0.25,
        placeholder=True,
        torch_reference=with_torch,
    )
    artifacts: dict = {}
    skipped: dict[str, str] = {}
    if "onnxruntime" in opts.backends:
        artifacts["onnxruntime"] = onnx
    if with_torch:
        artifacts["torch"] = {
            "detectors": {s: p.with_suffix(".pt2") for s, p in onnx["detectors"].items()},
            "classifier": onnx["classifier"].with_suffix(".pt2"),
        }
    if "tensorrt" in opts.backends:
        from engines.rebuild import tensorrt_available

        why = tensorrt_available()
        if why:
            skipped["tensorrt"] = why
            logger.info("TensorRT skipped: %s", why)
        else:
            from engines.build_tensorrt import build_engine

            def plan(onnx_path: Path) -> Path:
                return build_engine(onnx_path, precision=opts.trt_precision)[0]

            artifacts["tensorrt"] = {
                "detectors": {s: plan(p) for s, p in onnx["detectors"].items()},
                "classifier": plan(onnx["classifier"]),
            }
    torch.manual_seed(opts.seed)
    det_module = load_yolo_detector(opts.weights)
    flops = {f"detector_{s}": model_flops(det_module, s) for s in opts.sizes}
    flops[f"classifier_{opts.classifier_size}"] = model_flops(cls_module, opts.classifier_size)
    return artifacts, flops, skipped


def baseline_checkpoint(opts: LatencyBench, tmp: Path, onnx_640: Path, env: dict) -> tuple[Path, dict | None]:
    """The detector as an ultralytics .pt: --weights itself, or the seeded yolov8n.yaml checked against the ONNX."""
    if str(opts.weights).endswith(".pt"):
        return Path(opts.weights), None
    size = max(opts.sizes)
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
        str(opts.seed),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300, cwd=ROOT)
    if proc.returncode != 0:
        raise RuntimeError(f"ultralytics checkpoint failed: {shlex.join(cmd)}\n{proc.stderr[-3000:]}")
    return out, json.loads(proc.stdout.strip().splitlines()[-1])


def run_baseline(pt: Path, clip: Path, *, size: int, batch: int, opts: LatencyBench, env: dict, tmp: Path) -> dict:
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
        str(opts.det_conf),
        "--max-det",
        str(opts.faces),
        "--device",
        "cuda:0" if opts.device == "cuda" else "cpu",
        "--out",
        str(out),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600, cwd=ROOT)
    if proc.returncode != 0:
        raise RuntimeError(f"ultralytics predict failed: {shlex.join(cmd)}\n{proc.stderr[-3000:]}")
    doc = json.loads(out.read_text())
    rows = doc["results"][: (opts.frames // batch) * batch]
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


def configurations(opts: LatencyBench, artifacts: dict) -> list[tuple[str, int, tuple]]:
    """(backend name, detector size, (Detector, Classifier)) for every backend and size, and --detector-artifact."""
    from engines import Classifier, Detector

    def detector(path: Path) -> Detector:
        return Detector(path, threads=opts.threads, device=opts.device, conf=opts.det_conf, max_det=opts.faces)

    out = []
    for paths in artifacts.values():
        classifier = Classifier(paths["classifier"], threads=opts.threads, device=opts.device)
        for size in opts.sizes:
            det = detector(paths["detectors"][size])
            out.append((det.backend_name, size, (det, classifier)))
    if opts.detector_artifact:
        first = next(iter(artifacts.values()))
        classifier = Classifier(first["classifier"], threads=opts.threads, device=opts.device)
        for path in opts.detector_artifact:
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
    opts = parse_args(argv)
    if opts.models:
        opts = at_pack_sizes(opts)
    from tqdm import tqdm

    from benchmarks._floor import measured_peak
    from benchmarks._latency_pass import SyncRedis, timed_pass
    from benchmarks._latency_report import markdown_report, plot
    from benchmarks._machine import LoadWindow, machine_facts, wait_until_quiet

    threads = opts.threads or psutil.cpu_count(logical=True)
    os.environ.setdefault("YOLO_OFFLINE", "1")
    if opts.quiet_wait > 0:
        quiet = wait_until_quiet(max_load=opts.max_load, max_wait_s=opts.quiet_wait, log=logger.info)
    else:
        quiet = {"quiet": None, "waited_s": 0.0, "loadavg": [round(x, 2) for x in os.getloadavg()]}
    machine = machine_facts()
    started = time.monotonic()
    retry_left = opts.retry_budget
    redis = None if opts.redis == "none" else SyncRedis(opts.redis)
    try:
        with tempfile.TemporaryDirectory(prefix="dfwatch-bench-latency-") as tmp_name:
            tmp = Path(tmp_name)
            env = os.environ | {"YOLO_OFFLINE": "1", "YOLO_CONFIG_DIR": str(tmp / "ultralytics")}
            os.environ["YOLO_CONFIG_DIR"] = env["YOLO_CONFIG_DIR"]  # export imports ultralytics in this process
            from pipeline.demo import make_demo_clip

            seconds = opts.frames / 25 / 2 + 0.2  # a little more than --frames frames at 25 fps
            clip = make_demo_clip(tmp / "clip.mp4", fps=25, real_seconds=seconds, fake_seconds=seconds)
            logger.info("clip %s: %d frames, %dx%d", clip.path.name, clip.n_frames, *clip.size)
            artifacts, flops, skipped = pack_models(opts) if opts.models else build_models(opts, tmp)
            import torch

            torch.set_num_threads(threads)
            peak = measured_peak(threads=threads)
            logger.info("measured peak: %s GFLOP/s (%s, %d threads)", peak["gflops"], peak["what"], peak["threads"])
            configs = configurations(opts, artifacts)
            same = check_same_network(configs, clip.path)
            onnx_640 = tmp / f"face_detector-{max(opts.sizes)}.onnx"
            if opts.models:  # ultralytics runs the pack's own ONNX detector (its ONNX Runtime backend)
                pt, pt_check = opts.models / "face_detector.onnx", None
            else:
                pt, pt_check = baseline_checkpoint(opts, tmp, onnx_640, env) if opts.baseline else (None, None)
            jobs = [(b, s, e, batch) for b, s, e in configs for batch in opts.batches]
            if opts.baseline:
                jobs += [("ultralytics", s, None, batch) for s in opts.sizes for batch in opts.batches]
            rows = []
            peak = max(peak, measured_peak(threads=threads), key=lambda p: p["gflops"])  # the quieter of two
            for backend, size, eng, batch in tqdm(jobs, desc="latency", unit="config", file=sys.stderr, disable=None):
                for attempt in range(opts.retries + 1):
                    with LoadWindow() as window:
                        if eng is None:
                            result = run_baseline(pt, clip.path, size=size, batch=batch, opts=opts, env=env, tmp=tmp)
                        else:
                            eng[0].infer(_warm_input(size, batch))
                            result = timed_pass(clip.path, *eng, redis, batch=batch, frames=opts.frames)
                    disturbed = window.others_cpu_pct > BUSY_OTHERS_PCT
                    if not disturbed or attempt == opts.retries or retry_left < window.seconds:
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
            "frames_per_config": opts.frames,
            "weights": str(opts.models) if opts.models else str(opts.weights),
            "placeholder": not opts.models and not str(opts.weights).endswith(".pt"),
            "classifier": (
                f"the pack's, at {opts.classifier_size}"
                if opts.models
                else f"{opts.classifier} at {opts.classifier_size} (untrained)"
            ),
            "faces_per_frame": f"detector threshold fixed at {opts.det_conf}, at most {opts.faces} kept: the classify "
            "stage sees that many faces a frame whatever the detector scores",
            "threads": threads,
            "redis": None if opts.redis == "none" else opts.redis,
            "batching": "a batch of B consecutive frames spread round-robin over B streams (one tracker and "
            "verdict each); the classifier scores the whole batch's faces in one call",
            "per_frame": "batch time / B (the first batch warms up and is not counted)",
            "same_network_max_abs_diff_px": same,
            "backends_skipped": skipped,
            "device": opts.device or "the artifact's own (ONNX Runtime: CUDA if its provider is there; torch: cpu)",
            "baseline_checkpoint_check": pt_check,
        },
        "flops": flops,
        "peak": peak,
        "floor_ms": {k: round(v / (peak["gflops"] * 1e9) * 1000, 3) for k, v in flops.items()},
        "rows": rows,
    }
    opts.out_dir.mkdir(parents=True, exist_ok=True)
    stem = opts.out_dir / f"latency-{opts.machine or machine['slug']}"
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
