"""dfwatch-train pack RECIPE: rebuild a shipped model from its recipe, every step in order, resumable.

A recipe (``recipes/*.toml``) pins how one file of ``models/`` was made: the ``dfwatch-train`` commands of its
chain, in order, with their flags. Each ``[[step]]`` names its ``command``; every other key is that command's flag
(``model_arg = ["bands=2"]`` is ``--model-arg bands=2``, ``true`` a bare flag, ``false`` its ``--no-`` form).
``{work}`` and ``{models}`` in a value are the work and model directories of this run; other ``{name}``s come from
``--set name=value`` (or the recipe's ``[defaults]``).

Every step is parsed by its command's own parser, and its options built, before the first one runs, so a recipe that
no longer matches the CLI (an unknown flag, a missing required one, a value out of range) fails at once. Each step
that finishes is recorded in WORK/pack_state.json with its argv: a rerun skips it, so an interrupted rebuild resumes
step by step (and inside a step, the command's own resume); a step whose argv changed runs again, and so does every
step after it.
"""

from __future__ import annotations

import argparse
import json
import logging
import re
import shlex
import sys
import time
import tomllib
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pipeline.errors import ConfigError
from pipeline.flags import add_config_flags, check_options, config_from_args
from trainer.commands._common import run_step, write_state
from trainer.errors import TrainerError

logger = logging.getLogger(__name__)

STATE_FILE = "pack_state.json"
_PLACEHOLDER = re.compile(r"\{(\w+)\}")


@dataclass(frozen=True)
class PackOptions:
    """`dfwatch-train pack`'s own options; what is built, and how, is the recipes' (they are its config files)."""

    # work directory; None = runs/pack-<recipe>, with several recipes runs/pack/<recipe> each
    work: Path | None = None
    # where the model files go, for every recipe; None = WORK/models (`models` replaces the pack)
    models: Path | None = None
    dry_run: bool = False  # print the steps' command lines and stop


def step_argv(step: dict[str, Any], values: dict[str, str]) -> list[str]:
    """The command line of one recipe step, placeholders filled."""
    if "command" not in step:
        raise TrainerError(f"a recipe step needs a command: {step}")
    argv = [step["command"]]
    for key, value in step.items():
        if key == "command":
            continue
        flag = "--" + key.replace("_", "-")
        if isinstance(value, bool):  # an on/off field's flag, or its --no- form (a field that defaults to on)
            argv.append(flag if value else "--no-" + flag[2:])
            continue
        for item in value if isinstance(value, list) else [value]:
            argv += [flag, _fill(str(item), values)]
    return argv


def _fill(text: str, values: dict[str, str]) -> str:
    def one(match: re.Match[str]) -> str:
        if match.group(1) not in values:
            raise TrainerError(f"the recipe uses {{{match.group(1)}}}: give --set {match.group(1)}=VALUE")
        return values[match.group(1)]

    return _PLACEHOLDER.sub(one, text)


def load_recipe(path: Path, *, work: Path, models: Path, given: dict[str, str]) -> tuple[str, list[list[str]]]:
    """(the recipe's name, each step's argv), checked against the commands' parsers."""
    from trainer.cli import build_parser

    try:
        recipe = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise TrainerError(f"recipe {path}: {exc}") from exc
    steps = recipe.get("step", [])
    if not steps:
        raise TrainerError(f"recipe {path} has no [[step]]")
    values = {**{k: str(v) for k, v in recipe.get("defaults", {}).items()}, **given}
    values |= {"work": str(work), "models": str(models)}
    plan = [step_argv(step, values) for step in steps]
    parser = build_parser()
    for i, argv in enumerate(plan, 1):
        if argv[0] == "pack":
            raise TrainerError(f"recipe {path}, step {i}: a recipe cannot run another recipe")
        try:
            check_options(parser.parse_args(argv))
        except SystemExit as exc:  # argparse printed what is wrong
            raise TrainerError(f"recipe {path}, step {i} ({shlex.join(argv)}) does not parse") from exc
        except ConfigError as exc:
            raise TrainerError(f"recipe {path}, step {i} ({argv[0]}): {exc}") from exc
    return str(recipe.get("name", path.stem)), plan


def cmd_pack(args: argparse.Namespace) -> int:
    bad = [item for item in args.set if "=" not in item]
    if bad:
        raise TrainerError(f"--set takes NAME=VALUE, got {bad}")
    given = dict(item.split("=", 1) for item in args.set)
    o = config_from_args(PackOptions, args)
    if len(args.recipes) == 1:  # its own work directory, its models inside it unless --models says
        works = [o.work or Path("runs") / f"pack-{args.recipes[0].stem}"]
        models: Path = o.models or works[0] / "models"
    else:  # one work directory each under --work, one model directory for all (a whole pack)
        root = o.work or Path("runs") / "pack"
        works = [root / r.stem for r in args.recipes]
        models = o.models or root / "models"
    plans = [load_recipe(r, work=w, models=models, given=given) for r, w in zip(args.recipes, works)]  # all first
    if o.dry_run:
        for name, plan in plans:
            for i, argv in enumerate(plan, 1):
                print(f"{name} {i}. dfwatch-train {shlex.join(argv)}")
        return 0
    for (name, plan), work in zip(plans, works):
        code = _run(name, plan, work, models)
        if code != 0:
            return code
    return 0


def _run(name: str, plan: list[list[str]], work: Path, models: Path) -> int:
    """One recipe's steps in order, those done before with the same argv skipped; its exit code."""
    from trainer.cli import build_parser

    work.mkdir(parents=True, exist_ok=True)
    models.mkdir(parents=True, exist_ok=True)
    state_path = work / STATE_FILE
    state = json.loads(state_path.read_text()) if state_path.is_file() else {}
    rows, invalidated, started = [], False, time.monotonic()
    for i, argv in enumerate(plan, 1):
        key = f"{i}:{argv[0]}"
        done = state.get(key)
        if done is not None and done["argv"] == argv and not invalidated:
            rows.append((key, "done before", done["seconds"]))
            continue
        invalidated = True
        print(f"== pack {name}: step {i}/{len(plan)}: dfwatch-train {shlex.join(argv)}", file=sys.stderr)
        code, seconds = run_step(build_parser().parse_args(argv), f"pack: step {key}")
        if code != 0:
            return code
        seconds = round(seconds, 1)
        state[key] = {"argv": argv, "seconds": seconds, "finished": datetime.now(UTC).isoformat(timespec="seconds")}
        write_state(state_path, state)
        rows.append((key, "ran", seconds))
    print(f"pack {name}: {len(plan)} steps in {time.monotonic() - started:.0f} s; models in {models}", file=sys.stderr)
    for key, what, seconds in rows:
        print(f"  {key:<16} {what:<12} {seconds:>8.1f} s", file=sys.stderr)
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "pack",
        help="rebuild a shipped model from its recipe (recipes/*.toml): every step, resumable",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "recipes",
        type=Path,
        nargs="+",
        metavar="RECIPE",
        help="recipes run in order, e.g. recipes/face_detector.toml recipes/deepfake_classifier.toml (the pack)",
    )
    add_config_flags(p, PackOptions)
    p.add_argument("--set", action="append", default=[], metavar="NAME=VALUE", help="a {NAME} the recipe uses")
    p.set_defaults(func=cmd_pack)
