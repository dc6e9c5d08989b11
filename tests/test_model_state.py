"""No side effects on the user's model (``_model_state``): fit(), attribute(), refinement and the
iterative method leave its modes, flags, hooks, weights, buffers and layout as they were, also
after an exception; and the helpers that make it so."""

from __future__ import annotations

import pytest
import torch
from conftest import (
    FIT,
    TINY_SIZE,
    Recorder,
    layout,
    make_attr,
    make_batches,
    make_test_resnet,
    tiny_classifier,
)
from torch import nn

from captum_realtime_mask import RealTimeMaskAttribution
from captum_realtime_mask._model_state import (
    find_module,
    frozen_model,
    snapshot_model,
    weights_in_format,
)
from captum_realtime_mask.errors import InputError
from captum_realtime_mask.iterative import IterativeMaskAttribution, optimise_masks

SIZE = TINY_SIZE

pytestmark = pytest.mark.usefixtures("one_thread")


class SmallNet(nn.Module):
    """A CNN with batch norm and dropout, whose mode and statistics must survive untouched."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.Dropout(0.5)
        )
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(16, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def user_model() -> nn.Module:
    """A SmallNet in a deliberately mixed state: train mode, one frozen layer, one eval module,
    a user hook, a non-empty BN history."""
    torch.manual_seed(1)
    net = SmallNet().train()
    net.features[0].weight.requires_grad_(False)
    net.head.eval()
    net.features[1].running_mean.fill_(0.3)
    net.features[0].register_forward_hook(lambda *args: None)
    return net


# ------------------------------------------------------------------------------------ helpers


def test_frozen_model_restores_mixed_state_even_on_error():
    net = user_model()
    modes = {n: m.training for n, m in net.named_modules()}
    flags = {n: p.requires_grad for n, p in net.named_parameters()}
    with pytest.raises(KeyError), frozen_model(net) as frozen:
        assert frozen is net
        assert not any(m.training for m in net.modules())
        assert not any(p.requires_grad for p in net.parameters())
        net.train()  # code inside the block may flip modes: still restored
        raise KeyError("inside")
    assert {n: m.training for n, m in net.named_modules()} == modes
    assert {n: p.requires_grad for n, p in net.named_parameters()} == flags
    assert modes["head"] is False and modes[""] is True  # the mix was really mixed


def test_frozen_model_passes_other_callables_through():
    assert find_module(lambda x: x) is None
    with frozen_model(lambda x: x) as frozen:
        assert frozen is None


def test_snapshot_detects_changes():
    net = user_model()
    before = snapshot_model(net, tensors=True)
    handle = net.head.register_forward_pre_hook(lambda *args: None)
    net.features[1].running_var.add_(1.0)
    net.head[2].bias.requires_grad_(False)
    diffs = before.differences(snapshot_model(net, tensors=True))
    handle.remove()
    assert any("head:_forward_pre_hooks" in d for d in diffs)
    assert any("features.1.running_var" in d for d in diffs)
    assert any("requires_grad[head.2.bias]" in d for d in diffs)


def test_weights_in_format_keeps_updates_and_gives_each_weight_its_storage_back():
    cl = torch.channels_last
    conv = torch.nn.Conv2d(3, 4, 3)
    nhwc = torch.nn.Conv2d(3, 4, 3).to(memory_format=cl)
    ptr, ptr_nhwc = conv.weight.data_ptr(), nhwc.weight.data_ptr()
    # conv's weight is reached through two modules; it is converted and restored once.
    modules = [conv, torch.nn.Sequential(conv), nhwc]
    with pytest.raises(RuntimeError, match="boom"), weights_in_format(modules, cl):
        assert conv.weight.is_contiguous(memory_format=cl) and not conv.weight.is_contiguous()
        assert nhwc.weight.data_ptr() == ptr_nhwc  # already channels-last: not copied
        with torch.no_grad():
            conv.weight.add_(1.0)  # training in the block
        updated = conv.weight.detach().clone()
        raise RuntimeError("boom")
    assert conv.weight.data_ptr() == ptr and conv.weight.is_contiguous()
    assert torch.equal(conv.weight, updated)
    assert nhwc.weight.data_ptr() == ptr_nhwc and nhwc.weight.is_contiguous(memory_format=cl)


# ------------------------------------------------------------------- fit() and attribute()


class RaisesOnCall:
    """Stands for a user's forward hook: counts calls and raises on the n-th."""

    def __init__(self, n):
        self.n, self.calls = n, 0

    def __call__(self, module, args, output):
        self.calls += 1
        if self.calls == self.n:
            raise RuntimeError(f"classifier failed on call {self.n}")


def _users_model(kind):
    """A classifier mid-training in a mixed state: train mode, frozen first layer and head
    weights, a forward pre-hook; the attribution to build on it; its image size."""
    if kind == "timm":
        model = make_test_resnet(3)
        attr_factory = lambda m: RealTimeMaskAttribution(m)  # noqa: E731
        size = 32
    else:
        model = tiny_classifier()
        attr_factory = make_attr
        size = SIZE
    model.train()  # a user's model mid-training, in a mixed state
    first = next(model.parameters())
    first.requires_grad_(False)
    [m for m in model.modules() if isinstance(m, nn.Linear)][-1].weight.requires_grad_(False)
    model.register_forward_pre_hook(lambda module, args: None)
    return model, attr_factory, size


@pytest.mark.parametrize(
    "kind, where",
    [("small_cnn", "fit"), ("timm", "fit"), ("small_cnn", "attribute"), ("timm", "attribute")],
)
def test_no_side_effects_after_an_exception_mid_step(kind, where):
    model, attr_factory, size = _users_model(kind)
    hook = RaisesOnCall(3)
    model.register_forward_hook(hook)
    before = snapshot_model(model, tensors=True)
    devices = [p.device for p in model.parameters()]
    attr = attr_factory(model)
    data = make_batches(4, size=size)
    with pytest.raises(RuntimeError, match="failed on call 3"):
        if where == "fit":
            attr.fit(data, epochs=1, **FIT)
        else:
            for _ in range(3):
                attr.attribute(data[0][0])  # target=None: one classifier call each
    assert hook.calls == 3
    assert before.differences(snapshot_model(model, tensors=True)) == []
    assert [p.device for p in model.parameters()] == devices
    assert model.training and not next(model.parameters()).requires_grad
    # And after calls that succeed:
    hook.n = -1
    attr.fit(data[:2], epochs=1, **FIT)
    attr.attribute(data[0][0])
    attr.attribute(data[0][0], target=data[0][1])
    assert before.differences(snapshot_model(model, tensors=True)) == []


@pytest.mark.parametrize("channels_last", [False, True])
def test_fit_restores_the_classifier_after_an_exception(timm_resnet, channels_last):
    timm_resnet.train()
    before, layout_before = snapshot_model(timm_resnet, tensors=True), layout(timm_resnet)
    x, y = make_batches(1, size=64, num_classes=5)[0]

    def loader():
        yield x, y
        raise RuntimeError("disk on fire")

    attr = RealTimeMaskAttribution(timm_resnet)
    with pytest.raises(RuntimeError, match="disk on fire"):
        attr.fit(loader(), epochs=1, progress=False, channels_last=channels_last)
    assert before.differences(snapshot_model(timm_resnet, tensors=True)) == []
    assert layout(timm_resnet) == layout_before


# ------------------------------------------------------------------------ the iterative method


def test_classifier_untouched_after_success():
    net = user_model()
    x = torch.rand(2, 3, 16, 16)
    before = snapshot_model(net, tensors=True)
    recorder = Recorder(net)
    optimise_masks(recorder, x, [0, 2], n_iter=4, generator=torch.Generator().manual_seed(5))
    assert before.differences(snapshot_model(net, tensors=True)) == []
    assert all(p.grad is None for p in net.parameters())
    # While optimising, the classifier was in eval mode with frozen parameters.
    assert recorder.seen == [(False, False)] * 4


def test_classifier_untouched_after_exception_mid_optimisation():
    net = user_model()
    before = snapshot_model(net, tensors=True)
    recorder = Recorder(net, fail_on=3)
    with pytest.raises(RuntimeError, match="boom on purpose"):
        IterativeMaskAttribution(recorder).attribute(torch.rand(2, 3, 16, 16), 1, n_iter=10)
    assert recorder.calls == 3
    assert before.differences(snapshot_model(net, tensors=True)) == []
    assert all(p.grad is None for p in net.parameters())


def test_classifier_untouched_after_bad_target_detected_in_loop():
    net = user_model()
    before = snapshot_model(net, tensors=True)
    with pytest.raises(InputError, match="< 3"):
        optimise_masks(net, torch.rand(2, 3, 16, 16), 7, n_iter=3)
    assert before.differences(snapshot_model(net, tensors=True)) == []


def test_bound_method_forward_is_frozen_too():
    net = user_model()
    before = snapshot_model(net, tensors=True)
    optimise_masks(net.forward, torch.rand(1, 3, 16, 16), 0, n_iter=2)
    assert before.differences(snapshot_model(net, tensors=True)) == []
