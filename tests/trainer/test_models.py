"""The architecture registry and the paper's CNN."""

from __future__ import annotations

import pytest
import torch

from trainer.models import create_model, list_models


def test_paper_cnn_matches_the_paper_layout_and_shapes():
    model = create_model("paper_cnn").eval()  # 256x256 input, conv 32 -> conv 64 -> pool -> dropout -> dense
    convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    assert [c.out_channels for c in convs] == [32, 64]
    assert sum(isinstance(m, torch.nn.Dropout) for m in model.modules()) == 2
    dense = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
    assert [d.in_features for d in dense] == [64 * 126 * 126] and dense[-1].out_features == 1
    with torch.no_grad():
        assert model(torch.rand(2, 3, 256, 256)).shape == (2, 1)  # logits


def test_paper_cnn_config_overrides():
    model = create_model("paper_cnn", input_size=64, filters=(16, 32, 64), dense_units=128)
    with torch.no_grad():
        assert model(torch.rand(1, 3, 64, 64)).shape == (1, 1)
    assert model.cfg.filters == (16, 32, 64)


def test_unknown_model_lists_the_valid_ones():
    assert "paper_cnn" in list_models()
    with pytest.raises(KeyError, match=r"unknown model 'resnet9'; valid: \['paper_cnn'"):
        create_model("resnet9")


def test_placeholders_command_writes_artifacts_manifests_and_cards(tmp_path):
    from engines import Classifier, Detector
    from trainer.cli import main

    assert main(["placeholders", "--out", str(tmp_path), "--detector-size", "320", "--classifier-size", "64"]) == 0
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == [
        "deepfake_classifier.md", "deepfake_classifier.onnx", "deepfake_classifier.onnx.json",
        "face_detector.md", "face_detector.onnx", "face_detector.onnx.json",
    ]  # fmt: skip
    assert Detector(tmp_path / "face_detector.onnx").input_size == 320
    assert Classifier(tmp_path / "deepfake_classifier.onnx").input_size == 64
    assert "PLACEHOLDER" in (tmp_path / "deepfake_classifier.md").read_text()
