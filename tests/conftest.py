"""Shared fixtures: tiny seeded classifiers and a generated 'coloured square' task."""

from __future__ import annotations

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
