"""Tests of ``captum_realtime_mask.masker.encoders``: the classifier's modes, grayscale
classifiers, wrappers, clear errors, and models that take one image size only."""

from __future__ import annotations

import doctest

import pytest
import timm
import torch
import torchvision
from torch import nn

from captum_realtime_mask import EncoderSpec, InputError, RealTimeMaskAttribution
from captum_realtime_mask._model_state import snapshot_model
from captum_realtime_mask.benchmark.blackbox import Normalize
from captum_realtime_mask.masker import MaskerConfig, MaskingModel, encoders
from captum_realtime_mask.masker.encoders import build_encoder

MEAN, STD = (0.5, 0.4, 0.3), (0.2, 0.25, 0.3)


def _batch(n=4, size=32, chans=3, classes=10, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, chans, size, size, generator=g)
    return x, torch.randint(0, classes, (n,), generator=g)


def _tv_resnet(chans=3, full=False):
    """torchvision's ResNet: resnet18, or (faster) one block per stage."""
    torch.manual_seed(0)
    if full:
        model = torchvision.models.resnet18(num_classes=10)
    else:
        model = torchvision.models.resnet.ResNet(
            torchvision.models.resnet.BasicBlock, [1, 1, 1, 1], num_classes=10
        )
    if chans != 3:
        model.conv1 = nn.Conv2d(chans, 64, 7, 2, 3, bias=False)
    return model


class _Custom(nn.Module):
    """A hand-written classifier (traced through torchvision's feature extractor)."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, 2, 1), nn.BatchNorm2d(8), nn.ReLU())
        self.stage = nn.Sequential(nn.Conv2d(8, 16, 3, 2, 1), nn.BatchNorm2d(16), nn.ReLU())
        self.drop = nn.Dropout(0.5)
        self.head = nn.Linear(16, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.drop(self.stage(self.stem(x)).mean((2, 3))))


def _assert_unchanged(model, before, when):
    diff = before.differences(snapshot_model(model, tensors=True))
    assert diff == [], f"{when}: {diff[:5]}"


# ------------------------------------------------------------------ 1. the classifier's modes
@pytest.mark.parametrize(
    ("make", "mixed"),
    [(lambda: _tv_resnet(full=True), False), (_Custom, False), (_Custom, True)],
    ids=["resnet18-train", "custom-train", "custom-mixed"],
)
def test_classifier_modes_survive_construction_fit_attribute_and_load(make, mixed, tmp_path):
    torch.manual_seed(0)
    model = make().train()
    bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    if mixed:  # a frozen batch-norm inside a model in train mode must stay so
        bns[0].eval()
    x, y = _batch()
    before = snapshot_model(model, tensors=True)
    attr = RealTimeMaskAttribution(model, num_classes=10)
    _assert_unchanged(model, before, "construction")
    # The frozen backbone runs with eval-mode batch-norm inside fit() and attribute().
    seen: list[bool] = []
    attr.fit([(x, y)], max_steps=1, progress=False)
    _assert_unchanged(model, before, "fit")  # running statistics untouched too
    handle = bns[-1].register_forward_pre_hook(lambda m, _: seen.append(m.training))
    try:
        attr.masker.encoder(x)
        attr.attribute(x, target=y)
    finally:
        handle.remove()
    assert seen and not any(seen)
    _assert_unchanged(model, before, "attribute")
    attr.save(tmp_path / "m")
    again = RealTimeMaskAttribution.load(tmp_path / "m", model)
    _assert_unchanged(model, before, "load")
    assert torch.equal(again.attribute(x, target=y), attr.attribute(x, target=y))


# ------------------------------------------------------------------ 2. grayscale classifiers
def _grayscale_timm():
    torch.manual_seed(0)
    return timm.create_model("test_resnet", pretrained=False, num_classes=10, in_chans=1)


@pytest.mark.parametrize(
    "make", [_grayscale_timm, lambda: _tv_resnet(chans=1)], ids=["timm", "torchvision"]
)
def test_grayscale_classifier_with_the_default_encoder(make, tmp_path):
    model = make().eval()
    x, y = _batch(chans=1)
    attr = RealTimeMaskAttribution(model)
    assert attr.masker.config.encoder.in_chans == 1
    attr.fit([(x, y)], max_steps=1, progress=False)
    out = attr.attribute(x, target=y)
    assert out.shape == x.shape == (4, 1, 32, 32)
    assert attr.attribute(x).shape == x.shape  # predicted targets: the classifier runs too
    with pytest.raises(InputError, match="inputs"):
        attr.attribute(x.expand(-1, 3, -1, -1), target=y)
    attr.save(tmp_path / "m")
    again = RealTimeMaskAttribution.load(tmp_path / "m", model)
    assert again.masker.config.encoder.in_chans == 1
    assert torch.equal(again.attribute(x, target=y), out)


def test_classifier_in_chans_is_recorded_on_a_copy_of_the_users_spec():
    spec = EncoderSpec(kind="classifier")
    config = MaskerConfig(num_classes=10, encoder=spec)
    attr = RealTimeMaskAttribution(_grayscale_timm().eval(), masker_config=config)
    assert attr.masker.config.encoder.in_chans == 1
    assert spec.in_chans == 3 and config.encoder is spec  # the user's objects are unchanged
    # Three channels keep the config as given (saved maskers load as before).
    three = MaskingModel(config, timm.create_model("test_resnet", num_classes=10))
    assert three.config == config and three.config.encoder.in_chans == 3


# ------------------------------------------------------------------ 3. wrappers and errors
def _masks(model, x, y, **kwargs):
    attr = RealTimeMaskAttribution(model, num_classes=10, **kwargs)
    attr.fit([(x, y)], max_steps=1, progress=False)
    return attr.attribute(x, target=y)


def _maps(model, x):
    with torch.no_grad():
        return RealTimeMaskAttribution(model, num_classes=10).masker.encoder(x)


def test_torchvision_normalize_wrapper_works_like_the_packages_own():
    x, y = _batch()
    net = _tv_resnet().eval()
    ours = _maps(nn.Sequential(Normalize(MEAN, STD), net).eval(), x)
    tv = nn.Sequential(torchvision.transforms.Normalize(MEAN, STD), net).eval()
    before = snapshot_model(tv, tensors=True)
    theirs = _maps(tv, x)
    assert len(theirs) == len(ours) == 4
    for a, b in zip(theirs, ours):
        torch.testing.assert_close(a, b)
    assert _masks(tv, x, y).shape == x.shape
    _assert_unchanged(tv, before, "fit and attribute")


@pytest.mark.parametrize(
    "make", [_tv_resnet, lambda: timm.create_model("test_resnet", num_classes=10)]
)
def test_data_parallel_is_looked_through(make):
    x, y = _batch()
    torch.manual_seed(0)
    model = make().eval()
    wrapped = nn.DataParallel(model)
    for a, b in zip(_maps(wrapped, x), _maps(model, x), strict=True):
        assert torch.equal(a, b)
    assert _masks(wrapped, x, y).shape == x.shape


def test_classifier_without_a_stride_pyramid_gets_a_clear_error():
    torch.manual_seed(0)
    squeeze = torchvision.models.squeezenet1_1(num_classes=10).eval()
    with pytest.raises(InputError) as info:
        RealTimeMaskAttribution(squeeze)
    msg = str(info.value)
    assert msg.startswith("model:") and "could not be split into feature maps" in msg
    assert "small_cnn" in msg and "widen" not in msg
    # The suggested fix works.
    x, _ = _batch()
    attr = RealTimeMaskAttribution(squeeze, encoder="small_cnn")
    assert attr.attribute(x, target=1).shape == x.shape


def test_probe_failure_is_an_input_error_that_suggests_probe_size():
    torch.manual_seed(0)
    fixed = nn.Sequential(
        nn.Conv2d(3, 8, 3, 2, 1),
        nn.ReLU(),
        nn.Conv2d(8, 8, 3, 2, 1),
        nn.Flatten(),
        nn.Linear(8 * 8 * 8, 10),  # only 32 x 32 images fit
    ).eval()
    with pytest.raises(InputError, match="probe_size"):
        RealTimeMaskAttribution(fixed)
    x, y = _batch()
    assert _masks(fixed, x, y, encoder=EncoderSpec(probe_size=32)).shape == x.shape


def test_named_torchvision_encoder_keeps_its_weights_in_eval_until_trained():
    attr = RealTimeMaskAttribution(
        _tv_resnet().eval(), encoder="torchvision:resnet18", pretrained=False
    )
    net = attr.masker.encoder.net
    assert not any(m.training for m in net.modules())
    attr.masker.train()
    assert all(m.training for m in net.modules())  # trained from scratch: not frozen


# ------------------------------------------------------------------ 4. normalised input
def test_documented_recipe_for_a_normalised_pretrained_style_encoder():
    x, y = _batch()
    features = timm.create_model("test_resnet", pretrained=False, features_only=True)
    encoder = nn.Sequential(Normalize(MEAN, STD), features)
    model = nn.Sequential(Normalize(MEAN, STD), timm.create_model("test_resnet", num_classes=10))
    attr = RealTimeMaskAttribution(model.eval(), encoder=encoder, pretrained=True)
    before = {k: v.clone() for k, v in features.state_dict().items()}
    attr.fit([(x, y)], max_steps=1, progress=False)
    assert attr.attribute(x, target=y).shape == x.shape
    after = features.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # frozen: weights and stats
    # The encoder saw normalised images.
    with torch.no_grad():
        expected = features(
            (x - torch.tensor(MEAN).view(1, 3, 1, 1)) / torch.tensor(STD).view(1, 3, 1, 1)
        )
        maps = attr.masker.encoder(x)
    torch.testing.assert_close(maps[-1], expected[-1])


# ------------------------------------------------------------------ 5. small_cnn strides
@pytest.mark.parametrize("kwargs", [{}, {"min_reduction": 2}, {"min_reduction": 8}])
def test_small_cnn_always_returns_its_three_maps(kwargs):
    spec = EncoderSpec(kind="small_cnn", width=4, **kwargs)
    masker = MaskingModel(MaskerConfig(num_classes=3, encoder=spec))
    assert masker.encoder.reductions == [2, 4, 8]
    assert len(masker.encoder(torch.zeros(1, 3, 32, 32))) == 3


# ------------------------------------------------------------------ 6. the spec's checks
@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"kind": "resnet"}, "kind: expected one of 'classifier' or 'timm' or 'torchvision'"),
        ({"kind": "timm"}, "name: kind 'timm' needs the model's name, e.g. EncoderSpec"),
        ({"kind": "torchvision", "name": 3}, "name: expected a model name \\(str\\), got int 3"),
        ({"pretrained": "yes"}, "pretrained: expected True or False, got str 'yes'"),
        ({"frozen": 1}, "frozen: expected True or False, got int 1"),
        ({"in_chans": 0}, "in_chans: expected a positive int, got int 0"),
        ({"width": 8.0}, "width: expected a positive int, got float 8.0"),
        ({"probe_size": True}, "probe_size: expected a positive int, got bool True"),
        (
            {"min_reduction": 8, "max_reduction": 4},
            "max_reduction: expected an int >= 8, got int 4",
        ),
        ({"return_nodes": "layer1"}, "return_nodes: expected a list of node names"),
        ({"kwargs": [("a", 1)]}, "kwargs: expected a dict of keyword arguments, got a list"),
    ],
)
def test_spec_names_the_field_and_what_it_expected(kwargs, match):
    with pytest.raises(InputError, match=f"^EncoderSpec.{match}"):
        EncoderSpec(**kwargs)


def test_spec_round_trip_keeps_plain_values():
    import numpy as np

    spec = EncoderSpec(
        kind="torchvision", name="resnet18", min_reduction=np.int64(8), return_nodes=("layer3",)
    )
    assert type(spec.min_reduction) is int and spec.return_nodes == ["layer3"]
    assert EncoderSpec.from_dict(spec.to_dict()) == spec
    assert EncoderSpec().to_dict()["frozen"] is None and EncoderSpec(frozen=np.bool_(1)).frozen


# ------------------------------------------------------------------ 7. one input size (ViTs)
def _tiny_vit(image_size: int = 32) -> nn.Module:
    """torchvision's VisionTransformer, one layer wide enough to classify 10 classes."""
    torch.manual_seed(0)
    vit = torchvision.models.VisionTransformer(
        image_size=image_size,
        patch_size=8,
        num_layers=1,
        num_heads=2,
        hidden_dim=16,
        mlp_dim=32,
        num_classes=10,
    )
    return vit.eval()


def test_torchvision_vit_encoder_is_probed_at_its_own_image_size():
    # ViT-B/16 built for 64-pixel images asserts that size: a probe at probe_size (224) fails.
    spec = EncoderSpec(kind="torchvision", name="vit_b_16", kwargs={"image_size": 64})
    encoder = build_encoder(spec)
    assert encoder.reductions == [16] and encoder.channels == [768]
    assert encoder.input_size == 64
    maps = encoder(torch.rand(2, 3, 64, 64))
    assert [tuple(m.shape) for m in maps] == [(2, 768, 4, 4)]
    with pytest.raises(InputError) as info:
        encoder(torch.rand(1, 3, 32, 32))
    message = str(info.value)
    assert message.startswith("inputs: the masker's encoder takes 64x64 images only, got images ")
    assert "of 32x32 pixels. Hint: resize the images to 64x64 pixels" in message
    assert "EncoderSpec(kind='torchvision', name='vit_b_16', kwargs={'image_size': S})" in message


@pytest.mark.parametrize("wrapped", [False, True], ids=["vit", "normalize-then-vit"])
def test_vit_classifier_backbone_is_probed_at_its_image_size(wrapped):
    model = _tiny_vit(32)
    if wrapped:
        model = nn.Sequential(Normalize(MEAN, STD), model).eval()
    x, y = _batch(size=32)
    # Any probe_size: the ViT's own image_size decides.
    attr = RealTimeMaskAttribution(model, encoder=EncoderSpec(probe_size=100))
    assert attr.masker.encoder.reductions == [8] and attr.masker.encoder.input_size == 32
    attr.fit([(x, y)], max_steps=1, progress=False)
    assert attr.attribute(x, target=y).shape == x.shape
    with pytest.raises(InputError, match=r"^inputs: .*takes 32x32 images only.*64x64 pixels"):
        attr.attribute(torch.rand(2, 3, 64, 64), target=y[:2])


def test_encoders_of_any_input_size_accept_any_size():
    encoder = build_encoder(EncoderSpec(kind="torchvision", name="resnet18"))
    assert encoder.input_size is None
    assert len(encoder(torch.rand(1, 3, 64, 64))) == len(encoder(torch.rand(1, 3, 96, 96)))


def test_docstring_examples():
    assert doctest.testmod(encoders).failed == 0


# ------------------------------------------------------------------- every kind of encoder


def test_encoders_timm_cnn_vit_torchvision_and_small_cnn():
    torch.manual_seed(0)
    x = torch.rand(2, 3, 64, 64)
    vit = timm.create_model("test_vit", pretrained=False, num_classes=4, img_size=64)
    tv = torchvision.models.resnet18(num_classes=4)
    cases = [
        (timm.create_model("test_resnet", pretrained=False, num_classes=4), "classifier"),
        (vit, "classifier"),
        (tv, "classifier"),
        (tv, "torchvision:resnet18"),
        (vit, "test_convnext"),
        (vit, "small_cnn"),
    ]
    for model, encoder in cases:
        model.eval()
        attr = RealTimeMaskAttribution(model, encoder=encoder, pretrained=False)
        attr.fit([(x, torch.tensor([0, 3]))], max_steps=1, progress=False)
        out = attr.attribute(x, target=1)
        assert out.shape == x.shape, (encoder, type(model).__name__)
        assert torch.isfinite(out).all()


def test_classifier_encoder_shares_weights_and_is_not_saved(timm_resnet, tmp_path):
    attr = RealTimeMaskAttribution(timm_resnet)
    names = set(attr.masker.state_dict())
    assert not any("fc.weight" in n or n.startswith("encoder.") for n in names)
    assert all(p.requires_grad for p in attr.masker.parameters())


def test_pretrained_without_network_gives_a_clear_error(timm_resnet, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(InputError, match="pretrained=False"):
        RealTimeMaskAttribution(timm_resnet, encoder="test_resnet")
