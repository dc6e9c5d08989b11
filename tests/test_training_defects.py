import pickle

import pytest
import timm
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from captum_realtime_mask import InputError, RealTimeMaskAttribution
from captum_realtime_mask.training.distributed import shard_loader


class _Output:
    """What a Hugging Face classifier returns: an object holding the logits."""

    def __init__(self, logits):
        self.logits = logits


class _ReturnsAnObject(nn.Module):
    def __init__(self):
        super().__init__()
        self.net = timm.create_model("test_resnet", pretrained=False, num_classes=5)

    def forward(self, x):
        return _Output(self.net(x))


class _Logits(nn.Module):
    """The wrapper the error's hint describes."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, x):
        return self.model(x).logits


def test_a_classifier_returning_an_object_gets_a_hint_that_fit_accepts():
    x, y = torch.rand(8, 3, 32, 32), torch.arange(8) % 5
    model = _ReturnsAnObject()
    attr = RealTimeMaskAttribution(model, num_classes=5, encoder="small_cnn")
    with pytest.raises(
        InputError, match=r"for a batch of 8 images.*nn\.Module"
    ) as info:
        attr.fit([(x, y)], max_steps=1, progress=False)
    assert info.value.argument == "forward_func"
    assert "lambda" not in str(info.value).split("Hint:")[1].split("(fit()")[0]
    # Following the hint trains.
    attr = RealTimeMaskAttribution(_Logits(model), num_classes=5, encoder="small_cnn")
    attr.fit([(x, y)], max_steps=1, progress=False)
    assert attr.history and attr.history[0]["steps"] == 1
    # A lambda is refused by fit() with the same hint.
    attr = RealTimeMaskAttribution(
        lambda t: model(t).logits, num_classes=5, encoder="small_cnn"
    )
    with pytest.raises(
        InputError, match=r"forward_func: fit\(\) needs.*Hint: wrap the model"
    ):
        attr.fit([(x, y)], max_steps=1, progress=False)


def _seed_workers(worker_id):  # a worker_init_fn the sharded loader must keep
    torch.manual_seed(worker_id)


@pytest.fixture
def one_process_group(tmp_path):
    torch.distributed.init_process_group(
        "gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1
    )
    yield
    torch.distributed.destroy_process_group()


def test_the_sharded_loader_keeps_every_option_of_the_users(one_process_group):
    data = TensorDataset(torch.rand(6, 3, 8, 8), torch.arange(6))
    generator = torch.Generator().manual_seed(5)
    loader = DataLoader(
        data,
        batch_size=2,
        shuffle=True,
        num_workers=2,
        worker_init_fn=_seed_workers,
        generator=generator,
        prefetch_factor=3,
        timeout=7.0,
        multiprocessing_context="spawn",
        pin_memory_device="cpu",
        persistent_workers=True,
        drop_last=True,
    )
    sharded = shard_loader(loader, seed=0)
    assert isinstance(sharded.sampler, torch.utils.data.DistributedSampler)
    assert sharded.sampler.shuffle
    for name in (
        "batch_size",
        "num_workers",
        "worker_init_fn",
        "generator",
        "prefetch_factor",
        "timeout",
        "multiprocessing_context",
        "pin_memory_device",
        "persistent_workers",
        "drop_last",
        "collate_fn",
    ):
        assert getattr(sharded, name) == getattr(loader, name), name
    assert sharded.generator is generator


def test_input_errors_keep_their_argument_through_pickling():
    err = InputError("expected a positive int, got int 0.", argument="epochs")
    again = pickle.loads(pickle.dumps(err))
    assert (again.argument, again.detail, str(again)) == (
        "epochs",
        "expected a positive int, got int 0.",
        "epochs: expected a positive int, got int 0.",
    )
