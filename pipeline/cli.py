"""dfwatch: watch video streams for deepfaked faces; verdicts as JSON lines, Redis, Prometheus."""

from __future__ import annotations

import argparse
import dataclasses
import io
import logging
import os
import signal
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from engines.urls import printable, redacting_handler
from pipeline.annotate import AnnotateConfig
from pipeline.config import FAST_DETECTOR, SECTIONS, ModelsConfig, SinksConfig, WatchConfig, load_config
from pipeline.errors import ConfigError
from pipeline.flags import add_config_flags, add_section_flags, config_flag, config_from_args
from pipeline.lograte import StreamLogLimit
from pipeline.policy import Origin
from pipeline.ranges import bounded, ranged
from pipeline.shard import Shard
from pipeline.sources import RTSP_TRANSPORTS, SourceKind, SourceSpec
from pipeline.status import StatusOptions

if TYPE_CHECKING:
    from engines import Classifier, Detector
    from pipeline.verdict import VerdictConfig

logger = logging.getLogger("dfwatch")

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
EXIT_NO_FACE = 3  # dfwatch report: the clip ran, but no face was found in it, so nothing was drawn


class _Parser(argparse.ArgumentParser):
    """argparse that reports a usage error as one line (no usage dump) and exits 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def number_flag(group: Any, flag: str, dest: str) -> None:
    """A flag that overrides config field ``dest`` ("section.name"): type, range, default and help are the field's."""
    section, name = dest.split(".")
    config_flag(group, flag, SECTIONS[section], name, dest)


def add_models_args(parser: argparse.ArgumentParser) -> None:
    """The model flags that watch and report share (override [models])."""
    g = parser.add_argument_group("models (override [models])")
    for flag, name in (("--models", "dir"), ("--detector", "detector"), ("--classifier", "classifier")):
        config_flag(g, flag, ModelsConfig, name, f"models.{name}")
    number_flag(g, "--threads", "models.threads")
    number_flag(g, "--det-conf", "models.det_conf")
    number_flag(g, "--max-faces", "models.max_faces")


def add_schedule_args(parser: argparse.ArgumentParser) -> None:
    """The schedule flags (override [schedule])."""
    g = parser.add_argument_group("schedule (override [schedule])")
    for name in ("detect_every", "max_detect_every", "classify_every", "max_classify_every", "latency_budget"):
        number_flag(g, "--" + name.replace("_", "-"), f"schedule.{name}")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="dfwatch", description=__doc__)
    debug = argparse.ArgumentParser(add_help=False)  # also after the command (the top-level one stays False)
    debug.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help="debug logging and tracebacks")
    parser.add_argument("--debug", action="store_true", help="debug logging and full tracebacks")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    w = sub.add_parser(
        "watch", parents=[debug], help="watch files or live streams; with no SOURCE, a generated demo clip"
    )
    w.add_argument(
        "sources",
        nargs="*",
        metavar="SOURCE",
        help="video file, rtsp://, rtsps://, http(s):// or HLS URL; NAME=URL names the stream",
    )
    w.add_argument(
        "--config", type=Path, help="TOML file with streams, models, runner, schedule, verdict, sinks, metrics"
    )
    add_models_args(w)
    g = w.add_argument_group("batches (override [runner])")
    number_flag(g, "--max-batch", "runner.max_batch")
    number_flag(g, "--max-wait-ms", "runner.max_wait_ms")
    add_schedule_args(w)
    g = w.add_argument_group("sources (override every stream)")
    config_flag(g, "--rtsp-transport", SourceSpec, "rtsp_transport", "rtsp_transport", choices=RTSP_TRANSPORTS)
    for name in ("open_timeout", "read_timeout", "decoder_threads", "reconnect", "loop", "pace"):
        config_flag(g, "--" + name.replace("_", "-"), SourceSpec, name, name)
    g.add_argument(
        "--allow-dir",
        type=Path,
        action="append",
        dest="sources.allow_dirs",
        metavar="DIR",
        help="local files may come only from these folders, and then from the control hash too (repeat for more; "
        "overrides [sources] allow_dirs; default: files only from the command line and config)",
    )
    number_flag(g, "--max-streams", "sources.max_streams")
    g.add_argument(
        "--demo-seconds",
        type=bounded(0, 3600, open_lo=True, unit="seconds"),
        default=4.0,
        help="with no SOURCE: seconds of real, then of manipulated face in the demo clip (default 4)",
    )
    g = w.add_argument_group("outputs (override [sinks] and [metrics])")
    config_flag(g, "--redis", SinksConfig, "redis", "sinks.redis", metavar="URL")
    g.add_argument(
        "--control",
        action="store_true",
        help="add and remove streams at run time through the Redis hash dfwatch:control:streams",
    )
    config_flag(g, "--metrics-host", SECTIONS["metrics"], "host", "metrics.host")
    number_flag(g, "--metrics-port", "metrics.port")
    config_flag(g, "--annotate", AnnotateConfig, "dir", "annotate.dir", metavar="DIR")
    number_flag(g, "--annotate-max-mb", "annotate.max_mb")
    g = w.add_argument_group("cluster (overrides the top-level shard key)")
    g.add_argument(
        "--shard",
        type=_shard_arg,
        metavar="I/N",
        help="worker I of N (0-based): keep only the streams (config, command line and --control hash) that "
        "rendezvous hashing of their names gives this worker; adding a worker moves about 1/N of them",
    )
    add_section_flags(w, SECTIONS, title="the config file's section: every field is a flag")
    w.set_defaults(func=cmd_watch)

    d = sub.add_parser(
        "demo", parents=[debug], help="write the demo clip (real face, then a manipulated one) to a file"
    )
    d.add_argument("out", type=Path, help="output .mp4")
    d.add_argument(
        "--seconds",
        type=bounded(0, 3600, open_lo=True, unit="seconds"),
        default=4.0,
        help="seconds of each part (default 4)",
    )
    d.set_defaults(func=cmd_demo)

    s = sub.add_parser("status", parents=[debug], help="a live table of every stream published to Redis, worst first")
    add_config_flags(s, StatusOptions, metavars={"redis": "URL", "match": "GLOB", "interval": "S", "stale": "S"})
    s.set_defaults(func=cmd_status)

    h = sub.add_parser(
        "health", parents=[debug], help="exit 0 while a running dfwatch watch's stage loop turns (a liveness probe)"
    )
    add_config_flags(h, HealthOptions, metavars={"url": "URL", "max_age": "S"})
    h.set_defaults(func=cmd_health)

    r = sub.add_parser(
        "report",
        parents=[debug],
        help="run a clip through the pipeline and chart its faces' fake scores and verdict",
        epilog="exit codes: 0 report written; 3 no face found in the clip (nothing drawn); 1 error; 2 usage",
    )
    r.add_argument("clip", type=Path, help="video file")
    r.add_argument("--out", type=Path, help="report.png or report.html (default: CLIP's name + .report.png)")
    r.add_argument("--verdicts", type=Path, metavar="FILE", help="also write the verdict JSON lines to FILE")
    r.add_argument("--config", type=Path, help="TOML file; its [models], [runner], [schedule] and [verdict] apply")
    add_models_args(r)
    report_sections = {s: SECTIONS[s] for s in ("models", "runner", "schedule", "tracker", "verdict")}
    add_section_flags(r, report_sections, title="the config file's section: every field is a flag")
    r.set_defaults(func=cmd_report)

    c = sub.add_parser(
        "calibrate",
        parents=[debug],
        help="set the verdict thresholds in the classifier's manifest from recorded verdict lines",
        description="Replays verdict JSON lines that `dfwatch watch` printed (every stream of a --real file is real "
        "footage, of a --fake file a manipulated one) with candidate thresholds: FAKE is entered only above what "
        "every real stream reaches, plus --margin; the frames-in-a-row choice that catches the most fakes wins.",
    )
    c.add_argument("--real", type=Path, nargs="+", required=True, metavar="FILE", help="verdict lines of real footage")
    c.add_argument("--fake", type=Path, nargs="*", default=[], metavar="FILE", help="verdict lines of fakes")
    c.add_argument(
        "--classifier",
        type=Path,
        default=Path("models/deepfake_classifier.onnx"),
        help="classifier artifact whose manifest gets the thresholds (default: the bundled)",
    )
    c.add_argument("--margin", type=bounded(0, 1), default=0.05, help="added above the reals' highest quiet threshold")
    c.add_argument("--dry-run", action="store_true", help="print the thresholds, leave the manifest alone")
    c.set_defaults(func=cmd_calibrate)
    return parser


def cmd_demo(args: argparse.Namespace) -> int:
    from pipeline.demo import make_demo_clip

    clip = make_demo_clip(args.out, real_seconds=args.seconds, fake_seconds=args.seconds)
    print(
        f"{clip.path}: {clip.n_frames} frames at {clip.fps} fps, manipulated from frame {clip.fake_start}",
        file=sys.stderr,
    )
    return EXIT_OK


def _shard_arg(text: str) -> Shard:
    try:
        return Shard.parse(text)
    except ConfigError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def keep_own_streams(cfg: WatchConfig) -> WatchConfig:
    """With ``cfg.shard``, only the streams rendezvous hashing gives this worker (logged); else ``cfg``."""
    if cfg.shard is None:
        return cfg
    owned = tuple(s for s in cfg.streams if cfg.shard.owns(s.stream_id))
    names = ", ".join(s.stream_id for s in owned[:10]) + (", ..." if len(owned) > 10 else "")
    logger.info(
        "shard %s: this worker owns %d of %d configured streams%s",
        cfg.shard,
        len(owned),
        len(cfg.streams),
        f" ({names})" if owned else "",
    )
    return dataclasses.replace(cfg, streams=owned)


def apply_flags(cfg: WatchConfig, args: argparse.Namespace) -> WatchConfig:
    """``cfg`` with every section flag that was given on top (``--det-conf X`` sets models.det_conf)."""
    sections: dict[str, dict] = {}
    for key, value in vars(args).items():
        if "." in key and value is not None:
            section, name = key.split(".")
            sections.setdefault(section, {})[name] = value
    try:
        return dataclasses.replace(cfg, **{s: dataclasses.replace(getattr(cfg, s), **v) for s, v in sections.items()})
    except ValueError as exc:
        raise ConfigError(str(exc)) from exc


def resolve_config(args: argparse.Namespace) -> WatchConfig:
    """The config file (or defaults), then every CLI flag that was given on top."""
    cfg = apply_flags(load_config(args.config) if args.config else WatchConfig(), args)
    try:
        every = {
            "rtsp_transport": args.rtsp_transport,
            "open_timeout": args.open_timeout,
            "read_timeout": args.read_timeout,
            "reconnect": args.reconnect,
            "decoder_threads": args.decoder_threads,
        }
        files = {"loop": args.loop, "pace": args.pace}
        streams = []
        for spec in [*cfg.streams, *(SourceSpec.parse(s) for s in args.sources)]:
            flags = every | (files if spec.kind is SourceKind.FILE else {})
            streams.append(dataclasses.replace(spec, **{k: v for k, v in flags.items() if v is not None}))
    except ValueError as exc:
        raise ConfigError(str(exc)) from exc
    shard = getattr(args, "shard", None)
    return dataclasses.replace(cfg, streams=tuple(streams), shard=shard or cfg.shard)


def open_detector(m: ModelsConfig) -> Detector:
    """``m.detector``; by default the fastest accepted artifact in ``m.dir``: FAST_DETECTOR (OpenVINO INT8) when it
    is there and opens, else ONNX Runtime fp32 (face_detector.onnx); falling back says once why."""
    from engines import Detector
    from engines.errors import EngineError

    options = {"threads": m.threads, "conf": m.det_conf, "max_det": m.max_faces}
    fast = m.dir / FAST_DETECTOR
    if m.detector is None and fast.is_file():
        try:
            return Detector(fast, **options)
        except EngineError as exc:
            logger.warning("detector: %s; serving %s instead", exc, m.detector_path)
    return Detector(m.detector_path, **options)


def load_models(m: ModelsConfig) -> tuple[Detector, Classifier]:
    """The detector and classifier of ``m``'s artifacts; a placeholder among them is logged."""
    from engines import Classifier

    detector = open_detector(m)
    classifier = Classifier(m.classifier_path, threads=m.threads)
    placeholder = detector.manifest.placeholder or classifier.manifest.placeholder
    if placeholder:
        logger.warning(
            "PLACEHOLDER models (untrained networks): the pipeline runs end to end, "
            "but faces and verdicts are noise until trained models are in %s",
            m.dir,
        )
    logger.info(
        "detector %s (%s, input %d), classifier %s (%s, input %d)",
        detector.artifact.path,
        detector.backend_name,
        detector.input_size,
        classifier.artifact.path,
        classifier.backend_name,
        classifier.input_size,
    )
    return detector, classifier


def resolve_verdict(verdict: VerdictConfig, classifier: Classifier) -> VerdictConfig:
    """``verdict`` with its unset thresholds from the classifier's calibration (manifest), logged once."""
    calibrated = classifier.manifest.thresholds
    resolved = verdict.resolved(calibrated)
    logger.info(
        "verdict: FAKE at %.3f for %d frames in a row, back to REAL at %.3f (from %s)",
        resolved.enter_fake,
        resolved.confirm_frames,
        resolved.leave_fake,
        verdict.source(calibrated),
    )
    if classifier.min_face:
        logger.info(
            "classifier: faces lower than %d px are tracked but not scored (its manifest's min_face)",
            classifier.min_face,
        )
    return resolved


def cmd_watch(args: argparse.Namespace) -> int:
    from pipeline.metrics import PrometheusObserver
    from pipeline.processor import BatchProcessor
    from pipeline.redis_conn import RedisTarget
    from pipeline.runner import Runner
    from pipeline.sinks import RedisSink

    cfg = resolve_config(args)
    policy = cfg.sources
    # Every stream of the command line and the config file passes the source policy before anything starts.
    cfg = dataclasses.replace(cfg, streams=tuple(policy.admit(s, origin=Origin.OPERATOR) for s in cfg.streams))
    sharded = cfg.shard is not None
    cfg = keep_own_streams(cfg)
    if sharded and not cfg.streams and not args.control:
        logger.warning("shard %s owns none of the configured streams and --control is off: nothing to watch", cfg.shard)
        return EXIT_OK
    with tempfile.TemporaryDirectory(prefix="dfwatch-demo-") as tmp:
        if not cfg.streams and not args.control:
            from pipeline.demo import make_demo_clip

            clip = make_demo_clip(
                Path(tmp) / "demo.mp4", real_seconds=args.demo_seconds, fake_seconds=args.demo_seconds
            )
            logger.info(
                "no SOURCE given: watching the generated demo clip %s (%d frames; face manipulated from "
                "frame %d, %.1f s)",
                clip.path,
                clip.n_frames,
                clip.fake_start,
                clip.fake_start / clip.fps,
            )
            cfg = dataclasses.replace(
                cfg, streams=(dataclasses.replace(SourceSpec.parse(f"demo={clip.path}"), pace=bool(args.pace)),)
            )
        frame_sinks = []
        if cfg.annotate.dir is not None:
            from pipeline.annotate import Annotator

            frame_sinks.append(Annotator(cfg.annotate))  # an unwritable directory fails here, before any work
        observer = PrometheusObserver()
        detector, classifier = load_models(cfg.models)
        processor = BatchProcessor(
            detector,
            classifier,
            observer,
            schedule=cfg.schedule,
            verdict=resolve_verdict(cfg.verdict, classifier),
            tracker=cfg.tracker,
        )
        sinks: list = [_stdout_sink()]
        password = os.environ.get("DFWATCH_REDIS_PASSWORD")  # never on the command line, where ps shows it
        redis_sink = None
        if cfg.sinks.redis:
            redis_sink = RedisSink(
                cfg.sinks.redis,
                maxlen=cfg.sinks.redis_maxlen,
                password=password,
                ttl=cfg.sinks.redis_ttl,
                on_error=lambda kind: observer.sink_errors("redis", 1),
            )
            sinks.append(redis_sink)
        elif args.control:
            raise ConfigError("--control needs a Redis URL (--redis or [sinks] redis)")
        if cfg.metrics.port:
            try:
                observer.serve(cfg.metrics.host, cfg.metrics.port)
            except OSError as exc:
                raise RuntimeError(
                    f"cannot serve metrics on {cfg.metrics.host}:{cfg.metrics.port} ({exc}); "
                    "pass --metrics-port N, or 0 to disable"
                ) from exc
        runner = Runner(
            cfg.streams,
            processor,
            sinks,
            observer,
            config=cfg.runner,
            until_stopped=args.control,
            frame_sinks=frame_sinks,
            policy=policy,
        )
        if args.control:
            from pipeline.control import RedisControl

            client = RedisTarget(cfg.sinks.redis, password=password).connect()
            control = RedisControl(client, runner, owns=cfg.shard.owns if cfg.shard else None, policy=policy)
            runner.beside("redis-control", control.run)

        def _stop(signum: int, _frame: object) -> None:
            if runner.stop.is_set():
                logger.warning("%s again: dropping queued frames and exiting now", signal.Signals(signum).name)
                runner.abort.set()
                return
            logger.info(
                "%s: stopping sources, draining queues (at most %.0f s), flushing sinks",
                signal.Signals(signum).name,
                cfg.runner.drain_seconds,
            )
            runner.stop.set()

        previous = {s: signal.signal(s, _stop) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            stats = runner.run()
        finally:
            for s, handler in previous.items():
                signal.signal(s, handler)
            observer.close()
    print(stats.format(placeholder_models=processor.placeholder_models), file=sys.stderr)
    if runner.stop.is_set():
        return EXIT_OK  # stopped on request: what failed was logged, and the operator asked to stop
    return EXIT_FAILED if stats.failed else EXIT_OK


def _stdout_sink():
    """Verdict lines to stdout from a writer thread (StdoutSink); a stdout without a descriptor: written in line."""
    from pipeline.sinks import JsonLinesSink, StdoutSink

    sys.stdout.flush()
    try:
        fd = sys.stdout.fileno()
    except (OSError, ValueError, io.UnsupportedOperation):
        return JsonLinesSink(sys.stdout)
    return StdoutSink(fd)


@dataclasses.dataclass(frozen=True)
class HealthOptions:
    """What `dfwatch health` asks of a running `dfwatch watch`."""

    url: str = "http://127.0.0.1:9108/metrics"  # its metrics endpoint
    # unhealthy when its stage loop last turned more than this many seconds ago
    max_age: float = ranged(60.0, 0, 86400, open_lo=True, unit="seconds")


def cmd_health(args: argparse.Namespace) -> int:
    """Liveness: the metrics endpoint answers AND its stage loop turned within --max-age seconds."""
    o = config_from_args(HealthOptions, args)
    try:
        with urllib.request.urlopen(o.url, timeout=5) as response:  # noqa: S310 - an operator-given URL
            text = response.read().decode(errors="replace")
    except OSError as exc:
        print(f"unhealthy: {o.url} does not answer ({exc})", file=sys.stderr)
        return EXIT_FAILED
    beat = next(
        (line.split()[-1] for line in text.splitlines() if line.startswith("dfwatch_loop_heartbeat_seconds ")), None
    )
    if beat is None:
        print(f"unhealthy: {o.url} has no dfwatch_loop_heartbeat_seconds (not dfwatch watch?)", file=sys.stderr)
        return EXIT_FAILED
    age = time.time() - float(beat)
    if not age <= o.max_age:
        print(f"unhealthy: the stage loop last turned {age:.0f} s ago (limit {o.max_age:g} s)", file=sys.stderr)
        return EXIT_FAILED
    print(f"healthy: the stage loop turned {age:.1f} s ago")
    return EXIT_OK


def cmd_status(args: argparse.Namespace) -> int:
    from pipeline.status import watch_status

    o = config_from_args(StatusOptions, args)
    password = os.environ.get("DFWATCH_REDIS_PASSWORD")
    return watch_status(o.redis, once=o.once, interval=o.interval, stale=o.stale, match=o.match, password=password)


def cmd_report(args: argparse.Namespace) -> int:
    from pipeline.report import REPORT_SUFFIXES, make_report

    out = args.out or args.clip.with_name(args.clip.name + ".report.png")
    if out.suffix.lower() not in REPORT_SUFFIXES:
        raise ConfigError(
            f"--out {printable(str(out))}: the report is written as {' or '.join(REPORT_SUFFIXES)}, by its suffix"
        )
    if not args.clip.is_file():
        missing = "is a directory" if args.clip.is_dir() else "no such file"
        raise ConfigError(f"clip {printable(str(args.clip))}: {missing}")
    cfg = apply_flags(load_config(args.config) if args.config else WatchConfig(), args)
    detector, classifier = load_models(cfg.models)
    report = make_report(
        args.clip,
        detector,
        classifier,
        out=out,
        verdicts_out=args.verdicts,
        verdict=resolve_verdict(cfg.verdict, classifier),
        schedule=cfg.schedule,
        tracker=cfg.tracker,
        runner=cfg.runner,
    )
    print(report.summary)
    if report.error:
        return EXIT_FAILED  # the clip broke off: the report covers the frames that decoded
    return EXIT_OK if report.faces else EXIT_NO_FACE


def cmd_calibrate(args: argparse.Namespace) -> int:
    from pipeline.calibrate import calibrate, read_series, write_calibration

    def streams(paths: list[Path]) -> list[list[float | None]]:
        out = []
        for path in paths:
            try:
                with open(path) as f:
                    out += list(read_series(f, where=str(path)).values())
            except OSError as exc:
                raise ConfigError(f"cannot read verdict lines {path}: {exc}") from exc
        return out

    real, fake = streams(args.real), streams(args.fake)
    if not real:
        raise ConfigError(f"no verdict lines in {[str(p) for p in args.real]}: calibration needs real footage")
    result = calibrate(real, fake, margin=args.margin)
    for c in result.candidates:
        print(
            f"confirm_frames {c['confirm_frames']:2d}: reals stay quiet from {c['quiet_enter']:.3f}; enter "
            f"{c['enter_fake']:.3f} catches {c['fakes_caught']} of {len(fake)} fakes",
            file=sys.stderr,
        )
    print(
        f"calibrate: FAKE at {result.enter_fake:.3f} for {result.confirm_frames} frames in a row, REAL again at "
        f"{result.leave_fake:.3f}: {len(real)} real streams stay quiet, {result.fakes_caught} of {len(fake)} fake "
        "streams caught",
        file=sys.stderr,
    )
    if not args.dry_run:
        provenance = {"real": [str(p) for p in args.real], "fake": [str(p) for p in args.fake], "margin": args.margin}
        for artifact in write_calibration(args.classifier, result, provenance=provenance):
            print(
                f"calibrate: wrote verdict_enter, verdict_leave, verdict_frames into {artifact}.json", file=sys.stderr
            )
    return EXIT_OK


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    handler = redacting_handler("%(asctime)s dfwatch %(levelname)s: %(message)s", datefmt="%H:%M:%S")
    handler.addFilter(StreamLogLimit())  # a flapping feed cannot flood the log (pipeline.lograte)
    logging.basicConfig(level=logging.DEBUG if args.debug else logging.INFO, handlers=[handler], force=True)
    try:
        return args.func(args)
    except Exception as exc:
        if args.debug:  # the traceback through the logging formatter, so it is redacted like every other line
            logger.exception("%s", exc)
        else:
            logger.error("%s", exc)
        return EXIT_FAILED


if __name__ == "__main__":
    raise SystemExit(main())
