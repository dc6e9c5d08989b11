"""The cluttered Fashion-MNIST dataset used as a torchvision dataset is used: transforms,
indexing, DataLoader workers, a cache folder that cannot be written, damaged files."""

from __future__ import annotations

import gc
import warnings

import numpy as np
import pytest
import torch
from test_datasets import write_fake_fashion_mnist
from torch.utils.data import DataLoader

import captum_realtime_mask.datasets.cluttered as cluttered
from captum_realtime_mask.datasets import (
    FASHION_MNIST_ENV,
    ClutteredConfig,
    ClutteredFashionMNIST,
    cluttered_dataloaders,
    load_fashion_mnist,
    read_idx,
)
from captum_realtime_mask.errors import InputError

pytestmark = pytest.mark.usefixtures("one_thread")

SMALL = ClutteredConfig(n_train=12, n_val=4, n_test=8, val_items=50)


@pytest.fixture
def fake_root(tmp_path_factory, monkeypatch):
    root = write_fake_fashion_mnist(tmp_path_factory.mktemp("fake-fmnist"), 120, 40)
    monkeypatch.setenv(FASHION_MNIST_ENV, str(root))
    return root


def test_transform_and_target_transform_are_applied(fake_root):
    plain = ClutteredFashionMNIST("test", SMALL, cache=False)
    ds = ClutteredFashionMNIST(
        "test",
        SMALL,
        cache=False,
        transform=lambda image: image * 2 - 1,
        target_transform=lambda label: label + 100,
    )
    image, label, box = ds[2]
    torch.testing.assert_close(image, plain[2][0] * 2 - 1)
    assert label == plain[2][1] + 100
    assert torch.equal(box, plain[2][2])
    assert "transform=" in repr(ds) and "target_transform=" in repr(ds)
    with pytest.raises(InputError, match="transform must be a callable"):
        ClutteredFashionMNIST("test", SMALL, cache=False, transform="normalise")


def test_dataloaders_pass_the_transforms_to_every_split(fake_root):
    loaders = cluttered_dataloaders(
        SMALL,
        batch_size=4,
        splits=("val", "test"),
        cache=False,
        transform=lambda image: image * 2 - 1,
        target_transform=lambda label: label + 100,
    )
    plain = ClutteredFashionMNIST("test", SMALL, cache=False)
    for split, loader in loaders.items():
        images, labels = next(iter(loader))
        assert float(images.min()) < 0 and int(labels.min()) >= 100, split
    images, labels = next(iter(loaders["test"]))
    torch.testing.assert_close(images, plain.float_images(range(4)) * 2 - 1)


def test_index_forms_and_clear_index_errors(fake_root):
    ds = ClutteredFashionMNIST("test", SMALL, cache=False)
    n = len(ds)
    for index in (np.int64(3), np.int32(3), torch.tensor(3), -(n - 3)):
        image, label, box = ds[index]
        assert torch.equal(image, ds[3][0]) and label == ds[3][1] and torch.equal(box, ds[3][2])
    for index in (n, -n - 1):
        with pytest.raises(IndexError, match="out of range"):
            ds[index]
    for index in (1.0, slice(0, 2), [0, 1], True):
        with pytest.raises(TypeError, match="index must be an integer"):
            ds[index]
    assert len(list(ds)) == n  # the old iteration protocol stops on IndexError


def test_items_are_copies_not_views(fake_root):
    ds = ClutteredFashionMNIST("test", SMALL, cache=False)
    image, _, box = ds[0]
    image.zero_()
    box.zero_()
    assert ds[0][0].max() > 0 and ds[0][2].max() > 0


def test_dataloader_with_two_workers(fake_root):
    ds = ClutteredFashionMNIST("test", SMALL, cache=False, return_boxes=False)
    loader = DataLoader(ds, batch_size=3, num_workers=2, persistent_workers=False)
    images = torch.cat([batch[0] for batch in loader])
    torch.testing.assert_close(images, ds.float_images(), rtol=0, atol=0)


def test_unwritable_cache_folder_only_warns(fake_root, tmp_path, monkeypatch):
    def read_only(path, write):
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(cluttered, "atomic_write", read_only)
    with pytest.warns(RuntimeWarning, match="could not write the cache file"):
        ds = ClutteredFashionMNIST("test", SMALL, cache_dir=tmp_path)
    assert len(ds) == SMALL.n_test and not ds.cache_path.exists()
    reference = ClutteredFashionMNIST("test", SMALL, cache=False)
    assert torch.equal(ds.images, reference.images)


def test_truncated_cache_file_leaks_no_handle(fake_root, tmp_path):
    first = ClutteredFashionMNIST("test", SMALL, cache_dir=tmp_path)
    path = first.cache_path
    path.write_bytes(path.read_bytes()[:200])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        again = ClutteredFashionMNIST("test", SMALL, cache_dir=tmp_path)
        gc.collect()
    kinds = [w.category for w in caught]
    assert RuntimeWarning in kinds and ResourceWarning not in kinds, kinds
    assert torch.equal(again.images, first.images)


def test_damaged_gzip_idx_file_is_a_value_error(tmp_path, fake_root):
    blob = (fake_root / "t10k-labels-idx1-ubyte.gz").read_bytes()
    damaged = tmp_path / "t10k-labels-idx1-ubyte.gz"
    damaged.write_bytes(blob[: len(blob) // 2])
    with pytest.raises(ValueError, match="damaged gzip file"):
        read_idx(damaged)
    root = tmp_path / "root"
    write_fake_fashion_mnist(root, 20, 10)
    (root / "t10k-labels-idx1-ubyte.gz").write_bytes(blob[: len(blob) // 2])
    with pytest.raises(ValueError, match="t10k-labels-idx1-ubyte.gz"):
        load_fashion_mnist("test", root)


def test_config_takes_numpy_integers_and_refuses_other_numbers(fake_root):
    config = ClutteredConfig(n_test=np.int64(5), image_size=np.int32(32), seed=np.int64(1))
    assert type(config.n_test) is int and type(config.image_size) is int
    assert config.cache_key("test") == ClutteredConfig(n_test=5, image_size=32, seed=1).cache_key(
        "test"
    )
    assert len(ClutteredFashionMNIST("test", config, cache=False)) == 5
    for kwargs in ({"n_test": 2.5}, {"image_size": 32.0}, {"seed": "0"}):
        with pytest.raises(InputError, match="must be an integer"):
            ClutteredConfig(**kwargs)
    with pytest.raises(InputError, match="backgrounds"):
        ClutteredConfig(backgrounds="brick")


def test_set_epoch_refuses_non_integers(fake_root):
    ds = ClutteredFashionMNIST("train", SMALL, cache=False)
    for epoch in (1.5, "1", True):
        with pytest.raises(InputError, match="epoch"):
            ds.set_epoch(epoch)
    assert ds.epoch == 0
    ds.set_epoch(np.int64(1))
    assert ds.epoch == 1 and type(ds.epoch) is int
