"""optimise_masks / IterativeMaskAttribution used as a Captum perturbation method is used:
shared extra forward arguments, NumPy numbers for the settings, clear errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from captum_realtime_mask._model_state import snapshot_model
from captum_realtime_mask.errors import InputError
from captum_realtime_mask.iterative import IterativeMaskAttribution, optimise_masks

pytestmark = pytest.mark.usefixtures("one_thread")


class Biased(nn.Module):
    """Logits of a linear layer, times ``scale``, plus ``bias``: shared or per-example."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.linear = nn.Linear(3 * 8 * 8, 5)

    def forward(self, x, bias, scale=1.0):
        return self.linear(x.flatten(1)) * scale + bias


def _gen() -> torch.Generator:
    return torch.Generator().manual_seed(0)


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
    x = torch.rand(3, 3, 8, 8, generator=_gen())
    per_example = (shared[0].expand(3, 5).clone(), *shared[1:])
    for target in (1, None):
        got = optimise_masks(
            model, x, target, n_iter=3, additional_forward_args=shared, generator=_gen()
        )
        want = optimise_masks(
            model, x, target, n_iter=3, additional_forward_args=per_example, generator=_gen()
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
        generator=_gen(),
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


def test_numpy_numbers_are_accepted_as_settings():
    model = Biased().eval()
    x = torch.rand(2, 3, 8, 8, generator=_gen())
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
        generator=_gen(),
    )
    want = optimise_masks(
        model, x, 1, n_iter=2, mask_size=4, lr=0.1, additional_forward_args=extra, generator=_gen()
    )
    torch.testing.assert_close(got, want, rtol=0, atol=1e-6)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"mask_size": 4.0}, "mask_size"),
        ({"mask_size": {4, 5}}, "mask_size"),
        ({"generator": 0}, "generator"),
        ({"generator": "cpu"}, "generator"),
        ({"lr": float("inf")}, "lr"),
        ({"n_iter": True}, "n_iter"),
    ],
)
def test_bad_settings_raise_input_error(kwargs, match):
    with pytest.raises(InputError, match=match):
        optimise_masks(
            Biased().eval(),
            torch.rand(2, 3, 8, 8),
            1,
            **{"n_iter": 1, "additional_forward_args": (torch.zeros(5),), **kwargs},
        )
