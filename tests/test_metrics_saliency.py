import math
import pickle

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from captum.attr import Saliency
from torchmetrics import Metric, MetricCollection
from torchmetrics.utilities.data import dim_zero_cat

from captum_realtime_mask.errors import InputError
from captum_realtime_mask.metrics import (
    LocalisationEvaluator,
    SaliencyMetric,
    SaliencyResult,
    centre_box,
    max_box,
    saliency_metric,
    saliency_metric_details,
)

LOG3_4 = math.log(0.75)


def fixed_prob(p, classes=2):
    """A forward_func whose softmax gives class 0 probability p on any input."""
    rest = (1 - p) / (classes - 1)
    logits = torch.tensor([math.log(p)] + [math.log(rest)] * (classes - 1))

    def forward(x):
        return logits.to(x.dtype).expand(x.shape[0], classes).clone()

    return forward


def constant(row):
    """A forward_func returning the same logits (or probabilities) for every crop."""
    values = torch.tensor([row])

    def forward(x, *args):
        return values.expand(x.shape[0], -1).clone()

    return forward


X = torch.rand(2, 3, 4, 4, generator=torch.Generator().manual_seed(0))
MASK = torch.ones(2, 1, 4, 4)


class Recorder:
    """A forward_func that records the crops it sees; logit of class 0 is the crop mean."""

    def __init__(self):
        self.calls = []

    def __call__(self, x, *args):
        self.calls.append((x.clone(), args))
        mean = x.mean(dim=(1, 2, 3))
        return torch.stack([mean, torch.zeros_like(mean)], dim=1)


def test_known_crop_is_cropped_inclusively_and_resized_bilinearly():
    torch.manual_seed(0)
    x = torch.rand(1, 3, 8, 10)
    mask = torch.zeros(1, 1, 8, 10)
    mask[0, 0, 2:5, 3:7] = 1.0  # rows 2..4, columns 3..6
    rec = Recorder()
    result = saliency_metric_details(rec, x, mask, target=0)
    assert result.boxes.tolist() == [[3.0, 2.0, 6.0, 4.0]]
    ((crops, _),) = rec.calls
    expected = F.interpolate(x[:, :, 2:5, 3:7], size=(8, 10), mode="bilinear", align_corners=False)
    torch.testing.assert_close(crops, expected)
    a = 12 / 80
    p = torch.softmax(torch.tensor([expected.mean(), 0.0]), dim=0)[0]
    torch.testing.assert_close(result.areas, torch.tensor([a]))
    torch.testing.assert_close(result.probabilities, p[None])
    torch.testing.assert_close(result.scores, torch.tensor([math.log(a)]) - p.log()[None])


def test_known_probability_and_area():
    x = torch.rand(2, 3, 10, 10)
    mask = torch.zeros(2, 10, 10)
    mask[0, :5, :] = 0.9  # half the image
    mask[1, 0:3, 0:4] = 0.7  # 12 px = 0.12
    scores = saliency_metric(fixed_prob(0.75), x, mask, target=0)
    expected = torch.tensor([math.log(0.5) - LOG3_4, math.log(0.12) - LOG3_4])
    torch.testing.assert_close(scores, expected)
    # the other class: p = 0.25
    scores = saliency_metric(fixed_prob(0.75), x, mask, target=[1, 1])
    torch.testing.assert_close(scores, expected + LOG3_4 - math.log(0.25))


def test_area_floor():
    x = torch.rand(1, 3, 10, 10)
    mask = torch.zeros(1, 1, 10, 10)
    mask[0, 0, 4, 4] = 1.0  # a = 0.01 < 0.05
    result = saliency_metric_details(fixed_prob(0.75), x, mask, 0)
    torch.testing.assert_close(result.areas, torch.tensor([0.01]))
    torch.testing.assert_close(result.scores, torch.tensor([math.log(0.05) - LOG3_4]))
    no_floor = saliency_metric(fixed_prob(0.75), x, mask, 0, area_floor=0.0)
    torch.testing.assert_close(no_floor, torch.tensor([math.log(0.01) - LOG3_4]))
    high_floor = saliency_metric(fixed_prob(0.75), x, mask, 0, area_floor=0.5)
    torch.testing.assert_close(high_floor, torch.tensor([math.log(0.5) - LOG3_4]))


def test_empty_map_scores_whole_image_and_is_flagged():
    x = torch.rand(2, 3, 6, 6)
    mask = torch.zeros(2, 1, 6, 6)
    mask[1, 0, 0, 0] = 1.0
    rec = Recorder()
    result = saliency_metric_details(rec, x, mask, 0)
    assert result.empty.tolist() == [True, False]
    assert result.boxes[0].tolist() == max_box(6, 6).tolist()
    ((crops, _),) = rec.calls
    torch.testing.assert_close(crops[0], x[0])  # the whole image, untouched
    assert result.areas[0].item() == 1.0
    assert torch.isfinite(result.scores).all()
    p0 = torch.softmax(torch.stack([x[0].mean(), torch.tensor(0.0)]), 0)[0]
    torch.testing.assert_close(result.scores[0], -p0.log())


def test_empty_map_centre_fallback():
    x = torch.rand(1, 3, 8, 8)
    result = saliency_metric_details(
        fixed_prob(0.5), x, torch.zeros(1, 8, 8), 0, empty_fallback="centre"
    )
    assert result.empty.tolist() == [True]
    assert result.boxes[0].tolist() == centre_box(8, 8).tolist()
    torch.testing.assert_close(result.areas, torch.tensor([36 / 64]))


def test_probability_zero_does_not_give_nan_or_inf():
    def confident_other(x):
        return torch.tensor([[-1e4, 1e4]]).expand(x.shape[0], 2)

    score = saliency_metric(confident_other, torch.rand(1, 3, 4, 4), torch.ones(1, 4, 4), 0)
    assert torch.isfinite(score).all() and score.item() > 1e4

    def probs_zero(x):
        return torch.tensor([[0.0, 1.0]]).expand(x.shape[0], 2)

    score = saliency_metric(
        probs_zero, torch.rand(1, 3, 4, 4), torch.ones(1, 4, 4), 0, apply_softmax=False
    )
    assert torch.isfinite(score).all()


def test_apply_softmax_false_uses_outputs_as_probabilities():
    def probs(x):
        return torch.tensor([[0.2, 0.8]]).expand(x.shape[0], 2)

    score = saliency_metric(
        probs, torch.rand(1, 3, 4, 4), torch.ones(1, 4, 4), 1, apply_softmax=False
    )
    torch.testing.assert_close(score, torch.tensor([-math.log(0.8)]))
    # a = 1 (whole-image mask), p = 0.25: log(1) - log(0.25)
    scores = saliency_metric(constant([0.25, 0.75]), X, MASK, target=0, apply_softmax=False)
    torch.testing.assert_close(scores, torch.full((2,), math.log(4.0)))


def test_apply_softmax_false_rejects_logits_and_nan_probabilities():
    with pytest.raises(InputError, match="apply_softmax=True for logits"):
        saliency_metric(constant([3.0, -1.0]), X, MASK, target=0, apply_softmax=False)
    with pytest.raises(InputError, match="NaN or outside"):
        saliency_metric(constant([math.nan, 0.5]), X, MASK, target=0, apply_softmax=False)


def test_apply_softmax_must_be_a_bool():
    with pytest.raises(InputError, match="^apply_softmax: expected True or False"):
        saliency_metric(constant([0.0, 0.0]), X, MASK, target=0, apply_softmax="no")
    with pytest.raises(InputError, match="^apply_softmax: expected True or False"):
        SaliencyMetric(constant([0.0, 0.0]), apply_softmax=None)
    scores = saliency_metric(constant([0.5, 0.5]), X, MASK, 0, apply_softmax=np.bool_(False))
    torch.testing.assert_close(scores, torch.full((2,), math.log(2.0)))


# ------------------------------------------------- non-finite classifier output


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_nan_and_inf_logits_raise_instead_of_returning_nan(bad):
    forward = constant([bad, 0.0, 0.0])
    with pytest.raises(InputError, match=r"^forward_func: returned NaN or \+inf"):
        saliency_metric(forward, X, MASK, target=0)
    with pytest.raises(InputError, match="^forward_func: returned"):
        SaliencyMetric(forward).update(X, MASK, target=1)


def test_float16_logits_that_overflowed_raise():
    forward = lambda x: torch.full((x.shape[0], 3), 7e4).to(torch.float16)  # noqa: E731
    with pytest.raises(InputError, match="float32"):
        saliency_metric(forward, X, MASK, target=0)


def test_minus_inf_logits_of_other_classes_are_kept():
    # Masked-out classes (-inf logits) are legitimate: p of class 0 is 1, a = 1, s = 0.
    scores = saliency_metric(constant([0.0, -math.inf, -math.inf]), X, MASK, target=0)
    torch.testing.assert_close(scores, torch.zeros(2))


def test_several_gt_boxes_average_per_image():
    x = torch.rand(2, 3, 10, 10)
    gt = [
        torch.tensor([[0.0, 0.0, 4.0, 9.0], [0.0, 0.0, 0.0, 0.0]]),  # a = 0.5 and 0.01 (floored)
        torch.tensor([0.0, 0.0, 9.0, 9.0]),  # a = 1
    ]
    result = saliency_metric_details(fixed_prob(0.75), x, None, 0, boxes=gt)
    assert result.image_index.tolist() == [0, 0, 1]
    torch.testing.assert_close(result.areas, torch.tensor([0.5, 0.01, 1.0]))
    expected0 = (math.log(0.5) + math.log(0.05)) / 2 - LOG3_4
    torch.testing.assert_close(result.scores, torch.tensor([expected0, -LOG3_4]))
    assert result.empty.tolist() == [False, False]
    # the same boxes as an (N, K, 4) tensor, and as one box shared by all images
    same = saliency_metric(fixed_prob(0.75), x, None, 0, boxes=torch.stack([gt[0], gt[0]]))
    torch.testing.assert_close(same, torch.tensor([expected0, expected0]))
    shared = saliency_metric(fixed_prob(0.75), x, None, 0, boxes=centre_box(10, 10))
    torch.testing.assert_close(shared, torch.full((2,), math.log(0.49) - LOG3_4))


def test_boxes_and_attributions_give_the_same_crop():
    x = torch.rand(1, 3, 8, 8)
    mask = torch.zeros(1, 8, 8)
    mask[0, 1:4, 2:7] = 1.0
    rec = Recorder()
    by_mask = saliency_metric(rec, x, mask, 0)
    by_box = saliency_metric(rec, x, None, 0, boxes=[[2, 1, 6, 3]])
    torch.testing.assert_close(by_mask, by_box)


def test_batch_size_independence_and_additional_forward_args():
    torch.manual_seed(1)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 12 * 12, 5))

    def forward(x, scale, bias):
        return model(x) * scale[:, None] + bias

    x = torch.rand(5, 3, 12, 12)
    masks = (torch.rand(5, 1, 12, 12) > 0.7).float()
    masks[2] = 0.0  # one empty map
    scale = torch.linspace(0.5, 2.0, 5)
    target = torch.tensor([0, 1, 2, 3, 4])
    full = saliency_metric(forward, x, masks, target, additional_forward_args=(scale, 0.3))
    for batch in (1, 2, 3, 7):
        chunked = saliency_metric(
            forward,
            x,
            masks,
            target,
            additional_forward_args=(scale, 0.3),
            max_examples_per_batch=batch,
        )
        torch.testing.assert_close(chunked, full)
    # one image at a time gives the same values too
    singles = torch.cat(
        [
            saliency_metric(
                forward,
                x[i : i + 1],
                masks[i : i + 1],
                target[i : i + 1],
                additional_forward_args=(scale[i : i + 1], 0.3),
            )
            for i in range(5)
        ]
    )
    torch.testing.assert_close(singles, full)
    # per-example args follow their image's boxes when an image has several boxes
    gt = [torch.tensor([[0.0, 0.0, 5.0, 5.0], [3.0, 3.0, 11.0, 11.0]])] * 5
    many = saliency_metric(forward, x, None, target, 0.5, 0.05, (scale, 0.3), 2, boxes=gt)
    ref = saliency_metric(forward, x, None, target, 0.5, 0.05, (scale, 0.3), None, boxes=gt)
    torch.testing.assert_close(many, ref)


def test_chunking_calls_forward_with_at_most_the_batch_size():
    rec = Recorder()
    saliency_metric(rec, torch.rand(5, 1, 4, 4), torch.ones(5, 4, 4), 0, max_examples_per_batch=2)
    assert [c.shape[0] for c, _ in rec.calls] == [2, 2, 1]


def test_target_formats_agree():
    x = torch.rand(3, 3, 6, 6)
    mask = torch.rand(3, 1, 6, 6)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(108, 4))
    ref = saliency_metric(model, x, mask, [2, 2, 2])
    for target in (2, torch.tensor(2), torch.tensor([2]), torch.tensor([2, 2, 2]), (2, 2, 2)):
        torch.testing.assert_close(saliency_metric(model, x, mask, target), ref)


def test_tuple_inputs_and_attribution_shapes_accepted():
    x = torch.rand(2, 3, 6, 6)
    mask = torch.rand(2, 1, 6, 6)
    f = fixed_prob(0.6)
    ref = saliency_metric(f, x, mask, 0)
    torch.testing.assert_close(saliency_metric(f, (x,), (mask.expand(2, 3, 6, 6),), 0), ref)
    torch.testing.assert_close(saliency_metric(f, x, mask[:, 0], 0), ref)


def test_gradient_maps_scored_with_normalisation_via_captum():
    torch.manual_seed(2)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 8 * 8, 3)).eval()
    x = torch.rand(4, 3, 8, 8, requires_grad=True)
    grads = Saliency(model).attribute(x, target=1, abs=False)
    assert grads.shape == x.shape
    for normalize in ("minmax", "abs_minmax"):
        result = saliency_metric_details(model, x.detach(), grads, 1, normalize=normalize)
        assert torch.isfinite(result.scores).all()
        assert not result.empty.any()  # min-max always puts the top pixel at 1 > 0.5
    # raw gradients are tiny: without normalisation nothing passes 0.5 and the fallback is used
    raw = saliency_metric_details(model, x.detach(), grads * 1e-3, 1)
    assert raw.empty.all()


def test_dtype_and_device_follow_inputs():
    x = torch.rand(2, 3, 6, 6, dtype=torch.float64)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(108, 3)).double()
    result = saliency_metric_details(model, x, torch.rand(2, 6, 6, dtype=torch.float64), 0)
    assert result.scores.dtype == torch.float64
    assert result.scores.device == x.device
    assert result.boxes.device == x.device and result.empty.device == x.device
    half = saliency_metric(fixed_prob(0.5), x.half(), torch.ones(2, 6, 6), 0)
    assert half.dtype == torch.float32


@pytest.mark.gpu
def test_runs_on_cuda_and_stays_there():
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA device")
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(108, 3)).cuda()
    x = torch.rand(3, 3, 6, 6)
    mask = torch.rand(3, 1, 6, 6)
    gt = [torch.tensor([[0.0, 0.0, 3.0, 3.0]])] * 3
    result = saliency_metric_details(model, x.cuda(), mask.cuda(), torch.tensor([0, 1, 2]).cuda())
    assert result.scores.is_cuda and result.boxes.is_cuda and result.empty.is_cuda
    cpu = saliency_metric(model.cpu(), x, mask, [0, 1, 2])
    torch.testing.assert_close(result.scores.cpu(), cpu, atol=1e-4, rtol=1e-4)
    model.cuda()
    assert saliency_metric(model, x.cuda(), None, 0, boxes=gt).is_cuda


@pytest.mark.gpu
def test_metric_states_stay_on_cuda():
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA device")
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(108, 3)).cuda()
    metric = SaliencyMetric(model)
    x, mask = torch.rand(3, 3, 6, 6).cuda(), torch.rand(3, 1, 6, 6).cuda()
    batch = metric(x, mask, None)
    assert batch.is_cuda and metric.scores.is_cuda and metric.empty.is_cuda
    assert metric.compute().is_cuda
    expected = saliency_metric(model.cpu(), x.cpu(), mask.cpu(), None)
    torch.testing.assert_close(metric.scores.cpu(), expected, atol=1e-4, rtol=1e-4)


def test_saliency_metric_class_accumulates_and_resets():
    metric = SaliencyMetric(fixed_prob(0.75), max_examples_per_batch=1)
    x = torch.rand(2, 3, 10, 10)
    mask = torch.zeros(2, 10, 10)
    mask[0, :5] = 1.0
    first = metric.update(x, mask, 0)
    torch.testing.assert_close(first, torch.tensor([math.log(0.5), 0.0]) - LOG3_4)
    metric.update(x[:1], None, 0, boxes=max_box(10, 10))
    assert metric.num_examples == 3
    assert metric.empty.tolist() == [False, True, False]
    torch.testing.assert_close(metric.scores, torch.tensor([math.log(0.5), 0.0, 0.0]) - LOG3_4)
    torch.testing.assert_close(metric.compute(), torch.tensor(math.log(0.5) / 3 - LOG3_4))
    metric.reset()
    assert metric.num_examples == 0 and metric.scores.shape == (0,)
    with pytest.warns(UserWarning), pytest.raises(RuntimeError, match="update"):
        metric.compute()


def test_result_is_a_frozen_dataclass():
    r = saliency_metric_details(fixed_prob(0.5), torch.rand(1, 1, 3, 3), torch.ones(1, 3, 3), 0)
    assert isinstance(r, SaliencyResult)
    with pytest.raises(AttributeError):
        r.scores = torch.zeros(1)


BAD_CASES = [
    ({"inputs": torch.rand(3, 6, 6)}, "inputs.*\\(N, C, H, W\\)"),
    ({"inputs": torch.randint(0, 255, (2, 3, 6, 6))}, "floating-point"),
    ({"attributions": torch.rand(2, 1, 5, 6)}, "shaped like `inputs`"),
    ({"attributions": torch.rand(3, 1, 6, 6)}, "shaped like `inputs`"),
    ({"attributions": torch.rand(2, 2, 6, 6)}, "shaped like `inputs`"),
    ({"attributions": None}, "exactly one of `attributions`"),
    ({"boxes": [[0, 0, 1, 1]] * 2}, "exactly one of `attributions`"),
    ({"target": True}, "^target: must name the class"),
    ({"target": "cat"}, "^target: has an unsupported type"),
    ({"target": [0]}, "N = 2"),
    ({"target": torch.tensor([0.0, 1.0])}, "integer class indices"),
    ({"target": -1}, "non-negative"),
    ({"target": 7}, "only 3 classes"),
    ({"area_floor": 1.5}, "area_floor"),
    ({"max_examples_per_batch": 0}, "max_examples_per_batch"),
    ({"normalize": "l2"}, "normalize"),
    ({"forward_func": "model"}, "forward_func"),
    ({"forward_func": lambda x: x.sum(dim=(1, 2, 3))}, r"\(batch, classes\)"),
]


@pytest.mark.parametrize(("override", "match"), BAD_CASES)
def test_bad_input_raises_input_error_naming_the_argument(override, match):
    kwargs = {
        "forward_func": fixed_prob(0.5, classes=3),
        "inputs": torch.rand(2, 3, 6, 6),
        "attributions": torch.rand(2, 1, 6, 6),
        "target": 0,
    }
    kwargs.update(override)
    with pytest.raises(InputError, match=match):
        saliency_metric(**kwargs)


@pytest.mark.parametrize(
    ("boxes", "match"),
    [
        ([[0, 0, 6, 5]] * 2, "x2 <= 5"),  # past the right edge (inclusive indices)
        ([[0.5, 0, 3, 3]] * 2, "whole-number"),
        ([[3, 0, 1, 3]] * 2, "x1 <= x2"),
        ([[0, 0, 1, 1]] * 3, "2 images"),
        ([torch.zeros(0, 4), torch.tensor([0.0, 0.0, 1.0, 1.0])], "no box"),
        (torch.zeros(2, 3), "last dimension"),
    ],
)
def test_bad_boxes_raise_input_error(boxes, match):
    with pytest.raises(InputError, match=match):
        saliency_metric(fixed_prob(0.5), torch.rand(2, 3, 6, 6), None, 0, boxes=boxes)


def test_input_error_is_a_value_error():
    with pytest.raises(ValueError):
        saliency_metric(fixed_prob(0.5), torch.rand(2, 3, 6, 6), None, 0)


def test_bad_input_error_messages_name_the_argument_first():
    kwargs = {"forward_func": fixed_prob(0.5, classes=3), "inputs": X, "attributions": MASK}
    with pytest.raises(InputError, match=r"^target: must hold 1 or N = 2 class indices"):
        saliency_metric(**kwargs, target=torch.tensor([0, 1, 2]))
    with pytest.raises(InputError, match=r"^target: holds class 7 but `forward_func` returns"):
        saliency_metric(**kwargs, target=7)
    with pytest.raises(InputError, match=r"^forward_func: must return scores shaped"):
        saliency_metric(lambda x: x.sum(dim=(1, 2, 3)), X, MASK, 0)


# ------------------------------------------------------------------ target=None


def test_target_none_scores_the_predicted_class():
    calls = []

    def forward(batch, *args):
        calls.append(batch.shape[0])
        # On the full images (a pixel 0.9 at the top-left corner) class 0 wins, otherwise 1.
        corner = batch[:, 0, 0, 0]
        return torch.stack([corner * 10.0, torch.full_like(corner, math.log(3.0))], dim=1)

    x = torch.zeros(3, 1, 4, 4)
    x[0, 0, 0, 0] = 0.9  # full image 0: logits [9, log 3]: predicted class 0
    mask = torch.zeros(3, 1, 4, 4)
    mask[:, :, 2:, 2:] = 1.0  # crop of the bottom-right quarter: corner 0, p(1) = 3/4
    result = saliency_metric_details(forward, x, mask, target=None)
    assert calls == [3, 3]  # one call on the full images, one on the crops
    # image 0 is scored on class 0 (p = 1/4), images 1 and 2 on class 1 (p = 3/4); a = 1/4
    expected = torch.tensor(
        [math.log(0.25) - math.log(0.25), math.log(0.25) - LOG3_4, math.log(0.25) - LOG3_4]
    )
    torch.testing.assert_close(result.scores, expected)
    torch.testing.assert_close(result.probabilities, torch.tensor([0.25, 0.75, 0.75]))
    # the same as naming the predicted classes
    torch.testing.assert_close(saliency_metric(forward, x, mask, [0, 1, 1]), expected)
    metric = SaliencyMetric(forward)
    torch.testing.assert_close(metric.update(x, mask, None), expected)
    torch.testing.assert_close(metric.compute(), expected.mean())


def test_target_none_uses_additional_args_chunks_and_boxes():
    torch.manual_seed(4)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 6 * 6, 4))
    calls = []

    def forward(x, scale):
        calls.append(x.shape[0])
        return model(x) * scale[:, None]

    x = torch.rand(5, 3, 6, 6)
    scale = torch.linspace(-1.0, 1.0, 5)
    with torch.no_grad():
        predicted = forward(x, scale).argmax(dim=1)
    calls.clear()
    gt = [torch.tensor([[0.0, 0.0, 2.0, 2.0], [1.0, 1.0, 5.0, 5.0]])] * 5
    by_none = saliency_metric(forward, x, None, None, 0.5, 0.05, scale, 2, boxes=gt)
    assert calls == [2, 2, 1] + [2, 2, 2, 2, 2]  # full images, then 10 crops, 2 at a time
    by_name = saliency_metric(forward, x, None, predicted, 0.5, 0.05, scale, boxes=gt)
    torch.testing.assert_close(by_none, by_name)


def test_target_none_full_image_call_is_checked_and_needs_no_grad():
    x = torch.rand(2, 3, 4, 4, requires_grad=True)
    scores = saliency_metric(fixed_prob(0.75), x, MASK, None)
    assert not scores.requires_grad
    torch.testing.assert_close(scores, torch.full((2,), -LOG3_4))  # class 0 is the top class
    with pytest.raises(InputError, match=r"^forward_func: must return scores shaped"):
        saliency_metric(lambda t: t.mean(dim=(1, 2, 3)), X, MASK, None)
    with pytest.raises(InputError, match=r"^forward_func: returned NaN scores on the full"):
        saliency_metric(constant([math.nan, 0.0]), X, MASK, None)


# ------------------------------------------------------- constructor checks


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
def test_constructor_validates_its_arguments(kwargs, name):
    kwargs = {"forward_func": constant([0.0, 0.0]), **kwargs}
    with pytest.raises(InputError, match=f"^{name}: "):
        SaliencyMetric(**kwargs)


def test_valid_constructor_options_still_score():
    metric = SaliencyMetric(
        constant([0.0, 0.0]), threshold=np.float32(0.5), normalize=lambda a: a.mean(1)
    )
    assert isinstance(metric.threshold, float)
    torch.testing.assert_close(metric.update(X, MASK, target=0), torch.full((2,), math.log(2.0)))


# ------------------------------------------------------- a torchmetrics Metric


def half_mask(n=2, size=10):
    """Masks of the top half (a = 0.5) of every image."""
    mask = torch.zeros(n, 1, size, size)
    mask[:, :, : size // 2] = 1.0
    return mask


def test_is_a_torchmetrics_metric_with_cat_states():
    metric = SaliencyMetric(fixed_prob(0.75))
    assert isinstance(metric, Metric)
    assert metric.higher_is_better is False and metric.full_state_update is False
    assert set(metric.metric_state) == {"score_batches", "empty_batches"}
    assert metric._reductions == {"score_batches": dim_zero_cat, "empty_batches": dim_zero_cat}
    assert metric.metric_state == {"score_batches": [], "empty_batches": []}


def test_forward_returns_the_batch_mean_and_accumulates():
    rec_calls = []

    def forward_func(x):
        rec_calls.append(x.shape[0])
        return fixed_prob(0.75)(x)

    metric = SaliencyMetric(forward_func)
    x = torch.rand(2, 3, 10, 10)
    mask = half_mask()
    mask[1] = 0.0  # empty: the whole image, a = 1
    first = metric(x, mask, 0)  # scores log 0.5 - log 0.75 and -log 0.75
    torch.testing.assert_close(first, torch.tensor(math.log(0.5) / 2 - LOG3_4))
    assert rec_calls == [2]  # forward scores each batch once (no second update)
    second = metric(x[:1], None, 0, boxes=[[0, 0, 0, 0]])  # a = 0.01, floored to 0.05
    torch.testing.assert_close(second, torch.tensor(math.log(0.05) - LOG3_4))
    assert metric.num_examples == 3 and metric.update_count == 2
    assert metric.empty.tolist() == [False, True, False]
    expected = torch.tensor([math.log(0.5), 0.0, math.log(0.05)]) - LOG3_4
    torch.testing.assert_close(metric.scores, expected)
    torch.testing.assert_close(metric.compute(), expected.mean())
    # update returns the per-example scores; compute is refreshed
    torch.testing.assert_close(metric.update(x[:1], mask[:1], 0), expected[:1])
    torch.testing.assert_close(metric.compute(), torch.cat([expected, expected[:1]]).mean())


def test_reset_forgets_every_example():
    metric = SaliencyMetric(fixed_prob(0.75))
    metric.update(torch.rand(2, 3, 10, 10), half_mask(), 0)
    metric.reset()
    assert metric.num_examples == 0 and metric.update_count == 0
    assert metric.scores.shape == (0,) and metric.empty.shape == (0,)
    assert metric.empty.dtype == torch.bool
    with (
        pytest.warns(UserWarning, match="before the ``update``"),
        pytest.raises(RuntimeError, match="needs at least one update"),
    ):
        metric.compute()
    metric.update(torch.rand(1, 3, 10, 10), None, 0, boxes=max_box(10, 10))
    torch.testing.assert_close(metric.compute(), torch.tensor(-LOG3_4))


def test_merge_state_combines_two_metrics():
    x = torch.rand(3, 3, 10, 10)
    a, b = SaliencyMetric(fixed_prob(0.75)), SaliencyMetric(fixed_prob(0.75))
    a.update(x[:2], half_mask(), 0)  # log 0.5 - log 0.75, twice
    b.update(x[2:], None, 0, boxes=max_box(10, 10))  # -log 0.75
    a.merge_state(b)
    assert a.num_examples == 3
    torch.testing.assert_close(a.compute(), torch.tensor(math.log(0.5) * 2 / 3 - LOG3_4))
    assert sorted(a.empty.tolist()) == [False, False, False]


def fake_world(other_states):
    """A dist_sync_fn for two processes: this one and one holding ``other_states``.

    torchmetrics gathers the states one at a time, in the order they were added.
    """
    queue = list(other_states)

    def gather(tensor, group=None):
        return [tensor, queue.pop(0)]

    return gather


def test_compute_gathers_every_process_examples():
    other = SaliencyMetric(fixed_prob(0.75))
    other.update(torch.rand(1, 3, 10, 10), None, 0, boxes=max_box(10, 10))
    metric = SaliencyMetric(
        fixed_prob(0.75),
        dist_sync_fn=fake_world([other.scores, other.empty]),
        distributed_available_fn=lambda: True,
    )
    metric.update(torch.rand(2, 3, 10, 10), half_mask(), 0)
    # two local examples at log 0.5 - log 0.75, one remote at -log 0.75
    torch.testing.assert_close(metric.compute(), torch.tensor(math.log(0.5) * 2 / 3 - LOG3_4))
    assert metric.num_examples == 2  # the local state is restored after compute


def test_a_process_without_examples_reads_the_others():
    other = SaliencyMetric(fixed_prob(0.75))
    other.update(torch.rand(2, 3, 10, 10), torch.zeros(2, 1, 10, 10), 0)  # empty maps
    metric = SaliencyMetric(fixed_prob(0.75), distributed_available_fn=lambda: True)
    metric.sync(dist_sync_fn=fake_world([other.scores, other.empty]))
    assert metric.num_examples == 2 and metric.empty.tolist() == [True, True]
    torch.testing.assert_close(metric.scores, torch.full((2,), -LOG3_4))
    metric.unsync()
    assert metric.num_examples == 0


def test_metric_collection_with_a_localisation_evaluator():
    x = torch.rand(2, 3, 10, 10)
    gt = torch.tensor([[0.0, 0.0, 9.0, 4.0], [0.0, 5.0, 9.0, 9.0]])
    metrics = MetricCollection(
        {"saliency": SaliencyMetric(fixed_prob(0.75)), "localisation": LocalisationEvaluator()}
    )
    # keyword arguments: each metric takes those its update() names
    batch = metrics(inputs=x, attributions=half_mask(), target=0, gt_boxes=gt)
    torch.testing.assert_close(batch["saliency"], torch.tensor(math.log(0.5) - LOG3_4))
    torch.testing.assert_close(batch["localisation"], torch.tensor(0.5))  # image 1 misses
    metrics.update(inputs=x, attributions=None, target=0, gt_boxes=gt, boxes=gt)
    total = metrics.compute()
    torch.testing.assert_close(total["saliency"], torch.tensor(math.log(0.5) - LOG3_4))
    torch.testing.assert_close(total["localisation"], torch.tensor(0.25))
    assert metrics["saliency"].num_examples == 4
    metrics.reset()
    assert metrics["saliency"].num_examples == metrics["localisation"].num_examples == 0


def test_metric_collection_of_two_configurations_without_compute_groups():
    # Both thresholds give the same states on the first batch, so torchmetrics' compute groups
    # would share one state between them (updating only the first) from then on: keep two
    # configurations of one metric apart with compute_groups=False.
    x = torch.rand(2, 3, 10, 10)
    metrics = MetricCollection(
        {"t05": SaliencyMetric(fixed_prob(0.75)), "t03": SaliencyMetric(fixed_prob(0.75), 0.3)},
        compute_groups=False,
    )
    metrics.update(inputs=x, attributions=torch.ones(2, 1, 10, 10), target=0)  # a = 1 for both
    metrics.update(inputs=x, attributions=half_mask() * 0.4, target=0)  # t05: empty, a = 1
    total = metrics.compute()
    torch.testing.assert_close(total["t05"], torch.tensor(-LOG3_4))
    torch.testing.assert_close(total["t03"], torch.tensor(math.log(0.5) / 2 - LOG3_4))


def test_update_still_returns_scores_after_clone_and_pickle():
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 10 * 10, 2))
    metric = SaliencyMetric(model)
    metric.update(torch.rand(2, 3, 10, 10), half_mask(), 0)
    for copy in (metric.clone(), pickle.loads(pickle.dumps(metric))):
        assert copy.num_examples == 2
        scores = copy.update(torch.rand(1, 3, 10, 10), half_mask(1), 1)
        assert scores.shape == (1,) and copy.num_examples == 3
    assert metric.num_examples == 2


def test_the_classifier_is_not_a_submodule():
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 10 * 10, 2))
    metric = SaliencyMetric(model)
    assert metric.forward_func is model
    assert list(metric.children()) == [] and list(metric.parameters()) == []
    assert metric.state_dict() == {}
    metric.forward_func = other = torch.nn.Flatten()
    assert metric.forward_func is other and list(metric.children()) == []
    model.train()
    metric.eval()
    assert model.training  # its mode is left as it is
