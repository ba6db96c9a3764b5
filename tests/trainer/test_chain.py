"""The whole chain on the miniature Celeb-DF tree, through `dfwatch-train all`:
dataset -> search (2 trials x 1 epoch) -> fit -> evaluate -> export -> engines, then ONNX Runtime
inference of the exported classifier; a rerun resumes stage by stage."""

from __future__ import annotations

import json

from trainer.fit import load_checkpoint
from trainer.store import FaceStore

CHAIN = [
    "--dataset-all",
    "--dataset-whole-frames",
    "--dataset-frames",
    "6",
    "--dataset-crop-size",
    "64",
    "--dataset-no-progress",
    "--search-n-trials",
    "2",
    "--search-epochs",
    "1",
    "--search-families",
    "paper_cnn",
    "--search-cnn-blocks",
    "2-2",
    "--search-sampler-seed",
    "0",
    "--fit-epochs",
    "2",
    "--threads",
    "1",
    "--engines-no-progress",
]


def test_all_runs_the_chain_on_the_mini_tree_and_resumes(mini_celebdf, tmp_path, capsys):
    from engines import Classifier, load_manifest
    from trainer.cli import main

    work = tmp_path / "work"
    argv = ["all", "--celebdf", str(mini_celebdf.root), "--work", str(work), *CHAIN]
    assert main(argv) == 0
    # dataset: whole frames of every video, identity split
    with FaceStore(work / "faces.h5") as store:
        fingerprint = store.fingerprint()
        assert store.attrs["split_protocol"] == "identity" and store.crop_size == 64
        test_rows = store.indices("test", originals_only=True)
        test_videos = set(store.meta("video")[test_rows])
        crops, labels = store.crops(test_rows), store.meta("label")[test_rows]
    assert test_videos == set(mini_celebdf.test)
    # search: two finished trials; fit: its best config, two epochs, on that store
    trials = (work / "search" / "trials.csv").read_text().splitlines()
    assert len(trials) == 3
    best = json.loads((work / "search" / "best_config.json").read_text())
    ckpt = load_checkpoint(work / "fit" / "checkpoint.pt")
    assert ckpt["dataset"]["fingerprint"] == fingerprint and len(ckpt["history"]) == 2
    assert ckpt["config"]["model_args"] == best["config"]["model_args"] and ckpt["config"]["lr"] == best["config"]["lr"]
    # evaluate: the test list's 4 videos
    report = json.loads((work / "eval" / "report.json").read_text())
    (run,) = report["runs"]
    assert run["video"]["n"] == len(mini_celebdf.test) and run["frame"]["n"] == len(test_rows)
    assert (work / "eval" / "roc.png").is_file() and "| Accuracy |" in capsys.readouterr().out
    # export: ONNX Runtime scores the store's test frames like the checkpoint's report says
    onnx = work / "models" / "deepfake_classifier.onnx"
    manifest = load_manifest(onnx, kind="classifier")
    assert manifest.training["dataset"]["fingerprint"] == fingerprint and not manifest.placeholder
    p = Classifier(onnx)(crops)  # (n,) P(fake)
    accuracy = float(((p >= 0.5) == (labels == 1)).mean())
    assert accuracy == run["frame"]["accuracy"]
    state = json.loads((work / "all_state.json").read_text())
    assert list(state) == ["dataset", "search", "fit", "evaluate", "export", "engines"]

    # a rerun skips every stage; a longer fit reruns fit (resumed) and what follows, not dataset or search
    assert main(argv) == 0
    assert "6 skipped as done" in capsys.readouterr().err
    assert main([*argv, "--fit-epochs", "3"]) == 0
    err = capsys.readouterr().err
    assert "4 stage(s) run (fit, evaluate, export, engines), 2 skipped as done (dataset, search)" in err
    assert len(load_checkpoint(work / "fit" / "checkpoint.pt")["history"]) == 3
    assert len((work / "search" / "trials.csv").read_text().splitlines()) == 3  # the search did not run again


def test_compare_protocols_plans_two_stores_one_search_two_fits_and_one_table(tmp_path):
    from pipeline.flags import config_from_args
    from trainer.cli import build_parser
    from trainer.commands.all import STAGES, AllOptions, plan, stage_namespace

    args = build_parser().parse_args(
        [
            "all",
            "--celebdf",
            "/data/cdf",
            "--work",
            str(tmp_path),
            "--compare-protocols",
            "--until",
            "export",
            "--threads",
            "2",
            "--search-threads",
            "1",
            "--device",
            "auto",
            "--fit-epochs",
            "7",
        ]
    )
    options = config_from_args(AllOptions, args)
    steps = plan(options, list(STAGES))
    assert [key for key, _, _ in steps] == [
        "dataset:identity",
        "dataset:paper",
        "search",
        "fit:identity",
        "fit:paper",
        "evaluate",
        "export",
    ]
    argv = {key: managed for key, _, managed in steps}
    assert argv["dataset:paper"][-2:] == ["--split", "paper"]
    assert argv["search"][:2] == ["--data", str(tmp_path / "identity" / "faces.h5")]  # searched once, honestly
    assert str(tmp_path / "search" / "best_config.json") in argv["fit:paper"]  # both protocols fit that config
    assert argv["evaluate"] == [
        "--run",
        f"identity={tmp_path / 'identity' / 'fit' / 'checkpoint.pt'}",
        "--run",
        f"paper={tmp_path / 'paper' / 'fit' / 'checkpoint.pt'}",
        "--compare-protocols",
        "--out",
        str(tmp_path / "eval"),
    ]
    assert argv["export"][1] == str(tmp_path / "identity" / "fit" / "checkpoint.pt")
    fit = stage_namespace("fit", argv["fit:paper"], args, options)
    assert (fit.epochs, fit.threads, fit.device, fit.resume, fit.batch_size) == (7, 2, "auto", True, None)  # config's
    search = stage_namespace("search", argv["search"], args, options)
    assert (search.threads, search.n_trials, search.epochs) == (1, None, None)  # its own flag wins; others its own
    assert search.total_trials == 5  # search's n_trials: a rerun of the stage runs the missing trials, not 5 more
    engines = stage_namespace("engines", ["--models", str(tmp_path)], args, options)
    assert engines.device is None  # "auto" is not an engines device: engines keeps its own default


def test_all_refuses_a_changed_search_space_on_the_old_study(tmp_path, capsys):
    """The old study's finished trials would count against the new space and its best come back."""
    from pipeline.flags import config_from_args
    from trainer.cli import build_parser, main
    from trainer.commands.all import STAGES, AllOptions, _options, plan, stage_namespace

    base = ["all", "--celebdf", str(tmp_path / "tree"), "--work", str(tmp_path), "--until", "search"]
    args = build_parser().parse_args([*base, "--search-families", "paper_cnn"])
    options, state = config_from_args(AllOptions, args), {}
    for key, stage, managed in plan(options, list(STAGES)):
        ns = stage_namespace(stage, managed, args, options)
        state[key] = {"finished": "", "seconds": 0, "options": json.loads(json.dumps(_options(ns), default=str))}
    (tmp_path / "all_state.json").write_text(json.dumps(state))
    assert main([*base, "--search-families", "efficientnet"]) == 1
    assert "search options ['families'] changed" in capsys.readouterr().err
    # more trials, or a new study, are fine (they stop later, on the missing tree's store)
    for extra in (
        ["--search-families", "efficientnet", "--search-study-name", "other"],
        ["--search-families", "paper_cnn", "--search-n-trials", "9"],
    ):
        assert main(["--debug", *base, *extra]) == 1
        err = capsys.readouterr().err  # --debug: the traceback, through the redacting log formatter
        assert "no such face store" in err and "Traceback" in err
