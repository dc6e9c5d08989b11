"""RealTimeMaskAttribution: Captum API, shapes, targets, encoders, side effects, persistence."""

from __future__ import annotations

import json

import numpy as np
import pytest
import timm
import torch
import torchvision
from captum.attr import NoiseTunnel
from captum.attr import visualization as viz
from captum.metrics import infidelity, sensitivity_max
from torch import nn

from captum_realtime_mask import (
    CheckpointError,
    EncoderSpec,
    InputError,
    RealTimeMaskAttribution,
)
from captum_realtime_mask._model_state import snapshot_model, weights_in_format


def _batch(n=4, size=64, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 3, size, size, generator=g), torch.randint(0, 5, (n,), generator=g)


@pytest.fixture
def fitted(timm_resnet):
    x, y = _batch()
    attr = RealTimeMaskAttribution(timm_resnet)
    attr.fit([(x, y), (x.flip(-1), y)], epochs=1, progress=False)
    return attr, x, y


def test_captum_flags(timm_resnet):
    attr = RealTimeMaskAttribution(timm_resnet)
    assert attr.multiplies_by_inputs is False
    assert attr.has_convergence_delta() is False
    assert attr.num_classes == 5
    assert hasattr(attr.attribute, "__wrapped__")


def test_shape_range_dtype_device(fitted):
    attr, x, y = fitted
    out = attr.attribute(x, target=y)
    assert out.shape == x.shape and out.dtype == x.dtype and out.device == x.device
    assert out.is_contiguous()
    assert float(out.min()) >= 0.0 and float(out.max()) <= 1.0
    # Broadcast over channels: every channel is the same single mask.
    assert torch.equal(out[:, 0], out[:, 2])
    raw = attr.mask(x, target=y)
    assert raw.shape == (4, 1, 64, 64)
    assert torch.equal(raw[:, 0], out[:, 1])
    assert attr.attribute(x.double(), target=y).dtype == torch.float64


@pytest.mark.parametrize(
    "target",
    [3, torch.tensor(3), torch.tensor([3]), [3, 3, 3, 3], (3, 3, 3, 3), torch.tensor([3, 3, 3, 3])],
)
def test_every_target_form_gives_the_same_masks(fitted, target):
    attr, x, _ = fitted
    expected = attr.mask(x, target=torch.full((4,), 3))
    assert torch.equal(attr.mask(x, target=target), expected)


def test_targets_select_classes(fitted):
    attr, x, _ = fitted
    a = attr.mask(x, target=0)
    b = attr.mask(x, target=1)
    assert not torch.equal(a, b)
    mixed = attr.mask(x, target=[0, 1, 0, 1])
    assert torch.equal(mixed[0], a[0]) and torch.equal(mixed[1], b[1])


def test_target_none_explains_the_prediction_with_one_call(fitted):
    attr, x, _ = fitted
    calls = []
    model = attr.forward_func

    def counting(inp):
        calls.append(len(inp))
        return model(inp)

    attr.forward_func = counting
    try:
        out = attr.mask(x)
        assert calls == [4]
        pred = model(x).argmax(1)
        assert torch.equal(out, attr.mask(x, target=pred))
        calls.clear()
        attr.mask(x, target=pred)
        assert calls == []  # a given target costs no classifier call
    finally:
        attr.forward_func = model


def test_tuple_inputs_round_trip(fitted):
    attr, x, y = fitted
    out = attr.attribute((x,), target=y)
    assert isinstance(out, tuple) and len(out) == 1
    assert torch.equal(out[0], attr.attribute(x, target=y))


def test_confidence_offset_grows_masks(fitted):
    attr, x, y = fitted
    low = attr.mask(x, target=y, confidence=-20.0).mean()
    high = attr.mask(x, target=y, confidence=20.0).mean()
    assert not torch.isclose(low, high)


@pytest.mark.parametrize(
    "target, match",
    [
        (7, "< 5"),
        (-1, ">= 0"),
        ([1, 2], "4"),
        (torch.tensor([0.5] * 4), "integer"),
        ("cat", "int"),
    ],
)
def test_bad_targets_raise_named_errors(fitted, target, match):
    attr, x, _ = fitted
    with pytest.raises(InputError, match="target") as err:
        attr.attribute(x, target=target)
    assert match in str(err.value)


def test_bad_inputs_raise_named_errors(fitted):
    attr, x, y = fitted
    with pytest.raises(InputError, match="inputs"):
        attr.attribute(x[0], target=0)
    with pytest.raises(InputError, match="divisible"):
        attr.attribute(torch.rand(2, 3, 50, 50), target=0)
    with pytest.raises(InputError, match="channels"):
        attr.attribute(torch.rand(2, 1, 64, 64), target=0)
    bad = x.clone()
    bad[0, 0, 0, 0] = float("nan")
    with pytest.raises(InputError, match="NaN"):
        attr.attribute(bad, target=y)


def test_refinement_starts_from_the_learned_mask_on_its_own_grid(fitted):
    attr, x, y = fitted
    learned = attr.mask(x, target=y)
    assert learned.std() > 0.01  # a mask with detail, which a coarser grid would blur
    # Steps too small to move the logits give back the learned mask, up to init_mask's clamp.
    still = attr.attribute(x, target=y, refine_steps=1, refine_options={"lr": 1e-12})
    assert still.shape == x.shape and still.dtype == x.dtype
    assert torch.allclose(still[:, :1], learned.clamp(0.01, 0.99), atol=1e-5)
    # The iterative method's default grid for 64 px (8 x 8) is coarser than the masker's.
    coarse = attr.attribute(
        x, target=y, refine_steps=1, refine_options={"lr": 1e-12, "mask_size": 8}
    )
    assert (coarse[:, :1] - learned.clamp(0.01, 0.99)).abs().max() > 0.01


def test_refinement_moves_the_mask_and_leaves_the_classifier_alone(fitted):
    attr, x, y = fitted
    model = attr.model
    model.train()
    before = snapshot_model(model, tensors=True)
    refined = attr.attribute(x, target=y, refine_steps=30)
    assert before.differences(snapshot_model(model, tensors=True)) == []
    assert (refined[:, :1] - attr.mask(x, target=y)).abs().max() > 0.05
    assert float(refined.min()) >= 0.0 and float(refined.max()) <= 1.0


@pytest.mark.parametrize(
    "steps, options, match",
    [
        (-1, None, "refine_steps"),
        (2.5, None, "refine_steps"),
        (True, None, "refine_steps"),
        (2, [("lr", 0.1)], "refine_options"),
        (2, {"n_iter": 5}, "refine_options: n_iter"),
        (2, {"init_mask": None}, "refine_options: init_mask"),
        (2, {"return_history": True}, "refine_options: return_history"),
    ],
)
def test_bad_refinement_arguments_raise_named_errors(fitted, steps, options, match):
    attr, x, y = fitted
    with pytest.raises(InputError, match=match):
        attr.attribute(x, target=y, refine_steps=steps, refine_options=options)


def test_fit_leaves_the_classifier_untouched(timm_resnet):
    timm_resnet.train()
    timm_resnet.fc.weight.requires_grad_(False)  # a mixed state must survive too
    before = snapshot_model(timm_resnet, tensors=True)
    x, y = _batch()
    attr = RealTimeMaskAttribution(timm_resnet)
    attr.fit([(x, y)], epochs=2, progress=False)
    attr.attribute(x, target=y)
    attr.attribute(x)
    assert before.differences(snapshot_model(timm_resnet, tensors=True)) == []


@pytest.mark.parametrize("channels_last", [False, True])
def test_fit_restores_the_classifier_after_an_exception(timm_resnet, channels_last):
    timm_resnet.train()
    before, layout = snapshot_model(timm_resnet, tensors=True), _layout(timm_resnet)
    x, y = _batch()

    def loader():
        yield x, y
        raise RuntimeError("disk on fire")

    attr = RealTimeMaskAttribution(timm_resnet)
    with pytest.raises(RuntimeError, match="disk on fire"):
        attr.fit(loader(), epochs=1, progress=False, channels_last=channels_last)
    assert before.differences(snapshot_model(timm_resnet, tensors=True)) == []
    assert _layout(timm_resnet) == layout


def _layout(model: torch.nn.Module) -> dict[str, tuple[int, tuple[int, ...]]]:
    """Storage address and strides of every parameter and buffer."""
    named = [*model.named_parameters(), *model.named_buffers()]
    return {name: (t.data_ptr(), t.stride()) for name, t in named}


def test_weights_in_format_keeps_updates_and_gives_each_weight_its_storage_back():
    cl = torch.channels_last
    conv = torch.nn.Conv2d(3, 4, 3)
    nhwc = torch.nn.Conv2d(3, 4, 3).to(memory_format=cl)
    ptr, ptr_nhwc = conv.weight.data_ptr(), nhwc.weight.data_ptr()
    # conv's weight is reached through two modules; it is converted and restored once.
    modules = [conv, torch.nn.Sequential(conv), nhwc]
    with pytest.raises(RuntimeError, match="boom"), weights_in_format(modules, cl):
        assert conv.weight.is_contiguous(memory_format=cl) and not conv.weight.is_contiguous()
        assert nhwc.weight.data_ptr() == ptr_nhwc  # already channels-last: not copied
        with torch.no_grad():
            conv.weight.add_(1.0)  # training in the block
        updated = conv.weight.detach().clone()
        raise RuntimeError("boom")
    assert conv.weight.data_ptr() == ptr and conv.weight.is_contiguous()
    assert torch.equal(conv.weight, updated)
    assert nhwc.weight.data_ptr() == ptr_nhwc and nhwc.weight.is_contiguous(memory_format=cl)


def test_channels_last_fit_trains_alike_and_gives_both_models_their_layout_back(timm_resnet):
    cl = torch.channels_last
    x, y = _batch()
    before, layout = snapshot_model(timm_resnet, tensors=True), _layout(timm_resnet)
    seen = []

    def record(module, args):
        weight = next(p for p in module.parameters() if p.dim() == 4)
        seen.append((args[0].is_contiguous(memory_format=cl), weight.is_contiguous()))

    runs = {}
    for channels_last in (False, True):
        attr = RealTimeMaskAttribution(timm_resnet, seed=0)
        handle = timm_resnet.register_forward_pre_hook(record)
        try:
            attr.fit([(x, y)], epochs=2, progress=False, channels_last=channels_last)
        finally:
            handle.remove()
        runs[channels_last] = attr
    # The option reached the classifier: channels-last images and weights, only when asked.
    assert {s for s, _ in seen} == {False, True}
    assert seen[0] == (False, True) and seen[-1] == (True, False)
    # Only rounding differs: the first step's terms (before any update) agree closely; Adam's
    # first update is about lr * sign(gradient), so near-zero gradients let it grow a little.
    for plain, nhwc, rel in zip(runs[False].history, runs[True].history, (1e-5, 2e-2)):
        assert plain.keys() == nhwc.keys()
        for k in plain:
            assert nhwc[k] == pytest.approx(plain[k], rel=rel, abs=1e-6), k
    assert all(p.is_contiguous() for p in runs[True].masker.parameters())
    assert _layout(timm_resnet) == layout  # the same storage and strides as before
    assert before.differences(snapshot_model(timm_resnet, tensors=True)) == []


@pytest.mark.parametrize("destroy_fill", ["alternative", "inpaint"])
def test_gradients_reach_the_masker_and_never_the_classifier(timm_resnet, destroy_fill):
    from captum_realtime_mask.objective import ObjectiveConfig
    from captum_realtime_mask.training.step import step_terms

    x, y = _batch()
    attr = RealTimeMaskAttribution(timm_resnet, encoder="small_cnn")
    attr.masker.train()
    for p in timm_resnet.parameters():
        p.requires_grad_(False)
    terms, _ = step_terms(
        attr.masker,
        timm_resnet,
        x,
        y,
        5,
        ObjectiveConfig(fake_prob=0.0, destroy_fill=destroy_fill),
        torch.Generator().manual_seed(0),
    )
    terms.total.backward()
    grads = [p.grad for p in attr.masker.parameters() if p.requires_grad]
    assert all(g is not None for g in grads)
    assert sum(float(g.abs().sum()) for g in grads) > 0
    assert all(p.grad is None for p in timm_resnet.parameters())


def test_fit_updates_only_the_masker_and_keeps_history(timm_resnet):
    x, y = _batch()
    attr = RealTimeMaskAttribution(timm_resnet)
    before = {k: v.clone() for k, v in attr.masker.state_dict().items()}
    attr.fit([(x, y)], epochs=2, progress=False, val_loader=[(x, y)])
    after = attr.masker.state_dict()
    assert any(not torch.equal(before[k], after[k]) for k in before)
    assert len(attr.history) == 2
    for key in ("loss", "tv", "area", "preserve", "destroy", "gate", "val_loss", "val_area"):
        assert np.isfinite(attr.history[-1][key]), key


def test_fit_is_seeded_and_reproducible(timm_resnet):
    x, y = _batch()
    masks = []
    for _ in range(2):
        attr = RealTimeMaskAttribution(timm_resnet, seed=3)
        attr.fit([(x, y), (x, y)], epochs=1, progress=False)
        masks.append(attr.mask(x, target=y))
    assert torch.equal(masks[0], masks[1])


def test_fit_rejects_bad_loaders(timm_resnet):
    attr = RealTimeMaskAttribution(timm_resnet)
    with pytest.raises(InputError, match="empty|no batches"):
        attr.fit([], epochs=1, progress=False)
    x, _ = _batch()
    with pytest.raises(InputError, match="labels"):
        attr.fit([(x, torch.tensor([0, 1, 9, 2]))], epochs=1, progress=False)
    with pytest.raises(InputError, match="unknown options"):
        attr.fit([(x, torch.zeros(4, dtype=torch.long))], epochs=1, lr_scheduel="cosine")


def test_save_load_is_bit_identical(fitted, tmp_path):
    attr, x, y = fitted
    attr.save(tmp_path / "m")
    config = json.loads((tmp_path / "m" / "config.json").read_text())
    assert config["format_version"] == 1 and config["masker"]["num_classes"] == 5
    again = RealTimeMaskAttribution.load(tmp_path / "m", attr.forward_func)
    assert torch.equal(again.attribute(x, target=y), attr.attribute(x, target=y))
    assert again.history == attr.history


def test_load_rejects_tampered_and_truncated_files(fitted, tmp_path):
    attr, _, _ = fitted
    attr.save(tmp_path / "m")
    weights = tmp_path / "m" / "masker.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated"):
        RealTimeMaskAttribution.load(tmp_path / "m", attr.forward_func)
    attr.save(tmp_path / "m")  # overwriting an existing directory works
    cfg = tmp_path / "m" / "config.json"
    cfg.write_text(cfg.read_text().replace('"format_version": 1', '"format_version": 99'))
    with pytest.raises(CheckpointError, match="format_version"):
        RealTimeMaskAttribution.load(tmp_path / "m", attr.forward_func)
    with pytest.raises(CheckpointError, match="config.json"):
        RealTimeMaskAttribution.load(tmp_path / "missing", attr.forward_func)


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


def test_plain_callable_needs_an_encoder_of_its_own(timm_resnet):
    with pytest.raises(InputError, match="nn.Module"):
        RealTimeMaskAttribution(lambda x: timm_resnet(x), num_classes=5)
    attr = RealTimeMaskAttribution(lambda x: timm_resnet(x), num_classes=5, encoder="small_cnn")
    x, y = _batch()
    assert attr.attribute(x, target=y).shape == x.shape


def test_custom_encoder_module(timm_resnet, tmp_path):
    class TwoScales(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.Conv2d(3, 8, 3, stride=4, padding=1)
            self.b = nn.Conv2d(8, 16, 3, stride=2, padding=1)

        def forward(self, x):
            a = self.a(x)
            return [a, self.b(a)]

    enc = TwoScales()
    attr = RealTimeMaskAttribution(timm_resnet, encoder=enc)
    assert attr.masker.encoder.reductions == [4, 8]
    x, y = _batch()
    attr.save(tmp_path / "c")
    with pytest.raises(InputError, match="module"):
        RealTimeMaskAttribution.load(tmp_path / "c", timm_resnet)
    again = RealTimeMaskAttribution.load(tmp_path / "c", timm_resnet, encoder=enc)
    assert torch.equal(again.mask(x, target=y), attr.mask(x, target=y))


def test_pretrained_without_network_gives_a_clear_error(timm_resnet, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(InputError, match="pretrained=False"):
        RealTimeMaskAttribution(timm_resnet, encoder="test_resnet")


def test_paper_preset_architecture(timm_resnet):
    attr = RealTimeMaskAttribution(timm_resnet, preset="paper")
    ups = attr.masker.upsamplers
    assert isinstance(ups[0].up, nn.ConvTranspose2d)
    assert ups[0].up.out_channels == 768 and ups[1].up.out_channels == 384
    assert len(ups[0].blocks) == 3
    assert attr.masker.mask_stride == 4


def test_captum_visualisation_and_metrics_accept_the_attributions(fitted):
    attr, x, y = fitted
    out = attr.attribute(x, target=y)
    model = attr.forward_func
    fig, _ = viz.visualize_image_attr(
        out[0].permute(1, 2, 0).numpy(),
        x[0].permute(1, 2, 0).numpy(),
        method="blended_heat_map",
        sign="positive",
        use_pyplot=False,
    )
    assert fig is not None

    def perturb(inputs):
        noise = torch.randn_like(inputs) * 0.01
        return noise, inputs - noise

    inf = infidelity(model, perturb, x, out, target=y, n_perturb_samples=2)
    assert inf.shape == (4,) and torch.isfinite(inf).all()
    sens = sensitivity_max(attr.attribute, x, target=y, n_perturb_samples=2)
    assert sens.shape == (4,) and torch.isfinite(sens).all()
    nt = NoiseTunnel(attr).attribute(x, nt_samples=2, nt_type="smoothgrad", target=y)
    assert nt.shape == x.shape


def test_learning_on_coloured_squares(squares_task):
    """A short fit puts the mask on the class square and leaves absent classes near-empty.

    Fails when the objective or the masker is broken (e.g. a constant mask, a selector that is
    ignored, a preserve or destroy term with the wrong sign). It checks the mask's mass, not
    box hits: after 300 steps the share of boxes with IoU > 0.5 depends on the training seed
    (16% to 71% over seeds 0 to 2, masks with a blurred margin), while the mask inside the
    square was 0.69 to 0.92 and 5 to 11 times the mask outside it.
    """
    clf, (xtr, ytr), (xte, yte, bte) = squares_task
    attr = RealTimeMaskAttribution(
        clf,
        num_classes=3,
        encoder=EncoderSpec(kind="small_cnn", width=8, min_reduction=2),
    )
    loader = [(xtr[i : i + 32], ytr[i : i + 32]) for i in range(0, len(xtr), 32)]
    attr.fit(loader, max_steps=300, lr=3e-3, progress=False)
    masks = attr.mask(xte, target=yte)[:, 0]
    inside = torch.zeros_like(masks, dtype=torch.bool)
    for i, (x0, y0, x1, y1) in enumerate(bte.long().tolist()):
        inside[i, y0 : y1 + 1, x0 : x1 + 1] = True
    on_square, off_square = masks[inside].mean().item(), masks[~inside].mean().item()
    assert on_square > 0.5, f"mean mask on the class square only {on_square:.2f}"
    assert on_square > 3 * off_square, f"mask {on_square:.2f} on the square, {off_square:.2f} off"
    absent = attr.mask(xte, target=(yte + 1) % 3).mean().item()
    present = masks.mean().item()
    assert absent < 0.2 * present, f"absent-class area {absent:.3f} vs true {present:.3f}"


def test_shape_bucket_pads_real_selectors_with_fake_ones():
    from captum_realtime_mask.training.step import shape_bucket

    g = torch.Generator().manual_seed(0)
    for _ in range(20):
        real = torch.rand(64, generator=g) > 0.3
        idx = real.nonzero().squeeze(1)
        used = shape_bucket(idx, real)
        assert torch.equal(used[: len(idx)], idx)
        assert len(used) % 8 == 0 or len(used) == 64
        assert not real[used[len(idx) :]].any()
        assert len(set(used.tolist())) == len(used)


def test_fake_selectors_avoid_classes_the_classifier_sees(timm_resnet):
    from captum_realtime_mask.objective import ObjectiveConfig
    from captum_realtime_mask.training.step import step_terms

    # Fixed logits: class 4 is the only class under 5% on images 0-3; on images 4-5 every
    # class is likely (uniform), so they have no candidate and keep their label.
    logits = torch.full((6, 5), 3.0)
    logits[:4, 4] = -3.0
    logits[4:] = 0.0

    class Fixed(torch.nn.Module):
        def forward(self, images):
            return logits[: len(images)] if len(images) == 6 else timm_resnet(images)

    x, y = torch.rand(6, 3, 32, 32), torch.tensor([0, 1, 2, 3, 0, 1])
    attr = RealTimeMaskAttribution(timm_resnet, encoder="small_cnn", seed=0)
    objective = ObjectiveConfig(fake_prob=1.0, fake_max_prob=0.05)
    seen = []
    masker_forward = attr.masker.forward

    def spy(images, selector):
        seen.append(selector.clone())
        return masker_forward(images, selector)

    attr.masker.forward = spy
    for seed in range(5):
        _, real = step_terms(
            attr.masker, Fixed(), x, y, 5, objective, torch.Generator().manual_seed(seed)
        )
        assert real.tolist() == [False] * 4 + [True] * 2
        assert seen[-1].tolist() == [4, 4, 4, 4, 0, 1]
    with pytest.raises(ValueError, match="fake_max_prob"):
        ObjectiveConfig(fake_max_prob=0.0)
    saved = ObjectiveConfig().to_dict()
    del saved["fake_max_prob"]  # a configuration saved before the option existed
    assert ObjectiveConfig.from_dict(saved).fake_max_prob is None


def test_padded_classifier_batches_leave_the_loss_unchanged(timm_resnet, monkeypatch):
    from captum_realtime_mask.objective import ObjectiveConfig
    from captum_realtime_mask.training import step

    x, y = torch.rand(12, 3, 32, 32), torch.arange(12) % 5
    attr = RealTimeMaskAttribution(timm_resnet, encoder="small_cnn", seed=0)
    # Blurred alternatives only, so that the extra rows' random draws change no image.
    objective = ObjectiveConfig(fake_prob=0.5, blur_prob=1.0)

    def terms(devices):
        monkeypatch.setattr(step, "BUCKETED_DEVICES", frozenset(devices))
        out, real = step.step_terms(
            attr.masker, timm_resnet, x, y, 5, objective, torch.Generator().manual_seed(3)
        )
        return out, real

    plain, real = terms(())
    padded, real_padded = terms({"cpu"})
    assert torch.equal(real, real_padded) and int(real.sum()) % 8 > 0
    torch.testing.assert_close(padded.total, plain.total)


def test_filter_stride_uses_a_finer_map_with_a_presence_gate(timm_resnet, tmp_path):
    from captum_realtime_mask import EncoderSpec, MaskerConfig

    strides = RealTimeMaskAttribution(timm_resnet).masker.encoder.reductions
    cfg = MaskerConfig(num_classes=5, encoder=EncoderSpec(kind="classifier"))
    cfg.filter_stride = strides[-2]
    attr = RealTimeMaskAttribution(timm_resnet, masker_config=cfg, seed=0)
    assert attr.masker.presence is not None
    assert len(attr.masker.upsamplers) < len(RealTimeMaskAttribution(timm_resnet).masker.upsamplers)
    x, y = torch.rand(3, 3, 64, 64), torch.tensor([0, 1, 2])
    masks = attr.mask(x, target=y)
    assert masks.shape == (3, 1, 64, 64) and float(masks.max()) > 0
    # A strongly negative offset closes the presence gate: the masks are empty.
    assert float(attr.mask(x, target=y, confidence=-1e4).max()) == 0.0
    attr.save(tmp_path / "m")
    again = RealTimeMaskAttribution.load(tmp_path / "m", timm_resnet)
    assert again.masker.config.filter_stride == strides[-2]
    torch.testing.assert_close(again.mask(x, target=y), masks)
    cfg.filter_stride = 3
    with pytest.raises(InputError, match="filter_stride"):
        RealTimeMaskAttribution(timm_resnet, masker_config=cfg)


def test_competitive_presence_is_the_softmax_probability_of_the_class():
    from captum_realtime_mask.masker.blocks import FeatureFilter

    torch.manual_seed(0)
    f = FeatureFilter(channels=6, num_classes=4)
    feats, target = torch.randn(5, 6, 3, 3), torch.tensor([0, 1, 2, 3, 1])
    # Reference: each class's largest scaled dot product over positions, then a softmax.
    scores = (
        torch.stack(
            [
                (feats * f.embedding.weight[k].view(1, -1, 1, 1)).sum(1).flatten(1).amax(1)
                for k in range(4)
            ],
            1,
        )
        / 6**0.5
    )
    expected = scores.softmax(1).gather(1, target[:, None]).squeeze(1)
    got = torch.sigmoid(f.presence_logit(feats, target))
    torch.testing.assert_close(got, expected)
    # The presences of all classes of one image sum to one; the offset shifts the logit.
    every = torch.stack(
        [torch.sigmoid(f.presence_logit(feats, torch.full((5,), k))) for k in range(4)]
    )
    torch.testing.assert_close(every.sum(0), torch.ones(5))
    torch.testing.assert_close(
        f.presence_logit(feats, target, confidence=2.0), f.presence_logit(feats, target) + 2.0
    )


def test_presence_option_is_checked_and_old_configs_load_as_independent(timm_resnet):
    from captum_realtime_mask import EncoderSpec, MaskerConfig

    strides = RealTimeMaskAttribution(timm_resnet).masker.encoder.reductions
    cfg = MaskerConfig(num_classes=5, encoder=EncoderSpec(kind="classifier"))
    cfg.filter_stride = strides[-2]
    saved = cfg.to_dict()
    assert saved["presence"] == "competitive"
    del saved["presence"]
    assert MaskerConfig.from_dict(saved).presence == "independent"
    x, y = torch.rand(4, 3, 64, 64), torch.tensor([0, 1, 2, 3])
    outs = {}
    for mode in ("competitive", "independent"):
        cfg.presence = mode
        masker = RealTimeMaskAttribution(timm_resnet, masker_config=cfg, seed=0).masker.eval()
        outs[mode] = masker(x, y).gate_logit
    assert not torch.allclose(outs["competitive"], outs["independent"])
    # Competitive presence scales the mask's odds; independent presence scales the mask.
    small, p = torch.tensor([0.0, 0.5, 0.9, 1.0]).view(4, 1, 1, 1), torch.full((4,), 0.25)
    for mode, expected in (
        ("competitive", [0.0, 0.2, 9 / 13, 1.0]),
        ("independent", [0.0, 0.125, 0.225, 0.25]),
    ):
        cfg.presence = mode
        masker = RealTimeMaskAttribution(timm_resnet, masker_config=cfg).masker
        got = masker._apply_presence(small, p).flatten()
        torch.testing.assert_close(got, torch.tensor(expected))
        assert float(masker._apply_presence(small, torch.zeros(4)).max()) == 0.0
    cfg.presence = "softmax"
    with pytest.raises(InputError, match="presence"):
        RealTimeMaskAttribution(timm_resnet, masker_config=cfg)
