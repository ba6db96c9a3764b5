"""dfwatch-train pack: a recipe's steps run in order through the commands' own parsers, resumably."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from trainer.cli import build_parser, main
from trainer.commands.pack import STATE_FILE, load_recipe, step_argv
from trainer.errors import TrainerError

RECIPES = sorted((Path(__file__).resolve().parents[2] / "recipes").glob("*.toml"))


@pytest.mark.parametrize("recipe", RECIPES, ids=lambda p: p.name)
def test_every_shipped_recipe_parses_with_todays_commands(recipe: Path, tmp_path: Path):
    name, plan = load_recipe(recipe, work=tmp_path / "w", models=tmp_path / "m", given={"celebdf": "/data/celebdf"})
    assert name == recipe.stem and plan and all(argv[0] != "pack" for argv in plan)
    assert any(str(tmp_path / "m") in arg for argv in plan for arg in argv)  # its models go where --models says


def test_a_shipped_recipe_per_model_file():
    assert {p.stem for p in RECIPES} >= {"face_detector", "deepfake_classifier", "paper"}


def _recipe(path: Path, *, force: bool = False) -> Path:
    engines = '\n[[step]]\ncommand = "engines"\nmodels = "{models}"\nno_tensorrt = true\nno_progress = true\n'
    path.write_text(
        'name = "tiny"\n\n[[step]]\ncommand = "placeholders"\nout = "{models}"\nseed = 3\n'
        + engines
        + ("force = true\n" if force else "")
    )
    return path


def test_steps_run_in_order_and_a_rerun_resumes_after_what_finished(tmp_path: Path, capsys):
    recipe, work, models = _recipe(tmp_path / "tiny.toml"), tmp_path / "work", tmp_path / "models"
    argv = ["pack", str(recipe), "--work", str(work), "--models", str(models)]
    assert main(argv) == 0
    onnx = models / "deepfake_classifier.onnx"
    state = json.loads((work / STATE_FILE).read_text())
    assert list(state) == ["1:placeholders", "2:engines"] and onnx.is_file()
    made = onnx.stat().st_mtime_ns
    assert "2 steps" in capsys.readouterr().err

    assert main(argv) == 0  # everything done: nothing runs again
    assert onnx.stat().st_mtime_ns == made
    assert capsys.readouterr().err.count("done before") == 2

    _recipe(recipe, force=True)  # the second step changed: it runs again, the first does not
    assert main(argv) == 0
    err = capsys.readouterr().err
    assert "step 2/2" in err and "step 1/2" not in err and onnx.stat().st_mtime_ns == made
    assert json.loads((work / STATE_FILE).read_text())["2:engines"]["argv"][-1] == "--force"


def test_a_recipe_that_does_not_match_the_cli_fails_before_any_step_runs(tmp_path: Path):
    recipe = tmp_path / "bad.toml"
    recipe.write_text('[[step]]\ncommand = "placeholders"\nout = "{models}"\n\n[[step]]\ncommand = "fit"\nepochz = 3\n')
    with pytest.raises(TrainerError, match=r"step 2 \(fit --epochz 3\) does not parse"):
        load_recipe(recipe, work=tmp_path / "w", models=tmp_path / "m", given={})
    assert main(["pack", str(recipe), "--work", str(tmp_path / "w")]) == 1
    assert not (tmp_path / "w").exists()  # nothing ran, nothing was made

    # a step whose options cannot be built (a required flag left out) fails as early
    recipe.write_text('[[step]]\ncommand = "placeholders"\n\n[[step]]\ncommand = "export"\nthreshold = 0.5\n')
    with pytest.raises(TrainerError, match=r"step 2 \(export\): .*--checkpoint required"):
        load_recipe(recipe, work=tmp_path / "w", models=tmp_path / "m", given={})

    recipe.write_text('[[step]]\ncommand = "all"\ncelebdf = "{celebdf}"\nwork = "{work}"\n')
    with pytest.raises(TrainerError, match=r"uses \{celebdf\}: give --set celebdf=VALUE"):
        load_recipe(recipe, work=tmp_path / "w", models=tmp_path / "m", given={})


def test_several_recipes_make_one_pack_in_one_model_directory(tmp_path: Path):
    first, second = tmp_path / "first.toml", tmp_path / "second.toml"
    first.write_text('[[step]]\ncommand = "placeholders"\nout = "{models}"\nseed = 1\n')
    second.write_text('[[step]]\ncommand = "engines"\nmodels = "{models}"\nno_tensorrt = true\nno_progress = true\n')
    assert main(["pack", str(first), str(second), "--work", str(tmp_path / "w")]) == 0
    assert (tmp_path / "w" / "models" / "face_detector.onnx").is_file()  # the second step saw the first's models
    assert [json.loads((tmp_path / "w" / r / STATE_FILE).read_text()) != {} for r in ("first", "second")] == [True] * 2


def test_true_is_the_flag_and_false_its_no_form():
    step = {"command": "calibrate", "broadcast": False, "dry_run": True, "margin": 0.02, "media": "{media}"}
    argv = step_argv(step, {"media": "/data"})
    assert argv == ["calibrate", "--no-broadcast", "--dry-run", "--margin", "0.02", "--media", "/data"]
    args = build_parser().parse_args(argv)
    assert args.broadcast is False and args.dry_run is True  # calibrate's broadcast variants default to on
