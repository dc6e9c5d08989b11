"""Regression tests for defects found by using the metrics API like a Captum user."""

import math

import numpy as np
import pytest
import torch

from captum_realtime_mask.errors import InputError
from captum_realtime_mask.metrics import (
    LocalisationEvaluator,
    SaliencyMetric,
    box_area_fraction,
    centre_box,
    localisation_error,
    parse_voc_xml,
    resize_pixel_boxes,
    saliency_metric,
)


def _logits(row):
    """A forward_func returning the same logits (or probabilities) for every crop."""
    values = torch.tensor([row])

    def forward(x):
        return values.expand(x.shape[0], -1).clone()

    return forward


X = torch.rand(2, 3, 4, 4, generator=torch.Generator().manual_seed(0))
MASK = torch.ones(2, 1, 4, 4)

# ------------------------------------------------- non-finite / invalid classifier output


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_saliency_metric_rejects_nan_and_inf_logits_instead_of_returning_nan(bad):
    forward = _logits([bad, 0.0, 0.0])
    with pytest.raises(InputError, match=r"`forward_func`.*NaN or \+inf"):
        saliency_metric(forward, X, MASK, target=0)
    with pytest.raises(InputError, match="`forward_func`"):
        SaliencyMetric(forward).update(X, MASK, target=1)


def test_saliency_metric_rejects_float16_logits_that_overflowed():
    forward = lambda x: torch.full((x.shape[0], 3), 7e4).to(torch.float16)  # noqa: E731
    with pytest.raises(InputError, match="float32"):
        saliency_metric(forward, X, MASK, target=0)


def test_saliency_metric_keeps_minus_inf_logits_of_other_classes():
    # Masked-out classes (-inf logits) are legitimate: p of class 0 is 1, a = 1, s = 0.
    scores = saliency_metric(_logits([0.0, -math.inf, -math.inf]), X, MASK, target=0)
    torch.testing.assert_close(scores, torch.zeros(2))


def test_apply_softmax_false_rejects_logits_and_nan_probabilities():
    with pytest.raises(InputError, match="apply_softmax=True for logits"):
        saliency_metric(_logits([3.0, -1.0]), X, MASK, target=0, apply_softmax=False)
    with pytest.raises(InputError, match="NaN or outside"):
        saliency_metric(_logits([math.nan, 0.5]), X, MASK, target=0, apply_softmax=False)
    # Valid probabilities still score: log(1) - log(0.25).
    scores = saliency_metric(_logits([0.25, 0.75]), X, MASK, target=0, apply_softmax=False)
    torch.testing.assert_close(scores, torch.full((2,), math.log(4.0)))


def test_apply_softmax_must_be_a_bool():
    with pytest.raises(InputError, match="`apply_softmax`"):
        saliency_metric(_logits([0.0, 0.0]), X, MASK, target=0, apply_softmax="no")
    with pytest.raises(InputError, match="`apply_softmax`"):
        SaliencyMetric(_logits([0.0, 0.0]), apply_softmax=None)
    scores = saliency_metric(_logits([0.5, 0.5]), X, MASK, 0, apply_softmax=np.bool_(False))
    torch.testing.assert_close(scores, torch.full((2,), math.log(2.0)))


# ------------------------------------------------------ float16 area fractions


def test_box_area_fraction_float16_does_not_overflow():
    whole = torch.tensor([[0.0, 0.0, 255.0, 255.0], [0.0, 0.0, 127.0, 255.0]])
    out = box_area_fraction(whole.half(), 256, 256)
    assert out.dtype == torch.float16
    torch.testing.assert_close(out, torch.tensor([1.0, 0.5], dtype=torch.float16))
    torch.testing.assert_close(box_area_fraction(whole.double(), 256, 256).float(), out.float())


# ------------------------------------------- accumulators validate when constructed


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"forward_func": "resnet50"}, "forward_func"),
        ({"area_floor": 5.0}, "area_floor"),
        ({"max_examples_per_batch": 0}, "max_examples_per_batch"),
        ({"threshold": math.nan}, "threshold"),
        ({"normalize": "abs"}, "normalize"),
        ({"empty_fallback": "center"}, "empty_fallback"),
        ({"min_pixels": 0}, "min_pixels"),
    ],
)
def test_saliency_metric_constructor_validates_its_arguments(kwargs, name):
    kwargs = {"forward_func": _logits([0.0, 0.0]), **kwargs}
    with pytest.raises(InputError, match=f"`{name}`"):
        SaliencyMetric(**kwargs)


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"iou_threshold": 50}, "iou_threshold"),
        ({"threshold": "0.5"}, "threshold"),
        ({"normalize": "min_max"}, "normalize"),
        ({"empty_fallback": "center"}, "empty_fallback"),
        ({"min_pixels": -3}, "min_pixels"),
    ],
)
def test_localisation_evaluator_constructor_validates_its_arguments(kwargs, name):
    with pytest.raises(InputError, match=f"`{name}`"):
        LocalisationEvaluator(**kwargs)


def test_valid_constructor_options_still_score():
    metric = SaliencyMetric(
        _logits([0.0, 0.0]), threshold=np.float32(0.5), normalize=lambda a: a.mean(1)
    )
    torch.testing.assert_close(metric.update(X, MASK, target=0), torch.full((2,), math.log(2.0)))
    evaluator = LocalisationEvaluator(normalize="minmax", empty_fallback="centre")
    result = evaluator.update(MASK, [0, 0, 3, 3])
    assert bool(result.empty.all())  # constant maps normalise to zeros: the centre box
    assert evaluator.boxes.tolist() == [centre_box(4, 4).tolist()] * 2


# ------------------------------------------------------------- error messages


def test_size_error_shows_the_value_given():
    boxes = torch.tensor([[0.0, 0.0, 9.0, 9.0]])
    with pytest.raises(InputError, match=r"`from_size`.*got int 0\."):
        resize_pixel_boxes(boxes, 0, 20)
    with pytest.raises(InputError, match=r"`to_size`.*\(0, 20\)"):
        resize_pixel_boxes(boxes, 10, (0, 20))
    with pytest.raises(InputError, match=r"`from_size`.*'24'"):
        resize_pixel_boxes(boxes, "24", 20)


def test_several_boxes_of_one_image_error_says_how_to_pass_them():
    mask = torch.zeros(1, 1, 8, 8)
    mask[0, 0, :4, :4] = 1.0
    gt = torch.tensor([[0, 0, 3, 3], [4, 4, 7, 7]])
    with pytest.raises(InputError, match=r"`gt_boxes`.*\(N, K, 4\).*`\[boxes\]`"):
        localisation_error(mask, gt)
    assert float(localisation_error(mask, [gt])) == 0.0
    assert float(localisation_error(mask, gt[None])) == 0.0


def test_box_annotation_instead_of_boxes_hints_at_dot_boxes(tmp_path):
    path = tmp_path / "a.xml"
    path.write_text(
        "<annotation><size><width>8</width><height>8</height></size><object><name>a</name>"
        "<bndbox><xmin>1</xmin><ymin>1</ymin><xmax>4</xmax><ymax>4</ymax></bndbox></object>"
        "</annotation>"
    )
    ann = parse_voc_xml(path)
    mask = torch.zeros(1, 1, 8, 8)
    mask[0, 0, :4, :4] = 1.0
    with pytest.raises(InputError, match=r"`gt_boxes\[0\]`.*`\.boxes`"):
        localisation_error(mask, [ann])
    assert float(localisation_error(mask, [ann.boxes])) == 0.0
