"""Device arguments and placement (``_devices``): devices that are not devices or not on this
machine are refused before any work, and inputs must sit with the classifier."""

from __future__ import annotations

import pytest
import timm
import torch
from conftest import (
    FIT,
    QUIET,
    TINY_SIZE,
    make_attr,
    make_batches,
    make_test_resnet,
    resnet_batch,
    tiny_classifier,
)

from captum_realtime_mask import (
    FitConfig,
    InputError,
    ObjectiveConfig,
    RealTimeMaskAttribution,
    training,
)

SIZE = TINY_SIZE

pytestmark = pytest.mark.usefixtures("one_thread")


def test_model_and_inputs_on_different_devices():
    """The meta device stands in for a second device (there is no GPU here)."""
    x = torch.rand(2, 3, SIZE, SIZE)
    with pytest.raises(InputError, match="meta device"):
        make_attr().attribute(x.to("meta"), target=0)
    # A classifier elsewhere than the inputs, needed to predict the target:
    attr = make_attr(tiny_classifier().to("meta"))
    with pytest.raises(InputError, match=r"classifier's device meta, got cpu") as err:
        attr.attribute(x)
    assert "inputs" in str(err.value) and "Hint" in str(err.value)
    assert attr.attribute(x, target=1).shape == x.shape  # the classifier is not needed here
    with pytest.raises(InputError, match="meta device"):
        attr.fit(make_batches(1), epochs=1, **FIT)
    # A classifier that is the encoder must sit with the inputs even when target is given.
    resnet = timm.create_model("test_resnet", pretrained=False, num_classes=3).to("meta")
    with pytest.raises(InputError, match="classifier's device meta"):
        RealTimeMaskAttribution(resnet).attribute(torch.rand(1, 3, 32, 32), target=0)


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_an_unavailable_cuda_device_is_refused_up_front():
    x, y = resnet_batch()
    attr = RealTimeMaskAttribution(make_test_resnet(5))
    with pytest.raises(InputError, match=r"device: 'cuda' .*CUDA is not available.*'cpu'"):
        attr.fit([(x, y)], epochs=1, device="cuda", **QUIET)
    with pytest.raises(InputError, match="device: 'cuda:1'"):
        training.fit_masker(
            attr.masker, attr.model, [(x, y)], ObjectiveConfig(), FitConfig(**QUIET), "cuda:1"
        )


@pytest.mark.parametrize("device", ["bogus", 1.5, [0]])
def test_devices_that_are_not_devices_are_refused(device):
    x, y = resnet_batch()
    with pytest.raises(InputError, match="device: "):
        RealTimeMaskAttribution(make_test_resnet(5)).fit([(x, y)], epochs=1, device=device, **QUIET)


@pytest.mark.parametrize(
    "device, expected",
    [
        ("meta", "device: .*'meta'"),
        ("bogus", "device: .*'bogus'"),
        (None, "device: .*None"),
        ("cuda:7", "device: 'cuda:7' is not available"),
    ],
)
def test_load_checks_the_device_before_reading(tmp_path, device, expected):
    if device == "cuda:7" and torch.cuda.device_count() > 7:
        pytest.skip("this machine has a cuda:7")
    model = make_test_resnet()
    RealTimeMaskAttribution(model, seed=1).save(tmp_path / "m")
    with pytest.raises(InputError, match=expected):
        RealTimeMaskAttribution.load(tmp_path / "m", model, device=device)
    with pytest.raises(InputError, match="device"):  # before looking for the files
        RealTimeMaskAttribution.load(tmp_path / "missing", model, device=device)
