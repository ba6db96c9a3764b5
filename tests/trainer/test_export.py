"""export: a trained checkpoint -> ONNX + manifest with provenance + card, served by engines.Classifier."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.trainer._tiny import tiny_crops, write_tiny_store
from trainer.fit import TrainConfig, fit, load_checkpoint, model_from_checkpoint

CFG = TrainConfig(model="paper_cnn", model_args={"filters": [8, 16], "pool_every": True}, lr=3e-3, epochs=3)


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("export")
    store = write_tiny_store(root / "faces.h5")
    return fit(CFG, data=store, out=root / "run", progress=False, threads=1).checkpoint


def test_export_then_onnx_runtime_scores_like_torch_and_tells_fakes_apart(trained, tmp_path, capsys):
    from engines import Classifier, load_manifest
    from trainer.cli import main

    out = tmp_path / "models" / "deepfake_classifier.onnx"
    assert main(["evaluate", "--checkpoint", str(trained), "--out", str(tmp_path / "eval")]) == 0
    report = tmp_path / "eval" / "report.json"
    assert main(["export", "--checkpoint", str(trained), "--out", str(out), "--report", str(report)]) == 0
    assert "next: dfwatch-train engines" in capsys.readouterr().err
    classifier = Classifier(out)
    assert classifier.input_size == 32 and classifier.crop_margin == 0.25 and classifier.threshold == 0.5
    rng = np.random.default_rng(7)
    crops = np.concatenate([tiny_crops(4, fake=False, size=32, rng=rng), tiny_crops(4, fake=True, size=32, rng=rng)])
    p = classifier(crops)  # (8,) P(fake) through ONNX Runtime
    model = model_from_checkpoint(load_checkpoint(trained))
    with torch.no_grad():
        x = torch.from_numpy(crops).permute(0, 3, 1, 2).float() / 255.0  # (8, 3, 32, 32)
        np.testing.assert_allclose(p, torch.sigmoid(model(x)).reshape(-1).numpy(), atol=1e-5)
    assert p[:4].max() < 0.5 <= p[4:].min()  # the trained network, not noise: reals below, fakes above
    manifest = load_manifest(out, kind="classifier")
    assert not manifest.placeholder and manifest.name == "paper_cnn"
    training = manifest.training
    ckpt = load_checkpoint(trained)
    assert training["dataset"]["fingerprint"] == ckpt["dataset"]["fingerprint"]
    assert training["config"] == ckpt["config"] and training["epoch"] == ckpt["best"]["epoch"]
    run = json.loads(report.read_text())["runs"][0]
    assert training["metrics"]["frame"]["accuracy"] == run["frame"]["accuracy"]
    assert training["command"].startswith("dfwatch-train export --checkpoint ")
    card = out.with_suffix(".md").read_text()
    assert "PLACEHOLDER" not in card and ckpt["dataset"]["fingerprint"][:16] in card and "| Accuracy |" in card


def test_export_writes_the_smallest_face_the_service_should_score(trained, tmp_path):
    from engines import Classifier, load_manifest
    from trainer.cli import main

    plain, sized = tmp_path / "plain" / "c.onnx", tmp_path / "sized" / "c.onnx"
    assert main(["export", "--checkpoint", str(trained), "--out", str(plain)]) == 0
    assert main(["export", "--checkpoint", str(trained), "--out", str(sized), "--min-face", "96"]) == 0
    assert Classifier(plain).min_face == 0 and "min_face" not in load_manifest(plain, kind="classifier").preprocess
    manifest = load_manifest(sized, kind="classifier")
    assert Classifier(sized).min_face == 96 and manifest.preprocess == {"crop_margin": 0.25, "min_face": 96}
    assert "--min-face 96" in manifest.training["command"]


def test_export_refuses_what_is_not_a_checkpoint_and_a_foreign_report(trained, tmp_path):
    from trainer.cli import main

    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    assert main(["export", "--checkpoint", str(tmp_path / "junk.pt"), "--out", str(tmp_path / "m.onnx")]) == 1
    (tmp_path / "r.json").write_text(json.dumps({"runs": [{"checkpoint": "/elsewhere/checkpoint.pt"}]}))
    assert (
        main(
            [
                "export",
                "--checkpoint",
                str(trained),
                "--out",
                str(tmp_path / "m.onnx"),
                "--report",
                str(tmp_path / "r.json"),
            ]
        )
        == 1
    )
    assert not (tmp_path / "m.onnx").exists()


def test_export_refuses_a_report_of_other_weights(trained, tmp_path):
    """Metrics of the last epoch's weights must not go into the manifest of the best epoch's."""
    from trainer.cli import main

    assert main(["evaluate", "--checkpoint", str(trained), "--weights", "last", "--out", str(tmp_path / "eval")]) == 0
    report = tmp_path / "eval" / "report.json"
    assert (
        main(["export", "--checkpoint", str(trained), "--out", str(tmp_path / "m.onnx"), "--report", str(report)]) == 1
    )
    assert not (tmp_path / "m.onnx").exists()
    assert (
        main(
            [
                "export",
                "--checkpoint",
                str(trained),
                "--out",
                str(tmp_path / "m.onnx"),
                "--weights",
                "last",
                "--report",
                str(report),
            ]
        )
        == 0
    )
