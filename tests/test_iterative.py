"""Per-image mask optimisation (``iterative``): a known answer, its Captum wrapper, the target
forms and options it takes, and the extra forward arguments of a Captum perturbation method."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from captum.attr import NoiseTunnel
from conftest import Recorder
from torch import nn
from torchvision.ops import masks_to_boxes

from captum_realtime_mask._model_state import snapshot_model
from captum_realtime_mask.errors import InputError
from captum_realtime_mask.iterative import (
    IterativeMaskAttribution,
    default_mask_size,
    optimise_masks,
)
from captum_realtime_mask.objective import ObjectiveConfig

SIDE = 32
SQUARE = 8
# (row0, row1, col0, col1) of the bright square in each test image.
BOXES = [(8, 16, 16, 24), (20, 28, 4, 12), (0, 8, 0, 8)]


pytestmark = pytest.mark.usefixtures("one_thread")


class BrightSquare(nn.Module):
    """Class 1 iff some 8x8 window is much brighter than the image mean; class 0 otherwise.

    The evidence for class 1 is exactly the bright square, wherever it is, so the right mask
    is known. The read-out is an ``nn.Linear`` so that the model has parameters to protect.
    """

    def __init__(self, scale: float = 10.0, threshold: float = 0.4) -> None:
        super().__init__()
        self.readout = nn.Linear(1, 2)
        with torch.no_grad():
            self.readout.weight.copy_(torch.tensor([[-scale], [scale]]))
            self.readout.bias.copy_(torch.tensor([scale * threshold, -scale * threshold]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        grey = x.mean(1, keepdim=True)
        local = F.avg_pool2d(grey, SQUARE, stride=1).flatten(1).amax(1)
        return self.readout((local - grey.flatten(1).mean(1))[:, None])


def square_images(n: int = 3, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 3, SIDE, SIDE, generator=gen) * 0.2
    for i in range(n):
        r0, r1, c0, c1 = BOXES[i % len(BOXES)]
        x[i, :, r0:r1, c0:c1] = 1.0
    return x


def seeded(seed: int = 5) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# --------------------------------------------------------------------------- known answer


@pytest.fixture(scope="module")
def square_run():
    x = square_images(3)
    masks, history = optimise_masks(
        BrightSquare(), x, 1, n_iter=200, mask_size=8, generator=seeded(), return_history=True
    )
    return x, masks, history


def test_mask_covers_the_evidence_square(square_run):
    _, masks, _ = square_run
    _assert_masks_cover_squares(masks)


def test_the_blur_or_colour_destroy_fill_also_finds_the_square(square_run):
    assert ObjectiveConfig().destroy_fill == "inpaint"  # square_run's default
    objective = ObjectiveConfig(destroy_fill="alternative")
    masks = optimise_masks(
        BrightSquare(),
        square_images(3),
        1,
        n_iter=200,
        mask_size=8,
        objective=objective,
        generator=seeded(),
    )
    assert not torch.allclose(masks, square_run[1], atol=1e-3)  # the option reached the loop
    _assert_masks_cover_squares(masks, kept=0.6, far=0.15, margin=None)


def _assert_masks_cover_squares(
    masks: torch.Tensor, kept: float = 0.7, far: float = 0.1, margin: int | None = 6
) -> None:
    """Mean mask above ``kept`` on each square and below ``far`` beyond 6 px of it; the box
    around mask > 0.5 covers the square and (unless ``margin`` is None) stays within
    ``margin`` px of it."""
    for i, (r0, r1, c0, c1) in enumerate(BOXES):
        m = masks[i, 0]
        inside = torch.zeros(SIDE, SIDE, dtype=torch.bool)
        inside[r0:r1, c0:c1] = True
        near = torch.zeros(SIDE, SIDE, dtype=torch.bool)
        near[max(r0 - 6, 0) : r1 + 6, max(c0 - 6, 0) : c1 + 6] = True
        assert m[inside].mean() > kept, f"image {i}: the evidence is not kept"
        assert m[~near].mean() < far, f"image {i}: mask mass far from the evidence"
        # The box around mask > 0.5 (the paper's localisation rule) covers the square and
        # stays close to it (a 32 px image; bilinear upsampling of a stride-4 grid).
        x0, y0, x1, y1 = box = masks_to_boxes((m > 0.5)[None])[0].tolist()
        last_row, last_col = r1 - 1, c1 - 1
        assert x0 <= c0 and y0 <= r0 and x1 >= last_col and y1 >= last_row, (i, box)
        if margin is not None:
            assert max(c0 - x0, r0 - y0, x1 - last_col, y1 - last_row) <= margin, (i, box)


def test_objective_decreases(square_run):
    _, _, history = square_run
    assert set(history) == {"loss", "tv", "area", "preserve", "destroy"}
    assert all(v.shape == (200,) and v.dtype == torch.float32 for v in history.values())
    loss = history["loss"]
    assert torch.isfinite(loss).all()
    assert loss[-20:].mean() < 0.75 * loss[:20].mean()
    assert history["destroy"][-20:].mean() < history["destroy"][:20].mean()
    assert history["area"][-20:].mean() < history["area"][:20].mean()


def test_batched_equals_per_image(square_run):
    x, masks, _ = square_run
    singles = torch.cat(
        [
            optimise_masks(
                BrightSquare(), x[i : i + 1], 1, n_iter=200, mask_size=8, generator=seeded()
            )
            for i in range(len(x))
        ]
    )
    torch.testing.assert_close(singles, masks, atol=1e-5, rtol=0)


def test_batch_order_does_not_matter():
    x = square_images(3)
    perm = torch.tensor([2, 0, 1])
    a = optimise_masks(BrightSquare(), x, 1, n_iter=15, mask_size=8, generator=seeded())
    b = optimise_masks(BrightSquare(), x[perm], 1, n_iter=15, mask_size=8, generator=seeded())
    torch.testing.assert_close(b, a[perm], atol=1e-5, rtol=0)
    c = optimise_masks(
        BrightSquare(), x, 1, n_iter=15, mask_size=8, generator=seeded(), internal_batch_size=2
    )
    torch.testing.assert_close(c, a, atol=1e-5, rtol=0)


def test_seeded_reproducibility():
    x = square_images(2)
    run = lambda gen: optimise_masks(BrightSquare(), x, 1, n_iter=20, mask_size=8, generator=gen)  # noqa: E731
    torch.testing.assert_close(run(seeded(3)), run(seeded(3)), atol=0, rtol=0)
    assert not torch.equal(run(seeded(3)), run(seeded(4)))
    # Without a generator, torch's global seed decides.
    torch.manual_seed(11)
    first = run(None)
    torch.manual_seed(11)
    torch.testing.assert_close(run(None), first, atol=0, rtol=0)


# ------------------------------------------------------------------- Captum integration


@pytest.mark.parametrize(
    "target",
    [
        1,
        np.int64(1),
        torch.tensor(1),
        torch.tensor([1]),
        [1, 1],
        (1, 1),
        torch.tensor([1, 1]),
        None,
    ],
    ids=["int", "np-int", "0d", "1-elem", "list", "tuple", "1d", "none"],
)
def test_every_target_form(target):
    x = square_images(2)
    expected = optimise_masks(BrightSquare(), x, torch.tensor([1, 1]), n_iter=3, generator=seeded())
    recorder = Recorder(BrightSquare())
    out = IterativeMaskAttribution(recorder).attribute(x, target, n_iter=3, generator=seeded())
    torch.testing.assert_close(out, expected.expand_as(x), atol=1e-6, rtol=0)
    assert recorder.calls == 3 + (target is None)  # None costs one extra forward call


def test_per_image_targets_are_honoured():
    x = square_images(2)
    mixed = optimise_masks(BrightSquare(), x, [1, 0], n_iter=5, generator=seeded())
    ones = optimise_masks(BrightSquare(), x, 1, n_iter=5, generator=seeded())
    zeros = optimise_masks(BrightSquare(), x, 0, n_iter=5, generator=seeded())
    torch.testing.assert_close(mixed[0], ones[0])
    torch.testing.assert_close(mixed[1], zeros[1])
    assert not torch.allclose(ones[1], zeros[1])


def test_attribution_shape_range_device_and_tuple_input():
    x = square_images(2)
    attr = IterativeMaskAttribution(BrightSquare())
    out = attr.attribute(x, 1, n_iter=3, generator=seeded())
    assert out.shape == x.shape and out.is_contiguous()
    assert out.dtype == x.dtype and out.device == x.device
    assert float(out.min()) >= 0.0 and float(out.max()) <= 1.0
    assert torch.equal(out[:, 0], out[:, 2])  # one mask, broadcast over channels
    tup = attr.attribute((x,), 1, n_iter=3, generator=seeded())
    assert isinstance(tup, tuple) and len(tup) == 1
    torch.testing.assert_close(tup[0], out, atol=0, rtol=0)
    assert attr.last_history is not None and attr.last_history["loss"].shape == (3,)
    assert attr.multiplies_by_inputs is False
    assert attr.has_convergence_delta() is False


def test_works_inside_no_grad_and_leaves_inputs_alone():
    x = square_images(1)
    x_copy = x.clone()
    with torch.no_grad():
        out = IterativeMaskAttribution(BrightSquare()).attribute(x, 1, n_iter=2)
    assert out.shape == x.shape and not out.requires_grad
    assert torch.equal(x, x_copy) and not x.requires_grad


def test_noise_tunnel_wraps_it():
    x = square_images(2)
    attr = IterativeMaskAttribution(BrightSquare())
    assert hasattr(attr.attribute, "__wrapped__")
    torch.manual_seed(0)
    nt = NoiseTunnel(attr)
    for target in (1, [1, 0], torch.tensor([1, 1])):
        out = nt.attribute(x, nt_samples=2, stdevs=0.05, target=target, n_iter=2)
        assert out.shape == x.shape
        assert float(out.min()) >= 0.0 and float(out.max()) <= 1.0


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_inputs_give_cuda_masks():
    x = square_images(2).cuda()
    model = BrightSquare().cuda()
    gen = torch.Generator(device="cuda").manual_seed(0)
    out = IterativeMaskAttribution(model).attribute(x, 1, n_iter=5, generator=gen)
    assert out.device == x.device and out.shape == x.shape
    single = optimise_masks(
        model, x[1:], 1, n_iter=5, generator=torch.Generator(device="cuda").manual_seed(0)
    )
    torch.testing.assert_close(out[1:, :1], single, atol=1e-4, rtol=0)


# ------------------------------------------------------------------- options and errors


def test_init_mask_refinement_path():
    x = square_images(2)
    init = torch.zeros(2, 1, SIDE, SIDE)
    init[0, :, 8:16, 16:24] = 1.0
    init[1, :, 20:28, 4:12] = 1.0
    # n_iter=0 returns the initial mask, clamped to [0.01, 0.99], on the optimised grid.
    same = optimise_masks(BrightSquare(), x, 1, init_mask=init, n_iter=0, mask_size=SIDE)
    torch.testing.assert_close(same, init.clamp(0.01, 0.99), atol=1e-6, rtol=0)
    # A channel-broadcast mask (what attribute() returns) is accepted as well.
    same3 = optimise_masks(
        BrightSquare(), x, 1, init_mask=init.expand_as(x), n_iter=0, mask_size=SIDE
    )
    torch.testing.assert_close(same3, same)
    # Refining a good mask for a few steps keeps it where it was; from 0.5 it is not there yet.
    refined = optimise_masks(BrightSquare(), x, 1, init_mask=init, n_iter=10, mask_size=8)
    fresh = optimise_masks(BrightSquare(), x, 1, n_iter=10, mask_size=8)
    err_refined = (refined - init).abs().mean()
    assert err_refined < 0.15
    assert err_refined < (fresh - init).abs().mean()


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"init_mask": torch.zeros(3, 1, SIDE, SIDE)}, "init_mask"),
        ({"init_mask": torch.full((2, 1, SIDE, SIDE), 1.5)}, "within"),
        ({"init_mask": torch.zeros(2, SIDE, SIDE)}, "init_mask"),
        ({"n_iter": -1}, "n_iter"),
        ({"lr": 0.0}, "lr"),
        ({"mask_size": (4, 0)}, "mask_size"),
        ({"mask_size": "big"}, "mask_size"),
        ({"internal_batch_size": 0}, "internal_batch_size"),
        ({"objective": {"tv_weight": 1.0}}, "ObjectiveConfig"),
        ({"mask_size": 4.0}, "mask_size"),
        ({"mask_size": {4, 5}}, "mask_size"),
        ({"generator": 0}, "generator"),
        ({"generator": "cpu"}, "generator"),
        ({"lr": float("inf")}, "lr"),
        ({"n_iter": True}, "n_iter"),
    ],
)
def test_bad_options_raise_input_error(kwargs, match):
    with pytest.raises(InputError, match=match):
        optimise_masks(BrightSquare(), square_images(2), 1, **kwargs)


def test_numpy_numbers_are_accepted_as_settings():
    model = Biased().eval()
    x = torch.rand(2, 3, 8, 8, generator=seeded(0))
    extra = (torch.zeros(5),)
    got = optimise_masks(
        model,
        x,
        np.int64(1),
        n_iter=np.int64(2),
        mask_size=np.int64(4),
        lr=np.float32(0.1),
        internal_batch_size=np.int64(1),
        additional_forward_args=extra,
        generator=seeded(0),
    )
    want = optimise_masks(
        model,
        x,
        1,
        n_iter=2,
        mask_size=4,
        lr=0.1,
        additional_forward_args=extra,
        generator=seeded(0),
    )
    torch.testing.assert_close(got, want, rtol=0, atol=1e-6)


def test_bad_forward_output_raises_input_error():
    with pytest.raises(InputError, match="logits shaped"):
        optimise_masks(lambda x: x.mean((1, 2, 3)), square_images(2), 0, n_iter=1)


def test_default_mask_size_and_objective_are_used():
    assert default_mask_size(224, 224) == (28, 28)
    assert default_mask_size(SIDE, SIDE) == (8, 8)
    x = square_images(1)
    a = optimise_masks(BrightSquare(), x, 1, n_iter=3, generator=seeded())
    b = optimise_masks(
        BrightSquare(), x, 1, n_iter=3, mask_size=8, objective=ObjectiveConfig(), generator=seeded()
    )
    torch.testing.assert_close(a, b, atol=0, rtol=0)
    c = optimise_masks(
        BrightSquare(),
        x,
        1,
        n_iter=3,
        objective=ObjectiveConfig(area_weight=30.0),
        generator=seeded(),
    )
    assert float(c.mean()) < float(a.mean())


def test_progress_bar(capsys):
    optimise_masks(BrightSquare(), square_images(1), 1, n_iter=2, progress=True)
    assert "mask optimisation" in capsys.readouterr().err


# ---------------------------------------------------------------- extra forward arguments


class ScaledSquare(BrightSquare):
    def forward(self, x: torch.Tensor, gain: torch.Tensor) -> torch.Tensor:
        return super().forward(x) * gain[:, None]


def test_additional_forward_args_per_example():
    x = square_images(3)
    gain = torch.tensor([1.0, 0.5, 2.0])
    whole = optimise_masks(
        ScaledSquare(), x, 1, n_iter=5, generator=seeded(), additional_forward_args=(gain,)
    )
    chunked = optimise_masks(
        ScaledSquare(),
        x,
        1,
        n_iter=5,
        generator=seeded(),
        additional_forward_args=gain,
        internal_batch_size=1,
    )
    torch.testing.assert_close(chunked, whole, atol=1e-6, rtol=0)
    # A tensor whose first dimension is the batch is cut to each chunk, then doubled (one
    # classifier call scores the kept and the removed evidence); others are passed unchanged.
    seen = []
    offset = torch.tensor(2.0)

    def forward(x, gain, k, offset):
        seen.append((gain.tolist(), k, offset))
        return ScaledSquare()(x, gain) + offset

    optimise_masks(
        forward,
        x,
        1,
        n_iter=1,
        generator=seeded(),
        additional_forward_args=(gain, 3, offset),
        internal_batch_size=1,
    )
    assert [g for g, _, _ in seen] == [[1.0, 1.0], [0.5, 0.5], [2.0, 2.0]]
    assert all(k == 3 and o is offset for _, k, o in seen)


class Biased(nn.Module):
    """Logits of a linear layer, times ``scale``, plus ``bias``: shared or per-example."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.linear = nn.Linear(3 * 8 * 8, 5)

    def forward(self, x, bias, scale=1.0):
        return self.linear(x.flatten(1)) * scale + bias


@pytest.mark.parametrize(
    "shared",
    [
        (torch.arange(5.0),),  # one bias per class, shape (K,)
        (torch.arange(5.0)[None],),  # (1, K), broadcast over the batch
        (torch.arange(5.0), torch.tensor(2.0)),  # plus a 0-d tensor
        (torch.arange(5.0), 2.0),  # plus a plain number
    ],
)
def test_shared_tensor_arguments_are_not_repeated(shared):
    model = Biased().eval()
    x = torch.rand(3, 3, 8, 8, generator=seeded(0))
    per_example = (shared[0].expand(3, 5).clone(), *shared[1:])
    for target in (1, None):
        got = optimise_masks(
            model, x, target, n_iter=3, additional_forward_args=shared, generator=seeded(0)
        )
        want = optimise_masks(
            model, x, target, n_iter=3, additional_forward_args=per_example, generator=seeded(0)
        )
        torch.testing.assert_close(got, want)
    # Chunks: a shared (2, 1) tensor is not taken for a per-example one in a chunk of 2.
    bias2 = torch.zeros(2, 1)

    def forward(x, b):
        assert b.shape == (2, 1), b.shape
        return model.linear(x.flatten(1)) + b.sum()

    chunked = optimise_masks(
        forward,
        x,
        1,
        n_iter=2,
        additional_forward_args=(bias2,),
        internal_batch_size=2,
        generator=seeded(0),
    )
    assert chunked.shape == (3, 1, 8, 8)


def test_attribute_with_shared_argument_keeps_model_state():
    model = Biased().train()
    before = snapshot_model(model, tensors=True)
    attr = IterativeMaskAttribution(model).attribute(
        torch.rand(2, 3, 8, 8), target=[0, 4], additional_forward_args=(torch.zeros(5),), n_iter=2
    )
    assert attr.shape == (2, 3, 8, 8)
    assert before.differences(snapshot_model(model, tensors=True)) == []
