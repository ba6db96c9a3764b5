"""Each dfwatch-train command's options are one frozen dataclass: its flags are made from the fields, a --config
TOML table of the fields is read first and the flags given on the command line win; a missing required field, an
unknown key or a bad value is refused with a message naming it, before the command does any work."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest

from pipeline.errors import ConfigError
from pipeline.flags import config_from_args, field_help
from trainer.cli import build_parser, main
from trainer.commands import COMMANDS
from trainer.commands.all import AllOptions
from trainer.commands.calibrate import CalibrateOptions
from trainer.commands.detector import DetectorOptions
from trainer.commands.engines import EngineOptions
from trainer.commands.evaluate import EvaluateOptions
from trainer.commands.export import ExportOptions
from trainer.commands.fit import RuntimeOptions, SelectOptions, make_selector, runtime_options
from trainer.commands.pack import PackOptions
from trainer.commands.placeholders import PlaceholderOptions
from trainer.commands.realfaces import RealFacesOptions
from trainer.commands.search import SearchOptions
from trainer.commands.validate import ValidateOptions
from trainer.detector.train import DetectorTrainConfig
from trainer.errors import TrainerError
from trainer.paper.dataset import DatasetConfig

# each command's options (fit's are its TrainConfig; its runtime and selection options are tested below)
OPTIONS = {
    "dataset": DatasetConfig,
    "detector": DetectorOptions,
    "search": SearchOptions,
    "evaluate": EvaluateOptions,
    "engines": EngineOptions,
    "export": ExportOptions,
    "validate": ValidateOptions,
    "calibrate": CalibrateOptions,
    "realfaces": RealFacesOptions,
    "placeholders": PlaceholderOptions,
    "pack": PackOptions,
    "all": AllOptions,
}

# command, its --config file (None: pack has none, its recipes are its config files), the flags given over it, every
# field that is not its default then (from the file where no flag is given), the flag of a required field (None:
# every field has a default). The flags include the spellings from before the options were dataclasses: --real for
# n_real, --all for all_videos, --sizes 320 640 (a list), --cnn-blocks FEWEST-MOST, a repeated --run.
CASES = [
    (
        "dataset",
        'celebdf = "/data/celebdf"\nout = "faces.h5"\nn_real = 7\nframes = 4\naugment_splits = ["train"]\n',
        ["--real", "9", "--all", "--augment-splits", "train,val", "--split", "paper"],
        {
            "celebdf": Path("/data/celebdf"),
            "out": Path("faces.h5"),
            "n_real": 9,
            "all_videos": True,
            "frames": 4,
            "augment_splits": ("train", "val"),
            "split": "paper",
        },
        "--celebdf",
    ),
    (
        "detector",
        "imgsz = 320\neval_frames = 3\nsizes = [320]\nhours = 2.5\n",
        ["--imgsz", "640", "--sizes", "320", "640", "--hours", "0", "--no-torch-reference"],
        {"imgsz": 640, "eval_frames": 3, "sizes": (320, 640), "hours": None, "torch_reference": False},
        None,
    ),
    (
        "search",
        'data = "faces.h5"\nout = "search"\nepochs = 3\ncnn_blocks = [2, 3]\nlr_range = [1e-4, 1e-3]\n',
        ["--epochs", "5", "--cnn-blocks", "1-2", "--families", "paper_cnn,spectral"],
        {
            "data": Path("faces.h5"),
            "out": Path("search"),
            "epochs": 5,
            "cnn_blocks": (1, 2),
            "lr_range": (1e-4, 1e-3),
            "families": ("paper_cnn", "spectral"),
        },
        "--data",
    ),
    (
        "evaluate",
        'out = "eval"\nrun = ["a=a.pt"]\nthreshold = 0.3\nsplit = "val"\n',
        ["--threshold", "0.7", "--run", "b=b.pt,b.h5", "--run", "c=c.pt"],
        {"out": Path("eval"), "run": ("b=b.pt,b.h5", "c=c.pt"), "threshold": 0.7, "split": "val"},
        "--out",
    ),
    (
        "engines",
        'trt_precision = "fp32"\nint8 = true\ncalib_samples = 64\n',
        ["--trt-precision", "fp16", "--no-tensorrt"],
        {"trt_precision": "fp16", "int8": True, "calib_samples": 64, "tensorrt": False},
        None,
    ),
    (
        "export",
        'checkpoint = "fit/checkpoint.pt"\nweights = "last"\nmin_face = 64\n',
        ["--min-face", "96"],
        {"checkpoint": Path("fit/checkpoint.pt"), "weights": "last", "min_face": 96},
        "--checkpoint",
    ),
    (
        "validate",
        'real_split = "val"\nthreads = 2\nskip_videos = true\n',
        ["--threads", "4"],
        {"real_split": "val", "threads": 4, "skip_videos": True},
        None,
    ),
    (
        "calibrate",
        'margin = 0.02\nbroadcast = true\nmodels = "m"\n',
        ["--no-broadcast", "--dry-run"],
        {"margin": 0.02, "broadcast": False, "dry_run": True, "models": Path("m")},
        None,
    ),
    (
        "realfaces",
        'tools = ["lipsync"]\ncrop_size = 128\n',
        ["--tools", "deepfacelive,lipsync", "--dfdc"],
        {"tools": ("deepfacelive", "lipsync"), "crop_size": 128, "dfdc": True},
        None,
    ),
    (
        "placeholders",
        "detector_size = 320\nseed = 3\n",
        ["--seed", "5"],
        {"detector_size": 320, "seed": 5},
        None,
    ),
    (
        "pack",
        None,
        ["recipes/paper.toml", "--dry-run", "--work", "runs/p"],
        {"dry_run": True, "work": Path("runs/p")},
        None,
    ),
    (
        "all",
        'celebdf = "/data/cdf"\nwork = "runs/w"\ncompare_protocols = true\n',
        ["--until", "fit", "--work", "runs/v"],
        {"celebdf": Path("/data/cdf"), "work": Path("runs/v"), "compare_protocols": True, "until": "fit"},
        "--celebdf",
    ),
]


def _options(*argv: str | Path):
    """The options ``dfwatch-train ARGV...`` runs with."""
    args = build_parser().parse_args([str(a) for a in argv])
    return config_from_args(OPTIONS[args.command], args, file=getattr(args, "config", None))


def test_every_command_has_its_options_and_a_case():
    assert set(OPTIONS) == set(COMMANDS) - {"fit"}
    assert [c[0] for c in CASES] == list(OPTIONS)


@pytest.mark.parametrize(("command", "toml", "flags", "expected", "required"), CASES, ids=[c[0] for c in CASES])
def test_a_config_file_sets_the_fields_and_the_flags_win(tmp_path, command, toml, flags, expected, required):
    cls, config = OPTIONS[command], []
    if toml is not None:
        (tmp_path / "options.toml").write_text(toml)
        config = ["--config", tmp_path / "options.toml"]
    got = _options(command, *config, *flags)
    assert got == cls(**expected)
    assert _options(command, *flags, *config) == got  # where --config stands does not matter
    if required is not None:
        with pytest.raises(ConfigError, match=rf"{cls.__name__}: {required}(, --[\w-]+)* required"):
            _options(command)


# a command line that gives only the required fields, and the options it makes: the dataclass's own defaults
DEFAULTS = [
    (["dataset", "--celebdf", "c", "--out", "f.h5"], DatasetConfig(celebdf=Path("c"), out=Path("f.h5"))),
    (["detector"], DetectorOptions()),
    (["search", "--data", "d", "--out", "o"], SearchOptions(data=Path("d"), out=Path("o"))),
    (["evaluate", "--out", "e"], EvaluateOptions(out=Path("e"))),
    (["engines"], EngineOptions()),
    (["export", "--checkpoint", "c.pt"], ExportOptions(checkpoint=Path("c.pt"))),
    (["validate"], ValidateOptions()),
    (["calibrate"], CalibrateOptions()),
    (["realfaces"], RealFacesOptions()),
    (["placeholders"], PlaceholderOptions()),
    (["pack", "recipes/paper.toml", "--set", "celebdf=/d"], PackOptions()),
    (["all", "--celebdf", "c", "--work", "w"], AllOptions(celebdf=Path("c"), work=Path("w"))),
]


@pytest.mark.parametrize(("argv", "expected"), DEFAULTS, ids=[d[0][0] for d in DEFAULTS])
def test_no_flag_and_no_file_is_the_dataclass_defaults(argv, expected):
    assert _options(*argv) == expected


@pytest.mark.parametrize(
    "cls", [*OPTIONS.values(), DetectorTrainConfig, RuntimeOptions, SelectOptions], ids=lambda c: c.__name__
)
def test_every_option_says_what_it_is_beside_it(cls):
    own = [f for f in dataclasses.fields(cls) if f.name in cls.__dict__.get("__annotations__", {})]
    undocumented = [f.name for f in own if not field_help(cls).get(f.name)]
    assert own and not undocumented, f"{cls.__name__}: add a comment beside {undocumented} (it is the flag's help)"


# command, its --config file, what the refusal names
REFUSED = [
    ("dataset", 'celebdf = "t"\nout = "o.h5"\nreal = 9\n', r"unknown field 'real'"),  # the field, not the flag
    ("dataset", 'celebdf = "t"\nout = "o.h5"\nframes = 0\n', r"frames must be in \[1, inf\]"),
    ("detector", "imgsz = 416\nbatchsize = 8\n", r"unknown field 'batchsize'"),
    ("search", 'data = "d.h5"\nout = "o"\nn_trials = "five"\n', r"n_trials: expected int"),
    ("evaluate", 'out = "o"\nthreshold = 1.5\n', r"threshold must be in \[0, 1\]"),
    ("engines", 'device = "tpu"\n', r"device must be one of \['cpu', 'cuda'\]"),
    ("export", "threshold = 0.7\n", r"--checkpoint required"),
    ("export", 'checkpoint = "c.pt"\nthreshhold = 0.7\n', r"unknown field 'threshhold'"),
    ("export", 'checkpoint = "c.pt"\nweights = "first"\n', r"weights must be one of \['best', 'last'\]"),
    ("export", 'checkpoint = "c.pt"\nthreshold = 2.0\n', r"threshold must be in \[0, 1\], got 2"),
    ("validate", "thread = 2\n", r"unknown field 'thread'"),
    ("validate", 'real_split = "train"\n', r"real_split must be one of \['test', 'val'\]"),
    ("calibrate", "no_broadcast = true\n", r"unknown field 'no_broadcast'"),  # the field, not the --no- flag
    ("realfaces", 'tools = "lipsync"\n', r"tools: expected an array"),
    ("placeholders", "detector_size = 500\n", r"detector_size must be one of \[320, 416, 640\]"),
    ("all", 'work = "w"\n', r"--celebdf required"),
    ("all", 'celebdf = "c"\nwork = "w"\nfit_epochs = 3\n', r"unknown field 'fit_epochs'"),  # a stage's: a flag only
    ("all", 'celebdf = "c"\nwork = "w"\nuntil = "pack"\n', r"until must be one of \['dataset'"),
]


@pytest.mark.parametrize(
    ("command", "toml", "message"),
    REFUSED,
    ids=[f"{c}-{re.sub(r'[^a-z_]+', '-', m).strip('-')[:28]}" for c, _, m in REFUSED],
)
def test_a_missing_field_an_unknown_key_or_a_bad_value_is_named(tmp_path, command, toml, message):
    config = tmp_path / "options.toml"
    config.write_text(toml)
    with pytest.raises(ConfigError, match=rf"config {re.escape(str(config))}:? .*{message}"):
        _options(command, "--config", config)


def test_the_detector_options_hold_its_training_config_and_a_serving_size_among_the_sizes(tmp_path):
    assert _options("detector").train_config() == DetectorTrainConfig()
    trained = _options("detector", "--imgsz", "640", "--hours", "0", "--media", "m").train_config()
    assert trained == DetectorTrainConfig(imgsz=640, hours=None)
    config = tmp_path / "detector.toml"
    config.write_text("sizes = [320]\nserving_size = 416\n")
    for argv in (["--config", config], ["--sizes", "320", "--serving-size", "416"]):
        with pytest.raises(TrainerError, match=r"--serving-size 416 is not among --sizes \[320\]"):
            _options("detector", *argv)


def test_pack_keeps_its_recipes_and_set_values_beside_its_options():
    args = build_parser().parse_args(["pack", "recipes/a.toml", "recipes/b.toml", "--dry-run", "--set", "celebdf=/d"])
    assert config_from_args(PackOptions, args) == PackOptions(dry_run=True)
    assert (args.recipes, args.set) == ([Path("recipes/a.toml"), Path("recipes/b.toml")], ["celebdf=/d"])


def test_a_refused_config_stops_the_command_before_any_work(tmp_path, capsys):
    assert main(["export", "--out", str(tmp_path / "m.onnx")]) == 1
    assert "dfwatch-train export: error: ExportOptions: --checkpoint required" in capsys.readouterr().err
    assert not (tmp_path / "m.onnx").exists()


def test_fit_runtime_and_selection_options_come_from_their_dataclasses(tmp_path):
    base = ["fit", "--data", "faces.h5", "--out", str(tmp_path)]
    assert runtime_options(build_parser().parse_args(base)) == {"device": "auto", "threads": None, "workers": 0}
    args = build_parser().parse_args([*base, "--threads", "2", "--device", "cpu", "--workers", "1"])
    assert runtime_options(args) == {"device": "cpu", "threads": 2, "workers": 1}
    assert make_selector(build_parser().parse_args(base), size=64, margin=0.25, device="cpu") is None
    for bad in (["--threads", "0"], ["--device", "tpu"], ["--workers", "-1"]):
        with pytest.raises(SystemExit):
            build_parser().parse_args([*base, *bad])


def test_all_mirrors_the_stage_options_but_not_a_stage_config_file():
    base = ["all", "--celebdf", "c", "--work", "w"]
    args = build_parser().parse_args([*base, "--export-min-face", "96", "--fit-threads", "2"])
    assert (args.export__min_face, args.fit__threads) == (96, 2)
    with pytest.raises(SystemExit):
        build_parser().parse_args([*base, "--export-config", "e.toml"])
