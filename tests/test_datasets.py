"""Tests of the Fashion-MNIST locator and the cluttered Fashion-MNIST dataset."""

from __future__ import annotations

import doctest
import gzip
import subprocess
import warnings
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader
from torchvision.ops import box_iou, masks_to_boxes

import captum_realtime_mask.checkpoint as checkpoint
import captum_realtime_mask.datasets.cluttered as cluttered
import captum_realtime_mask.datasets.fashion_mnist as fmnist
from captum_realtime_mask.datasets import (
    CLUTTERED_MEAN,
    CLUTTERED_STD,
    DEFAULT_BACKGROUNDS,
    FASHION_MNIST_ENV,
    ClutteredConfig,
    ClutteredFashionMNIST,
    FashionMNISTNotFoundError,
    cluttered_dataloaders,
    find_fashion_mnist,
    load_backgrounds,
    load_fashion_mnist,
    read_idx,
    render_composites,
)
from captum_realtime_mask.errors import InputError


def _has_debian_package() -> bool:
    return fmnist._holds_fashion_mnist(fmnist.DEFAULT_DEBIAN_DIR) is not None or any(
        fmnist._holds_fashion_mnist(d) is not None for d in fmnist._debian_dirs()
    )


needs_debian = pytest.mark.skipif(
    not _has_debian_package(),
    reason="needs Debian's dataset-fashion-mnist (apt-get install dataset-fashion-mnist)",
)


def write_idx(path: Path, array: np.ndarray, compress: bool = True) -> Path:
    codes = {np.dtype("u1"): 0x08, np.dtype(">i4"): 0x0C, np.dtype(">f4"): 0x0D}
    dtype = array.dtype.newbyteorder(">") if array.dtype.itemsize > 1 else array.dtype
    header = bytes([0, 0, codes[dtype], array.ndim]) + np.asarray(array.shape, ">u4").tobytes()
    blob = header + array.astype(dtype).tobytes()
    path.write_bytes(gzip.compress(blob) if compress else blob)
    return path


def write_fake_fashion_mnist(
    folder: Path, n_train: int = 300, n_test: int = 100, compress: bool = True
) -> Path:
    """Four IDX files of synthetic items: bright filled ellipses of random size and place."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:28, 0:28]
    suffix = ".gz" if compress else ""
    for split, n in (("train", n_train), ("t10k", n_test)):
        cy, cx = rng.uniform(9, 19, (2, n, 1, 1))
        ry, rx = rng.uniform(4, 9, (2, n, 1, 1))
        inside = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1
        images = (inside * rng.uniform(120, 255, (n, 28, 28))).astype(np.uint8)
        labels = rng.integers(0, 10, n).astype(np.uint8)
        write_idx(folder / f"{split}-images-idx3-ubyte{suffix}", images, compress)
        write_idx(folder / f"{split}-labels-idx1-ubyte{suffix}", labels, compress)
    return folder


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture
def no_system_data(monkeypatch, tmp_path):
    """No environment variable and an empty 'Debian' folder."""
    monkeypatch.delenv(FASHION_MNIST_ENV, raising=False)
    empty = tmp_path / "debian-empty"
    empty.mkdir()
    monkeypatch.setattr(fmnist, "_debian_dirs", lambda: (empty,))
    return empty


@pytest.fixture
def fake_root(tmp_path_factory, monkeypatch):
    root = write_fake_fashion_mnist(tmp_path_factory.mktemp("fake-fmnist"))
    monkeypatch.setenv(FASHION_MNIST_ENV, str(root))
    return root


SMALL = ClutteredConfig(n_train=40, n_val=10, n_test=20, val_items=50)


# --- IDX files ---------------------------------------------------------------------------------


@pytest.mark.parametrize("compress", [True, False])
@pytest.mark.parametrize("dtype", ["u1", ">i4", ">f4"])
def test_read_idx_round_trip(tmp_path, compress, dtype):
    array = (np.arange(2 * 3 * 4) * 3).reshape(2, 3, 4).astype(dtype)
    out = read_idx(write_idx(tmp_path / "a-idx3", array, compress))
    assert out.shape == (2, 3, 4)
    assert out.dtype.isnative
    np.testing.assert_array_equal(out, array)


def test_read_idx_rejects_bad_files(tmp_path):
    (tmp_path / "bad").write_bytes(b"PK\x03\x04junk")
    with pytest.raises(ValueError, match="not an IDX file"):
        read_idx(tmp_path / "bad")
    good = write_idx(tmp_path / "good", np.zeros((4, 5), np.uint8), compress=False)
    (tmp_path / "short").write_bytes(good.read_bytes()[:-3])
    with pytest.raises(ValueError, match="announces shape"):
        read_idx(tmp_path / "short")


# --- locating Fashion-MNIST --------------------------------------------------------------------


def test_locator_order_root_env_debian(tmp_path, monkeypatch, no_system_data):
    root = write_fake_fashion_mnist(tmp_path / "root", 5, 3)
    env = write_fake_fashion_mnist(tmp_path / "env", 5, 3, compress=False)
    debian = write_fake_fashion_mnist(tmp_path / "debian", 5, 3)
    monkeypatch.setattr(fmnist, "_debian_dirs", lambda: (tmp_path / "nowhere", debian))
    monkeypatch.setenv(FASHION_MNIST_ENV, str(env))
    assert find_fashion_mnist(root) == root
    assert find_fashion_mnist(tmp_path / "missing") == env  # an empty root falls through
    assert find_fashion_mnist() == env
    monkeypatch.delenv(FASHION_MNIST_ENV)
    assert find_fashion_mnist() == debian


def test_locator_accepts_torchvision_layout(tmp_path, no_system_data):
    raw = write_fake_fashion_mnist(tmp_path / "tv" / "FashionMNIST" / "raw", 5, 3)
    assert find_fashion_mnist(tmp_path / "tv") == raw
    images, labels = load_fashion_mnist("test", tmp_path / "tv")
    assert images.shape == (3, 28, 28) and images.dtype == np.uint8
    assert labels.dtype == np.int64


def test_locator_error_names_every_option(tmp_path, no_system_data):
    with pytest.raises(FashionMNISTNotFoundError) as info:
        find_fashion_mnist(tmp_path / "missing")
    message = str(info.value)
    assert isinstance(info.value, FileNotFoundError)
    for needle in (
        "root=",
        FASHION_MNIST_ENV,
        "apt-get install dataset-fashion-mnist",
        "download=True",
        str(tmp_path / "missing"),
        str(no_system_data),
    ):
        assert needle in message


def test_locator_downloads_only_when_asked(tmp_path, monkeypatch, no_system_data):
    calls = []

    def fake_download(target: Path) -> Path:
        calls.append(target)
        return write_fake_fashion_mnist(target / "FashionMNIST" / "raw", 5, 3)

    monkeypatch.setattr(fmnist, "_download", fake_download)
    with pytest.raises(FashionMNISTNotFoundError):
        find_fashion_mnist(tmp_path / "dl")
    assert calls == []
    found = find_fashion_mnist(tmp_path / "dl", download=True)
    assert calls == [tmp_path / "dl"] and found == tmp_path / "dl" / "FashionMNIST" / "raw"


def test_debian_dirs_asks_dpkg_then_falls_back(monkeypatch):
    listing = "/.\n/srv/data/fmnist\n/srv/data/fmnist/train-images-idx3-ubyte.gz\n"

    def fake_run(*args, **kwargs):
        return subprocess.CompletedProcess(args, 0, stdout=listing, stderr="")

    monkeypatch.setattr(fmnist.subprocess, "run", fake_run)
    fmnist._debian_dirs.cache_clear()
    try:
        assert fmnist._debian_dirs() == (Path("/srv/data/fmnist"), fmnist.DEFAULT_DEBIAN_DIR)

        def no_dpkg(*args, **kwargs):
            raise FileNotFoundError("dpkg")

        monkeypatch.setattr(fmnist.subprocess, "run", no_dpkg)
        fmnist._debian_dirs.cache_clear()
        assert fmnist._debian_dirs() == (fmnist.DEFAULT_DEBIAN_DIR,)
    finally:
        fmnist._debian_dirs.cache_clear()


@needs_debian
def test_debian_package_is_found(monkeypatch):
    monkeypatch.delenv(FASHION_MNIST_ENV, raising=False)
    folder = find_fashion_mnist()
    images, labels = load_fashion_mnist("train")
    assert folder.is_dir()
    assert images.shape == (60000, 28, 28) and labels.shape == (60000,)
    assert set(np.unique(labels)) == set(range(10))


# --- rendering ---------------------------------------------------------------------------------


def test_render_box_is_tight_around_a_known_item():
    config = ClutteredConfig()
    item = np.zeros((1, 28, 28), np.uint8)
    item[0, 7:21, 4:24] = 255  # a 20 x 14 block
    u = np.full((1, 13), 0.5)
    u[0, 6], u[0, 7], u[0, 8], u[0, 12] = 1.0 - 1e-9, 0.25, 0.75, 0.9  # largest item, no mirror
    images, masks, boxes = render_composites(item, u, config)
    side = 0.65 * 64
    x0, y0 = 0.25 * (64 - side), 0.75 * (64 - side)
    expected = np.array(
        [x0 + 4 / 28 * side, y0 + 7 / 28 * side, x0 + 24 / 28 * side, y0 + 21 / 28 * side]
    )
    expected[2:] -= 1  # inclusive maxima
    assert images.shape == (1, 3, 64, 64) and images.dtype == np.uint8
    assert np.abs(boxes[0] - expected).max() <= 1.5
    np.testing.assert_array_equal(boxes, masks_to_boxes(torch.from_numpy(masks)).long().numpy())


def test_render_checks_uniform_shape():
    with pytest.raises(InputError, match="uniforms"):
        render_composites(np.zeros((2, 28, 28), np.uint8), np.zeros((2, 5)), ClutteredConfig())


def test_backgrounds_load_offline():
    pictures = load_backgrounds(DEFAULT_BACKGROUNDS)
    assert len(pictures) == len(DEFAULT_BACKGROUNDS)
    for picture in pictures.values():
        assert picture.ndim == 3 and picture.shape[-1] == 3 and min(picture.shape[:2]) >= 100
        assert picture.dtype == np.uint8 and int(picture.max()) - int(picture.min()) > 100


def test_unknown_background_is_refused():
    with pytest.raises(InputError, match="not a skimage.data picture"):
        load_backgrounds(["no_such_picture"])


@pytest.mark.parametrize(
    "kwargs",
    [
        {"scale_range": (0.7, 0.3)},
        {"scale_range": (0.0, 0.5)},
        {"background_crop": (0.5, 1.5)},
        {"backgrounds": ()},
        {"image_size": 4},
        {"n_test": -1},
        {"visible_alpha": 0.0},
    ],
)
def test_config_validation(kwargs):
    with pytest.raises(InputError):
        ClutteredConfig(**kwargs)


def test_config_round_trip_and_cache_key():
    config = ClutteredConfig(scale_range=[0.3, 0.5])
    assert ClutteredConfig.from_dict(config.to_dict()) == config
    assert config.cache_key("test") == ClutteredConfig(scale_range=(0.3, 0.5)).cache_key("test")
    assert config.cache_key("test") != config.cache_key("val")
    assert config.cache_key("train", 0) != config.cache_key("train", 1)
    assert config.cache_key("test") == ClutteredConfig(scale_range=(0.3, 0.5), n_train=7).cache_key(
        "test"
    )
    assert config.cache_key("test") != ClutteredConfig(seed=1).cache_key("test")
    with pytest.raises(InputError, match="unknown keys"):
        ClutteredConfig.from_dict({"size": 3})


# --- the dataset -------------------------------------------------------------------------------


def test_items_shapes_and_dtypes(fake_root):
    ds = ClutteredFashionMNIST("test", SMALL, cache=False)
    image, label, box = ds[3]
    assert len(ds) == 20
    assert image.shape == (3, 64, 64) and image.dtype == torch.float32
    assert image.min() >= 0.0 and image.max() <= 1.0
    assert isinstance(label, int) and 0 <= label < 10
    assert box.shape == (4,) and box.dtype == torch.int64
    assert ds.images.dtype == torch.uint8 and ds.masks.shape == (20, 64, 64)
    assert ds.boxes.shape == (20, 4) and ds.labels.shape == (20,)
    images, labels, boxes = next(iter(DataLoader(ds, batch_size=8)))
    assert images.shape == (8, 3, 64, 64) and labels.shape == (8,) and boxes.shape == (8, 4)
    plain = ClutteredFashionMNIST("test", SMALL, cache=False, return_boxes=False)
    assert len(plain[0]) == 2
    small = ClutteredFashionMNIST("val", ClutteredConfig(image_size=32, n_val=4), cache=False)
    assert small[0][0].shape == (3, 32, 32) and "n=4" in repr(small)


def test_boxes_are_tight_around_visible_pixels(fake_root):
    ds = ClutteredFashionMNIST("train", SMALL, cache=False)
    torch.testing.assert_close(masks_to_boxes(ds.masks).long(), ds.boxes)
    for mask, (x1, y1, x2, y2) in zip(ds.masks, ds.boxes.tolist()):
        inside = torch.zeros_like(mask)
        inside[y1 : y2 + 1, x1 : x2 + 1] = True
        assert not (mask & ~inside).any()
        assert mask[y1].any() and mask[y2].any() and mask[:, x1].any() and mask[:, x2].any()
        assert 0 <= x1 <= x2 < 64 and 0 <= y1 <= y2 < 64


def test_deterministic_for_a_seed(fake_root):
    a = ClutteredFashionMNIST("train", SMALL, cache=False)
    b = ClutteredFashionMNIST("train", SMALL, cache=False)
    assert torch.equal(a.images, b.images) and torch.equal(a.boxes, b.boxes)
    longer = ClutteredFashionMNIST("train", ClutteredConfig(n_train=80, val_items=50), cache=False)
    assert torch.equal(longer.images[:40], a.images)  # sample i does not depend on n
    other = ClutteredFashionMNIST(
        "train", ClutteredConfig(n_train=40, val_items=50, seed=1), cache=False
    )
    assert not torch.equal(other.images, a.images)
    a.set_epoch(1)
    assert not torch.equal(a.images, b.images) and a.epoch == 1
    a.set_epoch(0)
    assert torch.equal(a.images, b.images)


def test_splits_use_disjoint_item_pools(fake_root):
    train = ClutteredFashionMNIST("train", SMALL, cache=False)
    val = ClutteredFashionMNIST("val", SMALL, cache=False)
    assert int(train.item_indices.max()) < 250 <= int(val.item_indices.min())
    test = ClutteredFashionMNIST("test", SMALL, cache=False)
    assert int(test.item_indices.max()) < 100
    with pytest.raises(InputError, match="split"):
        ClutteredFashionMNIST("validation", SMALL)


def test_cache_round_trip(fake_root, tmp_path, monkeypatch):
    first = ClutteredFashionMNIST("val", SMALL, cache_dir=tmp_path)
    path = first.cache_path
    assert path.is_file() and path.parent.parent == tmp_path
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temporary leftovers
    assert path.stat().st_mode & 0o777 == 0o666 & ~checkpoint._umask()

    def no_build(self):
        raise AssertionError("should have been read from the cache")

    monkeypatch.setattr(ClutteredFashionMNIST, "_build", no_build)
    again = ClutteredFashionMNIST("val", SMALL, cache_dir=tmp_path)
    for name in ("images", "labels", "boxes", "masks", "item_indices"):
        assert torch.equal(getattr(first, name), getattr(again, name)), name
    # Another training-set size shares the validation split's file and reads it silently.
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        other = ClutteredFashionMNIST("val", replace(SMALL, n_train=SMALL.n_train + 7),
                                      cache_dir=tmp_path)  # fmt: skip
    assert other.cache_path == path and torch.equal(other.images, first.images)
    monkeypatch.undo()
    monkeypatch.setenv(FASHION_MNIST_ENV, str(fake_root))
    path.write_bytes(b"truncated")
    with pytest.warns(RuntimeWarning, match="ignoring the cache file"):
        rebuilt = ClutteredFashionMNIST("val", SMALL, cache_dir=tmp_path)
    assert torch.equal(rebuilt.images, first.images)
    monkeypatch.setenv(cluttered.CACHE_ENV, str(tmp_path / "envcache"))
    assert ClutteredFashionMNIST("val", SMALL).cache_path.is_relative_to(tmp_path / "envcache")


def test_dataloaders(fake_root, tmp_path):
    loaders = cluttered_dataloaders(SMALL, batch_size=16, cache_dir=tmp_path)
    assert set(loaders) == {"train", "val", "test"}
    images, labels = next(iter(loaders["train"]))
    assert images.shape == (16, 3, 64, 64) and labels.dtype == torch.int64
    boxed = cluttered_dataloaders(SMALL, 4, splits=["test"], return_boxes=True, cache=False)
    assert len(next(iter(boxed["test"]))) == 3


@needs_debian
def test_centre_box_baseline_misses_at_least_half(monkeypatch):
    monkeypatch.delenv(FASHION_MNIST_ENV, raising=False)
    ds = ClutteredFashionMNIST("test", ClutteredConfig(n_test=400), cache=False)
    side = 64 / 2**0.5  # half the image area
    start = (64 - side) / 2
    centre = torch.tensor([[start, start, start + side, start + side]])
    boxes = ds.boxes.double()
    boxes[:, 2:] += 1  # inclusive pixel indices to pixel edges
    iou = box_iou(centre.double(), boxes)[0]
    error = float((iou <= 0.5).double().mean())
    assert error >= 0.5, f"centre-box localisation error {error:.3f} < 0.5"
    sides = (boxes[:, 2:] - boxes[:, :2]).max(dim=1).values / 64
    assert float(sides.min()) >= 0.2 and float(sides.max()) <= 0.66


@needs_debian
def test_normalisation_constants_match_the_images(monkeypatch):
    monkeypatch.delenv(FASHION_MNIST_ENV, raising=False)
    ds = ClutteredFashionMNIST("train", ClutteredConfig(n_train=1000), cache=False)
    pixels = ds.float_images().transpose(0, 1).reshape(3, -1)
    torch.testing.assert_close(pixels.mean(1), torch.tensor(CLUTTERED_MEAN), atol=0.02, rtol=0)
    torch.testing.assert_close(pixels.std(1), torch.tensor(CLUTTERED_STD), atol=0.02, rtol=0)


@pytest.mark.parametrize("module", [fmnist, cluttered])
def test_docstring_examples(module, fake_root):
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
    assert result.failed == 0
