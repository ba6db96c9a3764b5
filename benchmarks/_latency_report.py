"""latency.py's results as a markdown report and a PNG plot."""

from __future__ import annotations

from pathlib import Path

from benchmarks._latency_pass import STAGES


def _baseline(doc: dict, size: int, batch: int) -> dict | None:
    return next(
        (r for r in doc["rows"] if r["system"] == "ultralytics" and r["size"] == size and r["batch"] == batch), None
    )


def _ms(d: dict) -> str:
    return f"{d['p50']:.1f} / {d['p95']:.1f} / {d['p99']:.1f}"


def _faces(counts: dict) -> str:
    total = sum(counts.values())
    return ", ".join(f"{n}: {100 * c / total:.0f} %" for n, c in counts.items()) if total else "-"


def summary_table(doc: dict) -> str:
    target = doc["target_ms"]
    lines = [
        "| detector | system / backend | batch | end to end ms/frame p50 / p95 / p99 | ÷ 6.4 ms target | "
        "frame→boxes ms/frame p50 | ultralytics ms/frame p50 | ultralytics ÷ dfwatch (frame→boxes) | faces/frame |",
        "|--:|---|--:|--:|--:|--:|--:|--:|---|",
    ]
    for r in sorted(doc["rows"], key=lambda r: (r["size"], r["batch"], r["system"] != "dfwatch", r["backend"])):
        pf = r["per_frame_ms"]
        base = _baseline(doc, r["size"], r["batch"])
        mark = " (busy box)" if r["disturbed"] else ""
        if r["system"] == "ultralytics":
            lines.append(
                f"| {r['size']} | ultralytics predict{mark} | {r['batch']} | {_ms(pf['end_to_end'])} | "
                f"{pf['end_to_end']['p50'] / target:.1f} | {pf['end_to_end']['p50']:.1f} | (this row) | 1.0 | "
                f"{_faces(r['boxes_per_frame'])} (detector only) |"
            )
            continue
        ratio = f"{base['per_frame_ms']['end_to_end']['p50'] / pf['detector_path']['p50']:.2f}" if base else "n/a"
        ult = f"{base['per_frame_ms']['end_to_end']['p50']:.1f}" if base else "n/a"
        lines.append(
            f"| {r['size']} | dfwatch {r['backend']}{mark} | {r['batch']} | {_ms(pf['end_to_end'])} | "
            f"{pf['end_to_end']['p50'] / target:.1f} | {pf['detector_path']['p50']:.1f} | {ult} | {ratio} | "
            f"{_faces(r['faces_per_frame'])} |"
        )
    return "\n".join(lines)


def stage_table(doc: dict) -> str:
    head = "| detector | backend | batch | " + " | ".join(STAGES) + " | end to end |"
    lines = [head, "|--:|---|--:|" + "--:|" * (len(STAGES) + 1)]
    for r in sorted(doc["rows"], key=lambda r: (r["size"], r["batch"], r["backend"])):
        if r["system"] != "dfwatch":
            continue
        pf = r["per_frame_ms"]
        cells = " | ".join(f"{pf[s]['p50']:.2f}" for s in (*STAGES, "end_to_end"))
        lines.append(f"| {r['size']} | {r['backend']} | {r['batch']} | {cells} |")
    base = [r for r in doc["rows"] if r["system"] == "ultralytics"]
    if base:
        lines += [
            "",
            "ultralytics' own per-image split (`Result.speed`, p50 ms):",
            "",
            "| detector | batch | preprocess | inference | postprocess | end to end (incl. reading the video) |",
            "|--:|--:|--:|--:|--:|--:|",
        ]
        for r in sorted(base, key=lambda r: (r["size"], r["batch"])):
            pf = r["per_frame_ms"]
            lines.append(
                f"| {r['size']} | {r['batch']} | {pf['preprocess']['p50']:.2f} | {pf['inference']['p50']:.2f} "
                f"| {pf['postprocess']['p50']:.2f} | {pf['end_to_end']['p50']:.2f} |"
            )
    return "\n".join(lines)


def floor_table(doc: dict) -> str:
    lines = [
        "| model | GFLOPs / frame | floor ms at the measured peak | its stage (detect / classify) p50 ms/frame, "
        "best backend and batch | share of peak reached |",
        "|---|--:|--:|--:|--:|",
    ]
    rows = [r for r in doc["rows"] if r["system"] == "dfwatch"]
    for name, flops in doc["flops"].items():
        kind, size = name.rsplit("_", 1)
        stage = "detect" if kind == "detector" else "classify"
        cand = [r for r in rows if kind == "classifier" or r["size"] == int(size)]
        best = min(cand, key=lambda r: r["per_frame_ms"][stage]["p50"], default=None)
        if best is None:
            continue
        measured = best["per_frame_ms"][stage]["p50"]
        floor = doc["floor_ms"][name]
        lines.append(
            f"| {kind} {size} | {flops / 1e9:.2f} | {floor:.2f} | {measured:.2f} ({best['backend']}, "
            f"b{best['batch']}) | {100 * floor / measured:.0f} % |"
        )
    return "\n".join(lines)


def markdown_report(doc: dict, *, tables_only: bool = False) -> str:
    tables = f"{summary_table(doc)}\n\nPer stage, p50 ms per frame:\n\n{stage_table(doc)}\n\n{floor_table(doc)}\n"
    if tables_only:
        return tables
    m, s = doc["machine"], doc["setup"]
    v = m["versions"]
    gpus = ", ".join(m["gpus"]) or "none"
    base_threads = sorted({r["torch_threads"] for r in doc["rows"] if r["system"] == "ultralytics"})
    base_note = (
        f" ultralytics ran with torch threads = {base_threads} (its own choice on CPU: cores - 1)."
        if base_threads
        else ""
    )
    return f"""# latency: per frame, per stage, against the 6.4 ms target on `{m["slug"]}`

{m["cpu_model"]}, {m["cores_logical"]} cores, {m["ram_gib"]} GiB RAM, GPU: {gpus}; Python {m["python"]}, \
torch {v.get("torch")}, onnxruntime {v.get("onnxruntime")}, ultralytics {v.get("ultralytics")}, av {v.get("av")}; \
{m["date_utc"]}; load average at start {m["loadavg_at_start"]}, at end {m["loadavg_at_end"]}; {doc["elapsed_s"]:.0f} s.

Command: `{doc["command"]}`

Clip: {s["clip"]}; {s["frames_per_config"]} frames per configuration. Models: detector `{s["weights"]}` \
({"untrained placeholder" if s["placeholder"] else "trained"}), classifier {s["classifier"]}. Faces: \
{s["faces_per_frame"]}. Threads: {s["threads"]}. Publish: JSON line + the Redis sink's pipelined write to \
{s["redis"] or "(no Redis)"}, waited for. Batches: {s["batching"]}. Per frame = {s["per_frame"]}. \
Backends on the same weights: max raw-output difference {s["same_network_max_abs_diff_px"] or "-"}.

"end to end" = decode → letterbox → detect → track → crop → classify → verdict → publish. "frame→boxes" = \
decode → letterbox → detect, the part ultralytics' `predict(stream=True)` also does (it reads the video, \
letterboxes, infers and runs NMS; no classifier, tracker, verdict or publish). "ultralytics ÷ dfwatch" > 1: \
dfwatch gets from a frame to boxes that many times faster. A row marked "busy box" ran while other processes \
took more than 25 % of a core (after a retry). Measured peak: {doc["peak"]["gflops"]} GFLOP/s \
({doc["peak"]["what"]}, {doc["peak"]["threads"]} threads).{base_note}

{tables}"""


def _short(backend: str) -> str:
    """A backend's name for an axis label: "onnxruntime-cpu" -> "ORT\ncpu", "torch-cpu-eager-fp32" -> "torch\neager"."""
    if backend == "ultralytics":
        return "ultra-\nlytics"
    for long, short in (
        ("onnxruntime-", "ORT\n"),
        ("torch-cpu-", "torch\n"),
        ("torch-cuda-", "torch\ncuda "),
        ("tensorrt-", "TRT\n"),
    ):
        if backend.startswith(long):
            return short + backend[len(long) :].replace("-fp32", "").replace("-", " ")
    return backend


def plot(doc: dict, path: Path) -> None:
    """Stacked stage medians per configuration, one panel per batch size, the 6.4 ms target as a line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    batches = sorted({r["batch"] for r in doc["rows"]})
    fig, axes = plt.subplots(1, len(batches), figsize=(6.5 * len(batches), 5), squeeze=False)
    colors = plt.get_cmap("tab10").colors
    for ax, batch in zip(axes[0], batches):
        rows = sorted([r for r in doc["rows"] if r["batch"] == batch], key=lambda r: (r["size"], r["backend"]))
        labels = []
        for x, r in enumerate(rows):
            pf = r["per_frame_ms"]
            bottom = 0.0
            parts = STAGES if r["system"] == "dfwatch" else ("preprocess", "inference", "postprocess")
            for i, stage in enumerate(parts):
                value = pf[stage]["p50"]
                color = colors[i % 10] if r["system"] == "dfwatch" else colors[[1, 2, 3][i]]
                label = stage if r["system"] == "dfwatch" else f"ultralytics {stage}"
                ax.bar(
                    x, value, bottom=bottom, color=color, hatch="//" if r["system"] != "dfwatch" else None, label=label
                )
                bottom += value
            rest = pf["end_to_end"]["p50"] - bottom
            if rest > 0:
                ax.bar(x, rest, bottom=bottom, color="lightgrey", hatch="//" if r["system"] != "dfwatch" else None)
            labels.append(f"{r['size']}{' *' if r['disturbed'] else ''}\n{_short(r['backend'])}")
        ax.axhline(doc["target_ms"], color="red", linestyle="--", label="6.4 ms target")
        ax.set_xticks(range(len(rows)), labels, fontsize=7)
        ax.set_ylabel("ms per frame (p50)")
        ax.set_title(f"batch {batch}")
    legend: dict = {}
    for ax in axes[0]:
        for handle, name in zip(*ax.get_legend_handles_labels()):
            legend.setdefault(name, handle)
    fig.legend(legend.values(), legend.keys(), fontsize=7, loc="center right")
    fig.suptitle(
        f"dfwatch per-frame latency by stage vs ultralytics predict (hatched), {doc['machine']['slug']}; "
        f"{'untrained placeholder' if doc['setup']['placeholder'] else 'trained'} models; * = busy box",
        fontsize=9,
    )
    fig.tight_layout(rect=(0, 0, 0.86, 1))
    fig.savefig(path, dpi=110)
    plt.close(fig)
