"""Tests of ``captum_realtime_mask.datasets.scenes``: several Fashion-MNIST items per photograph.

Most tests run on synthetic IDX files (bright ellipses); those marked ``needs_debian`` use the
real Fashion-MNIST from Debian's ``dataset-fashion-mnist``. The first tests pin the output of
``ClutteredFashionMNIST``, whose drawing code the scenes share.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import warnings
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from torchvision.ops import box_iou, masks_to_boxes

import captum_realtime_mask.datasets.fashion_mnist as fmnist
from captum_realtime_mask.datasets import (
    FASHION_MNIST_ENV,
    ClutteredConfig,
    ClutteredFashionMNIST,
    FashionMNISTNotFoundError,
    FashionMNISTScenes,
    SceneConfig,
    find_fashion_mnist,
    render_composites,
    render_scenes,
    scene_collate,
    scene_dataloaders,
)
from captum_realtime_mask.errors import InputError

pytestmark = pytest.mark.usefixtures("one_thread")

#: sha256 of ``render_composites`` on fixed synthetic items and uniforms, computed before the
#: drawing code was shared with the scenes.
SYNTHETIC_CLUTTERED_SHA = "a6b65a2f2db151d7c23b4c7a9f7a862abce48d2e689a50fe4c3bf89c216d0c68"
#: sha256 of 16 train and 16 test ``ClutteredFashionMNIST`` images (seed 3, real data), idem.
REAL_CLUTTERED_SHA = "92d3b49b2a43ea7f005a5544f49e1a327651252ca9b764358781ca91b3ac56a1"

SMALL = SceneConfig(n_train=30, n_val=10, n_test=60, val_items=50)


def _has_debian_package() -> bool:
    env = os.environ.pop(FASHION_MNIST_ENV, None)
    try:
        find_fashion_mnist()
    except FashionMNISTNotFoundError:
        return False
    finally:
        if env is not None:
            os.environ[FASHION_MNIST_ENV] = env
    return True


needs_debian = pytest.mark.skipif(
    not _has_debian_package(),
    reason="needs Debian's dataset-fashion-mnist (apt-get install dataset-fashion-mnist)",
)


def _write_idx(path: Path, array: np.ndarray) -> None:
    header = bytes([0, 0, 0x08, array.ndim]) + np.asarray(array.shape, ">u4").tobytes()
    path.write_bytes(gzip.compress(header + array.astype(np.uint8).tobytes()))


@pytest.fixture
def fake_root(tmp_path_factory, monkeypatch):
    """Synthetic IDX files (filled ellipses, random labels) named by the environment."""
    folder = tmp_path_factory.mktemp("fake-fmnist")
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:28, 0:28]
    for split, n in (("train", 300), ("t10k", 100)):
        cy, cx = rng.uniform(9, 19, (2, n, 1, 1))
        ry, rx = rng.uniform(4, 9, (2, n, 1, 1))
        inside = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1
        _write_idx(
            folder / f"{split}-images-idx3-ubyte.gz",
            inside * rng.uniform(120, 255, n)[:, None, None],
        )
        _write_idx(folder / f"{split}-labels-idx1-ubyte.gz", np.arange(n) % 10)
    monkeypatch.setenv(FASHION_MNIST_ENV, str(folder))
    return folder


def _pair_ious(ds: FashionMNISTScenes) -> list[float]:
    """IoU of every pair of boxes in a scene (boxes as pixel edges)."""
    out = []
    for i in range(len(ds)):
        k = int(ds.counts[i])
        edges = ds.boxes[i, :k].double()
        edges[:, 2:] += 1
        iou = box_iou(edges, edges)
        out += iou[torch.triu_indices(k, k, 1).unbind()].tolist()
    return out


# --- the cluttered set is unchanged ------------------------------------------------------------


def test_cluttered_rendering_is_unchanged():
    rng = np.random.default_rng(0)
    items = (rng.random((6, 28, 28)) ** 3 * 255).astype(np.uint8)
    u = rng.random((6, 13))
    images, masks, boxes = render_composites(items, u, ClutteredConfig(image_size=40))
    digest = hashlib.sha256(images.tobytes() + masks.tobytes() + boxes.tobytes()).hexdigest()
    assert digest == SYNTHETIC_CLUTTERED_SHA


@needs_debian
def test_cluttered_dataset_is_unchanged(monkeypatch):
    monkeypatch.delenv(FASHION_MNIST_ENV, raising=False)
    digest = hashlib.sha256()
    for split in ("train", "test"):
        config = ClutteredConfig(n_train=16, n_test=16, seed=3)
        ds = ClutteredFashionMNIST(split, config, cache=False)
        for name in ("images", "labels", "boxes", "masks", "item_indices"):
            digest.update(getattr(ds, name).numpy().tobytes())
    assert digest.hexdigest() == REAL_CLUTTERED_SHA


def test_one_item_scenes_render_like_the_cluttered_set():
    rng = np.random.default_rng(1)
    items = (rng.random((5, 28, 28)) ** 2 * 255).astype(np.uint8)
    u = rng.random((5, 13))
    config = ClutteredConfig(image_size=48)
    expected = render_composites(items, u, config)
    got = render_scenes(items[:, None], u[:, :6], u[:, None, 6:], np.ones(5, int), config)
    np.testing.assert_array_equal(got[0], expected[0])
    np.testing.assert_array_equal(got[1][:, 0], expected[1])
    np.testing.assert_array_equal(got[2][:, 0], expected[2])
    with pytest.raises(InputError, match="render_scenes"):
        render_scenes(items[:, None], u[:, :5], u[:, None, 6:], np.ones(5, int), config)


# --- the scenes --------------------------------------------------------------------------------


def test_items_shapes_and_collate(fake_root):
    ds = FashionMNISTScenes("test", SMALL, cache=False)
    image, label, boxes, classes = ds[0]
    k = int(ds.counts[0])
    assert image.shape == (3, 96, 96) and image.dtype == torch.float32
    assert float(image.min()) >= 0 and float(image.max()) <= 1
    assert label.shape == (10,) and label.dtype == torch.float32
    assert boxes.shape == (k, 4) and boxes.dtype == torch.int64
    assert classes.shape == (k,) and classes.dtype == torch.int64
    batch = scene_collate([ds[i] for i in range(5)])
    assert batch[0].shape == (5, 3, 96, 96) and batch[1].shape == (5, 10)
    assert [len(b) for b in batch[2]] == ds.counts[:5].tolist() == [len(c) for c in batch[3]]
    loaders = scene_dataloaders(SMALL, batch_size=7, splits=("test",), cache=False)
    images, labels, boxes, classes = next(iter(loaders["test"]))
    assert images.shape == (7, 3, 96, 96) and len(boxes) == len(classes) == 7
    plain = FashionMNISTScenes("test", SMALL, cache=False, return_boxes=False)
    assert len(plain[0]) == 2 and torch.equal(plain[0][1], label)


def test_deterministic_per_seed(fake_root):
    first = FashionMNISTScenes("test", SMALL, cache=False)
    again = FashionMNISTScenes("test", SMALL, cache=False)
    for name in ("images", "counts", "classes", "boxes", "item_indices"):
        assert torch.equal(getattr(first, name), getattr(again, name)), name
    other = FashionMNISTScenes("test", replace(SMALL, seed=1), cache=False)
    assert not torch.equal(first.images, other.images)
    prefix = FashionMNISTScenes("test", replace(SMALL, n_test=20), cache=False)
    assert torch.equal(prefix.images, first.images[:20])


def test_counts_classes_and_multi_hot(fake_root):
    ds = FashionMNISTScenes("test", SMALL, cache=False)
    counts = ds.counts
    assert set(counts.tolist()) == {1, 2, 3}
    for i in range(len(ds)):
        _, label, _, classes = ds[i]
        assert len(set(classes.tolist())) == len(classes) == int(counts[i])
        expected = torch.zeros(10)
        expected[classes] = 1
        assert torch.equal(label, expected)
        assert (ds.classes[i, int(counts[i]) :] == -1).all()
    weighted = FashionMNISTScenes("test", replace(SMALL, count_weights=(0, 0, 1)), cache=False)
    assert (weighted.counts == 3).all()


def test_boxes_inside_the_image_and_tight_around_each_item(fake_root):
    ds = FashionMNISTScenes("test", SMALL, cache=False)
    size = SMALL.image_size
    for i in range(len(ds)):
        _, _, boxes, _ = ds[i]
        assert (boxes >= 0).all() and (boxes < size).all()
        assert (boxes[:, 2:] >= boxes[:, :2]).all()
        masks = ds.masks(i)
        assert masks.shape == (len(boxes), size, size) and masks.flatten(1).any(1).all()
        assert torch.equal(masks_to_boxes(masks).long(), boxes)


def test_low_overlap_as_configured(fake_root):
    ds = FashionMNISTScenes("test", replace(SMALL, count_weights=(0, 0, 1)), cache=False)
    ious = _pair_ious(ds)
    assert len(ious) == 3 * len(ds) and max(ious) <= SMALL.max_iou
    tight = replace(SMALL, max_iou=0.0, n_test=30)
    assert max(_pair_ious(FashionMNISTScenes("test", tight, cache=False))) <= 0.02


def test_single_object_scenes(fake_root):
    config = replace(SMALL, min_items=1, max_items=1)
    ds = FashionMNISTScenes("test", config, cache=False)
    assert (ds.counts == 1).all() and ds.boxes.shape == (len(ds), 1, 4)
    assert torch.equal(ds.labels.sum(1), torch.ones(len(ds)))
    image, label, boxes, classes = ds[3]
    assert boxes.shape == (1, 4) and int(label.argmax()) == int(classes[0])


def test_cache_reuse(fake_root, tmp_path, monkeypatch):
    first = FashionMNISTScenes("val", SMALL, cache_dir=tmp_path)
    path = first.cache_path
    assert path.is_file() and path.parent == tmp_path / "datasets"
    assert path.name.startswith("scenes-fmnist-val-e0-")
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temporary leftovers
    # Read back without Fashion-MNIST anywhere.
    empty = tmp_path / "no-debian"
    empty.mkdir()
    monkeypatch.setattr(fmnist, "_debian_dirs", lambda: (empty,))
    monkeypatch.delenv(FASHION_MNIST_ENV)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        again = FashionMNISTScenes("val", replace(SMALL, n_train=7), cache_dir=tmp_path)
    for name in ("images", "counts", "classes", "boxes", "labels", "item_indices"):
        assert torch.equal(getattr(first, name), getattr(again, name)), name
    assert torch.equal(first.masks(2), again.masks(2))
    with pytest.raises(FashionMNISTNotFoundError):  # another config is another file
        FashionMNISTScenes("val", replace(SMALL, max_iou=0.2), cache_dir=tmp_path)
    monkeypatch.setenv(FASHION_MNIST_ENV, str(fake_root))
    path.write_bytes(b"truncated")
    with pytest.warns(RuntimeWarning, match="ignoring the cache file"):
        rebuilt = FashionMNISTScenes("val", SMALL, cache_dir=tmp_path)
    assert torch.equal(rebuilt.images, first.images)


def test_config_round_trip_and_key():
    config = SceneConfig(min_items=2, count_weights=[1, 3], seed=5)
    assert config.count_weights == (1.0, 3.0)
    assert SceneConfig.from_dict(config.to_dict()) == config
    assert config.cache_key("test") == replace(config, n_train=1).cache_key("test")
    assert config.cache_key("test") != config.cache_key("test", epoch=1)
    assert config.cache_key("test") != replace(config, max_iou=0.2).cache_key("test")
    np.testing.assert_allclose(config.count_probabilities(), [0.25, 0.75])
    with pytest.raises(InputError, match="SceneConfig.from_dict"):
        SceneConfig.from_dict({"colour": 1})


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"image_size": 4}, "image_size"),
        ({"min_items": 0}, "min_items"),
        ({"max_items": 11}, "max_items"),
        ({"min_items": 3, "max_items": 2}, "max_items"),
        ({"max_items": True}, "max_items"),
        ({"count_weights": (1, 1)}, "count_weights"),
        ({"count_weights": (0, 0, 0)}, "count_weights"),
        ({"count_weights": (1, -1, 1)}, "count_weights"),
        ({"scale_range": (0.5, 0.2)}, "scale_range"),
        ({"max_iou": 1.5}, "max_iou"),
        ({"placement_tries": 0}, "placement_tries"),
        ({"backgrounds": "brick"}, "backgrounds"),
        ({"alpha_gain": 0}, "alpha_gain"),
        ({"flip_items": 1}, "flip_items"),
        ({"n_test": -1}, "n_test"),
        ({"val_items": 60000}, "val_items"),
        ({"seed": 1.5}, "seed"),
    ],
)
def test_bad_config_fields_name_the_field(kwargs, field):
    with pytest.raises(InputError) as info:
        SceneConfig(**kwargs)
    assert info.value.argument == f"SceneConfig.{field}"


def test_bad_dataset_arguments(fake_root):
    with pytest.raises(InputError, match="config"):
        FashionMNISTScenes("test", ClutteredConfig(), cache=False)  # type: ignore[arg-type]
    with pytest.raises(InputError, match="split"):
        FashionMNISTScenes("dev", SMALL, cache=False)  # type: ignore[arg-type]
    ds = FashionMNISTScenes("test", replace(SMALL, n_test=3), cache=False)
    with pytest.raises(IndexError):
        ds[3]
    with pytest.raises(TypeError):
        ds[1.0]  # type: ignore[index]


# --- on the real Fashion-MNIST -----------------------------------------------------------------


@needs_debian
def test_real_scenes_sizes_counts_and_overlap(monkeypatch):
    monkeypatch.delenv(FASHION_MNIST_ENV, raising=False)
    ds = FashionMNISTScenes("test", SceneConfig(n_test=300), cache=False)
    shares = [float((ds.counts == k).double().mean()) for k in (1, 2, 3)]
    assert min(shares) >= 0.25, shares
    boxes = ds.boxes[ds.classes >= 0].double()
    side = float((boxes[:, 2:] - boxes[:, :2] + 1).mean())
    assert 24 <= side <= 34, side
    assert max(_pair_ious(ds)) <= 0.1
