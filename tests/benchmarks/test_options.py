"""The benchmarks' and studies' options: one frozen dataclass each, whose fields are the flags and the --config keys."""

from __future__ import annotations

import dataclasses
import subprocess
import sys

import pytest

from benchmarks._ultralytics_baseline import COMMANDS
from benchmarks.classifier_sizes import ClassifierSizesBench
from benchmarks.engines import EnginesBench
from benchmarks.latency import LatencyBench
from benchmarks.memory_files import MemoryBench
from benchmarks.profile_streams import ProfileStreams
from benchmarks.streams import StreamsBench, parse_args
from pipeline.demo import DemoOptions
from pipeline.flags import field_help
from research.cues import CueStudy
from tests.conftest import ROOT

OPTIONS = [
    StreamsBench,
    EnginesBench,
    LatencyBench,
    MemoryBench,
    ClassifierSizesBench,
    ProfileStreams,
    DemoOptions,
    CueStudy,
    *(cls for cls, _, _ in COMMANDS.values()),
]


@pytest.mark.parametrize("cls", OPTIONS, ids=lambda c: c.__name__)
def test_every_option_says_what_it_is_beside_it(cls):
    undocumented = [f.name for f in dataclasses.fields(cls) if not field_help(cls).get(f.name)]
    assert not undocumented, f"{cls.__name__}: add a comment beside {undocumented} (it is the flag's help)"


def test_a_saved_run_gives_the_settings_and_flags_win(tmp_path):
    cfg = tmp_path / "streams.toml"
    cfg.write_text('streams = [8, 2, 2]\nsystems = ["dfwatch"]\nseconds = 8.0\n')
    opts = parse_args(["--config", str(cfg), "--seconds", "12", "--resolutions", "480"])
    assert opts == StreamsBench(streams=(2, 8), systems=("dfwatch",), seconds=12.0, resolutions=(480,))


@pytest.mark.parametrize(
    ("script", "argv", "message"),
    [
        (["benchmarks/streams.py"], ["--systems", "dfwatch,yolo"], "systems: unknown ['yolo']"),
        (["benchmarks/engines.py"], ["--kinds", "face"], "unknown ['face']"),
        (["benchmarks/latency.py"], ["--frames", "10", "--batches", "8"], "frames 10 is too few"),
        (["benchmarks/memory_files.py"], ["--config", "{toml}"], "unknown field 'fils'"),
        (["benchmarks/classifier_sizes.py"], [], "--config required"),
        (["-m", "pipeline.demo"], ["x.mp4", "--size", "640"], "size must look like 640x480, got '640'"),
    ],
    ids=["streams", "engines", "latency", "memory_files", "classifier_sizes", "demo"],
)
def test_each_script_run_from_the_root_names_a_bad_option(script, argv, message, tmp_path):
    """Run as scripts (benchmarks/ first on sys.path, its engines.py beside the engines package): the options are
    built, checked and refused with usage status 2, before any work starts."""
    toml = tmp_path / "bad.toml"
    toml.write_text("fils = 3\n")
    cmd = [sys.executable, *script, *(a.format(toml=toml) for a in argv)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert proc.returncode == 2 and message in proc.stderr, proc.stderr[-2000:]
