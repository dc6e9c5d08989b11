"""Captum argument formatting (``_captum_compat``): every target and inputs form Captum sends,
turned into one class index per image and one image batch, or a named InputError."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from captum_realtime_mask._captum_compat import format_inputs, format_target
from captum_realtime_mask.errors import InputError


@pytest.mark.parametrize(
    ("target", "match"),
    [
        ([1], "one int class index per image"),
        ([1, 0.5], "one int class index per image"),
        (torch.tensor([1.0, 0.0]), "integer class indices"),
        (torch.tensor([[1], [0]]), "flatten"),
        (torch.tensor([1, 0, 1]), "length 2"),
        (-1, ">= 0"),
        ("cat", "expected an int"),
        (True, "expected an int"),
    ],
)
def test_bad_targets_raise_input_error(target, match):
    with pytest.raises(InputError, match=match):
        format_target(target, 2, "cpu")


def test_target_range_checked_when_classes_known():
    assert format_target([0, 2], 2, "cpu", num_classes=3).tolist() == [0, 2]
    with pytest.raises(InputError, match="< 3"):
        format_target([0, 3], 2, "cpu", num_classes=3)
    with pytest.raises(InputError, match="None must be resolved"):
        format_target(None, 2, "cpu")


@settings(max_examples=25, deadline=None)
@given(st.lists(st.integers(0, 999), min_size=1, max_size=6))
def test_format_target_list_and_tensor_agree(classes):
    from_list = format_target(classes, len(classes), "cpu")
    from_tensor = format_target(torch.tensor(classes), len(classes), "cpu")
    assert from_list.dtype == torch.long and from_list.shape == (len(classes),)
    assert torch.equal(from_list, from_tensor)
    assert from_list.tolist() == classes


def test_format_inputs():
    x = torch.zeros(1, 3, 4, 4)
    assert format_inputs(x) == (x, False)
    assert format_inputs((x,)) == (x, True)
    for bad, match in [
        ((x, x), "1-tuple"),
        (torch.zeros(3, 4, 4), "unsqueeze"),
        (torch.zeros(1, 3, 4, 4, dtype=torch.uint8), "floating-point"),
        ([1.0], "torch.Tensor"),
    ]:
        with pytest.raises(InputError, match=match):
            format_inputs(bad)
