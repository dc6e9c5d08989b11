"""Tests of ``captum_realtime_mask.datasets``, one section per module.

``fashion_mnist`` (IDX files and the locator), ``cache`` (the cache folder), ``config``
(:class:`ClutteredConfig`), ``rendering`` (the composites and their boxes) and ``cluttered``
(the dataset as torchvision datasets are used: items, transforms, indexing, workers, its cache
files). Most tests run on synthetic IDX files; those marked ``needs_debian`` use the real
Fashion-MNIST from Debian's ``dataset-fashion-mnist``.
"""

from __future__ import annotations

import ast
import doctest
import gc
import gzip
import os
import subprocess
import warnings
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader
from torchvision.ops import box_iou, masks_to_boxes

import captum_realtime_mask.datasets as datasets
import captum_realtime_mask.datasets.cluttered as cluttered
import captum_realtime_mask.datasets.fashion_mnist as fmnist
import captum_realtime_mask.datasets.rendering as rendering
from captum_realtime_mask.datasets import (
    CACHE_ENV,
    CLUTTERED_MEAN,
    CLUTTERED_STD,
    DEFAULT_BACKGROUNDS,
    FASHION_MNIST_ENV,
    ClutteredConfig,
    ClutteredFashionMNIST,
    FashionMNISTNotFoundError,
    cluttered_dataloaders,
    default_cache_dir,
    find_fashion_mnist,
    load_backgrounds,
    load_fashion_mnist,
    read_idx,
    render_composites,
)
from captum_realtime_mask.errors import InputError


def _has_debian_package() -> bool:
    """Whether the real Fashion-MNIST is installed (the environment variable aside)."""
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


def measure_normalisation(n: int = 5000) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean and std of ``n`` default training composites (recomputes
    ``CLUTTERED_MEAN`` and ``CLUTTERED_STD`` with n=5000)."""
    dataset = ClutteredFashionMNIST("train", ClutteredConfig(n_train=n), cache=False)
    pixels = dataset.float_images().transpose(0, 1).reshape(3, -1).double()
    return pixels.mean(1), pixels.std(1)


def current_umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


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


# --- the package ---------------------------------------------------------------------------------


def test_modules_import_each_other_without_a_cycle():
    """Every import between the package's modules, also inside functions, points one way."""
    folder = Path(datasets.__file__).parent
    names = sorted(p.stem for p in folder.glob("*.py") if p.stem != "__init__")
    imports: dict[str, set[str]] = {}
    for name in names:
        tree = ast.parse((folder / f"{name}.py").read_text())
        found = {
            node.module.rsplit(".", 1)[-1]
            for node in ast.walk(tree)
            if isinstance(node, ast.ImportFrom)
            and (node.module or "").startswith("captum_realtime_mask.datasets.")
        }
        imports[name] = found & set(names)
    assert imports["fashion_mnist"] == {"cache"}

    def reaches(start: str, target: str, seen: frozenset = frozenset()) -> bool:
        return any(
            n == target or (n not in seen and reaches(n, target, seen | {n}))
            for n in imports[start]
        )

    assert [n for n in names if reaches(n, n)] == []


def test_package_exports_are_the_old_ones_and_the_scenes():
    assert sorted(datasets.__all__) == sorted(
        [
            "FashionMNISTScenes",
            "SceneConfig",
            "render_scenes",
            "scene_collate",
            "scene_dataloaders",
            "CACHE_ENV",
            "CLUTTERED_MEAN",
            "CLUTTERED_STD",
            "DEBIAN_PACKAGE",
            "DEFAULT_BACKGROUNDS",
            "DEFAULT_DEBIAN_DIR",
            "FASHION_MNIST_CLASSES",
            "FASHION_MNIST_ENV",
            "FASHION_MNIST_FILES",
            "ClutteredConfig",
            "ClutteredFashionMNIST",
            "FashionMNISTNotFoundError",
            "Split",
            "cluttered_dataloaders",
            "default_cache_dir",
            "find_fashion_mnist",
            "load_backgrounds",
            "load_fashion_mnist",
            "read_idx",
            "render_composites",
        ]
    )
    for name in cluttered.__all__:  # the old module still offers every name it had
        assert getattr(cluttered, name) is getattr(datasets, name), name


@pytest.mark.parametrize("module", [fmnist, rendering, cluttered])
def test_docstring_examples(module, fake_root):
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
    assert result.failed == 0


# --- fashion_mnist: IDX files ----------------------------------------------------------------


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


# --- fashion_mnist: locating the files -------------------------------------------------------


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
    # Without a root, the download goes into the package's cache folder.
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "cache"))
    found = find_fashion_mnist(download=True)
    assert calls[-1] == tmp_path / "cache" / "fashion-mnist"
    assert found == tmp_path / "cache" / "fashion-mnist" / "FashionMNIST" / "raw"


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


# --- cache: the cache folder -----------------------------------------------------------------


def test_default_cache_dir_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "mine"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_cache_dir() == tmp_path / "mine"
    monkeypatch.delenv(CACHE_ENV)
    assert default_cache_dir() == tmp_path / "xdg" / "captum_realtime_mask"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert default_cache_dir() == Path.home() / ".cache" / "captum_realtime_mask"
    assert not (tmp_path / "mine").exists()  # not created


# --- config: ClutteredConfig -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"scale_range": (0.7, 0.3)}, r"scale_range: expected low <= high, got \(0.7, 0.3\)"),
        ({"scale_range": (0.0, 0.5)}, r"scale_range: expected a real number in \(0, 1\]"),
        ({"scale_range": 0.5}, r"scale_range: expected a \(low, high\) pair of fractions"),
        ({"background_crop": (0.5, 1.5)}, r"background_crop: expected a real number in \[0, 1\]"),
        ({"tint_value": ("a", 1.0)}, r"tint_value: expected a real number in \[0, 1\], got str"),
        ({"backgrounds": ()}, "backgrounds: is empty; name at least one picture"),
        ({"backgrounds": "brick"}, r"backgrounds: .*got the string 'brick'.*\('brick',\)"),
        ({"backgrounds": ("brick", 3)}, r"backgrounds: must be a sequence of skimage.data names"),
        ({"image_size": 4}, "image_size: expected an int >= 8, got int 4"),
        ({"n_test": -1}, "n_test: expected an int >= 0, got int -1"),
        ({"n_test": 2.5}, "n_test: expected an int >= 0, got float 2.5"),
        ({"image_size": 32.0}, "image_size: expected an int >= 8, got float 32.0"),
        ({"seed": "0"}, "seed: expected an int, got str '0'"),
        ({"n_train": True}, "n_train: expected an int >= 0, got bool True.*no count"),
        ({"val_items": 0}, "val_items: expected a positive int, got int 0"),
        ({"val_items": 60000}, r"val_items: expected an int in \[1, 59999\]"),
        ({"visible_alpha": 0.0}, r"visible_alpha: expected a real number in \(0, 1\]"),
        ({"alpha_gain": 0}, "alpha_gain: expected a finite real number > 0, got int 0"),
        ({"shade_floor": float("nan")}, r"shade_floor: expected a real number in \[0, 1\]"),
        ({"flip_items": 1}, "flip_items: expected True or False, got int 1"),
    ],
)
def test_config_names_the_field_and_what_it_expected(kwargs, match):
    with pytest.raises(InputError, match=f"^ClutteredConfig.{match}") as info:
        ClutteredConfig(**kwargs)
    assert info.value.argument == f"ClutteredConfig.{next(iter(kwargs))}"


def test_config_takes_numpy_numbers_as_python_ones(fake_root):
    config = ClutteredConfig(
        n_test=np.int64(5),
        image_size=np.int32(32),
        seed=np.int64(1),
        alpha_gain=np.float32(3.0),
        scale_range=np.array([0.3, 0.65]),
        flip_items=np.bool_(True),
    )
    assert type(config.n_test) is int and type(config.image_size) is int
    assert type(config.alpha_gain) is float and type(config.flip_items) is bool
    assert config.scale_range == (0.3, 0.65) and type(config.scale_range[0]) is float
    plain = ClutteredConfig(n_test=5, image_size=32, seed=1)
    assert config.cache_key("test") == plain.cache_key("test")
    assert len(ClutteredFashionMNIST("test", config, cache=False)) == 5


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
    assert config.size_of("val") == 2000
    with pytest.raises(InputError, match="^split: must be one of"):
        config.size_of("validation")


def test_default_config_keeps_its_cache_keys():
    """The keys name the cache files and enter the black boxes' keys: they must not drift."""
    config = ClutteredConfig()
    assert {(s, e): config.cache_key(s, e) for s in ("train", "val", "test") for e in (0, 1)} == {
        ("train", 0): "f7d247295fa5fa94",
        ("train", 1): "d091a9c4552a75bb",
        ("val", 0): "a9d81f689e1c7944",
        ("val", 1): "a4a06e58d9a34ea1",
        ("test", 0): "05d98425b7870603",
        ("test", 1): "7e4e22cfa0a9d53c",
    }


# --- rendering: composites and boxes ---------------------------------------------------------


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
    with pytest.raises(InputError, match=r"uniforms must be \(2, 13\), got \(2, 5\)"):
        render_composites(np.zeros((2, 28, 28), np.uint8), np.zeros((2, 5)), ClutteredConfig())
    empty = render_composites(np.zeros((0, 28, 28), np.uint8), np.zeros((0, 13)), SMALL)
    assert [a.shape for a in empty] == [(0, 3, 64, 64), (0, 64, 64), (0, 4)]


def test_backgrounds_load_offline():
    pictures = load_backgrounds(DEFAULT_BACKGROUNDS)
    assert len(pictures) == len(DEFAULT_BACKGROUNDS)
    for picture in pictures.values():
        assert picture.ndim == 3 and picture.shape[-1] == 3 and min(picture.shape[:2]) >= 100
        assert picture.dtype == np.uint8 and int(picture.max()) - int(picture.min()) > 100


def test_unknown_background_is_refused():
    with pytest.raises(InputError, match="not a skimage.data picture"):
        load_backgrounds(["no_such_picture"])


# --- cluttered: the dataset ------------------------------------------------------------------


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


def test_set_epoch_refuses_non_integers(fake_root):
    ds = ClutteredFashionMNIST("train", SMALL, cache=False)
    for epoch, shown in ((1.5, "float 1.5"), ("1", "str '1'"), (True, "bool True"), (-1, "int -1")):
        with pytest.raises(InputError, match=f"^epoch: expected an int >= 0, got {shown}"):
            ds.set_epoch(epoch)
    assert ds.epoch == 0
    ds.set_epoch(np.int64(1))
    assert ds.epoch == 1 and type(ds.epoch) is int


def test_splits_use_disjoint_item_pools(fake_root):
    train = ClutteredFashionMNIST("train", SMALL, cache=False)
    val = ClutteredFashionMNIST("val", SMALL, cache=False)
    assert int(train.item_indices.max()) < 250 <= int(val.item_indices.min())
    test = ClutteredFashionMNIST("test", SMALL, cache=False)
    assert int(test.item_indices.max()) < 100
    with pytest.raises(InputError, match="^split: must be one of 'train', 'val', 'test'"):
        ClutteredFashionMNIST("validation", SMALL)
    with pytest.raises(InputError, match="^config: must be a ClutteredConfig, got dict"):
        ClutteredFashionMNIST("test", {"n_test": 4})


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
    with pytest.raises(InputError, match="^transform: must be a callable or None, got str"):
        ClutteredFashionMNIST("test", SMALL, cache=False, transform="normalise")


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


def test_dataloaders(fake_root, tmp_path):
    loaders = cluttered_dataloaders(SMALL, batch_size=16, cache_dir=tmp_path)
    assert set(loaders) == {"train", "val", "test"}
    images, labels = next(iter(loaders["train"]))
    assert images.shape == (16, 3, 64, 64) and labels.dtype == torch.int64
    boxed = cluttered_dataloaders(SMALL, 4, splits=["test"], return_boxes=True, cache=False)
    assert len(next(iter(boxed["test"]))) == 3


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


def test_dataloader_with_two_workers(fake_root):
    ds = ClutteredFashionMNIST("test", SMALL, cache=False, return_boxes=False)
    loader = DataLoader(ds, batch_size=3, num_workers=2, persistent_workers=False)
    images = torch.cat([batch[0] for batch in loader])
    torch.testing.assert_close(images, ds.float_images(), rtol=0, atol=0)


# --- cluttered: its cache files --------------------------------------------------------------


def test_cache_round_trip(fake_root, tmp_path, monkeypatch, no_system_data):
    monkeypatch.setenv(FASHION_MNIST_ENV, str(fake_root))
    first = ClutteredFashionMNIST("val", SMALL, cache_dir=tmp_path)
    path = first.cache_path
    assert path.is_file() and path.parent.parent == tmp_path
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temporary leftovers
    assert path.stat().st_mode & 0o777 == 0o666 & ~current_umask()
    # Read back from the cache: Fashion-MNIST itself is no longer needed.
    monkeypatch.delenv(FASHION_MNIST_ENV)
    again = ClutteredFashionMNIST("val", SMALL, cache_dir=tmp_path)
    for name in ("images", "labels", "boxes", "masks", "item_indices"):
        assert torch.equal(getattr(first, name), getattr(again, name)), name
    # Another training-set size shares the validation split's file and reads it silently.
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        other = ClutteredFashionMNIST("val", replace(SMALL, n_train=SMALL.n_train + 7),
                                      cache_dir=tmp_path)  # fmt: skip
    assert other.cache_path == path and torch.equal(other.images, first.images)
    with pytest.raises(FashionMNISTNotFoundError):  # a split not cached yet needs the data
        ClutteredFashionMNIST("test", SMALL, cache_dir=tmp_path)
    monkeypatch.setenv(FASHION_MNIST_ENV, str(fake_root))
    path.write_bytes(b"truncated")
    with pytest.warns(RuntimeWarning, match="ignoring the cache file"):
        rebuilt = ClutteredFashionMNIST("val", SMALL, cache_dir=tmp_path)
    assert torch.equal(rebuilt.images, first.images)
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "envcache"))
    assert ClutteredFashionMNIST("val", SMALL).cache_path.is_relative_to(tmp_path / "envcache")


def test_unwritable_cache_folder_only_warns(fake_root, tmp_path):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the cache folder should be")
    with pytest.warns(RuntimeWarning, match="could not write the cache file"):
        ds = ClutteredFashionMNIST("test", SMALL, cache_dir=blocker)
    assert len(ds) == SMALL.n_test and blocker.is_file()
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


# --- on the real Fashion-MNIST ---------------------------------------------------------------


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
    mean, std = measure_normalisation(1000)
    torch.testing.assert_close(mean.float(), torch.tensor(CLUTTERED_MEAN), atol=0.02, rtol=0)
    torch.testing.assert_close(std.float(), torch.tensor(CLUTTERED_STD), atol=0.02, rtol=0)
