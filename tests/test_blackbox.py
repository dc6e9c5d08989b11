"""Tests of the benchmark's black-box classifiers: model wrapper, augmentation, training cache."""

from __future__ import annotations

import doctest
import gzip
import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

import captum_realtime_mask.benchmark.blackbox as blackbox
from captum_realtime_mask.benchmark.blackbox import (
    BLACKBOX_PRESETS,
    BlackBox,
    BlackBoxConfig,
    Normalize,
    blackbox_cache_paths,
    box_aware_crops,
    load_blackbox,
    train_blackbox,
)
from captum_realtime_mask.datasets import FASHION_MNIST_ENV, ClutteredConfig
from captum_realtime_mask.errors import CheckpointError, InputError

TINY_DATA = ClutteredConfig(n_train=48, n_val=16, n_test=16, val_items=40)
TINY_NET = BlackBoxConfig(
    arch="resnet18",
    model_kwargs={"channels": (8, 8, 16, 16), "stem_width": 8},
    epochs=2,
    batch_size=16,
)


pytestmark = pytest.mark.usefixtures("one_thread")


def _write_idx(path: Path, array: np.ndarray) -> None:
    header = bytes([0, 0, 0x08, array.ndim]) + np.asarray(array.shape, ">u4").tobytes()
    path.write_bytes(gzip.compress(header + array.astype(np.uint8).tobytes()))


@pytest.fixture
def fake_root(tmp_path_factory, monkeypatch):
    """Synthetic Fashion-MNIST files: a bright rectangle whose width encodes the label."""
    root = tmp_path_factory.mktemp("fake-fmnist")
    rng = np.random.default_rng(0)
    for split, n in (("train", 120), ("t10k", 40)):
        labels = rng.integers(0, 10, n)
        images = np.zeros((n, 28, 28), np.uint8)
        for k, label in enumerate(labels):
            images[k, 4:24, 13 - label : 15 + label] = 255
        _write_idx(root / f"{split}-images-idx3-ubyte.gz", images)
        _write_idx(root / f"{split}-labels-idx1-ubyte.gz", labels)
    monkeypatch.setenv(FASHION_MNIST_ENV, str(root))
    return root


def test_normalize_follows_device_and_dtype_and_stays_out_of_state_dict():
    norm = Normalize((0.5, 0.25, 0.0), (0.5, 0.25, 2.0))
    x = torch.ones(2, 3, 4, 4, dtype=torch.float64)
    out = norm(x)
    assert out.dtype == torch.float64
    torch.testing.assert_close(out[0, :, 0, 0], torch.tensor([1.0, 3.0, 0.5], dtype=torch.float64))
    assert dict(norm.state_dict()) == {}
    with pytest.raises(InputError):
        Normalize((0.5,), (0.0,))


def test_box_aware_crops_keep_most_of_the_box():
    n, size = 64, 64
    ramp = (torch.arange(size, dtype=torch.float32) + 0.5) / size
    images = torch.stack(
        [ramp.view(1, -1).expand(size, size), ramp.view(-1, 1).expand(size, size)], dim=0
    )
    images = images.expand(n, 2, size, size).contiguous()
    gen = torch.Generator().manual_seed(0)
    lo = torch.randint(0, 40, (n, 2), generator=gen)
    hi = lo + torch.randint(5, 24, (n, 2), generator=gen)
    boxes = torch.cat([lo, hi.clamp(max=size - 1)], dim=1)
    crops = box_aware_crops(images, boxes, min_cover=0.8, generator=gen)
    assert crops.shape == images.shape
    for k in range(n):
        for axis, channel in ((0, crops[k, 0, 0, :]), (1, crops[k, 1, :, 0])):
            start, stop = float(channel[0]) * size - 0.5, float(channel[-1]) * size + 0.5
            b0, b1 = float(boxes[k, axis]), float(boxes[k, axis + 2]) + 1
            overlap = min(stop, b1) - max(start, b0)
            assert overlap >= 0.8 * (b1 - b0) - 1.0
            assert start >= -0.5 and stop <= size + 0.5


def test_presets_are_two_families():
    assert {"resnet", "cspdarknet"} <= set(BLACKBOX_PRESETS)
    archs = {BLACKBOX_PRESETS[k].arch for k in ("resnet", "cspdarknet")}
    assert len(archs) == 2


def test_zero_init_head_starts_with_equal_logits():
    model = blackbox._create(TINY_NET)
    with torch.no_grad():
        logits = model(torch.rand(2, 3, 64, 64))
    assert torch.equal(logits, torch.zeros_like(logits))
    plain = blackbox._create(replace(TINY_NET, zero_init_head=False))
    assert plain.classifier.get_classifier().weight.abs().sum() > 0


def test_config_round_trip_and_validation():
    assert BlackBoxConfig.from_dict(json.loads(json.dumps(TINY_NET.to_dict()))) == TINY_NET
    with pytest.raises(InputError):
        BlackBoxConfig(optimizer="lamb")
    with pytest.raises(InputError):
        BlackBoxConfig(crop_prob=1.5)
    with pytest.raises(InputError, match="neither a preset"):
        train_blackbox("not_a_model", TINY_DATA)


def test_train_blackbox_caches_and_reloads(fake_root, tmp_path, monkeypatch):
    lines: list[str] = []
    model = train_blackbox(TINY_NET, TINY_DATA, cache_dir=tmp_path, max_steps=4, log=lines.append)
    assert isinstance(model, BlackBox) and not model.training
    assert isinstance(model[0], Normalize) and model.classifier is model[1]
    weights, record = blackbox_cache_paths(TINY_NET, TINY_DATA, tmp_path, max_steps=4)
    assert weights.is_file() and record.is_file()
    info = json.loads(record.read_text())
    assert info["arch"] == "resnet18" and info["steps"] == 4 and info["threads"] == 1
    assert 0.0 <= info["test_accuracy"] <= 1.0 and "train_seconds" in info
    assert any("epoch 1/2" in line for line in lines)
    assert not any(p.suffix == ".tmp" for p in weights.parent.iterdir())

    def no_training(*args, **kwargs):
        raise AssertionError("should have loaded the cached model")

    monkeypatch.setattr(blackbox, "_train", no_training)
    again = train_blackbox(TINY_NET, TINY_DATA, cache_dir=tmp_path, max_steps=4)
    x = torch.rand(3, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(again(x), model(x), rtol=0, atol=0)
        torch.testing.assert_close(load_blackbox(weights)(x), model(x), rtol=0, atol=0)
    assert again.info["test_accuracy"] == info["test_accuracy"]
    # Evaluating on fewer validation or test images finds the same model...
    smaller = replace(TINY_DATA, n_val=4, n_test=8)
    assert blackbox_cache_paths(TINY_NET, smaller, tmp_path, max_steps=4)[0] == weights
    again = train_blackbox(TINY_NET, smaller, cache_dir=tmp_path, max_steps=4)
    # ...while anything that changes training does not.
    for changed in (replace(TINY_DATA, n_train=40), replace(TINY_DATA, seed=1)):
        assert blackbox_cache_paths(TINY_NET, changed, tmp_path, max_steps=4)[0] != weights
    assert blackbox_cache_paths(TINY_NET, TINY_DATA, tmp_path, max_steps=5)[0] != weights


def test_load_blackbox_reports_broken_files(fake_root, tmp_path):
    train_blackbox(TINY_NET, TINY_DATA, cache_dir=tmp_path, max_steps=1)
    weights, _ = blackbox_cache_paths(TINY_NET, TINY_DATA, tmp_path, max_steps=1)
    weights.write_bytes(weights.read_bytes()[:100])
    with pytest.raises(CheckpointError, match="Delete both files"):
        load_blackbox(weights)
    with pytest.raises(CheckpointError):
        load_blackbox(tmp_path / "missing.safetensors")


def test_docstring_examples():
    assert doctest.testmod(blackbox).failed == 0
