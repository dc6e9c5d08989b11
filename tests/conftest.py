"""Shared fixtures and helpers: tiny seeded classifiers and maskers, random batches, a generated
'coloured square' task, and the checks several test files make (same masker, folder listings,
parameter layout, a crash injected into the training loop)."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

COLOURS = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])


def make_squares(n: int, size: int = 32, seed: int = 0):
    """Noise images with one class-coloured square each; returns images, labels, boxes."""
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 3, size, size, generator=g) * 0.6
    y = torch.randint(0, 3, (n,), generator=g)
    boxes = torch.zeros(n, 4)
    for i in range(n):
        s = int(torch.randint(8, 14, (1,), generator=g))
        x0 = int(torch.randint(0, size - s, (1,), generator=g))
        y0 = int(torch.randint(0, size - s, (1,), generator=g))
        x[i, :, y0 : y0 + s, x0 : x0 + s] = COLOURS[y[i]].view(3, 1, 1) * 0.9 + 0.05
        boxes[i] = torch.tensor([x0, y0, x0 + s - 1, y0 + s - 1], dtype=torch.float)
    return x, y, boxes


def square_classifier() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(3, 16, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(16, 32, 3, padding=1),
        nn.BatchNorm2d(32),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(32, 32, 3, padding=1),
        nn.ReLU(),
        nn.AdaptiveMaxPool2d(1),
        nn.Flatten(),
        nn.Linear(32, 3),
    )


@pytest.fixture(scope="session")
def squares_task():
    """A classifier trained to ~100% on the coloured-square task, with train and test data."""
    torch.manual_seed(0)
    xtr, ytr, _ = make_squares(1024, seed=1)
    xte, yte, bte = make_squares(128, seed=2)
    clf = square_classifier()
    opt = torch.optim.Adam(clf.parameters(), 3e-3)
    for _ in range(3):
        for i in range(0, len(xtr), 64):
            loss = F.cross_entropy(clf(xtr[i : i + 64]), ytr[i : i + 64])
            opt.zero_grad()
            loss.backward()
            opt.step()
    clf.eval()
    with torch.no_grad():
        acc = (clf(xte).argmax(1) == yte).float().mean().item()
    assert acc > 0.95, f"the square classifier did not train ({acc:.2f})"
    return clf, (xtr, ytr), (xte, yte, bte)


@pytest.fixture
def timm_resnet():
    import timm

    torch.manual_seed(0)
    return timm.create_model("test_resnet", pretrained=False, num_classes=5).eval()


@pytest.fixture(scope="module")
def one_thread():
    """One intra-op thread for a module of tiny ops: threads gain nothing there and stall on a
    loaded machine (OpenMP oversubscription). Use with ``pytest.mark.usefixtures``."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def make_test_resnet(num_classes: int = 10) -> nn.Module:
    """timm's tiny ``test_resnet`` with seeded random weights, in eval mode."""
    import timm

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return timm.create_model("test_resnet", pretrained=False, num_classes=num_classes).eval()


# ------------------------------------------------------------- a tiny classifier and masker
TINY_SIZE = 16  # the tiny masker's small_cnn (min_reduction=2) has strides 2, 4, 8
QUIET = {"progress": False}  # fit() options: no progress bar
FIT = {**QUIET, "lr": 1e-2}  # ... and a learning rate that moves the tiny masker in a few steps


def tiny_classifier(num_classes: int = 3, seed: int = 0) -> nn.Module:
    """A seeded one-conv classifier with BatchNorm and Dropout, in eval mode."""
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


def make_attr(clf=None, seed: int = 0, num_classes: int = 3, **kwargs):
    """A RealTimeMaskAttribution with a narrow small_cnn encoder (on ``tiny_classifier``)."""
    from captum_realtime_mask import EncoderSpec, RealTimeMaskAttribution

    return RealTimeMaskAttribution(
        clf if clf is not None else tiny_classifier(num_classes),
        num_classes=num_classes,
        encoder=EncoderSpec(kind="small_cnn", width=4, min_reduction=2),
        seed=seed,
        **kwargs,
    )


def make_batches(
    count: int = 4, n: int = 4, size: int = TINY_SIZE, num_classes: int = 3, seed: int = 0
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """``count`` batches of ``n`` random images (3, size, size) and labels, from one generator."""
    g = torch.Generator().manual_seed(seed)
    batches = []
    for _ in range(count):
        x = torch.rand(n, 3, size, size, generator=g)
        batches.append((x, torch.randint(0, num_classes, (n,), generator=g)))
    return batches


# --------------------------------------------------------------------------- masker weights
def masker_tensors(attr, buffers: bool = True) -> dict[str, torch.Tensor]:
    """Copies of the masker's parameters, and of its buffers unless ``buffers=False``."""
    named = attr.masker.state_dict() if buffers else dict(attr.masker.named_parameters())
    return {k: v.detach().clone() for k, v in named.items()}


def changed_tensors(before: dict[str, torch.Tensor], after: dict[str, torch.Tensor]) -> list[str]:
    """The names of the tensors that differ between two ``masker_tensors`` of one masker."""
    assert before.keys() == after.keys()
    return [k for k in before if not torch.equal(before[k], after[k])]


def assert_same_masker(a, b) -> None:
    """Both attributions' maskers hold bit-identical tensors."""
    different = changed_tensors(masker_tensors(a), masker_tensors(b))
    assert different == [], f"masker tensors differ: {different[:5]}"


def layout(model: nn.Module) -> dict[str, tuple[int, tuple[int, ...]]]:
    """Storage address and strides of every parameter and buffer."""
    named = [*model.named_parameters(), *model.named_buffers()]
    return {name: (t.data_ptr(), t.stride()) for name, t in named}


# --------------------------------------------------------------------------------- crashes
class Interrupted(Exception):
    """Stands in for a crash in the middle of fit()."""


def interrupt_at_step(call: int, error: type[BaseException] = Interrupted):
    """A replacement for ``captum_realtime_mask.training.trainer.step_terms`` (where the loop
    looks it up) that raises ``error`` on its ``call``-th call (1-based)."""
    from captum_realtime_mask.training import trainer

    real = trainer.step_terms
    counter = itertools.count(1)

    def step_terms(*args, **kwargs):
        if next(counter) == call:
            raise error(f"crash at step call {call}")
        return real(*args, **kwargs)

    return step_terms


# --------------------------------------------------------------------------------- folders
def visible(folder: Path) -> list[str]:
    """The names in ``folder`` that do not start with a dot, sorted."""
    return sorted(p.name for p in folder.iterdir() if not p.name.startswith("."))


def hidden(folder: Path) -> list[str]:
    """The names in ``folder`` that start with a dot (temporary, parked or trashed), sorted."""
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


# ------------------------------------------------------------------------ a recording model
class Recorder(nn.Module):
    """Wraps a model; counts calls, records mode and gradient flags seen, may raise on a call."""

    def __init__(self, model: nn.Module, fail_on: int | None = None) -> None:
        super().__init__()
        self.model = model
        self.fail_on = fail_on
        self.calls = 0
        self.seen: list[tuple[bool, bool]] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        self.seen.append(
            (
                any(m.training for m in self.model.modules()),
                any(p.requires_grad for p in self.model.parameters()),
            )
        )
        if self.fail_on is not None and self.calls == self.fail_on:
            raise RuntimeError("boom on purpose")
        return self.model(x)


def resnet_batch(n: int = 4, size: int = 32, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """One batch for ``make_test_resnet(5)``: ``n`` random images and labels in [0, 5).

    32 px is the smallest size test_resnet takes (its deepest map is then 1x1)."""
    return make_batches(1, n, size, num_classes=5, seed=seed)[0]
