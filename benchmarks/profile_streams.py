"""Where the stage loop's time goes with N live feeds: py-spy on `dfwatch watch`, summarised per function.

    .venv/bin/pip install py-spy                                    # a profiler, not a dependency of dfwatch
    .venv/bin/python benchmarks/profile_streams.py --streams 8      # 720p, 25 s; needs the GStreamer RTSP server

The clip and the feeds are those of benchmarks/streams.py (a real face clip transcoded to --height lines,
served N times live over RTSP). py-spy samples every thread of `dfwatch watch` 50 times a second, idle
samples included, so the stage loop's (MainThread) wall time splits into what it waits on: each
function's share of the samples in which it is on the stack. Writes benchmarks/results/profile-<machine>-
<N>x<height>p.md (the table) and the raw stacks beside it (.txt, py-spy's collapsed format).
"""

from __future__ import annotations

import collections
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks._machine import machine_facts  # noqa: E402
from benchmarks.streams import DEFAULT_CLIP, transcode  # noqa: E402
from pipeline.flags import parse_options  # noqa: E402
from pipeline.ranges import check_ranges, ranged  # noqa: E402

_SITE = re.compile(r"\s*\((?:" + re.escape(str(ROOT)) + r"/|/.*?site-packages/)")


@dataclass(frozen=True)
class ProfileStreams:
    """The run's options (flags only: a profile is a quick look, not a setting to keep)."""

    streams: int = ranged(8, 1, 256)  # live feeds
    height: int = ranged(720, 16, 4320)  # feed height in lines
    seconds: int = ranged(25, 1, 3600)  # seconds sampled
    clip: Path = DEFAULT_CLIP  # real face clip to serve
    machine: str | None = None  # name in the result file names (none: the machine's, e.g. epyc-2c-24g)
    out_dir: Path = ROOT / "benchmarks" / "results"  # where the results go

    def __post_init__(self) -> None:
        check_ranges(self)


def parse_args(argv: list[str] | None) -> ProfileStreams:
    return parse_options(ProfileStreams, argv, description=__doc__, config_file=False)


def summarise(raw: str, thread: str = "MainThread", top: int = 25) -> tuple[int, list[tuple[str, int]]]:
    """(samples of ``thread``, [(function (file:line), samples with it on the stack)]) from py-spy's raw output."""
    total, inclusive = 0, collections.Counter()
    for line in raw.splitlines():
        stack, _, count = line.rpartition(" ")
        frames = stack.split(";")
        if thread not in frames[0]:
            continue
        total += int(count)
        for frame in set(frames[1:]):
            if "<frozen" not in frame:
                inclusive[_SITE.sub(" (", frame)] += int(count)
    return total, inclusive.most_common(top)


def main(argv: list[str] | None = None) -> int:
    opts = parse_args(argv)
    spy = shutil.which("py-spy", path=str(Path(sys.executable).parent)) or shutil.which("py-spy")
    if spy is None:
        raise SystemExit("profile_streams: py-spy is not installed: .venv/bin/pip install py-spy")
    from tests._rtsp import rtsp_server_process

    machine = opts.machine or machine_facts()["slug"]
    stem = opts.out_dir / f"profile-{machine}-{opts.streams}x{opts.height}p"
    with tempfile.TemporaryDirectory() as tmp:
        clip = Path(tmp) / "feed.mp4"
        transcode(opts.clip, clip, height=opts.height, fps=25)
        mounts = {f"cam{i}": clip for i in range(opts.streams)}
        with rtsp_server_process(mounts, loop=True, timeout=30) as server:
            watch = [
                sys.executable,
                "-m",
                "pipeline.cli",
                "watch",
                "--metrics-port",
                "0",
                *(f"{name}={server.url}/{name}" for name in mounts),
            ]
            cmd = [
                spy,
                "record",
                "-r",
                "50",
                "-d",
                str(opts.seconds),
                "--idle",
                "--threads",
                "-f",
                "raw",
                "-o",
                f"{stem}.txt",
                "--",
                *watch,
            ]
            subprocess.run(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=300)
    total, rows = summarise(Path(f"{stem}.txt").read_text())
    lines = [
        f"# Where the stage loop's time goes: {opts.streams} live {opts.height}p feeds on `{machine}`",
        "",
        f"Command: `.venv/bin/python benchmarks/profile_streams.py --streams {opts.streams} --height {opts.height} "
        f"--seconds {opts.seconds}` (py-spy, 50 samples/s, idle included). {total} samples of the stage loop "
        "(MainThread); share = samples with the function on the stack.",
        "",
        "| share | samples | function |",
        "|--:|--:|---|",
        *(f"| {100 * n / total:.1f} % | {n} | `{name}` |" for name, n in rows),
    ]
    Path(f"{stem}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
