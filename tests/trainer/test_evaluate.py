"""evaluate: metrics of a trained checkpoint match a direct computation; reports, plots, protocols."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.trainer._tiny import write_tiny_store
from trainer.fit import TrainConfig, fit, load_checkpoint, model_from_checkpoint
from trainer.metrics import binary_metrics, pool_by_video
from trainer.paper.evaluate import EvaluateError, parse_run
from trainer.store import FaceStore

CFG = TrainConfig(model="paper_cnn", model_args={"filters": [8, 16], "pool_every": True}, lr=3e-3, epochs=3)
PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """One checkpoint per split protocol, each trained on its own tiny store."""
    root = tmp_path_factory.mktemp("evaluate")
    out = {}
    for protocol in ("identity", "paper"):
        store = write_tiny_store(root / f"{protocol}.h5", split_protocol=protocol, seed=len(protocol))
        out[protocol] = fit(CFG, data=store, out=root / protocol, progress=False, threads=1).checkpoint
    return out


def _direct(checkpoint: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Labels, P(fake) and videos of the test split, computed without trainer.paper.evaluate."""
    ckpt = load_checkpoint(checkpoint)
    model = model_from_checkpoint(ckpt)
    with FaceStore(ckpt["dataset"]["path"]) as store:
        rows = store.indices("test", originals_only=True)
        x = torch.from_numpy(store.crops(rows)).permute(0, 3, 1, 2).float() / 255.0  # (n, 3, S, S)
        labels, videos = store.meta("label")[rows], store.meta("video")[rows]
    with torch.no_grad():
        p = torch.sigmoid(model(x)).reshape(-1).double().numpy()
    return labels, p, videos


def test_evaluate_command_writes_report_json_markdown_and_plots(runs, tmp_path, capsys):
    from trainer.cli import main

    assert main(["evaluate", "--checkpoint", str(runs["identity"]), "--out", str(tmp_path), "--threads", "1"]) == 0
    report = json.loads((tmp_path / "report.json").read_text())
    (run,) = report["runs"]
    labels, p, videos = _direct(runs["identity"])
    frame = binary_metrics(labels, p)
    for key in ("accuracy", "precision", "recall", "f1", "roc_auc", "eer"):
        assert run["frame"][key] == pytest.approx(getattr(frame, key), abs=1e-6), key
    assert run["frame"]["confusion"] == frame.confusion and run["frame"]["n"] == 16
    _, vl, vp = pool_by_video(videos, labels, p, reduce="mean")
    assert run["video"]["n"] == 4 and run["video"]["roc_auc"] == pytest.approx(binary_metrics(vl, vp).roc_auc)
    assert run["split_protocol"] == "identity" and len(run["history"]) == 3
    md = (tmp_path / "report.md").read_text()
    assert "| Accuracy |" in md and "| F1 |" in md and "| real |" in md and "![roc](roc.png)" in md
    for png in ("roc.png", "history_model.png"):
        data = (tmp_path / png).read_bytes()
        assert data.startswith(PNG) and len(data) > 5000
    assert f"| Accuracy | {run['frame']['accuracy']:.4f} | {run['video']['accuracy']:.4f} |" in capsys.readouterr().out


def test_video_score_pooling_is_configurable(runs, tmp_path):
    from trainer.cli import main

    assert (
        main(
            [
                "evaluate",
                "--checkpoint",
                str(runs["identity"]),
                "--out",
                str(tmp_path),
                "--video-score",
                "max",
                "--weights",
                "last",
            ]
        )
        == 0
    )
    (run,) = json.loads((tmp_path / "report.json").read_text())["runs"]
    assert run["video_reduce"] == "max" and run["weights"] == "last"


def test_compare_protocols_puts_both_side_by_side_with_the_difference(runs, tmp_path, capsys):
    from trainer.cli import main

    argv = [
        "evaluate",
        "--out",
        str(tmp_path),
        "--compare-protocols",
        "--run",
        f"paper={runs['paper']}",
        "--run",
        f"identity={runs['identity']}",
    ]
    assert main(argv) == 0
    table = capsys.readouterr().out
    header = table.splitlines()[0]
    assert header == (
        "| metric | identity frame | identity video | paper frame | paper video | "
        "paper - identity frame | paper - identity video |"
    )
    report = json.loads((tmp_path / "report.json").read_text())
    ident, paper = report["runs"]  # identity first, whatever the order given
    assert (ident["split_protocol"], paper["split_protocol"]) == ("identity", "paper")
    diff = paper["frame"]["accuracy"] - ident["frame"]["accuracy"]
    assert f"| {diff:+.4f} |" in table.splitlines()[2]
    assert "leakage" in (tmp_path / "report.md").read_text()
    assert (
        main(
            [
                "evaluate",
                "--out",
                str(tmp_path),
                "--compare-protocols",
                "--run",
                f"a={runs['identity']}",
                "--run",
                f"b={runs['identity']}",
            ]
        )
        == 1
    )


def test_bad_runs_are_named(runs, tmp_path):
    from trainer.paper.evaluate import RunSpec, evaluate_checkpoint, order_for_comparison, write_report

    with pytest.raises(EvaluateError, match=r"expected LABEL=CHECKPOINT or LABEL=CHECKPOINT,DATA.h5"):
        parse_run("just/a/path.pt")
    spec = parse_run(f"x={runs['identity']},{tmp_path / 'other.h5'}")
    assert spec.data == tmp_path / "other.h5" and spec.label == "x"
    one = evaluate_checkpoint(RunSpec("a", runs["identity"]), progress=False)
    with pytest.raises(EvaluateError, match=r"one per split protocol \['identity', 'paper'\]; got \['a: identity'\]"):
        order_for_comparison([one])
    with pytest.raises(EvaluateError, match=r"run labels must differ"):
        write_report([one, one], tmp_path)
    with pytest.raises(EvaluateError, match=r"unknown video pooling 'mode'"):
        evaluate_checkpoint(RunSpec("a", runs["identity"]), reduce="mode")
