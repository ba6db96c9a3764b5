"""Flags made from the config dataclasses: every field documented, help equal to the code's defaults, [tracker]."""

from __future__ import annotations

import argparse
import dataclasses
import re
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.cli import build_parser, resolve_config
from pipeline.config import SECTIONS, parse_config
from pipeline.errors import ConfigError
from pipeline.flags import add_config_file, add_config_flags, config_from_args, field_help
from pipeline.sources import SourceSpec


@pytest.mark.parametrize("cls", [*SECTIONS.values(), SourceSpec], ids=lambda c: c.__name__)
def test_every_config_field_says_what_it_is_beside_it(cls):
    undocumented = [f.name for f in dataclasses.fields(cls) if not field_help(cls).get(f.name)]
    assert not undocumented, f"{cls.__name__}: add a comment beside {undocumented} (it is the flag's help)"


def _help(*argv: str) -> str:
    out = subprocess.run([sys.executable, "-m", "pipeline.cli", *argv, "--help"], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    return re.sub(r"\s+", " ", out.stdout)


def test_the_help_shows_each_fields_own_default_and_comment():
    text = _help("watch")
    for section, cls in SECTIONS.items():
        for f in dataclasses.fields(cls):
            flag = f"--{section}.{f.name}"
            if f.name in ("allow_schemes", "allow_dirs"):  # lists: set in the file (--allow-dir for folders)
                assert flag not in text
                continue
            assert flag in text, flag
            default = f.default if f.default is not dataclasses.MISSING else None
            if default is None or isinstance(default, bool):
                shown = {None: "none", True: "on", False: "off"}[default]
            else:
                shown = f"{default:g}" if isinstance(default, float) else str(default)
            *_, last = re.finditer(re.escape(flag) + r"[ ,]", text)  # its line in the help, not the usage
            after = text[last.start() :]
            comment = " ".join(field_help(cls)[f.name].split()[:3])
            assert comment in after[:400] and f"(default {shown}" in after[:600], (flag, shown)
    # the short flags say the same as the fields they set
    assert (
        "--latency-budget X from capture, within which a live frame's verdict is worth publishing (default 1;" in text
    )
    assert "--decoder-threads N FFmpeg decoder threads of this stream" in text and "(default 1; in [0, 64])" in text


def test_tracker_is_a_section_of_the_file_and_of_the_flags():
    parser = build_parser()
    cfg = resolve_config(parser.parse_args(["watch", "--tracker.iou_match", "0.5", "--tracker.max_missed=4"]))
    assert (cfg.tracker.iou_match, cfg.tracker.max_missed, cfg.tracker.ema_alpha) == (0.5, 4, 0.3)
    assert parse_config({"tracker": {"ema_alpha": 0.9}}).tracker.ema_alpha == 0.9
    with pytest.raises(ConfigError, match=r"\[tracker\]: unknown field 'iou'; valid: \['iou_match'"):
        parse_config({"tracker": {"iou": 0.5}})
    out = subprocess.run(
        [sys.executable, "-m", "pipeline.cli", "watch", "--tracker.ema_alpha", "2"], capture_output=True, text=True
    )
    assert out.returncode == 2 and "--tracker.ema_alpha: must be in (0, 1], got '2'" in out.stderr


def test_the_tracker_flag_reaches_the_tracker(demo_clip, tmp_path):
    """iou_match 1 matches only a box that did not move: the face that moves starts a new track at most frames."""

    def tracks(*flags: str) -> int:
        out = subprocess.run(
            [sys.executable, "-m", "pipeline.cli", "report", str(demo_clip.path), "--out", str(tmp_path / "r.png")]
            + ["--max-faces", "1", *flags],
            capture_output=True,
            text=True,
        )
        assert out.returncode == 0, out.stderr
        return int(re.search(r"(\d+) face tracks", out.stdout).group(1))

    assert tracks() == 1
    assert tracks("--tracker.iou_match", "1") > 5


@dataclasses.dataclass(frozen=True)
class _Options:
    """A command's options, as the trainer commands and benchmarks declare theirs."""

    out: Path  # where the result goes
    size: int = 224  # input side in pixels
    rate: float = 0.5  # learning rate
    sets: tuple[str, ...] = ("a", "b")  # sets to score
    fast: bool = False  # skip the slow part


def _options_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser()
    add_config_flags(parser, _Options, flags={"out": "--to"})
    add_config_file(parser, "the options")
    return parser


def test_a_dataclass_becomes_flags_with_its_types_defaults_and_comments():
    parser = _options_parser()
    text = re.sub(r"\s+", " ", parser.format_help())
    assert "--to PATH where the result goes (default required)" in text
    assert "--size N input side in pixels (default 224)" in text
    assert "--sets A,B,... sets to score (default a,b)" in text
    args = parser.parse_args(["--to", "x", "--sets", "c, d", "--fast", "--rate", "1e-3"])
    assert config_from_args(_Options, args) == _Options(out=Path("x"), sets=("c", "d"), fast=True, rate=1e-3)
    with pytest.raises(SystemExit):
        parser.parse_args(["--to", "x", "--size", "big"])


def test_a_toml_file_gives_the_fields_and_flags_win(tmp_path):
    cfg = tmp_path / "o.toml"
    cfg.write_text('out = "from_file"\nsize = 128\nsets = ["z"]\n')
    args = _options_parser().parse_args(["--config", str(cfg), "--size", "96"])
    assert config_from_args(_Options, args, file=args.config) == _Options(out=Path("from_file"), size=96, sets=("z",))


def test_a_wrong_key_type_or_missing_field_is_named(tmp_path):
    parser = _options_parser()
    with pytest.raises(ConfigError, match=r"--to required"):
        config_from_args(_Options, parser.parse_args([]))
    for text, message in (("sise = 1\n", "unknown field 'sise'"), ('size = "big"\n', "size: expected int")):
        cfg = tmp_path / "bad.toml"
        cfg.write_text('out = "o"\n' + text)
        with pytest.raises(ConfigError, match=message):
            config_from_args(_Options, parser.parse_args([]), file=cfg)
