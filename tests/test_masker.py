"""The masking network (``masker``): the class count read from the classifier
(``masker.resolve``), the paper preset, and the presence gate of a finer filter map.
Encoders have their own file, test_encoders.py."""

from __future__ import annotations

import pytest
import torch
from conftest import make_test_resnet
from torch import nn

from captum_realtime_mask import EncoderSpec, InputError, MaskerConfig, RealTimeMaskAttribution
from captum_realtime_mask.masker.blocks import FeatureFilter

pytestmark = pytest.mark.usefixtures("one_thread")


def test_class_count_follows_a_replaced_head():
    model = make_test_resnet(10)
    model.fc = nn.Linear(model.fc.in_features, 3)  # timm's num_classes attribute still says 10
    assert RealTimeMaskAttribution(model).num_classes == 3
    wrapped = nn.Sequential(make_test_resnet(10), nn.Linear(10, 3))
    assert RealTimeMaskAttribution(wrapped).num_classes == 3
    assert RealTimeMaskAttribution(make_test_resnet(10)).num_classes == 10


# ---------------------------------------------------------------------------- architecture


def test_paper_preset_architecture(timm_resnet):
    attr = RealTimeMaskAttribution(timm_resnet, preset="paper")
    ups = attr.masker.upsamplers
    assert isinstance(ups[0].up, nn.ConvTranspose2d)
    assert ups[0].up.out_channels == 768 and ups[1].up.out_channels == 384
    assert len(ups[0].blocks) == 3
    assert attr.masker.mask_stride == 4


def test_filter_stride_uses_a_finer_map_with_a_presence_gate(timm_resnet, tmp_path):
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
    # Competitive presence p scales the mask's odds (m' / (1 - m') = p m / (1 - m): 0 and 1
    # stay); independent presence scales the mask (m' = p m). A forward hook on the decoder's
    # head makes it return the masks m; p is the sigmoid of the gate logit the masker returns.
    m = torch.tensor([0.0, 0.5, 0.9, 1.0]).view(4, 1, 1, 1)
    for mode in ("competitive", "independent"):
        cfg.presence = mode
        masker = RealTimeMaskAttribution(timm_resnet, masker_config=cfg).masker.eval()
        masker.head.register_forward_hook(lambda module, args, out: m.expand_as(out).contiguous())
        with torch.no_grad():
            out = masker(x, y)
            absent = masker(x, y, confidence=-1e4)  # p = 0
        p = torch.sigmoid(out.gate_logit).view(4, 1, 1, 1)
        assert float(p.min()) > 0.01 and float(p.max()) < 0.99  # not the trivial p = 0 or 1
        expected = p * m / (p * m + 1 - m) if mode == "competitive" else p * m
        torch.testing.assert_close(out.small_mask, expected.expand_as(out.small_mask))
        if mode == "competitive":  # masks of 0 and 1 whatever the presence
            ends = out.small_mask[[0, 3]]
            torch.testing.assert_close(ends, m[[0, 3]].expand_as(ends))
        assert float(absent.small_mask.max()) == 0.0
    cfg.presence = "softmax"
    with pytest.raises(InputError, match="presence"):
        RealTimeMaskAttribution(timm_resnet, masker_config=cfg)


def test_skip_filters_gate_each_merged_map_by_the_class(timm_resnet, tmp_path):
    cfg = MaskerConfig(num_classes=5, encoder=EncoderSpec(kind="classifier", min_reduction=2))
    saved = cfg.to_dict()
    assert (
        saved["skip_filters"] is False
        and not RealTimeMaskAttribution(timm_resnet, masker_config=cfg).masker.skip_filter
    )
    del saved["skip_filters"]  # saved before the option: loads without skip filters
    assert MaskerConfig.from_dict(saved).skip_filters is False
    cfg.skip_filters = True
    attr = RealTimeMaskAttribution(timm_resnet, masker_config=cfg, seed=0)
    masker = attr.masker.eval()
    merged = [i for i in masker.skip_index if i is not None]
    assert sorted(int(k) for k in masker.skip_filter) == sorted(merged) and merged
    # What the first upsampler merges is its skip map times the sigmoid of that map's gate.
    seen = []
    masker.upsamplers[0].register_forward_hook(lambda mod, args, out: seen.append(args[1]))
    x, y = torch.rand(2, 3, 64, 64), torch.tensor([1, 4])
    with torch.no_grad():
        out = masker(x, y)
        maps = masker.encode(x)
    idx = masker.skip_index[0]
    gate = masker.skip_filter[str(idx)].gate_logits(maps[idx], y)
    torch.testing.assert_close(seen[0], maps[idx] * torch.sigmoid(gate))
    assert not torch.allclose(gate[0], gate[1])  # the gate depends on the class
    # Closing every gate (offset -1e4) changes the mask; saving and loading keeps the filters.
    assert not torch.allclose(masker(x, y, confidence=-1e4).small_mask, out.small_mask)
    attr.save(tmp_path / "m")
    again = RealTimeMaskAttribution.load(tmp_path / "m", timm_resnet)
    assert again.masker.config.skip_filters is True
    torch.testing.assert_close(again.mask(x, target=y), attr.mask(x, target=y))
    cfg.skip_filters = "yes"
    with pytest.raises(InputError, match="skip_filters"):
        MaskerConfig(**{**cfg.to_dict(), "encoder": cfg.encoder})
