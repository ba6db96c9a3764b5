"""How many live feeds does one box keep in real time? dfwatch next to ultralytics' streaming predict.

    make bench-streams                                                   # the full run (see benchmarks/README.md)
    .venv/bin/python benchmarks/streams.py --streams 1,2 --resolutions 480 --seconds 8 --files 2   # a quick look

A real face clip from ../shared/data/real_videos (``--clip``) is transcoded at run time to each of
``--resolutions`` (720 and 480 lines, 25 fps, H.264, a keyframe a second; nothing is written into the
repository). For each resolution and each N (1, 2, 4, 8, 16), one GStreamer RTSP test server
(tests/_rtsp.py) serves N looped copies as live feeds. On the same feeds, one after the other:

- dfwatch: ``python -m pipeline.cli watch cam0=rtsp://... --models models`` with the shipped pack, its
  defaults otherwise; the load adaptation (k, m) and the frames shed are read from its Prometheus
  endpoint during the run;
- ultralytics: ``YOLO(models/face_detector.onnx).predict(source=feeds.streams, stream=True)`` on the same
  detector network at the same size and threshold (benchmarks/_ultralytics_baseline.py). Detector only:
  no classifier, tracker or verdicts, and no capture timestamp, so no latency.

Each run lasts --seconds after every stream has produced a result; the first --warmup seconds are
skipped. Real time = every stream's p95 capture-to-publish below 1 s and its drop rate below 5 %.
Then a file-throughput row: ``--files`` clips of real_videos (files, nothing dropped) through
``dfwatch watch`` and through ultralytics' ``predict(source=folder, stream=True)``: frames per second.
Writes benchmarks/results/streams-<machine>.json and .md and prints the tables.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import psutil

from pipeline.errors import ConfigError
from pipeline.flags import parse_options
from pipeline.ranges import check_ranges, ranged

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "benchmarks"
BASELINE_SCRIPT = BENCH / "_ultralytics_baseline.py"
SYSTEMS = ("dfwatch", "ultralytics")
REAL_TIME_P95_MS = 1000.0
REAL_TIME_DROP = 0.05
DECODE_LAG_LIMIT_S = 0.5  # decoding may fall this far behind the feed over a window and still count as real time
MAX_FACES = 20  # dfwatch's default --max-faces, given to ultralytics as max_det
BUSY_OTHERS_PCT = 25.0  # a run during which other processes took more CPU than this (% of a core) is redone
READY_TIMEOUT_S = 90.0  # spawn -> every stream has a first result (model load, N RTSP connects)
STOP_TIMEOUT_S = 25.0  # SIGTERM -> exit (dfwatch drains for at most 10 s)
RSS_EVERY_S = 0.5
DEFAULT_CLIP = ROOT.parent / "shared" / "data" / "real_videos" / "liveportrait_examples" / "source_s18.mp4"
FILE_CLIPS = ROOT.parent / "shared" / "data" / "real_videos" / "hdtf_sadtalker"  # for the file-throughput row
_METRIC = re.compile(
    r'^dfwatch_(detect_every|classify_every|frames_shed_total)(?:\{stream="([^"]*)"\})? ([0-9.eE+-]+)$', re.MULTILINE
)


@dataclass(frozen=True)
class StreamsBench:
    """What one run measures and where it writes (the flags; ``--config`` a TOML table of the same fields)."""

    streams: tuple[int, ...] = (1, 2, 4, 8, 16)  # numbers of feeds
    resolutions: tuple[int, ...] = (720, 480)  # feed heights in lines
    clip: Path = DEFAULT_CLIP  # real face clip to serve
    models: Path = ROOT / "models"  # model pack
    files: int = ranged(6, 0, 10_000)  # clips in the file-throughput row (0 skips it)
    seconds: float = ranged(20.0, 1, 86_400)  # seconds per run after every stream's first result
    warmup: float = ranged(3.0, 0, 3600)  # first seconds of a run left out
    fps: int = ranged(25, 1, 240)  # frame rate of the feeds
    pix_fmt: str = "yuv420p"  # feeds' pixel format: yuv420p, yuv444p, yuv422p10le
    dfwatch_args: str = ""  # more dfwatch watch flags, e.g. '--detector models/face_detector.onnx'
    systems: tuple[str, ...] = SYSTEMS  # systems to run, of dfwatch, ultralytics
    machine: str | None = None  # name in the result file names (none: the machine's, e.g. xeon-2c-24g)
    out_dir: Path = BENCH / "results"  # where the results go
    retries: int = ranged(1, 0, 100)  # redo a run disturbed by other processes
    max_load: float = ranged(1.0, 0, 1024)  # wait for a 1-min load average below this
    quiet_wait: float = ranged(600.0, 0, 86_400)  # longest wait for it, seconds (0: do not wait)

    def __post_init__(self) -> None:
        check_ranges(self)
        object.__setattr__(self, "streams", tuple(sorted(set(self.streams))))
        bad = [s for s in self.systems if s not in SYSTEMS]
        if bad or not self.systems:
            raise ConfigError(f"systems: unknown {bad}; choose from {', '.join(SYSTEMS)}")
        if not self.streams or min(self.streams) < 1 or not self.resolutions or min(self.resolutions) < 1:
            raise ConfigError(f"streams and resolutions: counts must be >= 1, got {self.streams} {self.resolutions}")
        if self.seconds <= self.warmup + 1:
            raise ConfigError(f"seconds ({self.seconds}) must exceed warmup ({self.warmup}) by more than 1")


def log(msg: str) -> None:
    print(f"{time.strftime('%H:%M:%S')} streams: {msg}", file=sys.stderr, flush=True)


# -- step 1: what every run shares ----------------------------------------------------------------


@dataclass(frozen=True)
class Setup:
    clips: dict[int, Path]  # lines (720, 480) -> the feed clip every mount serves, looped
    clip_frames: int
    source: Path  # the real clip they were transcoded from
    models: Path  # the shipped pack: face_detector.onnx + deepfake_classifier.onnx
    detector_size: int  # from the detector's manifest: also ultralytics' imgsz
    conf: float  # the detector's threshold (manifest): also ultralytics' conf


def transcode(source: Path, out: Path, *, height: int, fps: int, pix_fmt: str = "yuv420p") -> int:
    """``source`` as H.264 at ``height`` lines (width to match, even) and ``fps`` in ``pix_fmt``, a keyframe a
    second; frames."""
    from fractions import Fraction

    import av

    n = 0
    with av.open(str(source)) as src, av.open(str(out), "w") as dst:
        video = src.streams.video[0]
        width = round(video.codec_context.width * height / video.codec_context.height / 2) * 2
        stream = dst.add_stream("libx264", rate=fps, options={"g": str(fps), "crf": "23", "preset": "veryfast"})
        stream.width, stream.height, stream.pix_fmt, stream.time_base = width, height, pix_fmt, Fraction(1, fps)
        for frame in src.decode(video):
            frame = frame.reformat(width=width, height=height, format=pix_fmt)
            frame.pts, frame.time_base = n, Fraction(1, fps)
            dst.mux(stream.encode(frame))
            n += 1
        dst.mux(stream.encode(None))
    return n


def prepare(tmp: Path, opts: StreamsBench) -> Setup:
    """The feed clips (the real clip transcoded per resolution) and the shipped pack's facts."""
    from engines import load_manifest

    if not opts.clip.is_file():
        raise SystemExit(f"streams: no clip {opts.clip} (--clip: a real face clip, e.g. from ../shared/data)")
    clips, frames = {}, 0
    for height in opts.resolutions:
        clips[height] = tmp / f"feed-{height}p.mp4"
        frames = transcode(opts.clip, clips[height], height=height, fps=opts.fps, pix_fmt=opts.pix_fmt)
        log(
            f"feed clip {clips[height].name}: {frames} frames of {opts.clip.name}, {height} lines, {opts.fps} fps, "
            f"{opts.pix_fmt}"
        )
    detector = load_manifest(opts.models / "face_detector.onnx")
    classifier = load_manifest(opts.models / "deepfake_classifier.onnx")
    log(
        f"models {opts.models}: detector {detector.name} at {detector.input_size}, classifier {classifier.name} at "
        f"{classifier.input_size}{' (PLACEHOLDERS)' if detector.placeholder or classifier.placeholder else ''}"
    )
    return Setup(clips, frames, opts.clip, opts.models, detector.input_size, float(detector.thresholds["confidence"]))


class MetricsProbe(threading.Thread):
    """Reads dfwatch's /metrics once a second: detect_every, classify_every, frames shed per stream."""

    def __init__(self, port: int) -> None:
        super().__init__(daemon=True)
        self.url, self.samples, self._stop_event = f"http://127.0.0.1:{port}/metrics", [], threading.Event()

    def run(self) -> None:
        import urllib.request

        while not self._stop_event.wait(1.0):
            try:
                text = urllib.request.urlopen(self.url, timeout=2).read().decode()
            except OSError:
                continue  # not serving yet, or gone
            sample: dict = {"t": time.time(), "shed": {}}
            for name, stream, value in _METRIC.findall(text):
                if name == "frames_shed_total":
                    sample["shed"][stream] = float(value)
                else:
                    sample[name] = int(float(value))
            self.samples.append(sample)

    def stop(self) -> None:
        self._stop_event.set()
        self.join(timeout=5)

    def during(self, window: Window) -> dict:
        """k and m at most, and frames shed per stream, within the window."""
        inside = [s for s in self.samples if window.start <= s["t"] <= window.end]
        if not inside:
            return {"detect_every_max": None, "classify_every_max": None, "shed": {}}
        first, last = inside[0]["shed"], inside[-1]["shed"]
        return {
            "detect_every_max": max(s.get("detect_every", 1) for s in inside),
            "classify_every_max": max(s.get("classify_every", 1) for s in inside),
            "shed": {k: int(v - first.get(k, 0.0)) for k, v in last.items()},
        }


# -- steps 3 and 4: one system on the feeds, measured from outside --------------------------------


@dataclass
class Window:
    """What the process did between ready + warmup and ready + seconds (times are time.time())."""

    start: float
    end: float
    ready_s: float  # spawn -> every stream had a first result
    cpu_pct: float  # the system's processes, % of one core
    rtsp_server_cpu_pct: float  # the feeds' server, same box
    others_cpu_pct: float  # everything else on the box (other users' processes): interference
    steal_pct: float  # CPU the hypervisor gave to other machines (a shared host), % of one core
    peak_rss_mib: float  # whole run, sampled every 0.5 s, children included
    exit_code: int | None
    stop_s: float  # SIGTERM -> exit

    @property
    def seconds(self) -> float:
        return self.end - self.start


def _tree(proc: psutil.Process) -> list[psutil.Process]:
    try:
        return [proc, *proc.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def _cpu_seconds(proc: psutil.Process) -> float:
    """user + system CPU seconds of a process, its waited-for children and its live descendants."""
    total = 0.0
    for i, p in enumerate(_tree(proc)):
        try:
            t = p.cpu_times()
        except psutil.NoSuchProcess:
            continue
        total += t.user + t.system + (t.children_user + t.children_system if i == 0 else 0.0)
    return total


class RssPeak(threading.Thread):
    """Peak resident memory of a process tree, sampled every 0.5 s until stop()."""

    def __init__(self, proc: psutil.Process) -> None:
        super().__init__(daemon=True)
        self.proc, self.peak, self._stop_event = proc, 0, threading.Event()

    def run(self) -> None:
        while not self._stop_event.is_set():
            rss = 0
            for p in _tree(self.proc):
                try:
                    rss += p.memory_info().rss
                except psutil.NoSuchProcess:
                    pass
            self.peak = max(self.peak, rss)
            self._stop_event.wait(RSS_EVERY_S)

    def stop(self) -> int:
        self._stop_event.set()
        self.join(timeout=5)
        return self.peak


class LineTail:
    """Complete lines appended to a file, read on demand (the child writes, we never block it)."""

    def __init__(self, path: Path) -> None:
        self.path, self._pos, self._rest = path, 0, b""

    def read(self) -> list[str]:
        try:
            with open(self.path, "rb") as f:
                f.seek(self._pos)
                data = f.read()
                self._pos = f.tell()
        except FileNotFoundError:  # not written yet
            return []
        *lines, self._rest = (self._rest + data).split(b"\n")
        return [line.decode(errors="replace") for line in lines if line.strip()]


def drive(
    cmd: list[str],
    *,
    env: dict[str, str],
    run_dir: Path,
    names: list[str],
    stream_of: Callable[[str], str | None],
    server: psutil.Process,
    seconds: float,
    warmup: float,
    results: Path | None = None,
) -> tuple[Window, list[str]]:
    """Run ``cmd`` until every stream in ``names`` has a result, then ``seconds`` more; SIGTERM; measure.

    Results are lines of ``results`` (default: its stdout, run_dir/stdout); ``stream_of(line)`` names a
    line's stream. stderr goes to run_dir/stderr. Returns the window and every result line. The process
    is killed on any error.
    """
    from benchmarks._machine import busy_cpu_seconds  # main() put the checkout on sys.path

    stdout_path, stderr_path = run_dir / "stdout", run_dir / "stderr"
    results = results or stdout_path
    spawned = time.time()
    with open(stdout_path, "wb") as out, open(stderr_path, "wb") as err:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=err)
    ps = psutil.Process(proc.pid)
    rss = RssPeak(ps)
    rss.start()
    try:
        tail, lines, seen = LineTail(results), [], set()
        while seen != set(names):  # ready: every stream has produced a result
            if proc.poll() is not None:
                raise RuntimeError(
                    f"exited ({proc.returncode}) before every stream had a result; stderr:\n"
                    f"{stderr_path.read_text(errors='replace')[-3000:]}"
                )
            if time.time() - spawned > READY_TIMEOUT_S:
                raise RuntimeError(f"streams {sorted(set(names) - seen)} gave no result in {READY_TIMEOUT_S:.0f} s")
            new = tail.read()
            lines += new
            seen |= {stream_of(line) for line in new} & set(names)
            time.sleep(0.1)
        ready = time.time()
        time.sleep(max(0.0, ready + warmup - time.time()))
        me = psutil.Process()
        snap0 = (time.time(), _cpu_seconds(ps), _cpu_seconds(server), busy_cpu_seconds(), _cpu_seconds(me))
        time.sleep(max(0.0, ready + seconds - time.time()))
        snap1 = (time.time(), _cpu_seconds(ps), _cpu_seconds(server), busy_cpu_seconds(), _cpu_seconds(me))
        if proc.poll() is not None:
            raise RuntimeError(
                f"exited ({proc.returncode}) during the run; stderr:\n{stderr_path.read_text(errors='replace')[-3000:]}"
            )
        stop_at = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        try:
            code = proc.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            log(f"no exit {STOP_TIMEOUT_S:.0f} s after SIGTERM: killing it")
            proc.kill()
            code = proc.wait(timeout=10)
        stop_s = time.monotonic() - stop_at
        peak = rss.stop()
        lines += tail.read()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
        rss.stop()
    dt = snap1[0] - snap0[0]
    ours, srv, bench = snap1[1] - snap0[1], snap1[2] - snap0[2], snap1[4] - snap0[4]
    busy, steal = (b - a for a, b in zip(snap0[3], snap1[3]))
    window = Window(
        start=snap0[0],
        end=snap1[0],
        ready_s=round(ready - spawned, 2),
        cpu_pct=round(100 * ours / dt, 1),
        rtsp_server_cpu_pct=round(100 * srv / dt, 1),
        others_cpu_pct=round(max(0.0, 100 * (busy - ours - srv - bench) / dt), 1),
        steal_pct=round(100 * steal / dt, 1),
        peak_rss_mib=round(peak / 2**20, 1),
        exit_code=code,
        stop_s=round(stop_s, 2),
    )
    return window, lines


def _nth(n: int) -> str:
    return f"{n}{ {1: 'st', 2: 'nd', 3: 'rd'}.get(n if n < 20 else n % 10, 'th') }"


def _percentiles(values: list[float]) -> dict[str, float | None]:
    from pipeline.summary import percentiles  # main() put the checkout on sys.path

    return {k: None if v is None else round(v, 1) for k, v in percentiles(values).items()}


def dfwatch_command(sources: list[str], models: Path, metrics_port: int, extra: str = "") -> list[str]:
    """`dfwatch watch SOURCES --models MODELS --metrics-port PORT EXTRA` as this interpreter runs it."""
    cmd = [sys.executable, "-m", "pipeline.cli", "watch", *sources, "--models", str(models)]
    return [*cmd, "--metrics-port", str(metrics_port), *shlex.split(extra)]


def run_dfwatch(
    urls: dict[str, str],
    setup: Setup,
    opts: StreamsBench,
    *,
    env: dict[str, str],
    run_dir: Path,
    server: psutil.Process,
) -> dict:
    from tests._rtsp import free_port

    port = free_port()
    cmd = dfwatch_command([f"{name}={url}" for name, url in urls.items()], setup.models, port, opts.dfwatch_args)
    probe = MetricsProbe(port)
    probe.start()
    try:
        window, lines = drive(
            cmd,
            env=env,
            run_dir=run_dir,
            names=list(urls),
            server=server,
            stream_of=lambda line: json.loads(line).get("stream"),
            seconds=opts.seconds,
            warmup=opts.warmup,
        )
    finally:
        probe.stop()
    records = [json.loads(line) for line in lines]
    streams = {}
    for name in urls:
        rows = []
        for r in records:
            if r["stream"] == name:
                c2p = r["latency_ms"]["capture_to_publish"]
                published = r["capture_time"] + c2p / 1000
                if window.start <= published <= window.end:
                    rows.append((r["frame"], r["pts"], r["capture_time"], c2p, len(r["faces"]), r["verdict"]))
        streams[name] = _dfwatch_stream(rows, window)
    load = probe.during(window)
    for name, shed in load.pop("shed").items():
        if name in streams:
            streams[name]["shed"] = shed
    stderr = (run_dir / "stderr").read_text(errors="replace")
    summary = stderr[stderr.rfind("dfwatch summary") :].strip() if "dfwatch summary" in stderr else None
    served = re.search(r"detector (\S+) \(([^,]+),", stderr)
    return {
        "command": shlex.join(cmd),
        "detector_served": f"{_rel(served[1])} ({served[2]})" if served else None,
        "window": asdict(window) | {"seconds": round(window.seconds, 2)},
        "streams": streams,
        **load,
        "service_summary": summary,
    }


def _dfwatch_stream(rows: list[tuple], window: Window) -> dict:
    """One stream's verdicts published in the window: rate, drops, latency, whether decoding kept pace.

    ``rows`` are (frame index, pts, capture time, capture-to-publish ms, faces, verdict) of the verdicts
    published in the window.
    """
    if not rows:
        return {"published": 0, "fps": 0.0, "drop_rate": 1.0, "latency_ms": _percentiles([])}
    frames = [r[0] for r in rows]
    delivered = max(frames) - min(frames) + 1  # frames the stream decoded in the window, published or dropped
    first, last = min(rows, key=lambda r: r[0]), max(rows, key=lambda r: r[0])
    lag = None
    if first[1] is not None and last[1] is not None:
        # wall time minus stream time from the first to the last frame: grows when decoding falls behind the
        # feed (frames wait in the socket); capture_time is stamped after decoding, so capture-to-publish
        # cannot show that lag
        lag = round((last[2] - first[2]) - (last[1] - first[1]), 3)
    return {
        "published": len(rows),
        "fps": round(len(rows) / window.seconds, 2),
        "frames_delivered": delivered,
        "drop_rate": round(1 - len(rows) / delivered, 4),
        "latency_ms": _percentiles([r[3] for r in rows]),
        "decode_lag_growth_s": lag,
        "faces_per_verdict": round(sum(r[4] for r in rows) / len(rows), 2),
        "verdicts_fake": sum(r[5] == "FAKE" for r in rows),  # the feeds are copies of one clip: they should agree
        "last_verdict": max(rows, key=lambda r: r[0])[5],
    }


def run_ultralytics(
    urls: dict[str, str],
    setup: Setup,
    opts: StreamsBench,
    *,
    env: dict[str, str],
    run_dir: Path,
    server: psutil.Process,
) -> dict:
    source = run_dir / "feeds.streams"
    source.write_text("".join(f"{url}\n" for url in urls.values()))
    results = run_dir / "results.txt"  # '<stream> <unix time>' per Result; stdout has ultralytics' chatter
    cmd = [
        sys.executable,
        str(BASELINE_SCRIPT),
        "predict",
        "--model",
        str(setup.models / "face_detector.onnx"),
        "--source",
        str(source),
        "--imgsz",
        str(setup.detector_size),
        "--conf",
        str(setup.conf),
        "--max-det",
        str(MAX_FACES),
        "--out",
        str(results),
    ]
    window, lines = drive(
        cmd,
        env=env,
        run_dir=run_dir,
        names=list(urls),
        server=server,
        results=results,
        stream_of=lambda line: line.split()[0],
        seconds=opts.seconds,
        warmup=opts.warmup,
    )
    times: dict[str, list[float]] = {name: [] for name in urls}
    for line in lines:
        name, t = line.split()
        if name in times and window.start <= float(t) <= window.end:
            times[name].append(float(t))
    streams = {}
    for name, ts in times.items():
        fps = len(ts) / window.seconds
        # LoadStreams keeps only each feed's newest frame: every frame it did not run is a drop
        drop = max(0.0, 1 - fps / opts.fps)
        streams[name] = {
            "published": len(ts),
            "fps": round(fps, 2),
            "drop_rate": round(drop, 4),
            "latency_ms": _percentiles([]),
        }
    stderr = (run_dir / "stderr").read_text(errors="replace") + (run_dir / "stdout").read_text(errors="replace")
    return {
        "command": shlex.join(cmd),
        "window": asdict(window) | {"seconds": round(window.seconds, 2)},
        "streams": streams,
        "torch_threads": int(m.group(1)) if (m := re.search(r"torch_threads=(\d+)", stderr)) else None,
        "waiting_for_stream_warnings": stderr.count("Waiting for stream"),
        "unresponsive_warnings": stderr.count("Video stream unresponsive"),
    }


RUNNERS = {"dfwatch": run_dfwatch, "ultralytics": run_ultralytics}


# -- step 5: real time? ---------------------------------------------------------------------------


def summarise(n: int, system: str, run: dict) -> dict:
    """One table row: the worst stream decides drops and latency, as real time must hold for every stream."""
    streams = list(run["streams"].values())
    rates = [s["fps"] for s in streams]
    drop = max(s["drop_rate"] for s in streams)
    lat = {k: [s["latency_ms"][k] for s in streams] for k in ("p50", "p95", "p99")}
    measured = all(v is not None for v in lat["p95"]) and system == "dfwatch"
    worst = {k: (max(v) if measured else None) for k, v in lat.items()}
    real_time = drop < REAL_TIME_DROP and (system != "dfwatch" or (measured and worst["p95"] < REAL_TIME_P95_MS))
    notes = []
    if system == "dfwatch":
        k, m = run.get("detect_every_max") or 1, run.get("classify_every_max") or 1
        notes.append(
            f"load-adaptive: detector every {_nth(k)} frame, classifier every {_nth(m)} at most, tracker between"
            if k > 1
            else "detector and classifier on every frame"
        )
        fake = [s.get("verdicts_fake", 0) for s in streams]
        if any(fake) and not all(fake):  # copies of one clip: load may thin the work but must not flip a verdict
            notes.append(f"identical feeds disagree: FAKE in {sum(map(bool, fake))} of {len(fake)}")
        shed = sum(st.get("shed", 0) for st in streams)
        if shed:
            notes.append(f"{shed} late frames shed")
        lags = [s["decode_lag_growth_s"] for s in streams if s.get("decode_lag_growth_s") is not None]
        if lags and max(lags) > DECODE_LAG_LIMIT_S:
            notes.append(f"decoding fell {max(lags):.1f} s behind the feed")
            real_time = False  # a lag that capture-to-publish cannot see (capture = decoded)
    else:
        notes.append("detector only; latency not observable")
    if run["window"]["others_cpu_pct"] > BUSY_OTHERS_PCT:
        notes.append(f"box busy: other processes took {run['window']['others_cpu_pct']:.0f}% CPU")
    return {
        "n": n,
        "system": system,
        "fps_per_stream_mean": round(sum(rates) / len(rates), 2),
        "fps_per_stream_min": round(min(rates), 2),
        "drop_rate_worst": round(drop, 4),
        "latency_ms_worst_stream": worst,
        "cpu_pct": run["window"]["cpu_pct"],
        "peak_rss_mib": run["window"]["peak_rss_mib"],
        "real_time": real_time,
        "feeds_agree": None if system != "dfwatch" else len({bool(s.get("verdicts_fake")) for s in streams}) == 1,
        "notes": "; ".join(notes),
    }


def largest_real_time(rows: list[dict], system: str) -> int | None:
    ok = [r["n"] for r in rows if r["system"] == system and r.get("real_time")]
    return max(ok) if ok else None


# -- step 6: results --------------------------------------------------------------------------------


def markdown_table(rows: list[dict]) -> str:
    head = (
        "| feed | N | system | fps/stream | drop % | p50 / p95 / p99 ms | CPU % | RSS MiB | RSS MiB per feed "
        "| real time | notes |"
    )
    lines = [head, "|--:|--:|---|--:|--:|--:|--:|--:|--:|:-:|---|"]
    for r in rows:
        feed = f"{r.get('lines', '?')}p"
        if "error" in r:
            lines.append(f"| {feed} | {r['n']} | {r['system']} | - | - | - | - | - | - | failed | {r['error'][:120]} |")
            continue
        fps = f"{r['fps_per_stream_mean']:.1f}"
        if r["n"] > 1:
            fps += f" (min {r['fps_per_stream_min']:.1f})"
        lat = r["latency_ms_worst_stream"]
        lat_s = " / ".join(f"{lat[k]:.0f}" for k in ("p50", "p95", "p99")) if lat["p95"] is not None else "n/a"
        lines.append(
            f"| {feed} | {r['n']} | {r['system']} | {fps} | {100 * r['drop_rate_worst']:.1f} | {lat_s} | "
            f"{r['cpu_pct']:.0f} | {r['peak_rss_mib']:.0f} | {r['peak_rss_mib'] / r['n']:.0f} | "
            f"{'yes' if r['real_time'] else 'no'} | {r['notes']} |"
        )
    return "\n".join(lines)


def files_table(rows: list[dict]) -> str:
    """The file-throughput row: frames per second over a folder of clips."""
    if not rows:
        return "File throughput: not measured (--files 0)."
    lines = [
        "File throughput (a folder of real clips, nothing dropped):",
        "",
        "| system | clips | frames | seconds | frames/s |",
        "|---|--:|--:|--:|--:|",
    ]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['system']} | {r['clips']} | - | - | failed |")
        else:
            lines.append(f"| {r['system']} | {r['clips']} | {r['frames']} | {r['seconds']:.1f} | {r['fps']:.1f} |")
    return "\n".join(lines)


def markdown_report(result: dict) -> str:
    m, s = result["machine"], result["settings"]
    v = m["versions"]
    lines = [
        f"# streams: live feeds kept in real time on `{m['slug']}`",
        "",
        f"{m['cpu_model']}, {m['cores_logical']} cores, {m['ram_gib']} GiB RAM, GPU: {', '.join(m['gpus']) or 'none'}; "
        f"Python {m['python']}, torch {v['torch']}, onnxruntime {v['onnxruntime']}, ultralytics {v['ultralytics']}, "
        f"av {v['av']}; {m['date_utc']}; load average before the run {result['quiet']['loadavg']}.",
        "",
        f"Command: `{result['command']}`",
        "",
        f"Feeds: N looped copies of a real face clip ({s['clip']}) served live over RTSP (TCP) by the GStreamer "
        f"test server on the same box. Each run: {s['seconds']:.0f} s after every stream's first result, the first "
        f"{s['warmup']:.0f} s skipped. Models: {s['models']} (detector at {s['detector_size']}, threshold "
        f"{s['detector_conf']}), `dfwatch watch` defaults{_served(result)}. The ultralytics baseline is "
        "`YOLO(face_detector.onnx).predict(source=feeds.streams, stream=True)` on the same network at the same size "
        "and threshold: detector only (no classifier, tracker or verdicts) and no latency (it keeps no capture time).",
        "",
        markdown_table(result["rows"]),
        "",
        files_table(result.get("files", [])),
        "",
        "fps/stream: results per stream per second (mean; min over streams). drop %: worst stream; dfwatch "
        "1 - published / frames decoded in the window, ultralytics 1 - fps / feed fps (it keeps only each feed's "
        "newest frame). p50/p95/p99: capture-to-publish of the worst stream (capture = frame decoded). CPU %: "
        "the system's processes, 100 = one core. RSS: peak of the process tree, sampled every 0.5 s; per feed: "
        "that / N. Real time: every stream's p95 "
        f"< {REAL_TIME_P95_MS:.0f} ms and drop < {100 * REAL_TIME_DROP:.0f} % (ultralytics: drop only); for dfwatch "
        f"also decoding that keeps pace with the feed (at most {DECODE_LAG_LIMIT_S} s behind over the window), "
        "since capture-to-publish starts only once a frame is decoded.",
        "",
        "Largest N in real time: "
        + ", ".join(f"{k} {v if v is not None else 'none'}" for k, v in result["largest_real_time_n"].items())
        + ".",
    ]
    return "\n".join(lines) + "\n"


def _served(result: dict) -> str:
    served = next((r["detector_served"] for r in result["runs"] if r.get("detector_served")), None)
    extra = f", plus `{result['settings']['dfwatch_args']}`" if result["settings"].get("dfwatch_args") else ""
    return f"{extra} (dfwatch's detector: {served})" if served else extra


def parse_args(argv: list[str] | None) -> StreamsBench:
    return parse_options(StreamsBench, argv, description=__doc__)


def _run_quietly(
    system: str,
    urls: dict[str, str],
    setup: Setup,
    opts: StreamsBench,
    env: dict[str, str],
    run_dir: Path,
    server_pid: int,
) -> dict:
    """One run; again (up to --retries times) while other processes took more than BUSY_OTHERS_PCT of a core."""
    disturbed = []
    for attempt in range(opts.retries + 1):
        attempt_dir = run_dir / str(attempt)
        attempt_dir.mkdir(parents=True)
        run = RUNNERS[system](urls, setup, opts, env=env, run_dir=attempt_dir, server=psutil.Process(server_pid))
        others = run["window"]["others_cpu_pct"]
        if others <= BUSY_OTHERS_PCT:
            break
        log(
            f"other processes used {others:.0f}% CPU during the run"
            + (": running it again" if attempt < opts.retries else ": keeping it, marked busy")
        )
        disturbed.append(run)
        time.sleep(5.0)
    return run | {"disturbed_attempts": [d for d in disturbed if d is not run]}


def measure(opts: StreamsBench, setup: Setup, env: dict[str, str], tmp: Path) -> tuple[list[dict], list[dict]]:
    """Steps 2-5 for every N: serve N feeds, run each system on them in turn; (table rows, full runs)."""
    from tests._rtsp import rtsp_server_process

    rows, runs = [], []
    for height, clip in setup.clips.items():
        for n in opts.streams:
            mounts = {f"cam{i}": clip for i in range(n)}
            with rtsp_server_process(mounts, loop=True, timeout=30) as server:  # always stopped, even on errors
                urls = {name: f"{server.url}/{name}" for name in mounts}
                for system in opts.systems:
                    run_dir = tmp / f"{height}p-n{n}-{system}"
                    what = f"{height}p N={n} {system}"
                    log(f"{what}: {opts.seconds:.0f} s on {n} live feed(s) at {opts.fps} fps ...")
                    try:
                        run = _run_quietly(system, urls, setup, opts, env, run_dir, server.proc.pid)
                    except (RuntimeError, OSError, subprocess.SubprocessError, psutil.Error) as exc:
                        log(f"{what}: FAILED: {exc}")
                        rows.append({"lines": height, "n": n, "system": system, "error": str(exc).splitlines()[0]})
                        runs.append({"lines": height, "n": n, "system": system, "error": str(exc)})
                        continue
                    row = {"lines": height, **summarise(n, system, run)}
                    rows.append(row)
                    runs.append({"lines": height, "n": n, "system": system, **run})
                    p95 = row["latency_ms_worst_stream"]["p95"]
                    drop, real = 100 * row["drop_rate_worst"], "yes" if row["real_time"] else "no"
                    log(
                        f"{what}: {row['fps_per_stream_mean']:.1f} fps/stream, drop {drop:.1f}%, p95 "
                        f"{'n/a' if p95 is None else f'{p95:.0f} ms'}, CPU {row['cpu_pct']:.0f}%, "
                        f"RSS {row['peak_rss_mib']:.0f} MiB, real time: {real}"
                    )
                    time.sleep(1.0)  # let the previous system's sockets and threads go before the next one starts
    return rows, runs


def measure_files(opts: StreamsBench, setup: Setup, env: dict[str, str], tmp: Path) -> list[dict]:
    """Frames per second over a folder of ``--files`` real clips: dfwatch watch (files: nothing dropped) and
    ultralytics' predict(source=folder, stream=True). From the first result to the last, so loading is left out."""
    from benchmarks._machine import LoadWindow  # main() put the checkout on sys.path

    clips = sorted(FILE_CLIPS.glob("*.mp4"))[: opts.files]
    if not clips:
        log(f"file throughput skipped: no clips in {FILE_CLIPS}")
        return []
    folder = tmp / "files"
    folder.mkdir()
    for clip in clips:
        (folder / clip.name).symlink_to(clip)  # read in place, never copied
    out = []
    for system in opts.systems:
        results = tmp / f"files-{system}.txt"
        if system == "dfwatch":
            cmd = dfwatch_command([str(c) for c in sorted(folder.iterdir())], setup.models, 0, opts.dfwatch_args)
        else:
            cmd = [
                sys.executable,
                str(BASELINE_SCRIPT),
                "predict",
                "--model",
                str(setup.models / "face_detector.onnx"),
                "--source",
                str(folder),
                "--imgsz",
                str(setup.detector_size),
                "--conf",
                str(setup.conf),
                "--max-det",
                str(MAX_FACES),
                "--out",
                str(results),
            ]
        log(f"files {system}: {len(clips)} clips ...")
        with LoadWindow() as window, open(results if system == "dfwatch" else os.devnull, "w") as stdout:
            proc = subprocess.run(
                cmd, cwd=ROOT, env=env, stdout=stdout, stderr=subprocess.PIPE, text=True, timeout=1800
            )
        if proc.returncode != 0:
            log(f"files {system}: FAILED ({proc.returncode}): {proc.stderr[-500:]}")
            out.append({"system": system, "clips": len(clips), "error": proc.stderr[-500:]})
            continue
        lines = results.read_text().splitlines()
        if system == "dfwatch":
            times = [
                json.loads(line)["capture_time"] + json.loads(line)["latency_ms"]["capture_to_publish"] / 1000
                for line in lines
            ]
        else:
            times = [float(line.split()[1]) for line in lines]
        span = max(times) - min(times) if len(times) > 1 else 0.0
        fps = (len(times) - 1) / span if span > 0 else 0.0
        out.append(
            {
                "system": system,
                "clips": len(clips),
                "frames": len(times),
                "seconds": round(span, 2),
                "fps": round(fps, 1),
                "others_cpu_pct": window.others_cpu_pct,
            }
        )
        log(f"files {system}: {len(times)} frames in {span:.1f} s: {fps:.1f} frames/s")
    return out


def result_document(opts: StreamsBench, setup: Setup, rows: list[dict], runs: list[dict], **facts) -> dict:
    """Everything the JSON results file holds: ``facts`` are command, machine, quiet, elapsed_s."""
    return {
        "benchmark": "streams",
        "command": facts["command"],
        "cwd": str(ROOT),
        "machine": facts["machine"],
        "quiet": facts["quiet"] | {"max_load": opts.max_load},
        "loadavg_at_end": [round(x, 2) for x in os.getloadavg()],
        "elapsed_s": facts["elapsed_s"],
        "settings": {
            "streams": opts.streams,
            "seconds": opts.seconds,
            "warmup": opts.warmup,
            "fps": opts.fps,
            "pix_fmt": opts.pix_fmt,
            "dfwatch_args": opts.dfwatch_args,
            "resolutions": opts.resolutions,
            "models": str(setup.models),
            "detector_size": setup.detector_size,
            "detector_conf": setup.conf,
            "systems": opts.systems,
            "clip": f"{setup.source} transcoded at run time to each resolution: {setup.clip_frames} frames, "
            f"{opts.fps} fps, H.264 {opts.pix_fmt}, a keyframe a second, looped",
            "real_time": {
                "p95_capture_to_publish_ms_below": REAL_TIME_P95_MS,
                "drop_rate_below": REAL_TIME_DROP,
                "dfwatch_decode_lag_growth_s_at_most": DECODE_LAG_LIMIT_S,
            },
        },
        "systems": {
            "dfwatch": "python -m pipeline.cli watch camI=URL... --models MODELS --metrics-port PORT: the shipped "
            "pack, defaults otherwise; k, m and frames shed read from /metrics once a second",
            "ultralytics": "YOLO(MODELS/face_detector.onnx).predict(source=feeds.streams, stream=True, imgsz=S, "
            f"conf=the manifest's, max_det={MAX_FACES}, device='cpu', verbose=False): the same detector network "
            "through ultralytics' own pipeline (its ONNX Runtime backend); detector only, no classifier, tracker "
            "or verdicts; no capture time, so no latency",
        },
        "baseline_adjustments": [
            "OPENCV_FFMPEG_CAPTURE_OPTIONS=rtsp_transport;tcp: the transport dfwatch uses by default",
            "cv2.VideoCapture reports CAP_PROP_FRAME_COUNT 0 for the feeds: the test server announces each looped "
            "mount with the clip's range (a=range:npt=0-4), OpenCV turns that into 100 frames, and LoadStreams "
            "stops reading after 99 of them (predict ended after 4 s); a live camera announces an open range",
        ],
        "rows": rows,
        "largest_real_time_n": {
            f"{h}p {s}": largest_real_time([r for r in rows if r.get("lines") == h], s)
            for h in opts.resolutions
            for s in opts.systems
        },
        "files": facts.get("files", []),
        "runs": runs,
    }


def _rel(path: str) -> str:
    p = Path(path).absolute()
    return str(p.relative_to(ROOT)) if p.is_relative_to(ROOT) else path


def _interrupt(signum: int, _frame: object) -> None:
    raise KeyboardInterrupt(signal.Signals(signum).name)  # unwinds through every finally: children stopped


def main(argv: list[str] | None = None) -> int:
    if str(ROOT) not in sys.path:  # run as a script: import dfwatch and the test RTSP server from the checkout
        sys.path.insert(0, str(ROOT))  # (before benchmarks/engines.py, which would shadow the engines package)
    opts = parse_args(argv)
    signal.signal(signal.SIGTERM, _interrupt)
    command = shlex.join([_rel(sys.executable), _rel(sys.argv[0]), *(sys.argv[1:] if argv is None else argv)])
    from benchmarks._machine import machine_facts, wait_until_quiet
    from tests._rtsp import gst_rtsp_available

    why_not = gst_rtsp_available()
    if why_not:
        log(f"cannot serve RTSP feeds: {why_not}")
        return 1
    if opts.quiet_wait > 0:
        quiet = wait_until_quiet(max_load=opts.max_load, max_wait_s=opts.quiet_wait, log=log)
    else:
        quiet = {"quiet": None, "waited_s": 0.0, "loadavg": [round(x, 2) for x in os.getloadavg()]}
    machine = machine_facts()
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="dfwatch-bench-streams-") as tmp_name:
        tmp = Path(tmp_name)
        env = os.environ | {"YOLO_OFFLINE": "1", "YOLO_CONFIG_DIR": str(tmp / "ultralytics")}
        setup = prepare(tmp, opts)
        rows, runs = measure(opts, setup, env, tmp)
        files = measure_files(opts, setup, env, tmp) if opts.files else []
    elapsed = round(time.monotonic() - started, 1)
    result = result_document(
        opts, setup, rows, runs, command=command, machine=machine, quiet=quiet, elapsed_s=elapsed, files=files
    )
    opts.out_dir.mkdir(parents=True, exist_ok=True)
    stem = f"streams-{opts.machine or machine['slug']}"
    json_path, md_path = opts.out_dir / f"{stem}.json", opts.out_dir / f"{stem}.md"
    json_path.write_text(json.dumps(result, indent=1) + "\n")
    md_path.write_text(markdown_report(result))
    print(markdown_table(rows))
    print("largest N in real time: " + ", ".join(f"{k} {v}" for k, v in result["largest_real_time_n"].items()))
    log(f"wrote {json_path} and {md_path} in {elapsed:.0f} s")
    return 1 if any("error" in r for r in rows) else 0


if __name__ == "__main__":
    try:
        raise SystemExit(main())
    except KeyboardInterrupt as exc:
        log(f"interrupted ({exc or 'SIGINT'}): feeds and systems stopped, no results written")
        raise SystemExit(130) from None
