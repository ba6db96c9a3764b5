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


@pytest.mark.parametrize("name", ["paper_cnn", "paper_cnn_deep", "efficientnet_b0", "rescnn", "spectral"])
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


def test_rescnn_stages_halve_the_side_and_pool_globally():
    model = create_model("rescnn", input_size=64, stem=8, widths=[8, 16, 32], blocks=[1, 2, 1], srm=False).eval()
    feats = model.stages(model.stem(model.srm(torch.rand(2, 3, 64, 64))))
    assert feats.shape == (2, 32, 4, 4)  # stem stride 2: 32, then three stages: 16, 8, 4
    assert sum(isinstance(m, torch.nn.Linear) for m in model.modules()) == 1  # pooled head: one dense layer
    convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    assert convs[0].in_channels == 3 and create_model("rescnn", input_size=64).stem[0].in_channels == 6


def test_rescnn_lse_head_pools_location_scores_between_their_mean_and_their_maximum():
    from trainer.models.rescnn import LSE_SHARPNESS

    model = create_model("rescnn", input_size=64, stem=8, widths=[8, 16], blocks=[1, 1], pool="lse").eval()
    pool = model.head[-1]
    z = torch.tensor([[0.0, 0.0, 0.0, 8.0]]).reshape(1, 1, 2, 2)  # one location with strong evidence
    pooled = float(pool(z))
    assert 2.0 < pooled < 8.0  # far above the mean (2), below the maximum (8)
    expected = (np.log(np.exp(LSE_SHARPNESS * np.array([0, 0, 0, 8.0])).mean())) / LSE_SHARPNESS
    assert pooled == pytest.approx(expected, rel=1e-5)
    assert model(torch.rand(2, 3, 64, 64)).shape == (2, 1)
    with pytest.raises(ModelConfigError, match=r"pool 'max' is not one of \['avg', 'lse'\]"):
        create_model("rescnn", pool="max")


def test_rescnn_srm_front_end_is_fixed_high_pass_of_the_grey_image():
    model = create_model("rescnn", input_size=32).eval()
    assert not [n for n, p in model.named_parameters() if n.startswith("srm")]  # fixed: nothing to train
    flat = torch.full((1, 3, 32, 32), 0.7)
    out = model.srm(flat)  # (1, 6, 32, 32)
    assert torch.equal(out[:, :3], flat)
    assert out[:, 3:, 2:-2, 2:-2].abs().max() < 1e-6  # a flat image has no residual away from the border
    ramp = torch.linspace(0, 1, 32).repeat(1, 3, 32, 1)  # linear in x: first and second differences
    residual = model.srm(ramp)[:, 3:, 4:-4, 4:-4]
    assert residual.abs().max() < 1e-5  # second-order kernels annihilate a linear ramp
    noise = model.srm(torch.rand(1, 3, 32, 32))[:, 3:, 2:-2, 2:-2]
    assert noise.abs().mean() > 0.05  # while noise passes


def test_unknown_model_lists_the_valid_ones():
    families = {"paper_cnn", "paper_cnn_deep", "rescnn", "spectral"} | {f"efficientnet_b{i}" for i in range(8)}
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
        ("rescnn", {"widths": (8, 16), "blocks": (1,)}, r"need one entry per stage"),
        ("rescnn", {"stem_stride": 3}, r"stem_stride 1 or 2"),
        ("rescnn", {"input_size": 8}, r"input_size 8 is too small for 3 stages"),
        ("spectral", {"input_size": 32}, r"4 bands need an input of at least 64 px, got 32"),
        ("spectral", {"hidden": -1}, r"hidden must be >= 0"),
        ("spectral", {"margin": 2.0}, r"margin must be in \[0, 1\], got 2.0"),
        ("spectral", {"regions": "ring"}, r"regions 'ring' is not one of \['inner', 'both'\]"),
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
        ("rescnn", 64, {}),
        ("rescnn", 64, {"pool": "lse"}),
        ("spectral", 64, {"bands": 3}),
        ("spectral", 64, {"bands": 3, "hidden": 8}),
        ("spectral", 64, {"bands": 3, "statistics": "slopes", "chroma": False}),
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

    model = create_model("spectral", input_size=128).eval()
    assert [n for n, _ in model.named_parameters() if n.startswith("stats")] == []  # fixed: nothing to train
    assert _stats(model, _face_crop()[None]).shape == (1, model.cfg.features) == (1, 20)
    real = _face_crop()
    pasted = real.copy()  # the inner face generated at half the side and pasted back: a swap's resolution mismatch
    low = cv2.resize(cv2.resize(real, (64, 64), interpolation=cv2.INTER_AREA), (128, 128))
    inner = _ellipse(128, 0.25, *INNER).numpy().astype(bool)
    pasted[inner] = low[inner]
    a, b = _stats(model, np.stack([real, pasted]))
    # columns: chroma difference signed (2) and absolute (2), then per band (inner |.|, inner rms, ring |.|, ring rms)
    assert b[4] < a[4] - 1.0 and b[5] < a[5] - 1.0  # finest octave of the inner face: far weaker
    assert torch.allclose(b[6:8], a[6:8], atol=0.05)  # the ring kept it
    assert abs(b[4 + 4] - a[4 + 4]) < abs(b[4] - a[4]) / 2  # the next octave changed much less
    inner_only = create_model("spectral", input_size=128, regions="inner").eval()
    c, d = _stats(inner_only, np.stack([real, pasted]))
    assert c.shape == (12,) and torch.allclose(c[4:6], a[4:6]) and torch.allclose(c[6:8], a[8:10])  # no ring columns


def test_spectral_slopes_ignore_the_faces_contrast_and_see_its_lost_finest_octave():
    from trainer.models.spectral import INNER, _ellipse

    model = create_model("spectral", input_size=128, regions="inner", chroma=False, statistics="slopes").eval()
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
    with pytest.raises(ModelConfigError, match="slopes compare neighbouring bands and need 2 or more, got 1"):
        create_model("spectral", statistics="slopes", bands=1)


def test_spectral_ring_leaves_a_black_canvas_out_and_chroma_compares_inner_and_ring():
    model = create_model("spectral", input_size=128).eval()
    crop = _face_crop(seed=1)
    canvas = crop.copy()
    canvas[:, :12] = 0  # a cut-out face on black, as in some published face-crop sets
    a, b = _stats(model, np.stack([crop, canvas]))
    assert torch.allclose(a[6:8], b[6:8], atol=0.05)  # the ring's statistics do not see the black border
    tinted = crop.astype(np.int16)
    tinted[..., 0] += 25  # the whole crop redder: no difference between inner face and ring
    c = _stats(model, np.clip(tinted, 0, 255).astype(np.uint8)[None])[0]
    assert abs(c[0] - a[0]) < 0.01 and abs(c[1] - a[1]) < 0.01
    from trainer.models.spectral import INNER, _ellipse

    inner = _ellipse(128, 0.25, *INNER).numpy().astype(bool)
    face = crop.astype(np.int16)
    face[inner, 0] += 25  # only the inner face redder: a colour mismatch, (R - G) up by about 25 / 255
    d = _stats(model, np.clip(face, 0, 255).astype(np.uint8)[None])[0]
    assert 0.07 < d[0] - a[0] < 0.11 and abs(d[1] - a[1]) < 0.01
    assert torch.allclose(d[2:4], d[0:2].abs())  # and its size, for a head that weighs a mismatch either way
