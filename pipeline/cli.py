"""dfwatch: watch video streams for deepfaked faces; verdicts as JSON lines, Redis, Prometheus."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import tempfile
from pathlib import Path
from typing import NoReturn

logger = logging.getLogger("dfwatch")

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


class _Parser(argparse.ArgumentParser):
    """argparse that reports a usage error as one line (no usage dump) and exits 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="dfwatch", description=__doc__)
    parser.add_argument("--debug", action="store_true", help="debug logging and full tracebacks")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    w = sub.add_parser("watch", help="watch files or live streams; with no SOURCE, a generated demo clip")
    w.add_argument(
        "sources",
        nargs="*",
        metavar="SOURCE",
        help="video file, rtsp://, rtsps://, http(s):// or HLS URL; NAME=URL names the stream",
    )
    w.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help="debug logging and full tracebacks")
    w.add_argument(
        "--models",
        type=Path,
        default=Path("models"),
        help="model directory holding face_detector.onnx and deepfake_classifier.onnx (default: models)",
    )
    w.add_argument("--detector", type=Path, help="detector artifact (default: MODELS/face_detector.onnx)")
    w.add_argument("--classifier", type=Path, help="classifier artifact (default: MODELS/deepfake_classifier.onnx)")
    w.add_argument("--threads", type=int, default=None, help="ONNX Runtime intra-op threads (default: all cores)")
    w.add_argument("--det-conf", type=float, default=None, help="detector confidence threshold (default: manifest)")
    w.add_argument("--max-faces", type=int, default=20, help="most faces scored per frame, best first (default 20)")
    w.add_argument("--max-batch", type=int, default=8, help="frames per detector batch across streams (default 8)")
    w.add_argument("--redis", metavar="URL", help="also publish to Redis Streams, e.g. redis://127.0.0.1:6379/0")
    w.add_argument("--metrics-host", default="127.0.0.1", help="Prometheus bind address (default 127.0.0.1)")
    w.add_argument("--metrics-port", type=int, default=9108, help="Prometheus port; 0 disables (default 9108)")
    w.add_argument("--rtsp-transport", choices=("tcp", "udp"), default="tcp", help="RTSP transport (default tcp)")
    w.add_argument("--open-timeout", type=float, default=10.0, help="seconds to open a stream (default 10)")
    w.add_argument("--read-timeout", type=float, default=10.0, help="seconds without data before a stream is dead")
    w.add_argument(
        "--demo-seconds",
        type=float,
        default=4.0,
        help="with no SOURCE: seconds of real, then of manipulated face in the demo clip (default 4)",
    )
    w.set_defaults(func=cmd_watch)

    d = sub.add_parser("demo", help="write the demo clip (real face, then a manipulated one) to a file")
    d.add_argument("out", type=Path, help="output .mp4")
    d.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help="debug logging and full tracebacks")
    d.add_argument("--seconds", type=float, default=4.0, help="seconds of each part (default 4)")
    d.set_defaults(func=cmd_demo)
    return parser


def cmd_demo(args: argparse.Namespace) -> int:
    from pipeline.demo import make_demo_clip

    clip = make_demo_clip(args.out, real_seconds=args.seconds, fake_seconds=args.seconds)
    print(
        f"{clip.path}: {clip.n_frames} frames at {clip.fps} fps, manipulated from frame {clip.fake_start}",
        file=sys.stderr,
    )
    return EXIT_OK


def cmd_watch(args: argparse.Namespace) -> int:
    from engines import Classifier, Detector
    from pipeline.metrics import Observer
    from pipeline.runner import Runner, RunnerConfig
    from pipeline.sinks import JsonLinesSink, RedisSink
    from pipeline.sources import SourceSpec
    from pipeline.stages import ClassifyStage, DetectStage

    for flag in ("max_batch", "max_faces"):
        if getattr(args, flag) < 1:
            raise ValueError(f"--{flag.replace('_', '-')} must be at least 1, got {getattr(args, flag)}")
    sources = list(args.sources)
    with tempfile.TemporaryDirectory(prefix="dfwatch-demo-") as tmp:
        if not sources:
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
            sources = [f"demo={clip.path}"]
        specs = [
            SourceSpec.parse(
                s, open_timeout=args.open_timeout, read_timeout=args.read_timeout, rtsp_transport=args.rtsp_transport
            )
            for s in sources
        ]
        detector = Detector(
            args.detector or args.models / "face_detector.onnx",
            threads=args.threads,
            conf=args.det_conf,
            max_det=args.max_faces,
        )
        classifier = Classifier(args.classifier or args.models / "deepfake_classifier.onnx", threads=args.threads)
        placeholder = detector.manifest.placeholder or classifier.manifest.placeholder
        if placeholder:
            logger.warning(
                "PLACEHOLDER models (untrained networks): the pipeline runs end to end, "
                "but faces and verdicts are noise until trained models are in %s",
                args.models,
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
        sinks = [JsonLinesSink(sys.stdout)]
        if args.redis:
            sinks.append(RedisSink(args.redis))
        observer = Observer()
        if args.metrics_port:
            try:
                observer.serve(args.metrics_host, args.metrics_port)
            except OSError as exc:
                raise RuntimeError(
                    f"cannot serve metrics on {args.metrics_host}:{args.metrics_port} ({exc}); "
                    "pass --metrics-port N, or 0 to disable"
                ) from exc
        runner = Runner(
            specs,
            DetectStage(detector),
            ClassifyStage(classifier),
            sinks,
            observer,
            config=RunnerConfig(max_batch=args.max_batch),
            placeholder_models=placeholder,
        )

        def _stop(signum: int, _frame: object) -> None:
            logger.info("%s: stopping sources, draining queues", signal.Signals(signum).name)
            runner.stop.set()

        previous = {s: signal.signal(s, _stop) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            stats = runner.run()
        finally:
            for s, handler in previous.items():
                signal.signal(s, handler)
            observer.close()
    print(stats.format(placeholder_models=placeholder), file=sys.stderr)
    return EXIT_FAILED if stats.failed else EXIT_OK


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.debug else logging.INFO,
        format="%(asctime)s dfwatch %(levelname)s: %(message)s",
        datefmt="%H:%M:%S",
        stream=sys.stderr,
        force=True,
    )
    try:
        return args.func(args)
    except Exception as exc:
        if args.debug:
            raise
        logger.error("%s", exc)
        return EXIT_FAILED


if __name__ == "__main__":
    raise SystemExit(main())
