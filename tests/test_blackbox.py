"""Tests of the benchmark's black-box classifiers (``benchmark.blackbox``) and their training
images' augmentation (``benchmark.augment``): model wrapper, configuration, training cache."""

from __future__ import annotations

import doctest
import gzip
import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

import captum_realtime_mask.benchmark.augment as augment_module
import captum_realtime_mask.benchmark.blackbox as blackbox
from captum_realtime_mask.benchmark.augment import augment
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


def test_config_round_trip():
    assert BlackBoxConfig.from_dict(json.loads(json.dumps(TINY_NET.to_dict()))) == TINY_NET
    with pytest.raises(InputError, match=r"^BlackBoxConfig.from_dict: unknown keys \['lr_max'\]"):
        BlackBoxConfig.from_dict({**TINY_NET.to_dict(), "lr_max": 1.0})


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"optimizer": "lamb"}, "optimizer: expected one of 'sgd' or 'adamw', got str 'lamb'"),
        ({"crop_prob": 1.5}, r"crop_prob: expected a real number in \[0, 1\], got float 1.5"),
        ({"warmup": -0.1}, r"warmup: expected a real number in \[0, 1\]"),
        ({"epochs": 0}, "epochs: expected a positive int, got int 0"),
        ({"epochs": 2.5}, "epochs: expected a positive int, got float 2.5"),
        ({"batch_size": True}, "batch_size: expected a positive int, got bool True"),
        ({"lr": 0}, "lr: expected a finite real number > 0, got int 0"),
        (
            {"weight_decay": float("inf")},
            "weight_decay: expected a finite real number >= 0, got float inf",
        ),
        ({"seed": 1.0}, "seed: expected an int, got float 1.0"),
        ({"channels_last": "no"}, "channels_last: expected True or False, got str 'no'"),
        ({"std": (0.5, 0.0, 0.5)}, "std: expected a finite real number > 0, got float 0.0"),
        ({"std": (0.5, 0.5)}, r"std: needs one value per channel, as mean"),
        ({"mean": "abc"}, "mean: expected one real number per channel, got str 'abc'"),
        ({"model_kwargs": [1]}, "model_kwargs: expected a dict of timm.create_model arguments"),
    ],
)
def test_config_names_the_field_and_what_it_expected(kwargs, match):
    with pytest.raises(InputError, match=f"^BlackBoxConfig.{match}"):
        BlackBoxConfig(**kwargs)


def test_config_stores_plain_python_values():
    config = BlackBoxConfig(epochs=np.int64(3), lr=np.float32(0.5), mean=np.array([0.5] * 3))
    assert type(config.epochs) is int and type(config.lr) is float
    assert config.mean == (0.5, 0.5, 0.5) and type(config.mean[0]) is float
    assert config.model_kwargs == {} and BlackBoxConfig(
        model_kwargs={"a": (1, 2)}
    ).model_kwargs == {"a": [1, 2]}


def test_train_blackbox_checks_its_arguments():
    with pytest.raises(InputError, match="neither a preset"):
        train_blackbox("not_a_model", TINY_DATA)
    with pytest.raises(InputError, match="^max_steps: expected a positive int or None, got int 0"):
        train_blackbox(TINY_NET, TINY_DATA, max_steps=0)
    with pytest.raises(InputError, match="^epochs: expected a positive int, got float 2.5"):
        train_blackbox(TINY_NET, TINY_DATA, epochs=2.5)


def test_preset_cache_files_keep_their_names():
    """Cached black boxes are found by these names: a drifting key would retrain them."""
    quick = ClutteredConfig(n_train=4000, n_val=100, n_test=200)
    names = {k: blackbox_cache_paths(v, quick, "/c")[0].name for k, v in BLACKBOX_PRESETS.items()}
    assert names == {
        "resnet": "resnet10t-670907659e4382b0.safetensors",
        "cspdarknet": "cs3darknet_s-ec110afe245ce55a.safetensors",
    }


def test_augment_flips_and_crops_as_drawn():
    images = torch.rand(6, 3, 16, 16)
    boxes = torch.tensor([[2, 3, 9, 12]]).expand(6, 4)
    gen = torch.Generator().manual_seed(0)
    assert augment(images, boxes, 0.0, 0.8, 0.0, gen) is images  # nothing drawn
    assert torch.equal(augment(images, boxes, 0.0, 0.8, 1.0, gen), images.flip(-1))
    cropped = augment(images, boxes, 1.0, 0.8, 0.0, gen)
    assert cropped.shape == images.shape and not torch.equal(cropped, images)
    again = augment(images, boxes, 1.0, 0.8, 0.0, torch.Generator().manual_seed(0))
    assert not torch.equal(again, cropped)  # the crop draws follow the generator's state
    first = augment(images, boxes, 0.5, 0.8, 0.5, torch.Generator().manual_seed(1))
    second = augment(images, boxes, 0.5, 0.8, 0.5, torch.Generator().manual_seed(1))
    assert torch.equal(first, second)


def test_train_blackbox_caches_and_reloads(fake_root, tmp_path):
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

    reloaded: list[str] = []  # a cached model is loaded silently: no epoch, no save
    again = train_blackbox(
        TINY_NET, TINY_DATA, cache_dir=tmp_path, max_steps=4, log=reloaded.append
    )
    assert reloaded == []
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


@pytest.mark.parametrize("module", [blackbox, augment_module])
def test_docstring_examples(module):
    assert doctest.testmod(module).failed == 0
