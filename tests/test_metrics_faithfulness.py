import doctest
import math

import numpy as np
import pytest
import torch
from torchmetrics import Metric
from torchmetrics.utilities.data import dim_zero_cat

from captum_realtime_mask.errors import InputError
from captum_realtime_mask.metrics import (
    DeletionInsertionMetric,
    DeletionInsertionResult,
    deletion_auc,
    deletion_insertion_curves,
    deletion_insertion_details,
    insertion_auc,
    removal_images,
    step_fractions,
)
from captum_realtime_mask.metrics import faithfulness as faithfulness_module

# A 1-channel 2 x 2 image and a linear classifier: logit 0 = sum(W * x), logit 1 = 0.3.
X = torch.tensor([[[[0.5, 1.0], [1.5, 2.0]]]])
W = torch.tensor([[1.0, -1.0], [2.0, 0.5]])
# The map ranks pixel (0, 1) first, then (1, 0), (1, 1), (0, 0): flat order 1, 2, 3, 0.
MAP = torch.tensor([[[[0.1, 0.4], [0.3, 0.2]]]])


def linear(x, *args):
    logit = (x * W.to(x.dtype)).sum(dim=(1, 2, 3))
    return torch.stack([logit, torch.full_like(logit, 0.3)], dim=1)


def p0(image):
    """Softmax probability of class 0 for a hand-written 2 x 2 image (a nested list)."""
    logit = sum(w * v for w_row, v_row in zip(W.tolist(), image) for w, v in zip(w_row, v_row))
    return 1.0 / (1.0 + math.exp(0.3 - logit))


def trapezoid(values, fractions):
    return sum(
        (b - a) * (u + v) / 2 for a, b, u, v in zip(fractions, fractions[1:], values, values[1:])
    )


QUARTERS = [0.0, 0.25, 0.5, 0.75, 1.0]


def close(actual, expected):
    torch.testing.assert_close(actual, torch.tensor(expected, dtype=actual.dtype))


# ------------------------------------------------------------- hand-computed curves


def test_deletion_with_constant_removal_by_hand():
    # Pixels are removed (set to 0) in the map's order: (0, 1), (1, 0), (1, 1), (0, 0).
    steps = [
        [[0.5, 1.0], [1.5, 2.0]],
        [[0.5, 0.0], [1.5, 2.0]],
        [[0.5, 0.0], [0.0, 2.0]],
        [[0.5, 0.0], [0.0, 0.0]],
        [[0.0, 0.0], [0.0, 0.0]],
    ]
    expected = [p0(s) for s in steps]
    result = deletion_insertion_details(linear, X, MAP, 0, "deletion", 4, "constant")
    assert isinstance(result, DeletionInsertionResult)
    close(result.curves, [expected])
    close(result.fractions, QUARTERS)
    close(result.auc, [trapezoid(expected, QUARTERS)])
    assert result.targets.tolist() == [0]
    close(deletion_auc(linear, X, MAP, 0, 4, "constant"), [trapezoid(expected, QUARTERS)])


def test_insertion_with_constant_removal_by_hand():
    steps = [
        [[0.0, 0.0], [0.0, 0.0]],
        [[0.0, 1.0], [0.0, 0.0]],
        [[0.0, 1.0], [1.5, 0.0]],
        [[0.0, 1.0], [1.5, 2.0]],
        [[0.5, 1.0], [1.5, 2.0]],
    ]
    expected = [p0(s) for s in steps]
    curves = deletion_insertion_curves(linear, X, MAP, 0, "insertion", 4, "constant")
    close(curves, [expected])
    close(insertion_auc(linear, X, MAP, 0, 4, "constant"), [trapezoid(expected, QUARTERS)])
    # the other class: p1 = 1 - p0
    close(insertion_auc(linear, X, MAP, 1, 4, "constant"), [1 - trapezoid(expected, QUARTERS)])


def test_constant_fill_value_in_input_space():
    steps = [
        [[0.5, 1.0], [1.5, 2.0]],
        [[0.5, -1.0], [1.5, 2.0]],
        [[0.5, -1.0], [-1.0, 2.0]],
        [[0.5, -1.0], [-1.0, -1.0]],
        [[-1.0, -1.0], [-1.0, -1.0]],
    ]
    curves = deletion_insertion_curves(
        linear, X, MAP, 0, steps=4, removal="constant", fill_value=-1
    )
    close(curves, [[p0(s) for s in steps]])


def test_blur_of_a_constant_image_is_the_image_so_the_curve_is_flat():
    x = torch.full((1, 1, 2, 2), 0.7)
    for mode in ("deletion", "insertion"):
        curves = deletion_insertion_curves(linear, x, MAP, 0, mode, 4, "blur", blur_sigma=224.0)
        close(curves, [[p0([[0.7, 0.7], [0.7, 0.7]])] * 5])


def test_blur_removal_by_hand():
    # blur_sigma=224 at a 2-pixel side is sigma = 2 px; the radius is capped at 1 (reflect
    # padding needs radius < side), so each 1-D pass has weights (w, 1, w) / (1 + 2w) with
    # w = exp(-1/8), and reflect padding makes the neighbour on both sides the other pixel.
    w = math.exp(-1 / 8)
    x = X[0, 0].tolist()
    blurred = [
        [
            (x[i][j] + 2 * w * x[i][1 - j] + 2 * w * x[1 - i][j] + 4 * w * w * x[1 - i][1 - j])
            / (1 + 2 * w) ** 2
            for j in range(2)
        ]
        for i in range(2)
    ]
    torch.testing.assert_close(
        removal_images(X, "blur", blur_sigma=224.0), torch.tensor([[blurred]])
    )
    order = [(0, 1), (1, 0), (1, 1), (0, 0)]
    deletion, insertion = [], []
    for k in range(5):
        removed = set(order[:k])
        deletion.append(
            p0(
                [
                    [blurred[i][j] if (i, j) in removed else x[i][j] for j in range(2)]
                    for i in range(2)
                ]
            )
        )
        insertion.append(
            p0(
                [
                    [x[i][j] if (i, j) in removed else blurred[i][j] for j in range(2)]
                    for i in range(2)
                ]
            )
        )
    result = deletion_insertion_details(linear, X, MAP, 0, "deletion", 4, "blur", blur_sigma=224.0)
    close(result.curves, [deletion])
    close(result.auc, [trapezoid(deletion, QUARTERS)])
    result = deletion_insertion_details(linear, X, MAP, 0, "insertion", 4, "blur", blur_sigma=224.0)
    close(result.curves, [insertion])
    close(result.auc, [trapezoid(insertion, QUARTERS)])


def test_default_blur_is_the_objectives_blur_scaled_with_image_size():
    from captum_realtime_mask.objective import blur

    x = torch.rand(2, 3, 32, 48, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(removal_images(x), blur(x, 10.0))
    # sigma 10 at 224 px is 10 * 48 / 224 = 2.1 px here: the blur is strong but not total
    assert 0 < (removal_images(x) - x).abs().mean() < (x - x.mean()).abs().mean()


def test_apply_softmax_false_reads_probabilities():
    def probs(x):
        s = x.sum(dim=(1, 2, 3)) / 10  # 0.5 on X, 0 on the blank image
        return torch.stack([s, 1 - s], dim=1)

    curves = deletion_insertion_curves(
        probs, X, MAP, 0, steps=4, removal="constant", apply_softmax=False
    )
    close(curves, [[0.5, 0.4, 0.25, 0.05, 0.0]])
    with pytest.raises(InputError, match="apply_softmax=True for logits"):
        deletion_insertion_curves(linear, X * 10, MAP, 0, removal="constant", apply_softmax=False)


# ------------------------------------------------------------------ order and steps


def test_ties_are_taken_in_raster_order():
    zeros = torch.zeros(1, 1, 2, 2)
    raster = torch.tensor([[[[4.0, 3.0], [2.0, 1.0]]]])
    ref = deletion_insertion_curves(linear, X, raster, 0, steps=4, removal="constant")
    torch.testing.assert_close(
        deletion_insertion_curves(linear, X, zeros, 0, steps=4, removal="constant"), ref
    )
    # a partial tie: pixels 0, 1 and 3 share the top value; pixel 2 is last
    partial = torch.tensor([[[[1.0, 1.0], [0.0, 1.0]]]])
    steps = [
        [[0.5, 1.0], [1.5, 2.0]],
        [[0.0, 1.0], [1.5, 2.0]],
        [[0.0, 0.0], [1.5, 2.0]],
        [[0.0, 0.0], [1.5, 0.0]],
        [[0.0, 0.0], [0.0, 0.0]],
    ]
    close(
        deletion_insertion_curves(linear, X, partial, 0, steps=4, removal="constant"),
        [[p0(s) for s in steps]],
    )


def test_channels_are_summed_before_ordering():
    x = torch.rand(1, 3, 2, 2, generator=torch.Generator().manual_seed(1))
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(12, 3))
    a = torch.zeros(1, 3, 2, 2)
    a[0, 0] = torch.tensor([[5.0, 0.0], [0.0, 0.0]])  # channel 0 alone would rank pixel 0 first
    a[0, 1] = torch.tensor([[-4.0, 2.0], [3.0, 0.0]])  # the sum ranks 1 + 3 = pixel 2, then 1, 0
    summed = a.sum(1, keepdim=True)
    assert summed.flatten().tolist() == [1.0, 2.0, 3.0, 0.0]
    for mode in ("deletion", "insertion"):
        by_channels = deletion_insertion_curves(model, x, a, 2, mode, 4, "constant")
        by_sum = deletion_insertion_curves(model, x, summed, 2, mode, 4, "constant")
        by_hw = deletion_insertion_curves(model, x, summed[:, 0], 2, mode, 4, "constant")
        torch.testing.assert_close(by_channels, by_sum)
        torch.testing.assert_close(by_hw, by_sum)


def test_steps_round_half_up():
    # 4 pixels in 8 steps: k * 4 / 8 = 0, 0.5, 1, 1.5, ... -> 0, 1, 1, 2, 2, 3, 3, 4, 4 pixels
    close(step_fractions(2, 2, 8), [0.0, 0.25, 0.25, 0.5, 0.5, 0.75, 0.75, 1.0, 1.0])
    # 4 pixels in 3 steps: 0, 1.33, 2.67, 4 -> 0, 1, 3, 4
    close(step_fractions(2, 2, 3), [0.0, 0.25, 0.75, 1.0])
    result = deletion_insertion_details(linear, X, MAP, 0, steps=3, removal="constant")
    steps = [
        [[0.5, 1.0], [1.5, 2.0]],
        [[0.5, 0.0], [1.5, 2.0]],
        [[0.5, 0.0], [0.0, 0.0]],
        [[0.0, 0.0], [0.0, 0.0]],
    ]
    expected = [p0(s) for s in steps]
    close(result.curves, [expected])
    close(result.auc, [trapezoid(expected, [0.0, 0.25, 0.75, 1.0])])
    # more steps than pixels: repeated points and zero-width trapezoids, the same area as 4 steps
    many = deletion_insertion_details(linear, X, MAP, 0, steps=8, removal="constant")
    four = deletion_insertion_details(linear, X, MAP, 0, steps=4, removal="constant")
    torch.testing.assert_close(many.curves[0, ::2], four.curves[0])
    torch.testing.assert_close(many.curves[0, 1:-1:2], four.curves[0, 1:])
    torch.testing.assert_close(many.auc, four.auc)
    assert step_fractions(64, 64).shape == (51,)


def test_step_zero_and_last_step_are_the_image_and_the_removal_image():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 6 * 6, 4))
    x, a = torch.rand(3, 3, 6, 6), torch.rand(3, 1, 6, 6)
    with torch.no_grad():
        on_x = torch.softmax(model(x), 1)[:, 1]
        on_blur = torch.softmax(model(removal_images(x)), 1)[:, 1]
    deletion = deletion_insertion_curves(model, x, a, 1, "deletion", 5)
    insertion = deletion_insertion_curves(model, x, a, 1, "insertion", 5)
    torch.testing.assert_close(deletion[:, 0], on_x)
    torch.testing.assert_close(deletion[:, -1], on_blur)
    torch.testing.assert_close(insertion[:, 0], on_blur)
    torch.testing.assert_close(insertion[:, -1], on_x)


# ---------------------------------------------------- batching, targets, the classifier


class Recorder:
    """A forward_func that counts its calls; logit 0 is the image mean."""

    def __init__(self):
        self.sizes = []

    def __call__(self, x, *args):
        self.sizes.append(x.shape[0])
        mean = x.mean(dim=(1, 2, 3))
        return torch.stack([mean, torch.zeros_like(mean)], dim=1)


def test_all_steps_of_a_chunk_go_in_one_call_bounded_by_max_examples_per_batch():
    x, a = torch.rand(2, 1, 4, 4), torch.rand(2, 4, 4)
    rec = Recorder()
    deletion_insertion_curves(rec, x, a, 0, steps=4)
    assert rec.sizes == [10]  # 2 images x 5 steps in one call
    rec.sizes.clear()
    deletion_insertion_curves(rec, x, a, 0, steps=4, max_examples_per_batch=4)
    assert rec.sizes == [4, 4, 2]
    rec.sizes.clear()
    deletion_insertion_curves(rec, x, a, None, steps=4, max_examples_per_batch=4)
    assert rec.sizes == [2, 4, 4, 2]  # the full images for target=None first


@pytest.mark.parametrize("removal", ["blur", "constant"])
@pytest.mark.parametrize("mode", ["deletion", "insertion"])
def test_batch_size_independence_and_additional_forward_args(mode, removal):
    torch.manual_seed(3)
    net = torch.nn.Sequential(
        torch.nn.Conv2d(3, 4, 3, padding=1),
        torch.nn.BatchNorm2d(4),
        torch.nn.ReLU(),
        torch.nn.AdaptiveAvgPool2d(2),
        torch.nn.Flatten(),
        torch.nn.Linear(16, 5),
    ).eval()

    def forward(x, scale, bias):
        return net(x) * scale[:, None] + bias

    x, a = torch.rand(5, 3, 9, 9), torch.randn(5, 3, 9, 9)
    scale = torch.linspace(0.5, 2.0, 5)
    target = torch.tensor([0, 1, 2, 3, 4])
    kwargs = {"mode": mode, "steps": 7, "removal": removal, "additional_forward_args": (scale, 0.3)}
    full = deletion_insertion_details(forward, x, a, target, **kwargs)
    for batch in (1, 3, 8, 40, 1000):
        chunked = deletion_insertion_details(
            forward, x, a, target, max_examples_per_batch=batch, **kwargs
        )
        torch.testing.assert_close(chunked.curves, full.curves)
        torch.testing.assert_close(chunked.auc, full.auc)
    singles = torch.cat(
        [
            deletion_insertion_details(
                forward,
                x[i : i + 1],
                a[i : i + 1],
                target[i : i + 1],
                mode=mode,
                steps=7,
                removal=removal,
                additional_forward_args=(scale[i : i + 1], 0.3),
            ).auc
            for i in range(5)
        ]
    )
    torch.testing.assert_close(singles, full.auc)


def test_target_formats_agree():
    torch.manual_seed(5)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 4 * 4, 4))
    x, a = torch.rand(3, 3, 4, 4), torch.rand(3, 4, 4)
    ref = deletion_auc(model, x, a, [2, 2, 2], steps=4)
    for target in (2, torch.tensor(2), torch.tensor([2]), torch.tensor([2, 2, 2]), (2, 2, 2)):
        torch.testing.assert_close(deletion_auc(model, x, a, target, steps=4), ref)


def test_target_none_scores_the_predicted_class():
    def forward(x):
        # class 0 when the image's sum exceeds 1 (image 0), else class 1 (image 1)
        s = x.sum(dim=(1, 2, 3))
        return torch.stack([s, torch.ones_like(s)], dim=1)

    x = torch.stack([X[0], X[0] / 10])  # sums 5 and 0.5
    result = deletion_insertion_details(forward, x, MAP.expand(2, 1, 2, 2), None, steps=4)
    assert result.targets.tolist() == [0, 1]
    named = deletion_insertion_details(forward, x, MAP.expand(2, 1, 2, 2), [0, 1], steps=4)
    torch.testing.assert_close(result.curves, named.curves)
    metric = DeletionInsertionMetric(forward, steps=4)
    torch.testing.assert_close(metric.update(x, MAP.expand(2, 1, 2, 2), None), named.auc)
    with pytest.raises(InputError, match=r"^forward_func: returned NaN scores on the full"):
        deletion_auc(lambda t: torch.full((len(t), 2), math.nan), x, MAP.expand(2, 1, 2, 2), None)


def test_classifier_runs_in_eval_without_grad_and_is_restored():
    net = torch.nn.Sequential(
        torch.nn.Flatten(), torch.nn.Linear(12, 8), torch.nn.Dropout(0.5), torch.nn.Linear(8, 3)
    ).train()
    net[1].eval()  # a mixed state: one module in eval inside a model in train mode
    net[3].weight.requires_grad_(False)
    seen = []
    net.register_forward_pre_hook(lambda m, args: seen.append(m.training or m[2].training))
    modes = [m.training for m in net.modules()]
    grads = [p.requires_grad for p in net.parameters()]
    x = torch.rand(4, 3, 2, 2, requires_grad=True)
    auc = deletion_auc(net, x, torch.rand(4, 2, 2), None, steps=4)
    assert seen and not any(seen)  # dropout was off in every call (also the target=None one)
    assert [m.training for m in net.modules()] == modes
    assert [p.requires_grad for p in net.parameters()] == grads
    assert not auc.requires_grad and all(p.grad is None for p in net.parameters())
    assert x.grad is None
    # deterministic because dropout is off: chunking does not change the result
    a = torch.rand(4, 2, 2)
    chunked = deletion_auc(net, x, a, None, steps=4, max_examples_per_batch=3)
    torch.testing.assert_close(chunked, deletion_auc(net, x, a, None, steps=4))


def test_classifier_mode_is_restored_when_scoring_fails():
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 2)).train()
    with pytest.raises(InputError, match="only 2 classes"):
        deletion_auc(net, X, MAP, 5)
    assert net.training and net[1].training
    assert net[1].weight.requires_grad


def test_dtype_and_device_follow_inputs():
    x = X.double()
    curves = deletion_insertion_curves(linear, x, MAP, 0, steps=4, removal="constant")
    assert curves.dtype == torch.float64 and curves.device == x.device
    ref = deletion_insertion_curves(linear, X, MAP, 0, steps=4, removal="constant")
    torch.testing.assert_close(curves.float(), ref)
    half = deletion_insertion_curves(
        lambda t: torch.zeros(len(t), 2, dtype=t.dtype), X.half(), MAP, 0, steps=2
    )
    assert half.dtype == torch.float32
    close(half, [[0.5, 0.5, 0.5]])


def test_tuple_inputs_accepted():
    ref = deletion_auc(linear, X, MAP, 0, 4)
    torch.testing.assert_close(deletion_auc(linear, (X,), (MAP,), 0, 4), ref)


@pytest.mark.gpu
def test_runs_on_cuda_and_stays_there():
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA device")
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 8 * 8, 3))
    x, a = torch.rand(3, 3, 8, 8), torch.rand(3, 1, 8, 8)
    cpu = deletion_insertion_details(model, x, a, None, steps=6)
    model.cuda()
    gpu = deletion_insertion_details(model, x.cuda(), a.cuda(), None, steps=6)
    assert gpu.curves.is_cuda and gpu.auc.is_cuda and gpu.targets.is_cuda
    torch.testing.assert_close(gpu.auc.cpu(), cpu.auc, atol=1e-4, rtol=1e-4)
    metric = DeletionInsertionMetric(model, "insertion", steps=6)
    metric.update(x.cuda(), a.cuda(), [0, 1, 2])
    assert metric.compute().is_cuda


# ------------------------------------------------------------ the torchmetrics Metric


def test_metric_accumulates_two_batches_like_the_functional_mean():
    torch.manual_seed(7)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 6 * 6, 4))
    x, a = torch.rand(5, 3, 6, 6), torch.rand(5, 1, 6, 6)
    for mode, fn in (("deletion", deletion_auc), ("insertion", insertion_auc)):
        metric = DeletionInsertionMetric(model, mode, steps=6, removal="constant")
        assert isinstance(metric, Metric)
        assert metric.higher_is_better is (mode == "insertion")
        first = metric.update(x[:2], a[:2], [0, 1])
        second = metric(x[2:], a[2:], [2, 3, 0])  # forward: the batch's mean
        expected = fn(model, x, a, [0, 1, 2, 3, 0], steps=6, removal="constant")
        torch.testing.assert_close(first, expected[:2])
        torch.testing.assert_close(second, expected[2:].mean())
        assert metric.num_examples == 5 and metric.update_count == 2
        torch.testing.assert_close(metric.auc, expected)
        torch.testing.assert_close(metric.compute(), expected.mean())
        curves = deletion_insertion_curves(
            model, x, a, [0, 1, 2, 3, 0], mode, steps=6, removal="constant"
        )
        torch.testing.assert_close(metric.curves, curves)


def test_metric_states_reset_and_merge():
    metric = DeletionInsertionMetric(linear, steps=4, removal="constant")
    assert metric._reductions == {"auc_batches": dim_zero_cat, "curve_batches": dim_zero_cat}
    assert metric.curves.shape == (0, 5)
    metric.update(X, MAP, 0)
    other = DeletionInsertionMetric(linear, steps=4, removal="constant")
    other.update(X, MAP, 1)
    metric.merge_state(other)
    torch.testing.assert_close(metric.compute(), torch.tensor(0.5))  # p0 + p1 = 1 at every step
    metric.reset()
    assert metric.num_examples == 0
    with pytest.warns(UserWarning), pytest.raises(RuntimeError, match="update"):
        metric.compute()
    assert "forward_func" not in dict(metric.named_children())


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"forward_func": "resnet"}, "forward_func"),
        ({"mode": "delete"}, "mode"),
        ({"steps": 0}, "steps"),
        ({"steps": True}, "steps"),
        ({"removal": "zero"}, "removal"),
        ({"max_examples_per_batch": 0}, "max_examples_per_batch"),
        ({"fill_value": math.nan}, "fill_value"),
        ({"blur_sigma": 0.0}, "blur_sigma"),
        ({"apply_softmax": "yes"}, "apply_softmax"),
    ],
)
def test_metric_constructor_validates_its_arguments(kwargs, name):
    kwargs = {"forward_func": linear, **kwargs}
    with pytest.raises(InputError, match=f"^{name}: "):
        DeletionInsertionMetric(**kwargs)


# ------------------------------------------------------------------- bad arguments


BAD_CASES = [
    ({"forward_func": "model"}, "forward_func"),
    ({"forward_func": lambda x: x.sum(dim=(1, 2, 3))}, "forward_func"),
    ({"forward_func": lambda x: torch.full((len(x), 2), math.inf)}, "forward_func"),
    ({"inputs": torch.rand(1, 2, 2)}, "inputs"),
    ({"inputs": torch.ones(1, 1, 2, 2, dtype=torch.long)}, "inputs"),
    ({"attributions": torch.rand(1, 1, 2, 3)}, "attributions"),
    ({"attributions": torch.rand(2, 1, 2, 2)}, "attributions"),
    ({"attributions": torch.rand(1, 2, 2, 2)}, "attributions"),
    ({"attributions": torch.tensor([[[[0.0, math.nan], [1.0, 2.0]]]])}, "attributions"),
    ({"attributions": [[0.0, 1.0], [2.0, 3.0]]}, "attributions"),
    ({"target": 2}, "target"),
    ({"target": -1}, "target"),
    ({"target": [0, 1]}, "target"),
    ({"target": "cat"}, "target"),
    ({"target": torch.tensor([0.0])}, "target"),
    ({"mode": "both"}, "mode"),
    ({"steps": 0}, "steps"),
    ({"steps": 2.5}, "steps"),
    ({"removal": "mean"}, "removal"),
    ({"removal": "blur", "blur_sigma": -1.0}, "blur_sigma"),
    ({"removal": "constant", "fill_value": "black"}, "fill_value"),
    ({"max_examples_per_batch": 0}, "max_examples_per_batch"),
    ({"apply_softmax": 1}, "apply_softmax"),
]


@pytest.mark.parametrize(("override", "name"), BAD_CASES)
def test_bad_arguments_raise_input_error_naming_the_argument(override, name):
    kwargs = {"forward_func": linear, "inputs": X, "attributions": MAP, "target": 0}
    kwargs.update(override)
    with pytest.raises(InputError, match=f"^{name}: ") as info:
        deletion_insertion_curves(**kwargs)
    assert info.value.argument == name


def test_step_fractions_and_removal_images_check_their_arguments():
    with pytest.raises(InputError, match="^steps: "):
        step_fractions(2, 2, 0)
    with pytest.raises(InputError, match="^removal: "):
        removal_images(X, "noise")
    with pytest.raises(InputError, match="^inputs: "):
        removal_images(X[0])
    assert step_fractions(np.int64(2), 2, np.int64(2)).tolist() == [0.0, 0.5, 1.0]


def test_docstring_examples():
    assert doctest.testmod(faithfulness_module).failed == 0


def test_channels_last_inputs_give_channels_last_batches_and_the_same_result():
    torch.manual_seed(2)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 2, 3), torch.nn.Flatten(), torch.nn.Linear(32, 3))
    seen = []

    def forward(x):
        seen.append(x.is_contiguous(memory_format=torch.channels_last))
        return net(x)

    x, a = torch.rand(2, 3, 6, 6), torch.rand(2, 1, 6, 6)
    ref = deletion_insertion_curves(forward, x, a, 1, steps=3)
    assert not any(seen)
    seen.clear()
    cl = deletion_insertion_curves(
        forward, x.contiguous(memory_format=torch.channels_last), a, 1, steps=3
    )
    assert seen and all(seen)
    torch.testing.assert_close(cl, ref)


# --------------------------------------------- adapters to grad-cam's ROAD and Quantus


def small_net(channels=1, size=8, classes=3, seed=0):
    torch.manual_seed(seed)
    return torch.nn.Sequential(
        torch.nn.Conv2d(channels, 4, 3, padding=1),
        torch.nn.ReLU(),
        torch.nn.Flatten(),
        torch.nn.Linear(4 * size * size, classes),
    ).eval()


@pytest.mark.filterwarnings("ignore:__array_wrap__:DeprecationWarning")  # grad-cam on numpy 2
def test_road_adapter_matches_grad_cams_own_classes():
    pytest.importorskip("pytorch_grad_cam")
    from pytorch_grad_cam.metrics.road import (
        ROADCombined,
        ROADLeastRelevantFirstAverage,
        ROADMostRelevantFirstAverage,
    )
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputSoftmaxTarget

    from captum_realtime_mask.metrics.external import road_scores

    net = small_net()
    x = torch.rand(3, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    a = torch.rand(3, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    targets = [ClassifierOutputSoftmaxTarget(c) for c in (0, 1, 2)]
    cams = a[:, 0].numpy()
    torch.manual_seed(5)
    combined = ROADCombined([20, 50, 80])(x, cams, targets, net)
    torch.manual_seed(5)
    lerf = ROADLeastRelevantFirstAverage([20, 50, 80])(x, cams, targets, net)
    morf = ROADMostRelevantFirstAverage([20, 50, 80])(x, cams, targets, net)
    state = torch.random.get_rng_state()
    result = road_scores(net, x, a, [0, 1, 2], percentiles=[20, 50, 80], seed=5)
    assert torch.equal(torch.random.get_rng_state(), state)  # the caller's RNG is untouched
    torch.testing.assert_close(result.lerf, torch.from_numpy(lerf))
    torch.testing.assert_close(result.morf, torch.from_numpy(morf))
    torch.testing.assert_close(result.combined, torch.from_numpy(combined))
    assert result.percentiles == (20, 50, 80)
    # (N, H, W) maps, chunks of 2 images; target=None is the predicted class
    again = road_scores(net, x, a[:, 0], None, [20, 50, 80], 2, seed=5)
    with torch.no_grad():
        assert again.targets.tolist() == net(x).argmax(1).tolist()
    with pytest.raises(InputError, match="^percentiles: "):
        road_scores(net, x, a, 0, percentiles=[0, 50])
    with pytest.raises(InputError, match="^attributions: "):
        road_scores(net, x, a[:2], 0)


@pytest.mark.filterwarnings("ignore:__array_wrap__:DeprecationWarning")  # grad-cam on numpy 2
def test_road_adapter_agrees_in_sign_with_deletion_on_a_linear_model():
    pytest.importorskip("pytorch_grad_cam")
    from captum_realtime_mask.metrics.external import road_scores

    # logit 0 = sum of the pixels: the bright pixels matter, the map x ranks them first
    f = lambda x: torch.stack([x.sum((1, 2, 3)), torch.zeros(len(x))], 1)  # noqa: E731
    x = torch.rand(2, 1, 8, 8, generator=torch.Generator().manual_seed(3))
    good, bad = x, -x
    road_good, road_bad = road_scores(f, x, good, 0), road_scores(f, x, bad, 0)
    assert (road_good.morf < road_bad.morf).all() and (road_good.lerf > road_bad.lerf).all()
    assert (
        deletion_auc(f, x, good, 0, 8, "constant") < deletion_auc(f, x, bad, 0, 8, "constant")
    ).all()


def test_quantus_pixel_flipping_equals_our_deletion_curve():
    pytest.importorskip("quantus")
    import quantus

    from captum_realtime_mask.metrics.external import quantus_scores

    # One channel: Quantus orders the C * H * W values and requires its step to divide H * W,
    # so only with C = 1 do its steps remove whole pixels, as ours do.
    net = small_net(channels=1, size=8, classes=4).train()  # restored after the call
    x = torch.rand(3, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    a = torch.rand(3, 1, 8, 8, generator=torch.Generator().manual_seed(1))  # distinct values
    steps = 4
    metric = quantus.PixelFlipping(
        features_in_step=64 // steps,
        perturb_baseline=0.0,
        normalise=False,
        disable_warnings=True,
    )
    curves = np.asarray(quantus_scores(metric, net, x, a, [0, 1, 2]))
    assert net.training and all(p.requires_grad for p in net.parameters())
    ours = deletion_insertion_curves(net.eval(), x, a, [0, 1, 2], "deletion", steps, "constant")
    # Quantus' curve starts after the first step; ours has step 0 (the image) too.
    np.testing.assert_allclose(curves, ours[:, 1:].numpy(), rtol=1e-5, atol=1e-6)


def test_quantus_explain_func_adapter():
    pytest.importorskip("quantus")
    import quantus

    from captum_realtime_mask.metrics.external import quantus_explain_func, quantus_scores

    net = small_net(channels=3, size=8, classes=4)
    x = torch.rand(2, 3, 8, 8, generator=torch.Generator().manual_seed(0))

    def explain(images, targets):
        return images * (targets[:, None, None, None] + 1.0)

    metric = quantus.PixelFlipping(features_in_step=16, perturb_baseline=0.0, disable_warnings=True)
    by_explain = quantus_scores(metric, net, x, None, [1, 3], explain=explain)
    by_maps = quantus_scores(metric, net, x, explain(x, torch.tensor([1, 3])), [1, 3])
    np.testing.assert_allclose(np.asarray(by_explain), np.asarray(by_maps), rtol=1e-6)
    maps = quantus_explain_func(explain)(net, x.numpy(), np.array([1, 3]), device="cpu")
    assert maps.shape == (2, 1, 8, 8) and maps.dtype == np.float32
    with pytest.raises(InputError, match="^attributions: "):
        quantus_scores(metric, net, x, None, 0)
    with pytest.raises(InputError, match="^model: "):
        quantus_scores(metric, lambda t: net(t), x, None, 0, explain=explain)


def test_missing_extra_names_it(monkeypatch):
    import importlib

    from captum_realtime_mask.metrics import external

    real_import = importlib.import_module

    def no_grad_cam(name, *args):
        if name.startswith(("pytorch_grad_cam", "quantus")):
            raise ImportError(f"No module named {name!r}")
        return real_import(name, *args)

    monkeypatch.setattr(external.importlib, "import_module", no_grad_cam)
    with pytest.raises(ImportError, match=r"captum-realtime-mask\[faithfulness\].*grad-cam"):
        external.road_scores(linear, X, MAP, 0)
    with pytest.raises(ImportError, match=r"captum-realtime-mask\[faithfulness\].*quantus"):
        external.quantus_scores(None, small_net(), X, MAP, 0)


@pytest.mark.filterwarnings("ignore:__array_wrap__:DeprecationWarning")  # grad-cam on numpy 2
def test_external_docstring_examples():
    pytest.importorskip("pytorch_grad_cam")
    from captum_realtime_mask.metrics import external

    assert doctest.testmod(external).failed == 0
