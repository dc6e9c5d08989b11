"""Cluttered Fashion-MNIST: items composited onto real photographs, with ground-truth boxes.

:class:`ClutteredFashionMNIST` draws every random choice of an image from a counter-based
stream (a hash of the seed, split, epoch and index), renders the split with
:func:`~captum_realtime_mask.datasets.rendering.render_composites` and caches it on disk.
The configuration, the rendering and the cache location live in their own modules
(:mod:`~captum_realtime_mask.datasets.config`, :mod:`~captum_realtime_mask.datasets.rendering`,
:mod:`~captum_realtime_mask.datasets.cache`); their public names are also importable from here.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader

from captum_realtime_mask.datasets.cache import CACHE_ENV, default_cache_dir
from captum_realtime_mask.datasets.config import (
    CLUTTERED_MEAN,
    CLUTTERED_STD,
    DEFAULT_BACKGROUNDS,
    FORMAT_VERSION,
    SPLITS,
    ClutteredConfig,
    Split,
    check_split,
)
from captum_realtime_mask.datasets.rendering import (
    UNIFORMS_PER_IMAGE,
    load_backgrounds,
    render_composites,
)
from captum_realtime_mask.datasets.splits import CachedSplit, split_dataloaders
from captum_realtime_mask.errors import InputError

__all__ = [
    "CACHE_ENV",
    "CLUTTERED_MEAN",
    "CLUTTERED_STD",
    "DEFAULT_BACKGROUNDS",
    "ClutteredConfig",
    "ClutteredFashionMNIST",
    "Split",
    "cluttered_dataloaders",
    "default_cache_dir",
    "load_backgrounds",
    "render_composites",
]

#: Each split's number in the random streams (so splits of one seed draw independently).
SPLIT_IDS = {split: number for number, split in enumerate(SPLITS, start=1)}
_GOLDEN = 0x9E3779B97F4A7C15
_MASK64 = (1 << 64) - 1


class ClutteredFashionMNIST(CachedSplit):
    """Cluttered Fashion-MNIST: one item per image on a real photograph, with its true box.

    Splits: ``"train"`` and ``"val"`` draw items from Fashion-MNIST's training set (its last
    ``config.val_items`` items are the validation pool), ``"test"`` from its test set. Image
    ``i`` of a split at an epoch depends only on ``(config, split, epoch, i)``: every random
    choice is a hash of those, so a smaller split is a prefix of a larger one, and
    :meth:`set_epoch` redraws fresh composites (other items, backgrounds, places, colours)
    for training without touching the other splits.

    Ground-truth boxes are ``(x1, y1, x2, y2)`` pixel indices with inclusive maxima (the
    convention of ``torchvision.ops.masks_to_boxes``): the tightest box around the item's
    visible pixels, those with opacity at least ``config.visible_alpha``. Such a box covers
    ``(x2 - x1 + 1) * (y2 - y1 + 1)`` pixels.

    Items are returned as ``(image, label, box)``: a float32 image ``(3, S, S)`` in
    ``[0, 1]``, an ``int`` label and an int64 box ``(4,)``, which PyTorch's default collate
    stacks into ``(B, 3, S, S)``, ``(B,)`` and ``(B, 4)``. With ``return_boxes=False`` they
    are ``(image, label)``, ready for a classifier's training loop.

    Args:
        split: ``"train"``, ``"val"`` or ``"test"``.
        config: The dataset parameters (defaults: :class:`ClutteredConfig`).
        epoch: Which draw of the split to build (0 for validation and test).
        root: Folder of the Fashion-MNIST IDX files (see ``find_fashion_mnist``).
        download: Let ``find_fashion_mnist`` download the files when they are nowhere.
        cache_dir: Cache folder (default :func:`default_cache_dir`); the images are stored
            there as ``cluttered-fmnist-<split>-e<epoch>-<key>.npz``, written atomically.
        cache: Whether to read and write that cache; without it images are built in memory.
            A cache folder that cannot be written (read-only, full) only costs a warning: the
            images are then kept in memory.
        return_boxes: Whether items include the box.
        transform: Called on each float32 image ``(3, S, S)`` in ``[0, 1]`` before it is
            returned, as in torchvision (e.g. ``transforms.v2.Normalize(CLUTTERED_MEAN,
            CLUTTERED_STD)``). The box is not changed, so keep the geometry (no crops, flips
            or resizes) when the box is used.
        target_transform: Called on each ``int`` label before it is returned.

    Attributes:
        images: ``uint8`` tensor ``(N, 3, S, S)``.
        labels: ``int64`` tensor ``(N,)``.
        boxes: ``int64`` tensor ``(N, 4)``, as described above.
        masks: ``bool`` tensor ``(N, S, S)`` of the item's visible pixels.
        item_indices: ``int64`` tensor ``(N,)``: each item's index in its Fashion-MNIST split.

    Example:
        >>> ds = ClutteredFashionMNIST("test", ClutteredConfig(n_test=4), cache=False)
        >>> image, label, box = ds[0]
        >>> image.shape, image.dtype, box.shape, len(ds)
        (torch.Size([3, 64, 64]), torch.float32, torch.Size([4]), 4)
    """

    _CACHE_PREFIX = "cluttered-fmnist"
    _WHAT = "images"

    def __init__(
        self,
        split: Split = "train",
        config: ClutteredConfig | None = None,
        *,
        epoch: int = 0,
        root: str | os.PathLike[str] | None = None,
        download: bool = False,
        cache_dir: str | os.PathLike[str] | None = None,
        cache: bool = True,
        return_boxes: bool = True,
        transform: Callable[[torch.Tensor], Any] | None = None,
        target_transform: Callable[[int], Any] | None = None,
    ) -> None:
        self.split: Split = check_split(split)
        for name, fn in (("transform", transform), ("target_transform", target_transform)):
            if fn is not None and not callable(fn):
                raise InputError(
                    f"must be a callable or None, got {type(fn).__name__}. Hint: compose "
                    "several with torchvision.transforms.v2.Compose([...]).",
                    argument=name,
                )
        self.config = config if config is not None else ClutteredConfig()
        if not isinstance(self.config, ClutteredConfig):
            raise InputError(
                f"must be a ClutteredConfig, got {type(self.config).__name__}; build one "
                "with ClutteredConfig(...) or ClutteredConfig.from_dict(...).",
                argument="config",
            )
        self.root = root
        self.download = download
        self.cache_dir = Path(cache_dir).expanduser() if cache_dir is not None else None
        self.cache = cache
        self.return_boxes = return_boxes
        self.transform = transform
        self.target_transform = target_transform
        self.epoch = -1
        self.set_epoch(epoch)

    # -- building ---------------------------------------------------------------------------

    def _adopt(self, arrays: dict[str, np.ndarray]) -> None:
        size = self.config.image_size
        self.images = torch.from_numpy(arrays["images"])
        self.labels = torch.from_numpy(arrays["labels"])
        self.boxes = torch.from_numpy(arrays["boxes"])
        packed = arrays["masks"]
        self.masks = torch.from_numpy(
            np.unpackbits(packed, axis=-1, count=size * size).reshape(-1, size, size).astype(bool)
        )
        self.item_indices = torch.from_numpy(arrays["item_indices"])

    def _build(self) -> dict[str, np.ndarray]:
        cfg, n = self.config, self.config.size_of(self.split)
        images, labels, pool = self._pool()
        split_id = SPLIT_IDS[self.split]
        order = np.argsort(
            split_uniforms(stream_key(cfg.seed, split_id, 0), np.arange(len(pool)), 1)[:, 0]
        )
        pick = pool[order[(np.arange(n) + self.epoch * n) % len(pool)]]
        key = stream_key(cfg.seed, split_id, 1, self.epoch)
        u = split_uniforms(key, np.arange(n), UNIFORMS_PER_IMAGE)
        rendered, masks, boxes = render_composites(images[pick], u, cfg)
        return {
            "images": rendered,
            "labels": labels[pick].astype(np.int64),
            "boxes": boxes,
            "masks": np.packbits(masks.reshape(n, -1), axis=-1),
            "item_indices": pick.astype(np.int64),
            "meta": np.asarray(json.dumps(self._meta(), sort_keys=True)),
        }

    def _meta(self) -> dict:
        return {
            "format": FORMAT_VERSION,
            "split": self.split,
            "epoch": self.epoch,
            "config": self.config.to_dict(),
        }

    def _check_arrays(self, arrays: dict[str, np.ndarray]) -> None:
        n = self.config.size_of(self.split)
        if arrays["images"].shape != (n, 3, self.config.image_size, self.config.image_size):
            raise ValueError(f"its images have shape {arrays['images'].shape}")
        for key in ("labels", "boxes", "masks", "item_indices"):
            if len(arrays[key]) != n:
                raise ValueError(f"its {key} have length {len(arrays[key])}, not {n}")

    # -- access -----------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[Any, ...]:
        """Item ``index``: ``(image, label, box)``, or ``(image, label)`` without boxes.

        ``image`` and ``label`` are passed through ``transform`` and ``target_transform``
        when those are set. Negative indices count from the end; NumPy integers work too.

        Raises:
            TypeError: ``index`` is not an integer.
            IndexError: ``index`` is out of range.
        """
        i = self._check_index(index)
        image: Any = self.images[i].float().div_(255.0)
        label: Any = int(self.labels[i])
        if self.transform is not None:
            image = self.transform(image)
        if self.target_transform is not None:
            label = self.target_transform(label)
        if self.return_boxes:
            return image, label, self.boxes[i].clone()
        return image, label

    def float_images(
        self, indices: torch.Tensor | Sequence[int] | slice | None = None
    ) -> torch.Tensor:
        """Images as float32 in ``[0, 1]``, all of them or a selection.

        Args:
            indices: Anything that indexes the first dimension; None for all images.

        Returns:
            A float32 tensor ``(N, 3, S, S)``.
        """
        selected = self.images if indices is None else self.images[indices]
        return selected.float().div_(255.0)

    def extra_repr(self) -> str:
        """Split, size and epoch, for ``repr``."""
        text = f"split={self.split!r}, n={len(self)}, epoch={self.epoch}"
        for name in ("transform", "target_transform"):
            if getattr(self, name) is not None:
                text += f", {name}={getattr(self, name)!r}"
        return text

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.extra_repr()})"


def cluttered_dataloaders(
    config: ClutteredConfig | None = None,
    batch_size: int = 128,
    *,
    splits: Sequence[Split] = ("train", "val", "test"),
    return_boxes: bool = False,
    num_workers: int = 0,
    root: str | os.PathLike[str] | None = None,
    download: bool = False,
    cache_dir: str | os.PathLike[str] | None = None,
    cache: bool = True,
    generator: torch.Generator | None = None,
    transform: Callable[[torch.Tensor], Any] | None = None,
    target_transform: Callable[[int], Any] | None = None,
) -> dict[str, DataLoader]:
    """DataLoaders of the cluttered splits; only ``"train"`` is shuffled.

    Args:
        config: The dataset parameters (defaults: :class:`ClutteredConfig`).
        batch_size: Images per batch.
        splits: Which splits to build.
        return_boxes: Whether batches are ``(images, labels, boxes)`` rather than
            ``(images, labels)``.
        num_workers: Passed to each DataLoader.
        root: Folder of the Fashion-MNIST IDX files.
        download: Let ``find_fashion_mnist`` download the files when they are nowhere.
        cache_dir: Cache folder (default :func:`default_cache_dir`).
        cache: Whether to use the on-disk cache.
        generator: Random generator of the training shuffle (seeded from ``config.seed``
            when None).
        transform: Given to every split's dataset (see :class:`ClutteredFashionMNIST`).
        target_transform: Given to every split's dataset.

    Returns:
        A dictionary from split name to its DataLoader; ``loader.dataset`` is the
        :class:`ClutteredFashionMNIST` (call its ``set_epoch`` for fresh training images).
    """
    config = config if config is not None else ClutteredConfig()
    return split_dataloaders(
        ClutteredFashionMNIST,
        config,
        splits,
        batch_size,
        num_workers,
        generator,
        root=root,
        download=download,
        cache_dir=cache_dir,
        cache=cache,
        return_boxes=return_boxes,
        transform=transform,
        target_transform=target_transform,
    )


# ---------------------------------------------------------------------------------------------
# Counter-based random numbers: every draw is a hash of (seed, split, epoch, index, draw), so
# sample i is the same whatever the split size or the order in which samples are built.


def _mix64(z: np.ndarray) -> np.ndarray:
    """SplitMix64's finaliser on a uint64 array (wrapping arithmetic)."""
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


def stream_key(*parts: int) -> int:
    state = np.zeros(1, dtype=np.uint64)
    for part in parts:
        state = _mix64(state ^ np.uint64(int(part) & _MASK64)) + np.uint64(_GOLDEN)
    return int(state[0])


def split_uniforms(key: int, index: np.ndarray, draws: int) -> np.ndarray:
    """``(len(index), draws)`` float64 uniforms in [0, 1), one independent row per index."""
    index = np.asarray(index, dtype=np.uint64)
    with np.errstate(over="ignore"):
        row = _mix64(np.uint64(key) ^ _mix64(index + np.uint64(_GOLDEN)))
        cols = np.arange(1, draws + 1, dtype=np.uint64) * np.uint64(_GOLDEN)
        bits = _mix64(row[:, None] + cols[None, :])
    return (bits >> np.uint64(11)).astype(np.float64) * 2.0**-53
