"""Classifier cost per input size: the searched CNN and the paper's fixed CNN at 128, 160 and 256.

Exports each (untrained: the cost does not depend on the weights) to ONNX and times ONNX Runtime
on this CPU, batch 1 and 8, median of ``--runs``. The searched architecture comes from a search's
``best_config.json``. Writes benchmarks/results/classifier-sizes-<machine>.{json,md}.

    .venv/bin/python benchmarks/classifier_sizes.py --config runs/search128/best_config.json
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks._machine import LoadWindow, machine_facts, machine_slug  # noqa: E402
from pipeline.flags import parse_options
from pipeline.ranges import check_ranges, ranged  # noqa: E402

SIZES = (128, 160, 256)
BATCHES = (1, 8)


@dataclass(frozen=True)
class ClassifierSizesBench:
    """The run's options: flags only (``--config`` names the search's config, not a TOML table of these)."""

    search_config: Path  # a search's best_config.json
    threads: int = ranged(2, 1, 1024)  # ONNX Runtime threads
    runs: int = ranged(30, 1, 100_000)  # timed runs per cell (the median is kept)
    out_dir: Path = Path(__file__).parent / "results"  # where the results go

    def __post_init__(self) -> None:
        check_ranges(self)


def parse_args(argv: list[str] | None) -> ClassifierSizesBench:
    return parse_options(
        ClassifierSizesBench,
        argv,
        description=__doc__.splitlines()[0],
        config_file=False,
        flags={"search_config": "--config"},
    )


def time_onnx(path: Path, size: int, batch: int, *, threads: int, runs: int) -> float:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    x = np.random.default_rng(0).random((batch, 3, size, size), dtype=np.float32)
    for _ in range(3):
        sess.run(None, {"crops": x})
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        sess.run(None, {"crops": x})
        times.append((time.perf_counter() - start) * 1e3)
    return float(np.median(times))


def main(argv: list[str] | None = None) -> int:
    import torch

    from engines.export import export_onnx
    from trainer.fit import TrainConfig

    opts = parse_args(argv)
    torch.set_num_threads(1)
    searched = TrainConfig.load(opts.search_config)
    models = {"searched": (searched.model, searched.model_args), "paper": ("paper_cnn", {})}
    rows = []
    with tempfile.TemporaryDirectory() as tmp, LoadWindow() as load:
        for name, (model, model_args) in models.items():
            for size in SIZES:
                net = TrainConfig(model=model, model_args=model_args, input_size=size).build_model().eval()
                path = Path(tmp) / f"{name}{size}.onnx"
                export_onnx(
                    torch.nn.Sequential(net, torch.nn.Sigmoid()).eval(),
                    path,
                    input_size=size,
                    input_name="crops",
                    output_name="p_fake",
                )
                params = sum(t.numel() for t in net.parameters())
                for batch in BATCHES:
                    ms = time_onnx(path, size, batch, threads=opts.threads, runs=opts.runs)
                    rows.append(
                        {
                            "model": name,
                            "input": size,
                            "batch": batch,
                            "params": params,
                            "ms_per_batch": round(ms, 2),
                            "ms_per_face": round(ms / batch, 2),
                        }
                    )
                    print(rows[-1], file=sys.stderr)
    result = {
        "machine": machine_facts(),
        "others_cpu_pct": load.others_cpu_pct,
        "seconds": load.seconds,
        "config": str(opts.search_config),
        "rows": rows,
    }
    opts.out_dir.mkdir(parents=True, exist_ok=True)
    stem = opts.out_dir / f"classifier-sizes-{machine_slug()}"
    stem.with_suffix(".json").write_text(json.dumps(result, indent=1))
    lines = ["| model | input | parameters | ms per face, batch 1 | ms per face, batch 8 |", "|---|--:|--:|--:|--:|"]
    for name in models:
        for size in SIZES:
            r = {x["batch"]: x for x in rows if x["model"] == name and x["input"] == size}
            lines.append(f"| {name} | {size} | {r[1]['params']:,} | {r[1]['ms_per_face']} | {r[8]['ms_per_face']} |")
    stem.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
