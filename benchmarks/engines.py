"""Engines side by side: latency and throughput per backend and batch size, for detector and classifier.

    .venv/bin/python benchmarks/engines.py                    # CPU: ONNX Runtime vs torch eager, batch 1..16
    python3 benchmarks/engines.py --device cuda   # GPU: + torch compiled fp16, TensorRT if there, batch 1..64

Each cell times ``backend.run`` on one preprocessed batch (float32 NCHW on the host, as the
Detector and Classifier hand it over) up to host outputs: copies to and from the device are
included, letterboxing, NMS and cropping are not (they are the same code for every backend).
Inputs are real frames of ../shared/data/real_videos (letterboxed; crops from their middle for
the classifier), or random ones where the clip is not there. Backends take turns run by run, so
a busy machine slows them alike. Models: the placeholder networks at their serving sizes
(detector 640, classifier 256), exported by ``dfwatch-train placeholders`` into a temp dir, or
``--models DIR``.

Writes benchmarks/results/engines-<machine>.json (every sample's summary, machine facts, load)
and .md (the tables), and prints the tables.
"""

from __future__ import annotations

import json
import logging
import os
import shlex
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # run as a script from a checkout, installed or not

from benchmarks._machine import LoadWindow, machine_facts, wait_until_quiet  # noqa: E402
from pipeline.errors import ConfigError  # noqa: E402
from pipeline.flags import parse_options  # noqa: E402
from pipeline.ranges import check_ranges, ranged  # noqa: E402

BENCH = ROOT / "benchmarks"
CLIP = ROOT.parent / "shared" / "data" / "real_videos" / "liveportrait_examples" / "driving_d1.mp4"
KINDS = {"detector": "face_detector", "classifier": "deepfake_classifier"}
BACKENDS = (
    "onnxruntime",  # the device's: CUDA provider on --device cuda (left out where the build has none)
    "onnxruntime-cpu",
    "torch-eager",  # the fp32 torch.export reference
    "torch-compiled-fp16",  # built by build_torch_variant: reduce-overhead (CUDA graphs) on CUDA
    "torch-compiled-bf16",
    "tensorrt-fp16",
    "onnxruntime-int8",  # NAME.int8.onnx, built and accepted by `dfwatch-train engines --int8` beforehand
    "openvino-fp32",  # NAME.fp32.xml (`dfwatch-train engines --openvino`)
    "openvino-int8",  # NAME.int8.xml (`--int8`)
)
PREBUILT = {
    "onnxruntime-int8": "{stem}.int8.onnx",
    "openvino-fp32": "{stem}.fp32.xml",
    "openvino-int8": "{stem}.int8.xml",
}
DEFAULT_BACKENDS = {
    "cpu": ("onnxruntime", "torch-eager"),
    "cuda": ("onnxruntime", "torch-eager", "torch-compiled-fp16", "tensorrt-fp16"),
}
DEFAULT_BATCHES = {"cpu": (1, 2, 4, 8, 16), "cuda": (1, 2, 4, 8, 16, 32, 64)}
PACKAGES = ("torch", "onnxruntime", "onnxruntime-gpu", "openvino", "nncf", "tensorrt", "triton", "numpy", "psutil")


@dataclass(frozen=True)
class EnginesBench:
    """What one run times and where it writes (the flags; ``--config`` a TOML table of the same fields)."""

    device: str = "cpu"  # where the backends run: cpu or cuda
    # backends to time, of onnxruntime, onnxruntime-cpu, torch-eager, torch-compiled-fp16, torch-compiled-bf16,
    # tensorrt-fp16, onnxruntime-int8, openvino-fp32, openvino-int8 (none: onnxruntime,torch-eager on CPU; and
    # torch-compiled-fp16,tensorrt-fp16 on CUDA)
    backends: tuple[str, ...] = ()
    batches: tuple[int, ...] = ()  # batch sizes (none: 1,2,4,8,16 on CPU; 1,2,4,8,16,32,64 on CUDA)
    kinds: tuple[str, ...] = tuple(KINDS)  # networks to time, of detector, classifier
    models: Path | None = None  # model directory with NAME.onnx + NAME.pt2 (none: fresh placeholders)
    seconds: float = ranged(3.0, 0, 3600)  # time per cell, at least
    min_runs: int = ranged(5, 1, 100_000)  # runs per cell, at least
    max_runs: int = ranged(200, 1, 100_000)  # runs per cell, at most
    warmup: int = ranged(2, 0, 1000)  # untimed runs of each backend before a cell
    max_load: float = ranged(1.0, 0, 1024)  # wait for a 1-min load average below this
    quiet_wait: float = ranged(120.0, 0, 86_400)  # seconds to wait for that, at most
    busy_limit: float = ranged(25.0, 0, 10_000)  # redo a cell when others took more % of a core
    retries: int = ranged(2, 0, 100)  # redos of a busy cell, at most
    retry_budget: float = ranged(600.0, 0, 86_400)  # seconds of waiting for redos, in all
    out_dir: Path = BENCH / "results"  # where the results go
    tag: str = ""  # suffix of the results file names

    def __post_init__(self) -> None:
        check_ranges(self)
        if self.device not in DEFAULT_BATCHES:
            raise ConfigError(f"device: unknown {self.device!r}; valid: {list(DEFAULT_BATCHES)}")
        object.__setattr__(self, "backends", self.backends or DEFAULT_BACKENDS[self.device])
        object.__setattr__(self, "batches", self.batches or DEFAULT_BATCHES[self.device])
        bad = [k for k in self.kinds if k not in KINDS] + [b for b in self.backends if b not in BACKENDS]
        if bad or not self.kinds:
            raise ConfigError(f"unknown {bad or 'none'}; kinds {list(KINDS)}, backends {list(BACKENDS)}")
        if min(self.batches) < 1:
            raise ConfigError(f"batches must be >= 1, got {self.batches}")


def log(msg: str) -> None:
    print(f"{time.strftime('%H:%M:%S')} engines: {msg}", file=sys.stderr, flush=True)


# -- inputs and backends ------------------------------------------------------------------------------


def real_frames(count: int) -> np.ndarray | None:
    """``count`` RGB frames (count, H, W, 3) of the real clip, or None where PyAV or the clip is missing.

    ``DFWATCH_TEST_FRAMES`` names an .npy of the clip's frames decoded elsewhere (benchmarks/gpu_check.sh).
    """
    saved = os.environ.get("DFWATCH_TEST_FRAMES")
    if saved:
        return np.load(saved)[:count]
    try:
        import av
    except ImportError:
        return None
    if not CLIP.is_file():
        return None
    with av.open(str(CLIP)) as container:
        frames = [f.to_ndarray(format="rgb24") for _, f in zip(range(count), container.decode(video=0))]
    return np.stack(frames)


def make_batch(kind: str, size: int, batch: int, frames: np.ndarray | None) -> np.ndarray:
    """A (batch, 3, size, size) float32 network input, as the Detector or Classifier would build it."""
    from engines import Detections, crop_faces
    from engines.images import normalise
    from engines.letterbox import letterbox_batch

    if frames is None:
        return np.random.default_rng(batch).random((batch, 3, size, size), dtype=np.float32)
    picked = [frames[i % len(frames)] for i in range(batch)]
    if kind == "detector":
        return letterbox_batch(picked, size)[0]
    h, w = picked[0].shape[:2]
    boxes = Detections([[w * 0.3, h * 0.2, w * 0.7, h * 0.8]] * batch, [1.0] * batch, list(range(batch)))
    crops = crop_faces(picked, boxes, size=size, margin=0.25)  # (batch, size, size, 3)
    return normalise(crops)  # (batch, 3, size, size)


def open_backends(models: Path, kind: str, names: tuple[str, ...], device: str) -> dict[str, object]:
    """Open (building where needed) each named backend for ``kind``; a backend that cannot run here is left out."""
    from engines.backends import open_backend
    from engines.manifest import load_manifest

    stem = KINDS[kind]
    opened: dict[str, object] = {}
    for name in names:
        try:
            if name in ("onnxruntime", "onnxruntime-cpu"):
                path = models / f"{stem}.onnx"
            elif name in PREBUILT:
                path = models / PREBUILT[name].format(stem=stem)
                if not path.is_file():
                    raise FileNotFoundError(
                        f"{path} is not there: build it with dfwatch-train engines --models "
                        f"{models} --openvino --int8 (an INT8 refused by its check is not kept)"
                    )
            elif name == "torch-eager":
                path = models / f"{stem}.pt2"
            elif name.startswith("torch-compiled-"):
                from engines.build_torch import build_torch_variant

                precision = name.rsplit("-", 1)[1]
                mode = "reduce-overhead" if device == "cuda" else "default"
                path, _, diff = build_torch_variant(
                    models / f"{stem}.pt2", precision=precision, compile_mode=mode, device=device
                )
                log(f"{kind}: built {path.name} (torch.compile {mode}), max |diff| vs ONNX {diff:.2g}")
            elif name == "tensorrt-fp16":
                from engines.build_tensorrt import build_engine
                from engines.build_torch import verify_against_onnx

                path, _ = build_engine(models / f"{stem}.onnx", precision="fp16")
                diff = verify_against_onnx(path, models / f"{stem}.onnx")
                log(f"{kind}: built {path.name}, max |diff| vs ONNX {diff:.2g}")
            else:
                raise ValueError(f"unknown backend {name!r}; valid: {list(BACKENDS)}")
            manifest = load_manifest(path)
            backend_device = None if name == "tensorrt-fp16" or name.startswith("torch-compiled-") else device
            backend_device = "cpu" if name in ("onnxruntime-cpu", *PREBUILT) else backend_device
            opened[name] = open_backend(path, manifest, device=backend_device)
        except Exception as exc:  # a backend missing here (TensorRT, CUDA onnxruntime) is reported, not fatal
            log(f"{kind}: {name} left out: {type(exc).__name__}: {exc}")
    return opened


# -- measuring ----------------------------------------------------------------------------------------


def time_cell(
    runs: dict[str, Callable[[], object]], *, warmup: int, min_runs: int, max_runs: int, seconds: float
) -> dict[str, list[float]]:
    """Run every callable ``warmup`` times, then take turns until each has ``min_runs`` samples and
    ``seconds`` have passed (or ``max_runs``); returns seconds per run for each name."""
    for fn in runs.values():
        for _ in range(warmup):
            fn()
    samples: dict[str, list[float]] = {name: [] for name in runs}
    start = time.perf_counter()
    while True:
        for name, fn in runs.items():
            t0 = time.perf_counter()
            fn()
            samples[name].append(time.perf_counter() - t0)
        done = len(next(iter(samples.values())))
        if done >= max_runs or (done >= min_runs and time.perf_counter() - start >= seconds):
            return samples


def summarise(samples: list[float], batch: int) -> dict:
    ordered = sorted(samples)
    p95 = ordered[min(len(ordered) - 1, int(round(0.95 * (len(ordered) - 1))))]
    median = statistics.median(ordered)
    return {
        "runs": len(ordered),
        "median_ms": round(median * 1e3, 3),
        "p95_ms": round(p95 * 1e3, 3),
        "per_image_ms": round(median * 1e3 / batch, 3),
        "images_per_s": round(batch / median, 1),
    }


def measure_cell(
    opts: EnginesBench, runs: dict[str, Callable[[], object]], budget: dict
) -> tuple[dict[str, list[float]], float, int]:
    """Time one cell; redo it (after waiting for a quiet moment) while other processes took more than
    ``--busy-limit`` % of a core, up to ``--retries`` times and ``--retry-budget`` seconds of waiting in all.
    Returns the least disturbed attempt: (samples, others' CPU %, attempts)."""
    best: tuple[dict[str, list[float]], float] | None = None
    attempt = 0
    for attempt in range(1, opts.retries + 2):
        with LoadWindow() as window:
            samples = time_cell(
                runs, warmup=opts.warmup, min_runs=opts.min_runs, max_runs=opts.max_runs, seconds=opts.seconds
            )
        others = window.others_cpu_pct
        if best is None or others < best[1]:
            best = (samples, others)
        if others <= opts.busy_limit or attempt > opts.retries or budget["retry_wait_left_s"] <= 0:
            break
        log(f"other processes took {others:.0f} % of a core during the cell: waiting, then redoing it")
        waited = wait_until_quiet(
            max_load=opts.max_load, max_wait_s=min(120.0, budget["retry_wait_left_s"]), every_s=10.0, log=log
        )
        budget["retry_wait_left_s"] -= waited["waited_s"] + 1
    return best[0], best[1], attempt


def measure(
    opts: EnginesBench, models: Path, frames: np.ndarray | None, save: Callable[[list[dict]], object]
) -> list[dict]:
    """Every cell's rows; ``save`` gets the rows so far after each cell (a run cut short keeps them)."""
    from tqdm import tqdm

    from engines.manifest import load_manifest

    rows = []
    budget = {"retry_wait_left_s": opts.retry_budget}
    bar = tqdm(total=len(opts.kinds) * len(opts.batches), desc="engines", unit="cell", file=sys.stderr, disable=None)
    for kind in opts.kinds:
        size = load_manifest(models / f"{KINDS[kind]}.onnx").input_size
        backends = open_backends(models, kind, opts.backends, opts.device)
        if not backends:  # else time_cell has nothing to time and fails with a bare StopIteration
            raise RuntimeError(f"no backend of {opts.backends} runs the {kind} here (the lines above say why)")
        for batch in opts.batches:
            bar.set_postfix_str(f"{kind} batch {batch}")
            x = make_batch(kind, size, batch, frames)
            runs = {name: (lambda b=b, x=x: b.run(x)) for name, b in backends.items()}
            samples, others, attempts = measure_cell(opts, runs, budget)
            for name, times in samples.items():
                row = {
                    "kind": kind,
                    "input_size": size,
                    "backend": name,
                    "runtime": backends[name].name,
                    "batch": batch,
                    **summarise(times, batch),
                    "others_cpu_pct": others,
                    "busy": others > opts.busy_limit,
                    "attempts": attempts,
                }
                rows.append(row)
                tqdm.write(
                    f"{time.strftime('%H:%M:%S')} engines: {kind} {name} batch {batch}: median "
                    f"{row['median_ms']:.1f} ms, p95 {row['p95_ms']:.1f} ms, {row['images_per_s']:.0f} img/s, "
                    f"others' CPU {others:.0f} %",
                    file=sys.stderr,
                )
            save(rows)
            bar.update()
        del backends
    bar.close()
    return rows


# -- results --------------------------------------------------------------------------------------------


def markdown_tables(rows: list[dict]) -> str:
    out = []
    for kind in dict.fromkeys(r["kind"] for r in rows):
        kr = [r for r in rows if r["kind"] == kind]
        names = list(dict.fromkeys(r["backend"] for r in kr))
        runtimes = {r["backend"]: r["runtime"] for r in kr}
        out.append(f"**{kind}** ({kr[0]['input_size']}x{kr[0]['input_size']}): median / p95 ms per batch, images/s")
        out.append("")
        out.append("| batch | " + " | ".join(f"{n} (`{runtimes[n]}`)" for n in names) + " | others' CPU |")
        out.append("|--:|" + "--:|" * len(names) + "--:|")
        for batch in dict.fromkeys(r["batch"] for r in kr):
            cells = []
            for n in names:
                r = next((r for r in kr if r["backend"] == n and r["batch"] == batch), None)
                cells.append(f"{r['median_ms']:.1f} / {r['p95_ms']:.1f} ms, {r['images_per_s']:.0f}/s" if r else "-")
            first = next(r for r in kr if r["batch"] == batch)
            busy = " (busy)" if first.get("busy") else ""
            out.append(f"| {batch} | " + " | ".join(cells) + f" | {first['others_cpu_pct']:.0f} %{busy} |")
        out.append("")
    return "\n".join(out)


def markdown_report(doc: dict) -> str:
    m = doc["machine"]
    versions = ", ".join(f"{k} {v}" for k, v in m["versions"].items() if v)
    q = doc["quiet"]
    quiet = f"{'quiet' if q['quiet'] else 'never quiet'} after waiting {q['waited_s']:.0f} s for a load below the limit"
    others = sorted(r["others_cpu_pct"] for r in doc["rows"])
    gpu = ", ".join(m["gpus"]) or "none"
    cut = "" if doc.get("complete", True) else "**Incomplete: the run was cut short; below are the cells it finished.**"
    lines = [
        f"# engines: backends side by side on `{m['slug']}`",
        "",
        *([cut, ""] if cut else []),
        f"{m['cpu_model']}, {m['cores_logical']} cores, {m['ram_gib']} GiB RAM, GPU: {gpu}; Python {m['python']}, "
        f"{versions}; {m['date_utc']}; load average before {m['loadavg_at_start']}, after {doc['loadavg_at_end']}"
        f" ({quiet}); torch threads {doc['torch_threads']}.",
        "",
        f"Other processes used {others[len(others) // 2]:.0f} % of a core (median over cells; at most "
        f"{others[-1]:.0f} %) while the cells ran (100 % = one of this machine's {m['cores_logical']} cores); "
        f"a cell where they took more than {doc['settings']['busy_limit']:.0f} % was redone after a quiet moment "
        f"(up to {doc['settings']['retries']} times) and the least disturbed attempt kept; (busy): still above.",
        "",
        f"Command: `{doc['command']}`",
        "",
        "Each cell: `backend.run` on one preprocessed batch, host float32 in to host outputs (device copies "
        "included; letterbox, NMS, crops excluded). Backends take turns run by run after "
        f"{doc['settings']['warmup']} warm-up runs; at least {doc['settings']['min_runs']} runs and "
        f"{doc['settings']['seconds']} s per cell. Inputs: {doc['inputs']}. Models: {doc['models']}.",
        "",
        markdown_tables(doc["rows"]),
    ]
    return "\n".join(lines) + "\n"


def describe_models(models: Path, *, given: Path | None) -> str:
    """What the timed networks are, from their manifests: placeholders or a trained pack (and where from)."""
    from engines.manifest import load_manifest

    if any(load_manifest(models / f"{name}.onnx", verify=False).placeholder for name in KINDS.values()):
        return "untrained placeholders (timing does not depend on the weights)"
    return f"the trained pack in `{given}` and the variants built from it"


def parse_args(argv: list[str] | None) -> EnginesBench:
    return parse_options(
        EnginesBench, argv, description=__doc__.split("\n")[0], choices={"device": tuple(DEFAULT_BATCHES)}
    )


def main(argv: list[str] | None = None) -> int:
    opts = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    os.environ.setdefault("YOLO_OFFLINE", "1")
    os.environ.setdefault("YOLO_CONFIG_DIR", str(Path(tempfile.gettempdir()) / "dfwatch-ultralytics"))
    import torch

    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="dfwatch-engines-") as tmp:
        models = opts.models
        if models is None:
            from trainer.cli import main as train

            models = Path(tmp) / "models"
            log("exporting placeholder models (detector 640, classifier 256) ...")
            if train(["placeholders", "--out", str(models)]) != 0:
                return 1
        else:  # variants are built beside the models: work on a copy
            import shutil

            models = Path(shutil.copytree(models, Path(tmp) / "models"))
        models_desc = describe_models(models, given=opts.models)
        frames = real_frames(8)
        inputs = f"{len(frames)} frames of {CLIP.name}" if frames is not None else "uniform random (no real clip here)"
        quiet = wait_until_quiet(max_load=opts.max_load, max_wait_s=opts.quiet_wait, log=log)
        facts = machine_facts(PACKAGES)
        opts.out_dir.mkdir(parents=True, exist_ok=True)
        stem = opts.out_dir / f"engines-{facts['slug']}{'-' + opts.tag if opts.tag else ''}"

        def save(rows: list[dict], *, complete: bool = False) -> str:
            doc = {
                "benchmark": "engines",
                "complete": complete,  # False while running, and in a run that was cut short
                "command": shlex.join([Path(sys.executable).name, *sys.argv]),
                "machine": facts,
                "quiet": quiet,
                "loadavg_at_end": [round(x, 2) for x in os.getloadavg()],
                "elapsed_s": round(time.perf_counter() - started, 1),
                "torch_threads": torch.get_num_threads(),
                "inputs": inputs,
                "models": models_desc,
                "settings": {k: v for k, v in asdict(opts).items() if k not in ("out_dir", "models")},
                "rows": rows,
            }
            Path(f"{stem}.json").write_text(json.dumps(doc, indent=2, default=str) + "\n")
            report = markdown_report(doc)
            Path(f"{stem}.md").write_text(report)
            return report

        rows = measure(opts, models, frames, save)
        print(save(rows, complete=True))
    log(f"wrote {stem}.json and .md in {time.perf_counter() - started:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
