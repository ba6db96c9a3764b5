"""Memory of `dfwatch watch` on many files at once, and proof that no frame was lost.

    .venv/bin/python benchmarks/memory_files.py --files 50          # the real clips of ../shared/data

Picks the ``--files`` largest-first `.mp4` clips over 300 kB under ``--media`` (repeating the list when there
are fewer), runs `dfwatch watch f00=CLIP ... fNN=CLIP` with the shipped pack and `dfwatch watch` defaults
(``--dfwatch-args`` adds flags), samples the resident memory of the process every 0.5 s, and checks from the
verdict lines that every file published every one of its frames, in order (the frame count comes from PyAV's
decode of each file). Writes benchmarks/results/memory-<machine>-<N>files[-<tag>].{json,md}. Memory is not a timing:
a busy machine changes how long it takes, not what the queues may hold (they are bounded in bytes).
"""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks._machine import machine_facts  # noqa: E402
from benchmarks.streams import dfwatch_command  # noqa: E402
from pipeline.flags import parse_options  # noqa: E402
from pipeline.ranges import check_ranges, ranged  # noqa: E402

LIMIT_BYTES = 1.5e9  # issue 25: 50 files under 1.5 GB resident


@dataclass(frozen=True)
class MemoryBench:
    """What one run watches and where it writes (the flags; ``--config`` a TOML table of the same fields)."""

    files: int = ranged(50, 1, 10_000)  # files watched at once
    media: Path = ROOT.parent / "shared" / "data"  # where the clips are
    dfwatch_args: str = ""  # extra `dfwatch watch` flags, one string
    machine: str | None = None  # name in the result file names (none: the machine's, e.g. xeon-2c-24g)
    tag: str | None = None  # suffix of the result file names (e.g. decoder-threads-1)
    out_dir: Path = ROOT / "benchmarks" / "results"  # where the results go

    def __post_init__(self) -> None:
        check_ranges(self)


def parse_args(argv: list[str] | None) -> MemoryBench:
    return parse_options(MemoryBench, argv, description=__doc__)


def clips(media: Path, n: int, min_bytes: int = 300_000) -> list[Path]:
    found = sorted((p for p in media.rglob("*.mp4") if p.stat().st_size > min_bytes), key=lambda p: -p.stat().st_size)
    if not found:
        raise SystemExit(f"memory_files: no .mp4 over {min_bytes} bytes under {media}")
    return [found[i % len(found)] for i in range(n)]


def frame_count(path: Path) -> int:
    import av

    with av.open(str(path)) as container:
        return sum(1 for _ in container.decode(video=0))


def rss_mib(pid: int) -> float | None:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def main(argv: list[str] | None = None) -> int:
    opts = parse_args(argv)
    facts = machine_facts()
    files = clips(opts.media, opts.files)
    expected = {f"f{i:02d}": frame_count(path) for i, path in enumerate(files)}
    extra = shlex.split(opts.dfwatch_args)
    cmd = dfwatch_command([f"f{i:02d}={path}" for i, path in enumerate(files)], ROOT / "models", 0, opts.dfwatch_args)
    print(f"memory_files: {len(files)} files, {sum(expected.values())} frames", flush=True)
    samples: list[tuple[float, float]] = []
    start = time.monotonic()
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    published: dict[str, list[int]] = {name: [] for name in expected}

    def read() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            msg = json.loads(line)
            published[msg["stream"]].append(msg["frame"])

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    while proc.poll() is None:
        mib = rss_mib(proc.pid)
        if mib is not None:
            samples.append((round(time.monotonic() - start, 1), round(mib, 1)))
        time.sleep(0.5)
    reader.join()
    seconds = time.monotonic() - start
    lost = {n: expected[n] - len(frames) for n, frames in published.items() if len(frames) != expected[n]}
    unordered = [n for n, frames in published.items() if frames != sorted(frames)]
    peak = max(mib for _, mib in samples)
    doc = {
        "machine": facts,
        "command": shlex.join([".venv/bin/python", "benchmarks/memory_files.py", *sys.argv[1:]]),
        "dfwatch": shlex.join(["dfwatch", "watch", "--models", "models", "--metrics-port", "0", *extra])
        + f" f00=... f{len(files) - 1:02d}=...",
        "files": [str(path) for path in files],
        "frames": sum(expected.values()),
        "verdicts": sum(len(v) for v in published.values()),
        "rc": proc.returncode,
        "seconds": round(seconds, 1),
        "peak_rss_mib": peak,
        "rss_mib_per_file": round(peak / len(files), 1),
        "under_limit": peak * 2**20 < LIMIT_BYTES,
        "lost_frames": lost,
        "out_of_order": unordered,
        "samples": samples,
    }
    slug = opts.machine or facts["slug"]
    out = opts.out_dir / f"memory-{slug}-{len(files)}files{'-' + opts.tag if opts.tag else ''}"
    out.with_suffix(".json").write_text(json.dumps(doc, indent=1) + "\n")
    out.with_suffix(".md").write_text(markdown(doc))
    print(
        f"memory_files: peak RSS {peak:.0f} MiB ({doc['rss_mib_per_file']} per file) over {seconds:.0f} s; "
        f"{doc['verdicts']} of {doc['frames']} frames published, lost {lost or 'none'}; wrote {out}.{{json,md}}"
    )
    return 0 if proc.returncode == 0 and not lost and not unordered else 1


def markdown(doc: dict) -> str:
    m = doc["machine"]
    minute = [mib for t, mib in doc["samples"] if t <= 60]
    return "\n".join(
        [
            f"# memory: {len(doc['files'])} files at once on `{m['slug']}`",
            "",
            f"{m['cpu_model']}, {m['cores_logical']} cores, {m['ram_gib']} GiB RAM; {m['date_utc']}.",
            "",
            f"Command: `{doc['command']}` (runs `{doc['dfwatch']}`)",
            "",
            "| files | frames | verdicts published | frames lost | out of order | exit | seconds "
            "| peak RSS MiB (GB) | in the first minute, MiB | MiB per file | under 1.5 GB |",
            "|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|:-:|",
            f"| {len(doc['files'])} | {doc['frames']} | {doc['verdicts']} | {sum(doc['lost_frames'].values())} "
            f"| {len(doc['out_of_order'])} | {doc['rc']} | {doc['seconds']} "
            f"| {doc['peak_rss_mib']:.0f} ({doc['peak_rss_mib'] * 2**20 / 1e9:.2f}) "
            f"| {max(minute, default=0):.0f} | {doc['rss_mib_per_file']} | {'yes' if doc['under_limit'] else 'no'} |",
            "",
            "RSS: the `dfwatch watch` process's VmRSS, sampled every 0.5 s (every sample in the .json). Frames: each "
            "file decoded by PyAV beforehand; a file is whole when its stream published that many verdicts, frame "
            "numbers rising.",
            "",
        ]
    )


if __name__ == "__main__":
    raise SystemExit(main())
