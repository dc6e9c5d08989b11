"""Constructor and attribute() arguments: clear errors, and the forms users pass."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from conftest import make_test_resnet
from torch import nn

from captum_realtime_mask import InputError, ObjectiveConfig, RealTimeMaskAttribution
from captum_realtime_mask.metrics import localisation_error

SIZE = 32


def tiny(num_classes: int = 4) -> nn.Module:
    return make_test_resnet(num_classes)


@pytest.fixture(scope="module")
def fitted():
    model = tiny()
    attr = RealTimeMaskAttribution(model)
    x = torch.rand(4, 3, SIZE, SIZE)
    attr.fit([(x, torch.tensor([0, 1, 2, 3]))], max_steps=1, progress=False)
    return model, attr, x


def test_untrained_masker_warns_until_fit_or_load(tmp_path):
    model = tiny()
    attr = RealTimeMaskAttribution(model)
    x = torch.rand(2, 3, SIZE, SIZE)
    with pytest.warns(UserWarning, match="not been trained"):
        attr.mask(x, target=1)
    attr.fit([(x, torch.tensor([0, 1]))], max_steps=1, progress=False)
    attr.save(tmp_path / "m")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        attr.attribute(x, target=1)
        RealTimeMaskAttribution.load(tmp_path / "m", model).mask(x, target=0)


@pytest.mark.parametrize(
    ("kwargs", "argument"),
    [
        ({"num_classes": 2.5}, "num_classes"),
        ({"num_classes": "10"}, "num_classes"),
        ({"num_classes": 0}, "num_classes"),
        ({"num_classes": True}, "num_classes"),
        ({"seed": None}, "seed"),
        ({"seed": "x"}, "seed"),
        ({"objective": 3}, "objective"),
        ({"encoder": "no_such_network"}, "encoder"),
        ({"encoder": "torchvision:no_such_network"}, "encoder"),
    ],
)
def test_constructor_arguments_are_checked(kwargs, argument):
    with pytest.raises(InputError, match=rf"^{argument}:"):
        RealTimeMaskAttribution(tiny(), **kwargs)


def test_objective_as_a_dict():
    attr = RealTimeMaskAttribution(tiny(), objective={"area_weight": 5.0})
    assert attr.objective == ObjectiveConfig(area_weight=5.0)
    with pytest.raises(ValueError, match="no_such_weight"):
        RealTimeMaskAttribution(tiny(), objective={"no_such_weight": 1.0})


def test_class_count_follows_a_replaced_head():
    model = tiny(10)
    model.fc = nn.Linear(model.fc.in_features, 3)  # timm's num_classes attribute still says 10
    assert RealTimeMaskAttribution(model).num_classes == 3
    assert RealTimeMaskAttribution(nn.Sequential(tiny(10), nn.Linear(10, 3))).num_classes == 3
    assert RealTimeMaskAttribution(tiny(10)).num_classes == 10


def test_confidence_and_refine_options_are_checked(fitted):
    _, attr, x = fitted
    for bad in (float("nan"), float("inf"), "a", None):
        with pytest.raises(InputError, match="^confidence:"):
            attr.attribute(x, target=1, confidence=bad)
    with pytest.raises(InputError, match="^confidence:"):
        attr.mask(x, target=1, confidence=float("nan"))
    with pytest.raises(InputError, match=r"refine_options: unknown options \['lrr'\]"):
        attr.attribute(x, target=1, refine_steps=1, refine_options={"lrr": 0.1})


def test_numpy_targets_and_boxes(fitted):
    _, attr, x = fitted
    targets = np.array([0, 1, 2, 3])
    assert torch.equal(attr.mask(x, target=targets), attr.mask(x, target=torch.tensor(targets)))
    with pytest.raises(InputError, match="^target:"):
        attr.mask(x, target=np.array([0.5, 1, 2, 3]))
    mask = torch.zeros(2, 1, 8, 8)
    mask[:, :, 0:4, 0:4] = 1.0
    boxes = [[0, 0, 3, 3], [4, 4, 7, 7]]
    as_array = float(localisation_error(mask, np.array(boxes)))
    assert as_array == 0.5 == float(localisation_error(mask, boxes))


@pytest.mark.parametrize("dtype", [torch.float64, torch.bfloat16])
def test_classifier_converted_after_fit(fitted, dtype):
    model, attr, x = fitted
    expected = attr.mask(x, target=[0, 1, 2, 3])
    try:
        model.to(dtype)
        for target in ([0, 1, 2, 3], None):
            out = attr.attribute(x.to(dtype), target=target)
            assert out.dtype == dtype and out.shape == x.shape
        got = attr.mask(x.to(dtype), target=[0, 1, 2, 3]).float()
    finally:
        model.float()
    tol = 1e-6 if dtype == torch.float64 else 0.1
    torch.testing.assert_close(got, expected, atol=tol, rtol=0)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float64])
def test_refinement_of_other_precisions_and_under_inference_mode(fitted, dtype):
    from captum_realtime_mask import IterativeMaskAttribution

    model, attr, x = fitted
    y = [0, 1, 2, 3]

    def seeded():
        return {"generator": torch.Generator().manual_seed(0)}

    expected = attr.attribute(x, target=y, refine_steps=2, refine_options=seeded())
    out = attr.attribute(x.to(dtype), target=y, refine_steps=2, refine_options=seeded())
    assert out.dtype == dtype
    tol = 0.0 if dtype == torch.float64 else 0.02  # the inputs' rounding only
    torch.testing.assert_close(out.float(), expected, atol=tol, rtol=0)
    with torch.inference_mode():
        again = attr.attribute(x, target=y, refine_steps=2, refine_options=seeded())
        iterative = IterativeMaskAttribution(model).attribute(x.to(dtype), target=y, n_iter=2)
    assert torch.equal(again, expected)
    assert iterative.dtype == dtype and iterative.shape == x.shape
