"""The architecture registry: the paper's CNN family, EfficientNet B0-B7, the residual CNN and the band-statistics
family, one interface."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from trainer.models import ModelConfigError, count_parameters, create_model, list_models, model_config


def test_paper_cnn_matches_the_paper_layout_and_shapes():
    model = create_model("paper_cnn").eval()  # 256x256 input, conv 32 -> conv 64 -> pool -> dropout -> dense
    convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    assert [c.out_channels for c in convs] == [32, 64]
    assert sum(isinstance(m, torch.nn.Dropout) for m in model.modules()) == 2
    assert sum(isinstance(m, torch.nn.MaxPool2d) for m in model.modules()) == 1
    dense = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
    assert [d.in_features for d in dense] == [64 * 126 * 126] and dense[-1].out_features == 1
    with torch.no_grad():
        assert model(torch.rand(2, 3, 256, 256)).shape == (2, 1)  # logits


def test_paper_cnn_config_overrides():
    model = create_model("paper_cnn", input_size=64, filters=(16, 32, 64), dense_units=128)
    with torch.no_grad():
        assert model(torch.rand(1, 3, 64, 64)).shape == (1, 1)
    assert model.cfg.filters == (16, 32, 64)


def test_family_options_change_the_network():
    model = create_model("paper_cnn", input_size=64, filters=[16, 32, 64], kernel=5, pool_type="avg", pool_every=True)
    assert model.cfg.filters == (16, 32, 64)  # JSON lists become tuples
    assert sum(isinstance(m, torch.nn.AvgPool2d) for m in model.modules()) == 3
    assert [c.kernel_size for c in model.modules() if isinstance(c, torch.nn.Conv2d)] == [(5, 5)] * 3
    # 64 -> conv5 60 -> pool 30 -> conv5 26 -> pool 13 -> conv5 9 -> pool 4: 64 channels * 4 * 4
    assert [m.in_features for m in model.modules() if isinstance(m, torch.nn.Linear)] == [64 * 4 * 4]
    deep = model_config("paper_cnn_deep", input_size=64)
    assert deep.filters == (32, 64, 128) and deep.pool_every and deep.dense_units == 128


@pytest.mark.parametrize("name", list_models())
def test_every_registered_model_answers_the_same_interface(name):
    with torch.device("meta"):  # shapes of every family member without allocating B7's weights
        model = create_model(name, input_size=64).eval()
        y = model(torch.rand(3, 3, 64, 64))  # (B, 3, S, S) -> (B, 1)
    assert y.shape == (3, 1) and y.dtype == torch.float32
    assert model.cfg.input_size == 64
    assert count_parameters(name, input_size=64) == sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("name", ["paper_cnn", "paper_cnn_deep", "efficientnet_b0", "spectral"])
def test_real_forward_of_each_family(name):
    torch.manual_seed(0)
    model = create_model(name, input_size=64).eval()
    with torch.no_grad():
        y = model(torch.rand(3, 3, 64, 64))
    assert y.shape == (3, 1) and torch.isfinite(y).all()
    assert y.abs().max() < 5  # a fresh head starts near P(fake) = 0.5, not saturated


def test_efficientnet_family_is_torchvisions_untrained_with_one_logit():
    b0, b3 = create_model("efficientnet_b0"), create_model("efficientnet_b3", dropout=0.1)
    assert b0.cfg.variant == "b0" and b0.cfg.input_size == 256
    assert b0.net.classifier[-1].out_features == 1 and b3.net.classifier[0].p == 0.1
    assert count_parameters("efficientnet_b3") > count_parameters("efficientnet_b0")
    # untrained: two seeds give different weights (nothing was loaded from a download)
    torch.manual_seed(1)
    other = create_model("efficientnet_b0")
    assert not torch.equal(other.net.features[0][0].weight, b0.net.features[0][0].weight)


def test_unknown_model_lists_the_valid_ones():
    families = {"paper_cnn", "paper_cnn_deep", "spectral"} | {f"efficientnet_b{i}" for i in range(8)}
    assert families | {f"efficientnet_lite{i}" for i in range(3)} == set(list_models())
    with pytest.raises(ModelConfigError, match=r"unknown model 'resnet9'; valid: \['efficientnet_b0'.*'paper_cnn'"):
        create_model("resnet9")


@pytest.mark.parametrize(
    ("name", "overrides", "message"),
    [
        ("paper_cnn", {"pool_type": "min"}, r"pool_type 'min' is not one of \['max', 'avg'\]"),
        ("paper_cnn", {"input_size": 8, "filters": (16, 32, 64), "kernel": 5}, r"input_size 8 is too small"),
        ("paper_cnn", {"filters": ()}, r"filters must be one or more positive widths"),
        ("paper_cnn", {"dropout_dense": 1.0}, r"dropout_dense must be in \[0, 1\)"),
        ("paper_cnn", {"width": 3}, r"unexpected keyword argument 'width'; valid fields: \['input_size', 'filters'"),
        ("efficientnet_b0", {"variant": "b9"}, r"variant 'b9' is not one of \['b0', 'b1'"),
        ("efficientnet_b2", {"input_size": 16}, r"input_size must be >= 32"),
        ("spectral", {"input_size": 32, "bands": 4}, r"4 bands need an input of at least 64 px, got 32"),
        ("spectral", {"bands": 1}, r"slopes compare neighbouring bands and need 2 or more, got 1"),
        ("spectral", {"hidden": -1}, r"hidden must be >= 0"),
        ("spectral", {"margin": 2.0}, r"margin must be in \[0, 1\], got 2.0"),
        (
            "spectral",
            {"regions": "both"},
            r"regions='both' was a study that did not ship \(research/README.md\); valid: \['inner'\]",
        ),
        ("spectral", {"statistics": "levels"}, r"statistics='levels' was a study .*; valid: \['slopes'\]"),
        ("spectral", {"chroma": True}, r"chroma=True was a study .*; valid: \[False\]"),
    ],
)
def test_bad_configs_name_the_value_and_the_valid_options(name, overrides, message):
    with pytest.raises(ModelConfigError, match=message):
        create_model(name, **overrides)


@pytest.mark.parametrize(
    ("name", "size", "args"),
    [
        ("paper_cnn", 48, {}),
        ("paper_cnn_deep", 64, {}),
        ("efficientnet_b0", 64, {}),
        ("spectral", 64, {}),
        ("spectral", 64, {"bands": 3, "hidden": 8}),
        ("efficientnet_lite0", 64, {"pretrained": False}),
    ],
)
def test_registered_models_export_to_onnx_and_score_through_engines(tmp_path, name, size, args):
    from engines import Classifier
    from engines.export import export_classifier

    torch.manual_seed(0)
    model = create_model(name, input_size=size, **args).eval()
    out = tmp_path / f"{name}.onnx"
    manifest, diff = export_classifier(
        model, out, name=name, input_size=size, crop_margin=0.25, placeholder=True, torch_reference=False
    )  # the torch reference (.pt2) is engines' business, tested there and by test_export.py
    assert manifest.name == name and diff < 1e-4
    crops = np.random.default_rng(0).integers(0, 256, (3, size, size, 3), dtype=np.uint8)
    got = Classifier(out)(crops)
    with torch.no_grad():
        x = torch.from_numpy(crops).permute(0, 3, 1, 2).float() / 255.0  # (3, 3, S, S)
        expected = torch.sigmoid(model(x)).reshape(-1).numpy()
    np.testing.assert_allclose(got, expected, atol=1e-4)


def test_placeholders_command_writes_artifacts_manifests_and_cards(tmp_path):
    from engines import Classifier, Detector
    from trainer.cli import main

    assert main(["placeholders", "--out", str(tmp_path), "--detector-size", "320", "--classifier-size", "64"]) == 0
    names = {p.name for p in tmp_path.iterdir()}  # (other backends may add their own artifacts)
    assert names >= {
        "deepfake_classifier.md",
        "deepfake_classifier.onnx",
        "deepfake_classifier.onnx.json",
        "face_detector.md",
        "face_detector.onnx",
        "face_detector.onnx.json",
    }
    assert Detector(tmp_path / "face_detector.onnx").input_size == 320
    assert Classifier(tmp_path / "deepfake_classifier.onnx").input_size == 64
    assert "PLACEHOLDER" in (tmp_path / "deepfake_classifier.md").read_text()


def _face_crop(size: int = 128, seed: int = 0) -> np.ndarray:
    """(size, size, 3) uint8: fine texture everywhere (a real crop's finest octave), a mid-grey face-like level."""
    rng = np.random.default_rng(seed)
    return np.clip(128 + rng.normal(0, 30, (size, size, 3)), 0, 255).astype(np.uint8)


def _stats(model, crops: np.ndarray) -> torch.Tensor:
    with torch.no_grad():
        return model.stats(torch.from_numpy(crops).permute(0, 3, 1, 2).float() / 255.0)  # (B, F)


def test_spectral_front_end_sees_a_face_that_lost_its_finest_octave_where_it_lost_it():
    import cv2

    from trainer.models.spectral import INNER, _ellipse

    model = create_model("spectral", input_size=128, bands=3).eval()
    assert [n for n, _ in model.named_parameters() if n.startswith("stats")] == []  # fixed: nothing to train
    assert _stats(model, _face_crop()[None]).shape == (1, 6)  # per band: inner face's log mean |.| and log rms
    real = _face_crop()
    low = cv2.resize(cv2.resize(real, (64, 64), interpolation=cv2.INTER_AREA), (128, 128))
    inner = _ellipse(128, 0.25, *INNER).numpy().astype(bool)
    pasted = real.copy()  # the inner face generated at half the side and pasted back: a swap's resolution mismatch
    pasted[inner] = low[inner]
    around = low.copy()  # the same loss everywhere but the inner face
    around[inner] = real[inner]
    a, b, c = _stats(model, np.stack([real, pasted, around]))
    assert b[0] < a[0] - 1.0 and b[1] < a[1] - 1.0  # finest octave of the inner face: far weaker
    assert abs(b[2] - a[2]) < abs(b[0] - a[0]) / 2  # the next octave changed much less
    assert torch.allclose(c[:2], a[:2], atol=0.1)  # a loss outside the inner face is not seen


def test_spectral_slopes_ignore_the_faces_contrast_and_see_its_lost_finest_octave():
    from trainer.models.spectral import INNER, _ellipse

    model = create_model("spectral", input_size=128, bands=4).eval()
    assert model.cfg.features == 6  # (mean |.|, rms) of the inner face, for 3 pairs of neighbouring octaves
    real = torch.from_numpy(_face_crop(seed=2)).permute(2, 0, 1).float()[None] / 255.0
    dim = 0.5 * real + 0.25  # half the contrast: every band's level falls by log 2, no ratio moves
    soft = real.clone()  # the inner face generated at half the side and pasted back
    low = torch.nn.functional.interpolate(torch.nn.functional.avg_pool2d(real, 2), scale_factor=2.0, mode="bilinear")
    inner = _ellipse(128, 0.25, *INNER).bool()
    soft[..., inner] = low[..., inner]
    with torch.no_grad():
        a, b, c = model.statistics(torch.cat([real, dim, soft]))
        levels = _stats(model, torch.cat([real, dim]).permute(0, 2, 3, 1).mul(255).numpy())
    assert torch.all(levels[1] < levels[0] - 0.6)  # the levels fell (log 2 = 0.69)...
    assert torch.allclose(a, b, atol=0.02)  # ...the slopes did not
    assert c[0] < a[0] - 1.0 and c[1] < a[1] - 1.0  # finest octave against the next: far weaker
    assert torch.allclose(c[4:], a[4:], atol=0.2)  # coarser octaves kept their shape


def test_spectral_default_is_the_shipped_head_and_loads_checkpoints_that_name_retired_options():
    shipped = create_model("spectral", input_size=256, regions="inner", chroma=False, statistics="slopes").eval()
    assert shipped.cfg == create_model("spectral").cfg  # the recipe's model args are the defaults now
    assert (shipped.cfg.bands, shipped.cfg.features, count_parameters("spectral")) == (2, 2, 7)  # as the card says
    old = {**shipped.state_dict(), "stats.ring": torch.ones(1, 1, 256, 256)}  # the ring's mask, in old checkpoints
    fresh = create_model("spectral").eval()
    fresh.load_state_dict(old)  # strict: nothing else is missing or unexpected
    x = torch.rand(2, 3, 256, 256)
    with torch.no_grad():
        torch.testing.assert_close(fresh(x), shipped(x))
