"""Objective terms against hand-computed values, and evidence removal."""

from __future__ import annotations

import math

import pytest
import torch

from captum_realtime_mask.errors import InputError
from captum_realtime_mask.objective import (
    LossTerms,
    ObjectiveConfig,
    alternative_images,
    area_term,
    classifier_terms,
    default_tv_weight,
    destroy_alternative,
    inpaint,
    objective_loss,
    remove_evidence,
    tv_term,
)


def test_tv_by_hand():
    m = torch.tensor([[[[0.0, 1.0, 1.0], [0.0, 0.0, 1.0]]]])
    # horizontal pairs differ in 2 of 4, vertical pairs in 1 of 3
    assert torch.allclose(tv_term(m), torch.tensor([3.0 / 7.0]))
    assert tv_term(torch.full((2, 1, 4, 4), 0.3)).eq(0).all()


def test_area_by_hand_and_power():
    m = torch.tensor([[[[0.0, 0.25], [0.5, 1.0]]]])
    assert torch.allclose(area_term(m), torch.tensor([0.4375]))
    expected = sum((v + 5e-4) ** 0.3 for v in (0.0, 0.25, 0.5, 1.0)) / 4
    assert torch.allclose(area_term(m, power=0.3), torch.tensor([expected]))


def test_preserve_and_destroy_by_hand():
    logits = torch.tensor([[2.0, 0.0, 0.0]])
    target = torch.tensor([0])
    p = math.exp(2) / (math.exp(2) + 2)
    pres, dest = classifier_terms(logits, logits, target, ObjectiveConfig(destroy_power=0.3))
    assert torch.allclose(pres, torch.tensor([-math.log(p)]))
    assert torch.allclose(dest, torch.tensor([p**0.3]), atol=1e-6)
    hinge = ObjectiveConfig(preserve="hinge", destroy="hinge", preserve_margin=1, destroy_margin=5)
    pres, dest = classifier_terms(logits, logits, target, hinge)
    # class wins by 2: preserve relu(1 - 2) = 0; destroy wants it to lose by 5: relu(2 + 5) = 7
    assert pres.item() == 0.0 and dest.item() == pytest.approx(7.0)


def test_weighted_total_and_fake_selectors():
    cfg = ObjectiveConfig(
        tv_weight=2.0, area_weight=3.0, preserve_weight=1.0, destroy_weight=5.0, embedding_weight=0
    )
    mask = torch.tensor([[[[0.0, 1.0], [0.0, 1.0]]], [[[1.0, 1.0], [1.0, 1.0]]]])
    logits = torch.tensor([[0.0, 0.0], [0.0, 0.0]])
    target = torch.tensor([0, 1])
    real = torch.tensor([True, False])
    terms = objective_loss(mask, logits, logits, target, real, cfg)
    real_loss = 2.0 * 0.5 + 3.0 * 0.5 + math.log(2) + 5.0 * 0.5**0.3
    fake_loss = 3.0 * 1.0  # only the area for a fake selector
    assert terms.total.item() == pytest.approx((real_loss + fake_loss) / 2, rel=1e-5)


def test_a_tv_weight_of_none_follows_the_mask_grid():
    # A half-and-half mask: its mean TV on a grid of side n is 1 / (2 (n - 1)) per pair, so
    # it halves (about) when the grid doubles, and the derived weight doubles with the side.
    def total(side: int, tv_weight: float | None) -> LossTerms:
        mask = torch.zeros(1, 1, side, side)
        mask[..., side // 2 :] = 1.0
        cfg = ObjectiveConfig(tv_weight=tv_weight, area_weight=0.0, destroy_weight=0.0)
        logits = torch.zeros(1, 2)
        return objective_loss(mask, logits, logits, torch.tensor([0]), torch.tensor([True]), cfg)

    for side in (16, 32, 48):
        derived, fixed = total(side, None), total(side, default_tv_weight(side, side))
        assert derived.total.item() == fixed.total.item()
    tv_share = {s: default_tv_weight(s, s) * total(s, None).tv.item() for s in (16, 64)}
    assert tv_share[64] == pytest.approx(tv_share[16], rel=0.1)  # the edge costs the same
    assert default_tv_weight(32, 32) == 5.0 and default_tv_weight(64, 16) == 5.0
    with pytest.raises(InputError, match="ObjectiveConfig.tv_weight"):
        ObjectiveConfig(tv_weight=-1.0)


def test_gate_term_pushes_real_up_and_fake_down():
    cfg = ObjectiveConfig(embedding_weight=1.0, area_weight=0.0)
    mask = torch.zeros(2, 1, 2, 2)
    gate = torch.tensor([0.0, 0.0], requires_grad=True)
    terms = objective_loss(
        mask, None, None, torch.tensor([0, 1]), torch.tensor([True, False]), cfg, gate
    )
    terms.total.backward()
    assert gate.grad[0] < 0 < gate.grad[1]


def test_remove_evidence_and_alternatives():
    x = torch.rand(4, 3, 32, 32)
    alt = alternative_images(x, ObjectiveConfig(), torch.Generator().manual_seed(0))
    assert alt.shape == x.shape and torch.isfinite(alt).all()
    assert torch.equal(remove_evidence(x, torch.ones(4, 1, 32, 32), alt), x)
    assert torch.equal(remove_evidence(x, torch.zeros(4, 1, 32, 32), alt), alt)
    blur = alternative_images(x, ObjectiveConfig(blur_prob=1.0))
    assert blur.std() < x.std()  # a strong blur removes detail
    again = alternative_images(x, ObjectiveConfig(), torch.Generator().manual_seed(0))
    assert torch.equal(alt, again)


def test_paper_and_release_presets():
    assert ObjectiveConfig.paper().area_weight == 1e-3
    rel = ObjectiveConfig.release()
    assert rel.preserve == "hinge" and rel.area_power == 0.3
    assert ObjectiveConfig.from_dict(rel.to_dict()) == rel
    with pytest.raises(ValueError, match="fake_prob"):
        ObjectiveConfig(fake_prob=1.5)


def test_inpaint_fills_holes_from_their_surroundings():
    x = torch.rand(2, 3, 32, 32) * 0.1 + 0.2  # a faint texture around 0.25
    x[:, :, 10:20, 12:22] = 0.9  # the object
    hole = torch.zeros(2, 1, 32, 32)
    hole[:, :, 10:20, 12:22] = 1.0
    filled = inpaint(x, 1 - hole, sigma=40.0, fallback=torch.zeros_like(x))
    inside = filled[:, :, 10:20, 12:22]
    assert inside.min() > 0.2 - 0.02 and inside.max() < 0.3 + 0.02  # background, not object
    # With nothing to copy from, the fallback is returned unchanged.
    fallback = torch.full_like(x, -7.0)
    assert torch.allclose(inpaint(x, torch.zeros_like(hole), fallback=fallback), fallback)


def test_destroy_alternative_inpaints_only_when_asked_and_detaches_the_mask():
    x = torch.rand(2, 3, 16, 16)
    alt = torch.zeros_like(x)
    mask = torch.rand(2, 1, 16, 16, requires_grad=True)
    assert destroy_alternative(x, mask, alt, ObjectiveConfig(destroy_fill="alternative")) is alt
    filled = destroy_alternative(x, mask, alt, ObjectiveConfig())  # inpaint: the default
    assert filled.shape == x.shape and not filled.requires_grad
    expected = inpaint(x, 1 - mask.detach(), ObjectiveConfig().inpaint_sigma, fallback=alt)
    assert torch.equal(filled, expected)


def test_destroy_fill_options_are_checked_and_saved():
    cfg = ObjectiveConfig(destroy_fill="inpaint", inpaint_sigma=12.0)
    assert ObjectiveConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ValueError, match="destroy_fill"):
        ObjectiveConfig(destroy_fill="blur")
    with pytest.raises(ValueError, match="inpaint_sigma"):
        ObjectiveConfig(inpaint_sigma=-1.0)


@pytest.mark.parametrize("shape", [(2, 3, 64, 64), (1, 1, 5, 7), (1, 3, 224, 160)])
def test_blur_alternative_matches_torchvision_gaussian_blur(shape):
    from torchvision.transforms.v2.functional import gaussian_blur

    x = torch.rand(shape, generator=torch.Generator().manual_seed(0))
    cfg = ObjectiveConfig(blur_prob=1.0, blur_sigma=10.0)
    sigma = 10.0 * max(shape[-2:]) / 224.0
    radius = max(1, min(math.ceil(3 * sigma), min(shape[-2:]) - 1))
    expected = gaussian_blur(x, kernel_size=[2 * radius + 1] * 2, sigma=[sigma, sigma])
    torch.testing.assert_close(alternative_images(x, cfg), expected, atol=1e-5, rtol=0)


def test_sigmoid_terms_stay_finite_at_extreme_logits():
    cfg = ObjectiveConfig(classifier_output="sigmoid")
    logits = torch.tensor([[-100.0, 100.0]])
    pres, dest = classifier_terms(logits, logits, torch.tensor([0]), cfg)
    assert pres.item() == pytest.approx(100.0) and dest.item() == pytest.approx(1e-8**0.3)
    pres, dest = classifier_terms(logits, logits, torch.tensor([1]), cfg)
    assert pres.item() == pytest.approx(0.0, abs=1e-6) and dest.item() == pytest.approx(1.0)
