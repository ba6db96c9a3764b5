"""What a benchmark ran on, for its results file: CPU, cores, memory, GPU, versions, load. Shared by benchmarks/*.py.

Nothing here imports the measured frameworks: versions come from the installed package metadata, so
asking for them costs no memory or start-up time in the process that does the measuring.
"""

from __future__ import annotations

import datetime as _dt
import os
import platform
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from importlib import metadata

import psutil

PACKAGES = ("torch", "onnxruntime", "ultralytics", "av", "numpy", "opencv-python-headless", "psutil")


def cpu_model() -> str:
    """The CPU's marketing name ("Intel(R) Xeon(R) Processor @ 2.50GHz"), or platform's guess."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def gpu_names() -> list[str]:
    """NVIDIA GPUs that nvidia-smi lists; empty where there is none (or no driver)."""
    if shutil.which("nvidia-smi") is None:
        return []
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"], capture_output=True, text=True, timeout=10
        )
    except (OSError, subprocess.TimeoutExpired):
        return []
    return [line.strip() for line in out.stdout.splitlines() if line.strip()] if out.returncode == 0 else []


def package_versions(packages: tuple[str, ...] = PACKAGES) -> dict[str, str | None]:
    """Installed distribution versions (None where not installed), read without importing them."""
    versions: dict[str, str | None] = {}
    for name in packages:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def machine_slug() -> str:
    """A short file-name-safe name for this kind of machine, e.g. 'xeon-2c-24g' or 'epyc-16c-128g-h200'."""
    model = cpu_model().lower()
    family = next(
        (w for w in ("xeon", "epyc", "ryzen", "threadripper", "core", "graviton", "neoverse", "apple") if w in model),
        re.sub(r"[^a-z0-9]+", "", model.split()[0]) if model else "cpu",
    )
    ram_gib = round(psutil.virtual_memory().total / 2**30)
    slug = f"{family}-{psutil.cpu_count(logical=True)}c-{ram_gib}g"
    gpus = gpu_names()
    if gpus:
        slug += "-" + re.sub(r"[^a-z0-9]+", "", gpus[0].lower().replace("nvidia", ""))
    return slug


def machine_facts(packages: tuple[str, ...] = PACKAGES) -> dict:
    """Everything a reader needs to compare a result with their own machine."""
    load1, load5, load15 = os.getloadavg()
    return {
        "slug": machine_slug(),
        "cpu_model": cpu_model(),
        "cores_logical": psutil.cpu_count(logical=True),
        "cores_physical": psutil.cpu_count(logical=False),
        "ram_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "gpus": gpu_names(),
        "os": platform.platform(),
        "python": platform.python_version(),
        "python_executable": sys.executable,
        "versions": package_versions(packages),
        "date_utc": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "loadavg_at_start": [round(load1, 2), round(load5, 2), round(load15, 2)],
    }


def busy_cpu_seconds() -> tuple[float, float]:
    """CPU seconds the whole box was busy (summed over cores, less hypervisor steal), and the steal."""
    t = psutil.cpu_times()
    steal = getattr(t, "steal", 0.0)
    busy = sum(t) - t.idle - getattr(t, "iowait", 0.0) - getattr(t, "guest", 0.0) - getattr(t, "guest_nice", 0.0)
    return busy - steal, steal


def _own_cpu_seconds() -> float:
    """CPU seconds of this process and its waited-for children."""
    t = psutil.Process().cpu_times()
    return t.user + t.system + t.children_user + t.children_system


class LoadWindow:
    """``with LoadWindow() as w:``: CPU that other processes used meanwhile, ``w.others_cpu_pct`` (% of one
    core), and the window's length, ``w.seconds``: the interference a measurement saw."""

    def __enter__(self) -> LoadWindow:
        self.t, self.busy, self.own = time.monotonic(), busy_cpu_seconds()[0], _own_cpu_seconds()
        return self

    def __exit__(self, *exc: object) -> None:
        dt = max(time.monotonic() - self.t, 1e-9)
        ours = _own_cpu_seconds() - self.own
        self.seconds = round(dt, 2)
        self.others_cpu_pct = round(max(0.0, 100 * (busy_cpu_seconds()[0] - self.busy - ours) / dt), 1)


def wait_until_quiet(
    *, max_load: float, max_wait_s: float, every_s: float = 30.0, log: Callable[[str], None] = print
) -> dict:
    """Wait (up to ``max_wait_s``) until the 1-minute load average is below ``max_load``.

    Returns what happened, for the results file: ``{"quiet": bool, "waited_s": float, "loadavg": [1, 5, 15 min]}``.
    ``quiet`` is False when the wait ran out and the benchmark went ahead on a busy machine.
    """
    start = time.monotonic()
    while True:
        load = os.getloadavg()
        waited = time.monotonic() - start
        if load[0] < max_load:
            return {"quiet": True, "waited_s": round(waited, 1), "loadavg": [round(x, 2) for x in load]}
        if waited + every_s > max_wait_s:
            log(f"load {load[0]:.2f} still >= {max_load} after {waited:.0f} s: going ahead on a busy machine")
            return {"quiet": False, "waited_s": round(waited, 1), "loadavg": [round(x, 2) for x in load]}
        log(f"load average {load[0]:.2f} >= {max_load}: waiting for a quiet moment ({waited:.0f}/{max_wait_s:.0f} s)")
        time.sleep(every_s)
