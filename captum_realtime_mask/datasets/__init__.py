"""Datasets for the benchmark: Fashion-MNIST on disk, its cluttered composites and scenes."""

from captum_realtime_mask.datasets.cache import CACHE_ENV, default_cache_dir
from captum_realtime_mask.datasets.cluttered import ClutteredFashionMNIST, cluttered_dataloaders
from captum_realtime_mask.datasets.config import (
    CLUTTERED_MEAN,
    CLUTTERED_STD,
    DEFAULT_BACKGROUNDS,
    ClutteredConfig,
    Split,
)
from captum_realtime_mask.datasets.fashion_mnist import (
    DEBIAN_PACKAGE,
    DEFAULT_DEBIAN_DIR,
    FASHION_MNIST_CLASSES,
    FASHION_MNIST_ENV,
    FASHION_MNIST_FILES,
    FashionMNISTNotFoundError,
    find_fashion_mnist,
    load_fashion_mnist,
    read_idx,
)
from captum_realtime_mask.datasets.rendering import (
    load_backgrounds,
    render_composites,
    render_scenes,
)
from captum_realtime_mask.datasets.scenes import (
    FashionMNISTScenes,
    SceneConfig,
    scene_collate,
    scene_dataloaders,
)

__all__ = [
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
    "FashionMNISTScenes",
    "SceneConfig",
    "Split",
    "cluttered_dataloaders",
    "default_cache_dir",
    "find_fashion_mnist",
    "load_backgrounds",
    "load_fashion_mnist",
    "read_idx",
    "render_composites",
    "render_scenes",
    "scene_collate",
    "scene_dataloaders",
]
