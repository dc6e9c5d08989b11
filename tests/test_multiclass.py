"""Several classes per image with one encoder pass: MaskingModel.encode/decode and
RealTimeMaskAttribution.attribute_classes (equality with separate calls, shapes, encoder calls,
inference options, validation, the classifier left as it was)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import make_test_resnet

from captum_realtime_mask import EncoderSpec, InputError, MaskerConfig, RealTimeMaskAttribution
from captum_realtime_mask._model_state import snapshot_model

pytestmark = pytest.mark.usefixtures("one_thread")

NUM_CLASSES = 5


@pytest.fixture(scope="module")
def attr():
    """A (randomly initialised, marked trained) masker on a 5-class test_resnet."""
    a = RealTimeMaskAttribution(make_test_resnet(NUM_CLASSES), seed=0)
    a._trained = True
    return a


@pytest.fixture(scope="module")
def x():
    return torch.rand(3, 3, 64, 64, generator=torch.Generator().manual_seed(0))


def separate(attr, x, classes: torch.Tensor) -> torch.Tensor:
    """``(N, K, H, W)`` from K separate mask() calls, for ``classes`` ``(N, K)``."""
    return torch.cat([attr.mask(x, target=classes[:, k]) for k in range(classes.shape[1])], 1)


def test_forward_is_decode_of_encode_bit_for_bit(attr, x):
    masker = attr.masker
    t = torch.tensor([0, 3, 4])
    with torch.no_grad():
        whole = masker(x, t, 0.5)
        maps = masker.encode(x)
        parts = masker.decode(maps, t, 0.5, x.shape[-2:])
        default_size = masker.decode(maps, t, 0.5)
    for a, b in zip(whole, parts):
        assert torch.equal(a, b)
    assert torch.equal(default_size.mask, whole.mask)


def test_forward_is_decode_of_encode_with_a_presence_gate():
    model = make_test_resnet(NUM_CLASSES)
    strides = RealTimeMaskAttribution(model).masker.encoder.reductions
    cfg = MaskerConfig(NUM_CLASSES, EncoderSpec(kind="classifier"), filter_stride=strides[-2])
    a = RealTimeMaskAttribution(model, masker_config=cfg, seed=0)
    a._trained = True
    assert a.masker.presence is not None
    xx, t = torch.rand(2, 3, 64, 64), torch.tensor([1, 2])
    with torch.no_grad():
        assert torch.equal(a.masker(xx, t).mask, a.masker.decode(a.masker.encode(xx), t).mask)
    classes = torch.tensor([[0, 4, 1], [3, 3, 2]])
    torch.testing.assert_close(
        a.attribute_classes(xx, classes), separate(a, xx, classes), atol=1e-6, rtol=0
    )


@pytest.mark.parametrize("chunk", [None, 1, 2, 32])
def test_shared_list_equals_separate_calls(attr, x, chunk):
    out = attr.attribute_classes(x, [4, 0, 2], max_classes_per_batch=chunk)
    assert out.shape == (3, 3, 64, 64) and out.dtype == x.dtype
    expected = separate(attr, x, torch.tensor([[4, 0, 2]] * 3))
    torch.testing.assert_close(out, expected, atol=1e-6, rtol=0)


def test_per_image_classes_and_confidence(attr, x):
    classes = torch.tensor([[0, 1], [2, 3], [4, 4]])
    out = attr.attribute_classes(x, classes, confidence=-1.0)
    assert out.shape == (3, 2, 64, 64)
    expected = torch.cat([attr.mask(x, target=classes[:, k], confidence=-1.0) for k in range(2)], 1)
    torch.testing.assert_close(out, expected, atol=1e-6, rtol=0)
    # Lists of lists and NumPy arrays are the same classes.
    torch.testing.assert_close(
        attr.attribute_classes(x, classes.tolist()),
        attr.attribute_classes(x, classes.numpy()),
        atol=0,
        rtol=0,
    )


def test_none_means_every_class(attr, x):
    out = attr.attribute_classes(x)
    assert out.shape == (3, NUM_CLASSES, 64, 64)
    every = torch.arange(NUM_CLASSES).expand(3, -1)
    torch.testing.assert_close(out, separate(attr, x, every), atol=1e-6, rtol=0)
    assert ((out >= 0) & (out <= 1)).all()


def test_tuple_inputs_and_1d_tensor(attr, x):
    out = attr.attribute_classes((x,), torch.tensor([1, 3]))
    assert isinstance(out, torch.Tensor) and out.shape == (3, 2, 64, 64)


@pytest.mark.parametrize("chunk", [None, 2])
def test_the_encoder_runs_once(attr, x, chunk):
    calls = []
    handle = attr.masker.encoder.register_forward_hook(lambda *args: calls.append(1))
    try:
        attr.attribute_classes(x, None, max_classes_per_batch=chunk)
        assert len(calls) == 1
        attr.attribute_classes(x, [0, 1, 2])
        assert len(calls) == 2
    finally:
        handle.remove()


def test_channels_last_option(attr, x):
    classes = torch.tensor([[1, 4, 0]] * 3)
    try:
        attr.optimize_for_inference(channels_last=True)
        out = attr.attribute_classes(x, classes)
        expected = separate(attr, x, classes)
    finally:
        attr.optimize_for_inference()
    torch.testing.assert_close(out, expected, atol=1e-6, rtol=0)
    torch.testing.assert_close(out, attr.attribute_classes(x, classes), atol=1e-5, rtol=0)


def test_autocast_bf16_on_cpu_runs(attr, x):
    try:
        attr.optimize_for_inference(autocast="bf16")
        out = attr.attribute_classes(x, [0, 2])
        expected = separate(attr, x, torch.tensor([[0, 2]] * 3))
    finally:
        attr.optimize_for_inference()
    assert out.shape == (3, 2, 64, 64) and out.dtype == torch.float32
    torch.testing.assert_close(out, expected, atol=2e-2, rtol=0)


def test_the_classifier_is_left_unchanged(attr, x):
    before = snapshot_model(attr.model, tensors=True)
    grad_flags = [p.requires_grad for p in attr.model.parameters()]
    attr.attribute_classes(x, [0, 1])
    attr.attribute_classes(x)
    assert before.differences(snapshot_model(attr.model, tensors=True)) == []
    assert [p.requires_grad for p in attr.model.parameters()] == grad_flags
    assert not attr.model.training


@pytest.mark.parametrize(
    ("classes", "match"),
    [
        ([0, NUM_CLASSES], r"in \[0, 4\], got \[5\]"),
        ([-1, 2], r"got \[-1\]"),
        (torch.tensor([[0, 1]] * 2), r"\(3, K\) tensor for 3 images, got shape \(2, 2\)"),
        (torch.zeros(3, 2, 1, dtype=torch.long), "got shape"),
        (torch.tensor([0.0, 1.0]), "integer class indices"),
        (torch.tensor([True]), "integer class indices"),
        ([], "at least one class"),
        (torch.zeros(3, 0, dtype=torch.long), "at least one class"),
        ([[0, 1], [2]], "rows of one length"),
        (["a"], "class indices"),
        (2, r"pass \[c\]"),
        ("all", "list, tensor or None"),
        (np.array([7]), r"got \[7\]"),
    ],
)
def test_bad_classes(attr, x, classes, match):
    with pytest.raises(InputError, match=match) as info:
        attr.attribute_classes(x, classes)
    assert info.value.argument == "classes"


def test_bad_inputs_and_options(attr, x):
    with pytest.raises(InputError, match="divisible") as info:
        attr.attribute_classes(torch.rand(1, 3, 60, 60), [0])
    assert info.value.argument == "inputs"
    with pytest.raises(InputError, match="channels"):
        attr.attribute_classes(torch.rand(1, 1, 64, 64), [0])
    with pytest.raises(InputError) as info:
        attr.attribute_classes(x, [0], max_classes_per_batch=0)
    assert info.value.argument == "max_classes_per_batch"
    with pytest.raises(InputError) as info:
        attr.attribute_classes(x, [0], confidence=float("nan"))
    assert info.value.argument == "confidence"


def test_untrained_masker_warns():
    a = RealTimeMaskAttribution(make_test_resnet(3))
    with pytest.warns(UserWarning, match="not been trained") as record:
        a.attribute_classes(torch.rand(1, 3, 64, 64), [0])
    assert record[0].filename == __file__
