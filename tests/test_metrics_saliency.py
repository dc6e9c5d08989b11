import math

import pytest
import torch
import torch.nn.functional as F
from captum.attr import Saliency

from captum_realtime_mask.errors import InputError
from captum_realtime_mask.metrics import (
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
    with pytest.raises(RuntimeError, match="update"):
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
    ({"target": None}, "`target` must name the class"),
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
