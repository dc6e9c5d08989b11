"""Reliability: bad inputs, training faults, safe checkpoints, no side effects, determinism."""

from __future__ import annotations

import functools
import importlib.util
import itertools
import json
import math
import os
import pickle
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import timm
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn
from torch.optim.optimizer import register_optimizer_step_pre_hook
from torch.utils.data import DataLoader, TensorDataset

from captum_realtime_mask import (
    CheckpointError,
    EncoderSpec,
    FitConfig,
    InputError,
    ObjectiveConfig,
    RealTimeMaskAttribution,
    TrainingError,
)
from captum_realtime_mask.checkpoint import format as checkpoint_mod
from captum_realtime_mask._model_state import snapshot_model
from captum_realtime_mask.checkpoint import read_checkpoint, write_checkpoint
from captum_realtime_mask.training import state as training_state
from captum_realtime_mask.training import trainer

SIZE = 16  # small_cnn below has strides 2, 4, 8
FIT = {"progress": False, "lr": 1e-2}
DOCUMENTED_ERRORS = (InputError, CheckpointError, TrainingError)


pytestmark = pytest.mark.usefixtures("one_thread")


def tiny_classifier(num_classes: int = 3, seed: int = 0) -> nn.Module:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1),
            nn.BatchNorm2d(8),
            nn.ReLU(),
            nn.Dropout(0.1),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
            nn.Linear(8, num_classes),
        ).eval()


def make_attr(clf=None, seed: int = 0, num_classes: int = 3, **kwargs) -> RealTimeMaskAttribution:
    return RealTimeMaskAttribution(
        clf if clf is not None else tiny_classifier(num_classes),
        num_classes=num_classes,
        encoder=EncoderSpec(kind="small_cnn", width=4, min_reduction=2),
        seed=seed,
        **kwargs,
    )


def make_batches(n_batches: int = 4, bs: int = 4, seed: int = 0, size: int = SIZE):
    g = torch.Generator().manual_seed(seed)
    return [
        (torch.rand(bs, 3, size, size, generator=g), torch.randint(0, 3, (bs,), generator=g))
        for _ in range(n_batches)
    ]


def assert_same_masker(a: RealTimeMaskAttribution, b: RealTimeMaskAttribution) -> None:
    sa, sb = a.masker.state_dict(), b.masker.state_dict()
    assert sa.keys() == sb.keys()
    different = [k for k in sa if not torch.equal(sa[k], sb[k])]
    assert different == [], f"masker tensors differ: {different[:5]}"


class Interrupted(Exception):
    """Stands in for a crash in the middle of fit()."""


def interrupt_at_step(call: int):
    """A step_terms that raises on its ``call``-th call (1-based)."""
    real = trainer.step_terms
    counter = itertools.count(1)

    def step_terms(*args, **kwargs):
        if next(counter) == call:
            raise Interrupted(f"crash at step call {call}")
        return real(*args, **kwargs)

    return step_terms


def visible(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if not p.name.startswith("."))


def hidden(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


# ---------------------------------------------------------------------------------- validation
@pytest.mark.parametrize(
    "inputs, expected",
    [
        (torch.rand(1, 2, 3, SIZE, SIZE), ["inputs", "(N, C, H, W)", "(1, 2, 3, 16, 16)"]),
        (torch.rand(2, 3, 0, 0), ["inputs", "positive height and width", "(2, 3, 0, 0)"]),
        (torch.rand(0, 3, SIZE, SIZE), ["inputs", "empty"]),
        (torch.zeros(2, 3, SIZE, SIZE, dtype=torch.uint8), ["inputs", "floating", "uint8"]),
        (torch.rand(2, 4, SIZE, SIZE), ["inputs", "takes 3 channels", "got 4"]),
        (torch.rand(2, 3, 12, 20), ["inputs", "divisible", "stride 8", "(12, 20)"]),
        ((torch.rand(2, 3, SIZE, SIZE),) * 2, ["inputs", "1-tuple", "2 items"]),
        ("images", ["inputs", "torch.Tensor", "str"]),
    ],
    ids=["5d", "zero_hw", "empty_batch", "uint8", "channels", "stride", "pair", "str"],
)
def test_bad_inputs_name_the_argument_the_expectation_and_what_came(inputs, expected):
    attr = make_attr()
    with pytest.raises(InputError) as err:
        attr.attribute(inputs, target=0)
    for text in expected:
        assert text in str(err.value), (text, str(err.value))


def test_inf_inputs_are_rejected_with_a_count():
    x = torch.rand(2, 3, SIZE, SIZE)
    x[1, 2, 3, 4] = float("inf")
    x[0, 0, 0, 0] = -float("inf")
    with pytest.raises(InputError, match=r"inputs: expected finite values, got 2 NaN or Inf"):
        make_attr().attribute(x, target=0)


@pytest.mark.parametrize(
    "target, expected",
    [
        (2**70, "< 3"),  # beyond int64: used to raise OverflowError
        ([1, 2**70], "< 3"),  # used to raise a bare ValueError from torch.tensor
        ([-(2**70), 0], ">= 0"),
        (torch.zeros(2, 2, dtype=torch.long), "shape (2, 2)"),
        (torch.tensor([0, 1], device="meta"), "meta"),
        (True, "bool"),
        (1.0, "float"),
        ([0.0, 1.0], "float"),
        (np.array([0.0, 1.0]), "float"),
    ],
)
def test_bad_targets_raise_input_errors(target, expected):
    with pytest.raises(InputError, match="target") as err:
        make_attr().attribute(torch.rand(2, 3, SIZE, SIZE), target=target)
    assert expected in str(err.value)


class Rank3(nn.Module):
    def __init__(self, inner):
        super().__init__()
        self.inner = inner

    def forward(self, x):
        return self.inner(x)[:, None]


class Widened(nn.Module):
    def __init__(self, inner):
        super().__init__()
        self.inner = inner

    def forward(self, x):
        return torch.cat([self.inner(x)] * 3, dim=1)


@pytest.mark.parametrize(
    "wrapper, expected",
    [(Rank3, ["(N, K) = (2, 3)", "(2, 1, 3)"]), (Widened, ["expected 3 class scores", "got 9"])],
)
def test_classifier_outputs_that_are_not_class_scores(wrapper, expected):
    """Checked when target=None needs a prediction and on the first training batch."""
    model = wrapper(tiny_classifier())
    attr = make_attr(model)
    x = torch.rand(2, 3, SIZE, SIZE)
    with pytest.raises(InputError, match="forward_func") as err:
        attr.attribute(x)
    for text in expected:
        assert text in str(err.value)
    assert attr.attribute(x, target=1).shape == x.shape  # with a target it is never called
    before = snapshot_model(model, tensors=True)
    with pytest.raises(InputError, match="forward_func"):
        attr.fit(make_batches(2), epochs=1, **FIT)
    assert before.differences(snapshot_model(model, tensors=True)) == []


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


@pytest.mark.parametrize(
    "batch, expected",
    [
        ((torch.full((2, 3, SIZE, SIZE), float("nan")), torch.tensor([0, 1])), "finite"),
        ((torch.zeros(2, 3, SIZE, SIZE, dtype=torch.uint8), torch.tensor([0, 1])), "floating"),
        ((torch.rand(2, 3, SIZE, SIZE), torch.tensor([True, False])), "torch.bool"),
        ((torch.rand(2, 3, SIZE, SIZE), torch.tensor([0.0, 1.0])), "integer"),
        ((torch.rand(2, 3, SIZE, SIZE), torch.tensor([0, 1, 2])), "length 2"),
        ((torch.rand(2, 3, SIZE, SIZE), torch.tensor([0, 3])), "[0, 3)"),
        ((torch.rand(2, 3, 0, SIZE), torch.tensor([0, 1])), "empty"),
        ((torch.rand(2, 3, 12, 12), torch.tensor([0, 1])), "stride 8"),
        (torch.rand(2, 3, SIZE, SIZE), "(images, labels"),
    ],
    ids=[
        "nan",
        "uint8",
        "bool_labels",
        "float_labels",
        "length",
        "range",
        "empty",
        "stride",
        "bare",
    ],
)
def test_bad_training_batches(batch, expected):
    with pytest.raises(InputError, match="loader") as err:
        make_attr().fit([batch], epochs=1, **FIT)
    assert expected in str(err.value)


def test_exhausted_iterator_and_bad_fit_options():
    attr = make_attr()
    once = iter(make_batches(1))
    with pytest.warns(UserWarning, match="no batches in epoch 1.*consumed only once"):
        attr.fit(once, epochs=2, **FIT)  # stops early; the epoch trained is kept
    assert len(attr.history) == 1
    for option in (
        {"keep_last": 0},  # used to delete every checkpoint including the newest
        {"nonfinite_patience": 0},
        {"grad_clip": -1.0},
        {"area_warmup": 2.0},
        {"weight_decay": -1.0},
        {"embedding_lr_scale": 0.0},
        {"channels_last": "yes"},
        {"amp": 1},
    ):
        with pytest.raises(InputError, match=next(iter(option))):
            FitConfig(**option)


def test_embedding_lr_scale_speeds_up_only_the_class_embedding():
    """Adam moves each weight by about lr per step, so 20x the lr moves the embedding ~20x."""

    def moved(scale: float) -> tuple[float, float]:
        attr = make_attr()
        before = {k: v.clone() for k, v in attr.masker.state_dict().items()}
        attr.fit(
            make_batches(3),
            max_steps=3,
            lr=1e-4,
            lr_schedule="cosine",
            embedding_lr_scale=scale,
            progress=False,
        )
        after = attr.masker.state_dict()
        emb = (after["filter.embedding.weight"] - before["filter.embedding.weight"]).abs().max()
        head = (after["head.conv.weight"] - before["head.conv.weight"]).abs().max()
        return float(emb), float(head)

    emb1, head1 = moved(1.0)
    emb20, head20 = moved(20.0)
    assert emb20 > 10 * emb1
    assert head20 < 2 * head1  # the rest of the masker keeps its learning rate


# ---------------------------------------------------------------------------- training faults
class NaNLogits(nn.Module):
    """Returns NaN logits on the given calls (1-based), or on every call."""

    def __init__(self, inner, calls=None):
        super().__init__()
        self.inner, self.calls, self.n = inner, calls, 0

    def forward(self, x):
        self.n += 1
        out = self.inner(x)
        if self.calls is None or self.n in self.calls:
            out = out * float("nan")
        return out


class _NaNGrad(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        return x.clone()

    @staticmethod
    def backward(ctx, grad):
        return torch.full_like(grad, float("nan"))


class NaNGradient(nn.Module):
    """Finite logits whose backward sends NaN gradients to the masker."""

    def __init__(self, inner):
        super().__init__()
        self.inner = inner

    def forward(self, x):
        return self.inner(_NaNGrad.apply(x))


def _params(attr):
    return {k: v.clone() for k, v in attr.masker.named_parameters()}


def test_a_nonfinite_loss_skips_the_step_with_a_warning():
    attr = make_attr(
        NaNLogits(tiny_classifier(), calls={1}), objective=ObjectiveConfig(fake_prob=0)
    )
    with pytest.warns(RuntimeWarning) as record:
        attr.fit(make_batches(3), epochs=1, **FIT)
    messages = [str(w.message) for w in record if issubclass(w.category, RuntimeWarning)]
    assert len(messages) == 1 and "non-finite loss at step 0; step skipped (1/10" in messages[0]
    assert attr.history[0]["steps"] == 2  # 3 batches, one skipped
    assert all(torch.isfinite(p).all() for p in attr.masker.parameters())
    assert math.isfinite(attr.history[0]["loss"])


@pytest.mark.parametrize("wrapper, what", [(NaNLogits, "loss"), (NaNGradient, "gradient")])
def test_a_persisting_nonfinite_loss_or_gradient_stops_with_training_error(wrapper, what):
    attr = make_attr(wrapper(tiny_classifier()), objective=ObjectiveConfig(fake_prob=0))
    before = _params(attr)
    with (
        pytest.warns(RuntimeWarning, match=f"non-finite {what}"),
        pytest.raises(TrainingError, match=f"the {what} was non-finite .* 3 steps in a row"),
    ):
        attr.fit(make_batches(5), epochs=1, nonfinite_patience=3, **FIT)
    after = _params(attr)
    assert all(torch.equal(before[k], after[k]) for k in before), "a skipped step updated weights"


def test_gradient_clipping_bounds_the_norm_the_optimiser_sees():
    norms: list[float] = []

    def record(opt, args, kwargs):
        grads = [p.grad for g in opt.param_groups for p in g["params"] if p.grad is not None]
        norms.append(float(torch.linalg.vector_norm(torch.stack([g.norm() for g in grads]))))

    handle = register_optimizer_step_pre_hook(record)
    try:
        make_attr().fit(make_batches(3), epochs=1, **FIT)
        unclipped, norms[:] = list(norms), []
        make_attr().fit(make_batches(3), epochs=1, grad_clip=1e-3, **FIT)
    finally:
        handle.remove()
    assert len(unclipped) == len(norms) == 3
    assert min(unclipped) > 1e-3  # the bound below is not met by chance
    assert max(norms) <= 1e-3 * (1 + 1e-4), norms


# ---------------------------------------------------------------------------------- checkpoints
def test_periodic_checkpoints_keep_the_last_k(tmp_path, monkeypatch):
    written = []
    real_write = training_state.write_checkpoint

    def spy(directory, *args, **kwargs):
        written.append(Path(directory).name)
        return real_write(directory, *args, **kwargs)

    monkeypatch.setattr(training_state, "write_checkpoint", spy)
    attr = make_attr()
    ckpt = tmp_path / "ckpt"
    attr.fit(
        make_batches(5), epochs=2, checkpoint_dir=str(ckpt), checkpoint_every=2, keep_last=2, **FIT
    )
    # every 2 steps, plus one at the end of each epoch (step 10 is both)
    assert [int(n.split("-")[1]) for n in written] == [2, 4, 5, 6, 8, 10, 10]
    assert visible(ckpt) == ["step-000000008", "step-000000010"]
    assert hidden(ckpt) == []
    x, y = make_batches(1, seed=9)[0]
    for name in visible(ckpt):
        meta, _ = read_checkpoint(ckpt / name)
        assert meta["training"]["state"]["step"] == int(name.split("-")[1])
    last = RealTimeMaskAttribution.load(ckpt / "step-000000010", attr.forward_func)
    assert torch.equal(last.mask(x, target=y), attr.mask(x, target=y))


def test_a_prune_killed_mid_deletion_leaves_no_half_deleted_checkpoint(tmp_path, monkeypatch):
    real_rmtree = shutil.rmtree

    def killed_after_one_file(path, ignore_errors=False):
        path = Path(path)
        if not path.exists():
            return
        next(f for f in sorted(path.iterdir()) if f.is_file()).unlink()
        raise Interrupted(f"killed while deleting {path.name}")

    ckpt = tmp_path / "ckpt"
    with monkeypatch.context() as m:
        m.setattr(shutil, "rmtree", killed_after_one_file)
        with pytest.raises(Interrupted):
            make_attr().fit(
                make_batches(3),
                epochs=1,
                checkpoint_dir=str(ckpt),
                keep_last=1,
                checkpoint_every=1,
                **FIT,
            )
    assert shutil.rmtree is real_rmtree
    assert visible(ckpt) == ["step-000000002"] and hidden(ckpt) == [".step-000000001.trash"]
    read_checkpoint(ckpt / "step-000000002")
    make_attr().fit(
        make_batches(3), epochs=1, resume_from=ckpt, checkpoint_dir=str(ckpt), keep_last=1, **FIT
    )
    assert visible(ckpt) == ["step-000000003"] and hidden(ckpt) == []


@pytest.mark.parametrize("loader_kind", ["list", "dataloader_generator", "dataloader_global"])
def test_resume_after_a_crash_matches_an_uninterrupted_run(tmp_path, monkeypatch, loader_kind):
    """Crash in the 2nd epoch's 4th step, resume in a fresh object: bit-identical result."""
    x = torch.cat([b[0] for b in make_batches(6)])
    y = torch.cat([b[1] for b in make_batches(6)])
    dataset = TensorDataset(x, y)

    def loader():
        if loader_kind == "list":
            return make_batches(6)
        g = torch.Generator().manual_seed(7) if loader_kind == "dataloader_generator" else None
        return DataLoader(dataset, batch_size=4, shuffle=True, generator=g)

    options = dict(epochs=2, lr_schedule="cosine", **FIT)
    ckpt = tmp_path / "ckpt"
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(123)
        reference = make_attr()
        reference.fit(loader(), **options)

        torch.manual_seed(123)
        crashed = make_attr()
        with monkeypatch.context() as m:
            m.setattr(trainer, "step_terms", interrupt_at_step(6 + 4))
            with pytest.raises(Interrupted):
                crashed.fit(loader(), checkpoint_dir=str(ckpt), checkpoint_every=1, **options)
        state = read_checkpoint(ckpt / "step-000000009")[0]["training"]["state"]
        assert (state["epoch"], state["batch_in_epoch"]) == (1, 3)  # mid-epoch
        shutil.copytree(ckpt / "step-000000009", tmp_path / "step9")

        torch.manual_seed(999)  # a new process starts from another global RNG state
        resumed = make_attr(seed=0)
        resumed.fit(
            loader(), resume_from=ckpt, checkpoint_dir=str(ckpt), checkpoint_every=1, **options
        )
    assert_same_masker(reference, resumed)  # bit-identical, not merely close
    assert resumed.history == reference.history
    assert visible(ckpt)[-1] == "step-000000012"

    if loader_kind == "dataloader_generator":
        # The check can fail: without replaying the epoch's random states the order differs.
        with torch.random.fork_rng(devices=[]):
            monkeypatch.setattr(trainer, "restore_epoch_rng", lambda loader, states: None)
            careless = make_attr()
            careless.fit(loader(), resume_from=tmp_path / "step9", **options)
        with pytest.raises(AssertionError, match="masker tensors differ"):
            assert_same_masker(reference, careless)


SIGKILL_SCRIPT = '''
"""Trains with a checkpoint every step; stalls mid-epoch (after writing a marker) to be killed."""
import sys
import time

import torch
from torch import nn

from captum_realtime_mask import EncoderSpec, RealTimeMaskAttribution

OPTIONS = dict(epochs=3, lr=1e-2, lr_schedule="cosine", progress=False)


class Batches:
    def __init__(self, data, stall_at=None, marker=None):
        self.data, self.stall_at, self.marker, self.epoch = data, stall_at, marker, -1

    def __len__(self):
        return len(self.data)

    def __iter__(self):
        self.epoch += 1
        for i, batch in enumerate(self.data):
            if self.marker and (self.epoch, i) == self.stall_at:
                open(self.marker, "w").close()
                time.sleep(600)
            yield batch


def build():
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        clf = nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
            nn.Linear(8, 3),
        ).eval()
        g = torch.Generator().manual_seed(1)
        data = [
            (torch.rand(4, 3, 16, 16, generator=g), torch.randint(0, 3, (4,), generator=g))
            for _ in range(6)
        ]
    spec = EncoderSpec(kind="small_cnn", width=4, min_reduction=2)
    return RealTimeMaskAttribution(clf, num_classes=3, encoder=spec, seed=0), data


if __name__ == "__main__":
    ckpt, marker, threads = sys.argv[1], sys.argv[2], int(sys.argv[3])
    torch.set_num_threads(threads)
    attr, data = build()
    attr.fit(
        Batches(data, stall_at=(1, 3), marker=marker),
        checkpoint_dir=ckpt, checkpoint_every=1, keep_last=3, **OPTIONS
    )
'''


def test_sigkill_mid_epoch_then_resume_finishes_like_an_uninterrupted_run(tmp_path):
    script = tmp_path / "train_and_stall.py"
    script.write_text(SIGKILL_SCRIPT)
    ckpt, marker = tmp_path / "ckpt", tmp_path / "stalled"
    proc = subprocess.Popen(
        [sys.executable, str(script), str(ckpt), str(marker), str(torch.get_num_threads())],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 120
        while not marker.exists():
            if proc.poll() is not None:
                pytest.fail(f"the trainer exited before stalling: {proc.communicate()}")
            if time.monotonic() > deadline:
                pytest.fail("the trainer did not reach the stall point in 120 s")
            time.sleep(0.05)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdout.close()
        proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL

    spec = importlib.util.spec_from_file_location("train_and_stall", script)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)

    # Killed in epoch 1 at batch 3: steps 7, 8, 9 kept, each complete and loadable.
    assert visible(ckpt) == ["step-000000007", "step-000000008", "step-000000009"]
    classifier = mod.build()[0].forward_func
    for name in visible(ckpt):
        read_checkpoint(ckpt / name)
        RealTimeMaskAttribution.load(ckpt / name, classifier)
    # What a kill during a save or a prune can leave behind is ignored, then cleaned.
    (ckpt / ".step-000000010.x7kq2m1a").mkdir()
    (ckpt / ".step-000000010.x7kq2m1a" / "masker.safetensors").write_bytes(b"\0" * 10)
    (ckpt / ".step-000000004.trash").mkdir()

    resumed, data = mod.build()
    resumed.fit(
        data,
        resume_from=ckpt,
        checkpoint_dir=str(ckpt),
        checkpoint_every=1,
        keep_last=3,
        **mod.OPTIONS,
    )
    assert hidden(ckpt) == []
    assert visible(ckpt) == ["step-000000016", "step-000000017", "step-000000018"]

    reference, data = mod.build()
    reference.fit(data, **mod.OPTIONS)
    assert_same_masker(reference, resumed)
    assert resumed.history == reference.history and len(resumed.history) == 3


def test_a_save_interrupted_between_its_renames_loses_nothing(tmp_path, monkeypatch):
    """Replacing a folder takes two renames; a crash between them keeps the old version."""
    data = make_batches(3)
    ckpt = tmp_path / "ckpt"
    attr = make_attr()
    with monkeypatch.context() as m:
        m.setattr(trainer, "step_terms", interrupt_at_step(4))  # crash in the 2nd epoch
        with pytest.raises(Interrupted):
            attr.fit(data, epochs=2, checkpoint_dir=str(ckpt), checkpoint_every=1, **FIT)
    step3 = ckpt / "step-000000003"  # written at step 3, then again at the end of epoch 0

    real_replace = os.replace
    calls = []

    def crash_on_swap_in(src, dst):
        calls.append(Path(src).name)
        if Path(dst) == step3 and Path(src).name.startswith(".step-000000003.") and len(calls) > 2:
            raise Interrupted("killed between the renames")
        return real_replace(src, dst)

    monkeypatch.setattr(checkpoint_mod.os, "replace", crash_on_swap_in)
    with pytest.raises(Interrupted):
        write_checkpoint(step3, {"kind": "x"}, {"masker": {"w": torch.zeros(1)}})
    monkeypatch.undo()
    assert not step3.exists() and hidden(ckpt) == [".step-000000003.old"]
    meta, _ = read_checkpoint(step3)  # reads the parked previous version
    assert meta["training"]["state"]["step"] == 3

    # Resuming finds it, puts it back, and finishes exactly like an uninterrupted run.
    resumed = make_attr()
    resumed.fit(
        data, epochs=2, resume_from=ckpt, checkpoint_dir=str(ckpt), checkpoint_every=1, **FIT
    )
    reference = make_attr()
    reference.fit(data, epochs=2, **FIT)
    assert_same_masker(reference, resumed)
    assert hidden(ckpt) == [] and visible(ckpt)[-1] == "step-000000006"


@pytest.fixture(scope="module")
def pristine_checkpoint(tmp_path_factory):
    root = tmp_path_factory.mktemp("pristine")
    make_attr().fit(make_batches(2), epochs=1, checkpoint_dir=str(root), **FIT)
    return root / "step-000000002"


def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _flip_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[-1] ^= 0x01
    path.write_bytes(bytes(data))


def _edit_config(path: Path, edit) -> None:
    cfg = path / "config.json"
    meta = json.loads(cfg.read_text())
    edit(meta)
    cfg.write_text(json.dumps(meta))


CORRUPTIONS = {
    "truncated_training": (lambda d: _truncate(d / "training.safetensors"), "truncated"),
    "flipped_masker_byte": (lambda d: _flip_byte(d / "masker.safetensors"), "modified"),
    "missing_masker": (lambda d: (d / "masker.safetensors").unlink(), "missing"),
    "truncated_config": (lambda d: _truncate(d / "config.json"), "not valid JSON"),
    "edited_step": (
        lambda d: _edit_config(d, lambda m: m["training"]["state"].update(step=1)),
        "modified after saving",
    ),
    "edited_files": (
        lambda d: _edit_config(d, lambda m: m.update(files={"../x.safetensors": "0"})),
        "modified after saving",
    ),
    "format_version_2": (
        lambda d: _edit_config(d, lambda m: m.update(format_version=2)),
        "format_version 2 is not supported",
    ),
    "json_list": (lambda d: (d / "config.json").write_text("[1, 2]"), "JSON object"),
}


@pytest.mark.parametrize("corruption", list(CORRUPTIONS))
def test_corrupt_checkpoints_fail_to_load_and_to_resume(pristine_checkpoint, tmp_path, corruption):
    corrupt, expected = CORRUPTIONS[corruption]
    folder = tmp_path / "step-000000002"
    shutil.copytree(pristine_checkpoint, folder)
    corrupt(folder)
    with pytest.raises(CheckpointError, match=expected):
        RealTimeMaskAttribution.load(folder, tiny_classifier())
    attr = make_attr()
    before = _params(attr)
    with pytest.raises(CheckpointError, match=expected):
        attr.fit(make_batches(2), epochs=2, resume_from=tmp_path, **FIT)
    assert all(torch.equal(v, _params(attr)[k]) for k, v in before.items())


def test_resume_from_something_that_is_not_a_matching_training_checkpoint(
    pristine_checkpoint, tmp_path
):
    saved = tmp_path / "saved"
    make_attr().save(saved)
    with pytest.raises(CheckpointError, match="not a training checkpoint"):
        make_attr().fit(make_batches(1), resume_from=saved, **FIT)
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match="holds no checkpoint"):
        make_attr().fit(make_batches(1), resume_from=tmp_path / "empty", **FIT)
    four_classes = make_attr(num_classes=4)
    with pytest.raises(CheckpointError, match="does not fit this masker"):
        four_classes.fit(make_batches(1), resume_from=pristine_checkpoint, **FIT)


def test_resuming_with_other_options_warns(pristine_checkpoint):
    with pytest.warns(UserWarning, match=r"epochs=1 -> 2, lr=0.01 -> 0.02"):
        make_attr().fit(make_batches(2), epochs=2, resume_from=pristine_checkpoint, lr=0.02)


def test_load_rejects_a_config_this_release_cannot_read(tmp_path):
    make_attr().save(tmp_path / "m")
    meta, tensors = read_checkpoint(tmp_path / "m")
    meta["masker"]["option_from_the_future"] = 1
    for key in ("files", "config_sha256", "format_version"):
        del meta[key]
    write_checkpoint(tmp_path / "future", meta, tensors)  # valid hashes, unknown field
    with pytest.raises(CheckpointError, match="config cannot be read.*option_from_the_future"):
        RealTimeMaskAttribution.load(tmp_path / "future", tiny_classifier())


def test_loading_and_resuming_never_unpickle(pristine_checkpoint, tmp_path, monkeypatch):
    def forbidden(*args, **kwargs):
        raise AssertionError("pickle-based loading was called")

    class NoUnpickler:
        def __init__(self, *args, **kwargs):
            forbidden()

    for owner, name in [
        (torch, "load"),
        (torch.serialization, "load"),
        (pickle, "load"),
        (pickle, "loads"),
    ]:
        monkeypatch.setattr(owner, name, forbidden)
    monkeypatch.setattr(pickle, "Unpickler", NoUnpickler)
    loaded = RealTimeMaskAttribution.load(pristine_checkpoint, tiny_classifier())
    assert loaded.num_classes == 3
    with pytest.warns(UserWarning, match="epochs=1 -> 2"):  # extends the run by an epoch
        make_attr().fit(make_batches(2), epochs=2, resume_from=pristine_checkpoint, **FIT)


# -------------------------------------------------------------------------------- side effects
class RaisesOnCall:
    """Stands for a user's forward hook: counts calls and raises on the n-th."""

    def __init__(self, n):
        self.n, self.calls = n, 0

    def __call__(self, module, args, output):
        self.calls += 1
        if self.calls == self.n:
            raise RuntimeError(f"classifier failed on call {self.n}")


def _users_model(kind):
    if kind == "timm":
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            model = timm.create_model("test_resnet", pretrained=False, num_classes=3)
        attr_factory = lambda m: RealTimeMaskAttribution(m)  # noqa: E731
        size = 32
    else:
        model = tiny_classifier()
        attr_factory = make_attr
        size = SIZE
    model.train()  # a user's model mid-training, in a mixed state
    first = next(model.parameters())
    first.requires_grad_(False)
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


# -------------------------------------------------------------------------------- determinism
def test_same_seed_gives_the_same_masker_and_attributions_whatever_the_global_rng():
    data = make_batches(3)
    x, y = make_batches(1, seed=5)[0]

    def run(global_seed, seed=4):
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(global_seed)
            attr = make_attr(seed=seed)
            rng = torch.get_rng_state()
            attr.fit(data, epochs=2, **FIT)
            assert torch.equal(torch.get_rng_state(), rng), "fit() consumed the global RNG"
        return attr

    a, b = run(1), run(2)
    assert_same_masker(a, b)
    assert torch.equal(a.attribute(x, target=y), b.attribute(x, target=y))
    assert torch.equal(a.attribute(x), b.attribute(x))
    with pytest.raises(AssertionError):
        assert_same_masker(a, run(1, seed=5))


# ----------------------------------------------------------------------------------- fuzzing
@functools.cache
def _fuzz_attrs():
    resnet = timm.create_model("test_resnet", pretrained=False, num_classes=3).eval()
    return {"small_cnn": make_attr(), "classifier": RealTimeMaskAttribution(resnet)}


FLOAT_DTYPES = [torch.float16, torch.bfloat16, torch.float32, torch.float64]
CORRUPTIONS_OF_INPUTS = ["ndim", "batch", "channels", "size", "dtype", "nonfinite"]


@st.composite
def fuzz_inputs(draw):
    """A valid batch (N, 3, 32, 32) with 0 to 2 corruptions: rank, sizes, dtype, values."""
    corruptions = draw(st.lists(st.sampled_from(CORRUPTIONS_OF_INPUTS), max_size=2))
    shape = [draw(st.sampled_from([1, 2])), 3, 32, 32]
    dtype = draw(st.sampled_from(FLOAT_DTYPES))
    if "size" in corruptions:  # 8 and 16 suit small_cnn (stride 8) but not test_resnet (32)
        shape[2:] = [draw(st.sampled_from([0, 1, 8, 12, 16, 40])) for _ in range(2)]
    if "channels" in corruptions:
        shape[1] = draw(st.sampled_from([0, 1, 2, 4]))
    if "batch" in corruptions:
        shape[0] = 0
    if "ndim" in corruptions:
        shape = draw(st.sampled_from([shape[:2], shape[1:], shape + [2]]))
    if "dtype" in corruptions:
        dtype = draw(st.sampled_from([torch.int64, torch.uint8, torch.bool]))
    x = (torch.rand(shape, generator=torch.Generator().manual_seed(0)) * 2).to(dtype)
    if "nonfinite" in corruptions and dtype.is_floating_point and x.numel():
        x.view(-1)[draw(st.integers(0, x.numel() - 1))] = draw(
            st.sampled_from([float("nan"), float("inf"), -float("inf")])
        )
    return x


@st.composite
def tensor_targets(draw):
    shape = tuple(draw(st.lists(st.integers(0, 3), max_size=2)))
    dtype = draw(st.sampled_from([torch.long, torch.int32, torch.uint8, torch.float32, torch.bool]))
    n = int(np.prod(shape)) if shape else 1
    values = draw(st.lists(st.integers(-2, 4), min_size=n, max_size=n))
    return torch.tensor(values, dtype=torch.long).reshape(shape).to(dtype)


def valid_targets(n):
    return st.one_of(
        st.none(),
        st.integers(0, 2),
        st.lists(st.integers(0, 2), min_size=n, max_size=n),
        st.lists(st.integers(0, 2), min_size=n, max_size=n).map(torch.tensor),
        st.integers(0, 2).map(torch.tensor),
        st.builds(np.int64, st.integers(0, 2)),
    )


ODD_TARGETS = st.one_of(
    st.integers(-(2**70), 2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.booleans(),
    st.text(max_size=3),
    st.lists(st.integers(-2, 4), max_size=3),
    st.lists(st.one_of(st.integers(-(2**70), 2**70), st.floats(), st.none()), max_size=3),
    st.tuples(st.integers(-1, 3), st.integers(0, 2)),
    tensor_targets(),
)


@st.composite
def fuzz_cases(draw):
    x = draw(fuzz_inputs())
    n = x.shape[0] if x.dim() else 1
    return x, draw(st.one_of(valid_targets(max(n, 1)), ODD_TARGETS))


@settings(
    max_examples=60,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
@given(
    encoder=st.sampled_from(["small_cnn", "classifier"]), case=fuzz_cases(), as_tuple=st.booleans()
)
def test_fuzz_attribute_returns_a_valid_mask_or_a_documented_error(encoder, case, as_tuple):
    x, target = case
    attr = _fuzz_attrs()[encoder]
    try:
        out = attr.attribute((x,) if as_tuple else x, target=target)
    except DOCUMENTED_ERRORS:
        return
    if as_tuple:
        assert isinstance(out, tuple) and len(out) == 1
        out = out[0]
    assert out.shape == x.shape and out.dtype == x.dtype and out.device == x.device
    values = out.double()
    assert torch.isfinite(values).all()
    assert values.min() >= 0 and values.max() <= 1
