"""dfwatch-train: build, search, train, evaluate and export dfwatch's models."""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
import traceback

from trainer.commands import COMMANDS

logger = logging.getLogger("dfwatch.train")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="dfwatch-train", description=__doc__)
    parser.add_argument("--debug", action="store_true", help="debug logging and full tracebacks")
    sub = parser.add_subparsers(dest="command", required=True)
    for name in COMMANDS:
        importlib.import_module(f"trainer.commands.{name}").register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from engines.urls import redact_text, redacting_handler

    handler = redacting_handler("%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.basicConfig(level=logging.DEBUG if args.debug else logging.INFO, handlers=[handler])
    try:
        return args.func(args)
    except Exception as exc:
        if args.debug:  # the traceback, redacted like every log line
            print(redact_text(traceback.format_exc()), end="", file=sys.stderr)
        print(f"dfwatch-train {args.command}: error: {redact_text(str(exc))}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
