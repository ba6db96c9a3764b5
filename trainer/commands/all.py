"""dfwatch-train all: dataset -> search -> fit -> evaluate -> export -> engines in one work directory.

Every flag of every stage but its --config file is a flag of ``all`` with the stage's name in front
(``--search-n-trials 5``, ``--fit-epochs 20``); the paths between stages are set here. All's own ``--config``
is a TOML file of its own options (AllOptions); a recipe (`dfwatch-train pack`) holds the stage flags too. Each
stage that finishes is recorded in WORK/all_state.json with its options: a rerun skips it, so an
interrupted run resumes stage by stage (and inside a stage, the stage's own resume: finished
videos, finished trials, the fit checkpoint). A stage whose options changed runs again, and so
does every stage after it; where its earlier output cannot be resumed with the new options (other
dataset options, another search space, another training config) it stops with an error instead.
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import os
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pipeline.errors import ConfigError
from pipeline.flags import add_config_file, add_config_flags, config_from_args
from pipeline.ranges import check_ranges, ranged
from trainer.commands._common import run_step, write_state

logger = logging.getLogger(__name__)

STAGES = ("dataset", "search", "fit", "evaluate", "export", "engines")
# Options of each stage that `all` sets from the work directory (not flags of `all`).
MANAGED = {
    "dataset": {"celebdf", "out"},
    "search": {"data", "out"},
    "fit": {"data", "out", "config", "resume"},
    "evaluate": {"checkpoint", "data", "label", "run", "compare_protocols", "out"},
    "export": {"checkpoint", "out", "report"},
    "engines": {"models"},
}
SHARED = ("threads", "device")  # `all --threads N` fills every stage's --threads unless the stage flag is given
# A stage's --config file is no flag of `all`: the state compares options, and a file's contents change unseen.
UNMIRRORED = {"help", "config"}
STATE_FILE = "all_state.json"

EPILOG = """\
work directory (one protocol):
  WORK/faces.h5  WORK/search/{best_config.json,trials.csv,study.db}  WORK/fit/checkpoint.pt
  WORK/eval/{report.md,report.json,roc.png,history_model.png}  MODELS/deepfake_classifier.onnx (+ .json, .md)
with --compare-protocols: WORK/identity/... and WORK/paper/... (one store and fit each; the search runs
once, on the identity store, and both protocols train its best config), WORK/eval compares them; the
identity-protocol model is exported.

examples:
  dfwatch-train all --celebdf /data/Celeb-DF-v2 --work runs/paper --compare-protocols
  dfwatch-train all --celebdf /data/Celeb-DF-v2 --work runs/case1 --dataset-whole-frames --dataset-augment-copies 0
  dfwatch-train all --celebdf /data/Celeb-DF-v2 --work runs/w --search-storage redis://host:6379/0 --until search
"""


@dataclass(frozen=True)
class AllOptions:
    """`dfwatch-train all`'s own options; each stage's are its --STAGE-* flags (a recipe holds both: `pack`)."""

    celebdf: Path  # Celeb-DF v2 root
    work: Path  # work directory of every stage's output
    models: Path | None = None  # model directory the classifier is exported to and engines rebuild; None = WORK/models
    # build identity and paper stores, fit the search's best config on both, evaluate side by side
    compare_protocols: bool = False
    until: str = "engines"  # last stage to run
    threads: int | None = ranged(None, 1, 1024)  # every stage's --threads, unless its own flag is given
    device: str | None = None  # every stage's --device, unless its own flag is given

    def __post_init__(self) -> None:
        check_ranges(self)
        if self.until not in STAGES:
            raise ConfigError(f"until must be one of {list(STAGES)}, got {self.until!r}")


class _Recorder(argparse.ArgumentParser):
    """A stage's parser that keeps every argument its module adds (its groups' too) with the call that added it:
    what ``all`` mirrors and reads defaults from, without argparse's private attributes."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.added: list[tuple[argparse.Action, dict[str, Any]]] = []
        super().__init__(*args, **kwargs)

    def add_argument(self, *args: Any, **kwargs: Any) -> argparse.Action:
        action = super().add_argument(*args, **kwargs)
        self.added.append((action, kwargs))
        return action

    def add_argument_group(self, *args: Any, **kwargs: Any) -> Any:
        group = super().add_argument_group(*args, **kwargs)
        add = group.add_argument

        def recorded(*a: Any, **k: Any) -> argparse.Action:
            action = add(*a, **k)
            self.added.append((action, k))
            return action

        group.add_argument = recorded  # type: ignore[method-assign]
        return group

    @property
    def options(self) -> list[argparse.Action]:
        """Its optional arguments (not --help), as added."""
        return [a for a, _ in self.added if a.option_strings and a.dest != "help"]


def _stage_parser(stage: str) -> _Recorder:
    """The stage's own parser, as its module registers it."""
    sub = argparse.ArgumentParser(add_help=False).add_subparsers(parser_class=_Recorder)
    importlib.import_module(f"trainer.commands.{stage}").register(sub)
    return sub.choices[stage]


def available_stages() -> list[str]:
    """The stages whose command modules exist (engines is written separately)."""
    out = []
    for stage in STAGES:
        try:
            importlib.import_module(f"trainer.commands.{stage}")
        except ModuleNotFoundError as exc:
            if exc.name != f"trainer.commands.{stage}":
                raise
            continue
        out.append(stage)
    return out


def _mirror(stage: str, group: Any) -> None:
    """Add every option of ``stage`` not managed here to ``group`` as --STAGE-OPTION (dest STAGE__dest)."""
    for action, kwargs in _stage_parser(stage).added:
        if not action.option_strings or action.dest in MANAGED[stage] or action.dest in UNMIRRORED:
            continue
        long = next(s for s in action.option_strings if s.startswith("--"))
        kwargs = {**kwargs, "dest": f"{stage}__{action.dest}", "default": argparse.SUPPRESS}
        kwargs.pop("required", None)  # absent unless given: the stage's own default applies
        if action.metavar is None and action.nargs != 0:
            kwargs["metavar"] = action.dest.upper()  # REAL, not DATASET__REAL
        group.add_argument(f"--{stage}-{long[2:]}", **kwargs)  # BooleanOptionalAction adds --no-STAGE-OPTION


def stage_namespace(stage: str, managed: list[str], args: argparse.Namespace, chain: AllOptions) -> argparse.Namespace:
    """The stage's namespace as all runs it: its defaults, the ``managed`` argv, then the --STAGE-* flags given to
    all (``args``) and the ``SHARED`` options of ``chain`` where the stage's own flag is not given."""
    ns = _stage_parser(stage).parse_args(managed)
    given = {k.split("__", 1)[1]: v for k, v in vars(args).items() if k.startswith(f"{stage}__")}
    actions = {a.dest: a for a in _stage_parser(stage).options}
    for name in SHARED:
        value = getattr(chain, name)
        if name in actions and name not in given and value is not None:
            choices = actions[name].choices
            if choices is None or value in choices:  # e.g. engines has no --device auto: its own default stays
                given[name] = actions[name].type(value) if actions[name].type else value
    for name, value in given.items():
        setattr(ns, name, value)
    if stage == "search" and ns.total_trials is None:  # a rerun runs the missing trials, not n more
        from trainer.commands.search import SearchOptions

        ns.total_trials = SearchOptions.n_trials if ns.n_trials is None else ns.n_trials
    return ns


def _options(ns: argparse.Namespace) -> dict[str, Any]:
    """A stage's options as its state records them (not its function, nor argparse's ``_private`` defaults)."""
    return {
        k: (str(v) if isinstance(v, Path) else v) for k, v in sorted(vars(ns).items()) if k[0] != "_" and k != "func"
    }


def _with_added_defaults(stage: str, old: dict[str, Any]) -> dict[str, Any]:
    """A state record's options with the stage's options added since it was written at their defaults,
    so a new flag left at its default neither reruns a finished stage nor refuses its study."""
    defaults = {a.dest: a.default for a in _stage_parser(stage).options if a.dest not in old}
    defaults = {k: v for k, v in defaults.items() if k != "help" and v is not argparse.SUPPRESS}
    return {**json.loads(json.dumps(_options(argparse.Namespace(**defaults)), default=str)), **old}


class _State:
    """WORK/all_state.json: finished stages and the options they ran with."""

    def __init__(self, work: Path) -> None:
        self.path = work / STATE_FILE
        self.done: dict[str, Any] = json.loads(self.path.read_text()) if self.path.is_file() else {}
        self.invalidated = False  # a stage ran again: every later one must too

    def skip(self, key: str, options: dict[str, Any]) -> bool:
        entry = self.done.get(key)
        same = entry is not None and entry["options"] == json.loads(json.dumps(options, default=str))
        if same and not self.invalidated:
            return True
        if entry is not None:
            logger.info("stage %s: options changed since it ran; running it (and what follows) again", key)
        self.invalidated = True
        return False

    def finish(self, key: str, options: dict[str, Any], seconds: float) -> None:
        self.done[key] = {
            "finished": datetime.now(UTC).isoformat(timespec="seconds"),
            "seconds": round(seconds, 1),
            "options": options,
        }
        write_state(self.path, self.done)


# search options that may change between runs of one study: how many trials, where, how fast
_SEARCH_RERUNNABLE = {"n_trials", "total_trials", "threads", "device", "workers"}
_SEARCH_STUDY = ("storage", "study_name", "redis_prefix")


def _check_search_reuse(entry: dict[str, Any] | None, options: dict[str, Any], work: Path) -> None:
    """Refuse a search whose space or training changed but whose study is the old one: the study
    would count the old trials as done and hand back the old best config, silently."""
    if entry is None:
        return
    old = entry["options"]
    new = json.loads(json.dumps(options, default=str))
    if any(old.get(k) != new.get(k) for k in _SEARCH_STUDY):
        return  # another study: nothing of the old one is reused
    changed = sorted(k for k in new if k not in _SEARCH_RERUNNABLE and old.get(k) != new[k])
    if changed:
        raise ValueError(
            f"search options {changed} changed since the study in {work / 'search'} ran; its trials would be reused "
            "as if run with the new ones: give --search-study-name NAME for a new study, or delete "
            f"{work / 'search'} (and what follows) to start over"
        )


def plan(chain: AllOptions, stages: list[str]) -> list[tuple[str, str, list[str]]]:
    """(key, stage, managed argv) in order; key names the stage's run (``fit:paper``) in the state file."""
    work = chain.work
    models = chain.models or work / "models"
    protocols = ["identity", "paper"] if chain.compare_protocols else [None]
    root = {p: (work / p if p else work) for p in protocols}
    first = protocols[0]
    best = work / "search" / "best_config.json"
    steps: list[tuple[str, str, list[str]]] = []
    for p in protocols:
        argv = ["--celebdf", str(chain.celebdf), "--out", str(root[p] / "faces.h5")]
        steps.append((f"dataset:{p}" if p else "dataset", "dataset", argv + (["--split", p] if p else [])))
    steps.append(("search", "search", ["--data", str(root[first] / "faces.h5"), "--out", str(work / "search")]))
    for p in protocols:
        argv = ["--data", str(root[p] / "faces.h5"), "--out", str(root[p] / "fit"), "--config", str(best), "--resume"]
        steps.append((f"fit:{p}" if p else "fit", "fit", argv))
    if chain.compare_protocols:
        runs = [x for p in protocols for x in ("--run", f"{p}={root[p] / 'fit' / 'checkpoint.pt'}")]
        steps.append(("evaluate", "evaluate", [*runs, "--compare-protocols", "--out", str(work / "eval")]))
    else:
        ckpt = str(work / "fit" / "checkpoint.pt")
        steps.append(("evaluate", "evaluate", ["--checkpoint", ckpt, "--out", str(work / "eval")]))
    steps.append(
        (
            "export",
            "export",
            [
                "--checkpoint",
                str(root[first] / "fit" / "checkpoint.pt"),
                "--out",
                str(models / "deepfake_classifier.onnx"),
                "--report",
                str(work / "eval" / "report.json"),
            ],
        )
    )
    steps.append(("engines", "engines", ["--models", str(models)]))
    until = STAGES.index(chain.until)
    return [s for s in steps if s[1] in stages and STAGES.index(s[1]) <= until]


def cmd_all(args: argparse.Namespace) -> int:
    os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")  # albumentations asks PyPI at import otherwise
    o = config_from_args(AllOptions, args, file=args.config)
    if o.compare_protocols and hasattr(args, "dataset__split"):
        raise ValueError("--compare-protocols builds both splits; leave out --dataset-split")
    stages = available_stages()
    if "engines" not in stages and o.until == "engines":
        logger.warning("no `engines` command in this dfwatch: the chain stops after export")
    o.work.mkdir(parents=True, exist_ok=True)
    state = _State(o.work)
    steps = plan(o, stages)
    started = time.monotonic()
    ran, skipped = [], []
    for key, stage, managed in steps:
        ns = stage_namespace(stage, managed, args, o)
        options = _options(ns)
        if key in state.done:
            state.done[key]["options"] = _with_added_defaults(stage, state.done[key]["options"])
        if stage == "search":
            _check_search_reuse(state.done.get(key), options, o.work)
        if state.skip(key, options):
            logger.info("stage %s: done before with the same options, skipping", key)
            skipped.append(key)
            continue
        print(f"== dfwatch-train all: stage {key}", file=sys.stderr)
        code, seconds = run_step(ns, f"all: stage {key}")
        if code != 0:
            return code
        state.finish(key, options, seconds)
        ran.append(key)
    last = steps[-1][1] if steps else "nothing"
    print(
        f"all: {len(ran)} stage(s) run ({', '.join(ran) or 'none'}), {len(skipped)} skipped as done "
        f"({', '.join(skipped) or 'none'}) in {time.monotonic() - started:.0f} s; work dir {o.work}"
        + (f"\nreport: {o.work / 'eval' / 'report.md'}" if STAGES.index(last) >= STAGES.index("evaluate") else "")
        + ("" if last == "engines" else f"\nstopped after {last}"),
        file=sys.stderr,
    )
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "all",
        help="the whole chain: dataset -> search -> fit -> evaluate -> export -> engines, resumable",
        description=__doc__,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_config_flags(p, AllOptions, choices={"until": STAGES})
    add_config_file(p, "all's own options (not the --STAGE-* flags)")
    for stage in available_stages():
        title = f"{stage} stage (`dfwatch-train {stage} --help`)"
        _mirror(stage, p.add_argument_group(title, f"managed by all: {', '.join(sorted(MANAGED[stage]))}"))
    p.set_defaults(func=cmd_all)
