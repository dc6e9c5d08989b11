"""Scenes of Fashion-MNIST: one to several items of distinct classes per real photograph.

:class:`FashionMNISTScenes` is the several-object sibling of
:class:`~captum_realtime_mask.datasets.cluttered.ClutteredFashionMNIST`: the same items, the
same ``skimage.data`` photographs and the same compositing
(:func:`~captum_realtime_mask.datasets.rendering.render_scenes` shares its drawing code with
``render_composites``), but each image shows ``min_items`` to ``max_items`` items of distinct
classes, each with its own box and class, and a multi-hot label. ``min_items = max_items = 1``
is a single-object scene, so one code path serves the single- and the several-object suites.

Measured on the default :class:`SceneConfig` (96 px images, item frames of 28.8 to 40.3 px,
``max_iou=0.1``) over 3,000 test scenes of the real Fashion-MNIST:

* item counts 1, 2, 3: 32.5 %, 34.9 %, 32.6 % (uniform, ``count_weights=None``);
* visible item boxes: mean side (mean of width and height) 28.6 px, 10th to 90th percentile
  23 to 34.5 px; mean height 30.1 px, mean width 27.1 px;
* boxes of two items that touch at all (IoU > 0): in 27.7 % of all images (41 % of those with
  several items); over ``max_iou``: none (largest IoU 0.092).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, default_collate

from captum_realtime_mask._checks import describe, flag, integer, real
from captum_realtime_mask.datasets.cluttered import (
    SPLIT_IDS,
    split_uniforms,
    stream_key,
)
from captum_realtime_mask.datasets.config import (
    DEFAULT_BACKGROUNDS,
    SPLITS,
    Split,
    check_drawing_fields,
    check_split,
)
from captum_realtime_mask.datasets.rendering import render_scenes
from captum_realtime_mask.datasets.splits import CachedSplit, split_dataloaders
from captum_realtime_mask.errors import InputError

__all__ = [
    "NUM_CLASSES",
    "SCENES_FORMAT_VERSION",
    "FashionMNISTScenes",
    "SceneConfig",
    "scene_collate",
    "scene_dataloaders",
]

#: Fashion-MNIST's number of classes: the length of a multi-hot label.
NUM_CLASSES = 10

#: Version of the scenes a configuration stands for (part of its cache key and cache files).
SCENES_FORMAT_VERSION = 1

#: Random streams of the scenes (kept apart from the cluttered set's 0 and 1).
_SCENE_STREAM = 2
_COUNT, _CLASSES, _PICKS, _LOOKS, _BACKGROUND, _PLACES = range(6)


@dataclass(frozen=True)
class SceneConfig:
    """Everything that decides the scenes: how many items, how big, how far apart.

    Each image is drawn like a :class:`~captum_realtime_mask.datasets.ClutteredConfig`
    image (a square crop of a real photograph, its contrast lowered and brightness scaled)
    with ``count`` Fashion-MNIST items over it instead of one, ``count`` drawn from
    ``min_items .. max_items`` with weights ``count_weights``. The items are of distinct
    classes. Each is resized, placed fully inside the canvas, maybe mirrored and tinted as in
    the cluttered set; its place is drawn by rejection sampling: up to ``placement_tries``
    uniform places, the first whose box has an IoU of at most ``max_iou`` with every box
    placed before it (when none does, the try with the smallest overlap).

    Attributes:
        image_size: Side of the square RGB images, in pixels (at least 8).
        min_items: Fewest items in an image (at least 1).
        max_items: Most items in an image (``min_items`` to 10, as classes are distinct).
        count_weights: Relative weights of the counts ``min_items .. max_items`` (one per
            count, non-negative, not all zero); None for uniform counts.
        scale_range: Side of each item's 28x28 frame as a fraction of ``image_size``.
        max_iou: Largest IoU accepted between the boxes of two items of an image.
        placement_tries: Places tried per item before the least overlapping one is kept.
        backgrounds: As :class:`~captum_realtime_mask.datasets.ClutteredConfig`.
        background_crop: As ``ClutteredConfig``.
        background_contrast: As ``ClutteredConfig``.
        background_brightness: As ``ClutteredConfig``.
        tint_saturation: As ``ClutteredConfig``.
        tint_value: As ``ClutteredConfig``.
        shade_floor: As ``ClutteredConfig``.
        alpha_gain: As ``ClutteredConfig``.
        visible_alpha: As ``ClutteredConfig``; each box is the tightest box around its
            item's own pixels of at least this opacity.
        flip_items: As ``ClutteredConfig``.
        n_train: Number of training images.
        n_val: Number of validation images.
        n_test: Number of test images.
        val_items: Fashion-MNIST training items (the last ones) kept for validation.
        seed: Seed of every random choice; with the split, epoch and index it fixes a scene.

    Raises:
        InputError: A field has the wrong type or is out of range, naming the field as
            ``SceneConfig.<field>``.
    """

    image_size: int = 96
    min_items: int = 1
    max_items: int = 3
    count_weights: tuple[float, ...] | None = None
    scale_range: tuple[float, float] = (0.30, 0.42)
    max_iou: float = 0.1
    placement_tries: int = 100
    backgrounds: tuple[str, ...] = DEFAULT_BACKGROUNDS
    background_crop: tuple[float, float] = (0.33, 0.67)
    background_contrast: float = 0.7
    background_brightness: tuple[float, float] = (0.45, 0.8)
    tint_saturation: tuple[float, float] = (0.0, 0.9)
    tint_value: tuple[float, float] = (0.8, 1.0)
    shade_floor: float = 0.3
    alpha_gain: float = 3.0
    visible_alpha: float = 0.5
    flip_items: bool = True
    n_train: int = 20000
    n_val: int = 2000
    n_test: int = 5000
    val_items: int = 5000
    seed: int = 0
    _version: int = field(default=SCENES_FORMAT_VERSION, repr=False)

    def __post_init__(self) -> None:
        def name(attr: str) -> str:
            return f"SceneConfig.{attr}"

        checked: dict[str, Any] = {
            **check_drawing_fields(self, name),
            "min_items": integer(self.min_items, name("min_items"), 1),
            "max_items": integer(self.max_items, name("max_items"), 1),
            "max_iou": real(self.max_iou, name("max_iou"), 0, 1),
            "placement_tries": integer(self.placement_tries, name("placement_tries"), 1),
        }
        low, high = checked["min_items"], checked["max_items"]
        if high > NUM_CLASSES:
            raise InputError(
                f"expected at most {NUM_CLASSES} (the items of an image have distinct "
                f"classes), got {high}.",
                name("max_items"),
            )
        if high < low:
            raise InputError(
                f"expected max_items >= min_items = {low}, got {high}. Hint: "
                f"min_items=max_items={low} gives scenes of exactly {low} item(s).",
                name("max_items"),
            )
        checked["count_weights"] = _weights(self.count_weights, high - low + 1, name)
        for attr, value in checked.items():
            object.__setattr__(self, attr, value)

    def size_of(self, split: Split) -> int:
        """Number of images in ``split``."""
        return {"train": self.n_train, "val": self.n_val, "test": self.n_test}[check_split(split)]

    def count_probabilities(self) -> np.ndarray:
        """Probability of each count ``min_items .. max_items`` (float64, sums to 1)."""
        span = self.max_items - self.min_items + 1
        weights = np.ones(span) if self.count_weights is None else np.asarray(self.count_weights)
        return weights / weights.sum()

    def to_dict(self) -> dict:
        """A JSON-ready dictionary; :meth:`from_dict` inverts it."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> SceneConfig:
        """Rebuild a configuration from :meth:`to_dict`'s output (unknown keys are refused)."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise InputError(
                f"unknown keys {unknown}; expected some of {sorted(known)}.",
                argument="SceneConfig.from_dict",
            )
        return cls(**data)

    def cache_key(self, split: Split, epoch: int = 0) -> str:
        """A short hash of everything that decides ``split``'s scenes at ``epoch``."""
        data = self.to_dict()
        for other in SPLITS:
            if other != split:
                del data[f"n_{other}"]
        data.update(kind="scenes", split=split, epoch=int(epoch))
        blob = json.dumps(data, sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:16]


def _weights(value: Any, span: int, name: Callable[[str], str]) -> tuple[float, ...] | None:
    """``count_weights``: None, or one non-negative weight per count, not all zero."""
    if value is None:
        return None
    if isinstance(value, (str, bytes)) or not hasattr(value, "__len__") or len(value) != span:
        raise InputError(
            f"expected None or {span} weights (one per count from min_items to max_items), "
            f"got {describe(value)}.",
            name("count_weights"),
        )
    weights = tuple(real(w, name("count_weights"), 0) for w in value)
    if sum(weights) <= 0:
        raise InputError("expected some positive weight, got only zeros.", name("count_weights"))
    return weights


class FashionMNISTScenes(CachedSplit):
    """Scenes: 1 to ``max_items`` Fashion-MNIST items of distinct classes on a real photograph.

    Splits and pools are those of ``ClutteredFashionMNIST``: ``"train"`` and ``"val"`` draw
    items from Fashion-MNIST's training set (its last ``config.val_items`` are the validation
    pool), ``"test"`` from its test set. Scene ``i`` of a split at an epoch depends only on
    ``(config, split, epoch, i)`` (counter-based random streams), so a smaller split is a
    prefix of a larger one and :meth:`set_epoch` redraws the training scenes.

    Each item is ``(image, label, boxes, classes)``:

    * ``image``: float32 ``(3, S, S)`` in ``[0, 1]`` (as the cluttered set; pass
      ``transform`` to normalise it);
    * ``label``: float32 multi-hot ``(10,)``, 1 at each class in the scene;
    * ``boxes``: int64 ``(K, 4)``, ``(x1, y1, x2, y2)`` pixel indices with inclusive maxima,
      the tightest box around each item's own visible pixels (opacity at least
      ``config.visible_alpha``; an item drawn later may cover a little of it);
    * ``classes``: int64 ``(K,)``, each box's class, in drawing order.

    ``K`` varies from scene to scene, so batch with :func:`scene_collate` (or use
    :func:`scene_dataloaders`). With ``return_boxes=False`` items are ``(image, label)``,
    which the default collate stacks.

    Args:
        split: ``"train"``, ``"val"`` or ``"test"``.
        config: The scene parameters (defaults: :class:`SceneConfig`).
        epoch: Which draw of the split to build (0 for validation and test).
        root: Folder of the Fashion-MNIST IDX files (see ``find_fashion_mnist``).
        download: Let ``find_fashion_mnist`` download the files when they are nowhere.
        cache_dir: Cache folder (default :func:`default_cache_dir`); the scenes are stored
            there as ``datasets/scenes-fmnist-<split>-e<epoch>-<key>.npz``, written
            atomically.
        cache: Whether to read and write that cache. A cache folder that cannot be written
            only costs a warning.
        return_boxes: Whether items include the boxes and classes.
        transform: Called on each float32 image before it is returned (keep the geometry
            when the boxes are used).
        target_transform: Called on each multi-hot label before it is returned.

    Attributes:
        images: ``uint8`` tensor ``(N, 3, S, S)``.
        counts: ``int64`` tensor ``(N,)``: items per scene.
        classes: ``int64`` tensor ``(N, max_items)``, -1 past each scene's count.
        boxes: ``int64`` tensor ``(N, max_items, 4)``, -1 past each scene's count.
        labels: ``float32`` multi-hot tensor ``(N, 10)``.
        item_indices: ``int64`` tensor ``(N, max_items)``: each item's index in its
            Fashion-MNIST split, -1 past each scene's count.

    Example:
        >>> ds = FashionMNISTScenes("test", SceneConfig(n_test=4), cache=False)
        >>> image, label, boxes, classes = ds[0]
        >>> image.shape, label.shape, boxes.shape[1], len(classes) == len(boxes)
        (torch.Size([3, 96, 96]), torch.Size([10]), 4, True)
    """

    _CACHE_PREFIX = "scenes-fmnist"
    _WHAT = "scenes"

    def __init__(
        self,
        split: Split = "train",
        config: SceneConfig | None = None,
        *,
        epoch: int = 0,
        root: str | os.PathLike[str] | None = None,
        download: bool = False,
        cache_dir: str | os.PathLike[str] | None = None,
        cache: bool = True,
        return_boxes: bool = True,
        transform: Callable[[torch.Tensor], Any] | None = None,
        target_transform: Callable[[torch.Tensor], Any] | None = None,
    ) -> None:
        self.split: Split = check_split(split)
        for name, fn in (("transform", transform), ("target_transform", target_transform)):
            if fn is not None and not callable(fn):
                raise InputError(f"must be a callable or None, got {describe(fn)}.", name)
        self.config = config if config is not None else SceneConfig()
        if not isinstance(self.config, SceneConfig):
            raise InputError(
                f"must be a SceneConfig, got {type(self.config).__name__}; build one with "
                "SceneConfig(...) (min_items=max_items=1 for single-object scenes).",
                argument="config",
            )
        self.root = root
        self.download = download
        self.cache_dir = Path(cache_dir).expanduser() if cache_dir is not None else None
        self.cache = flag(cache, "cache")
        self.return_boxes = flag(return_boxes, "return_boxes")
        self.transform = transform
        self.target_transform = target_transform
        self.epoch = -1
        self.set_epoch(epoch)

    # -- building ---------------------------------------------------------------------------

    def _adopt(self, arrays: dict[str, np.ndarray]) -> None:
        self.images = torch.from_numpy(arrays["images"])
        self.counts = torch.from_numpy(arrays["counts"])
        self.classes = torch.from_numpy(arrays["classes"])
        self.boxes = torch.from_numpy(arrays["boxes"])
        self.item_indices = torch.from_numpy(arrays["item_indices"])
        self._packed_masks = arrays["masks"]
        labels = torch.zeros(len(self.counts), NUM_CLASSES)
        present = self.classes >= 0
        rows = torch.arange(len(self.counts))[:, None].expand_as(self.classes)
        labels[rows[present], self.classes[present]] = 1.0
        self.labels = labels

    def masks(self, index: int) -> torch.Tensor:
        """Boolean masks ``(K, S, S)`` of scene ``index``'s items' own visible pixels."""
        i = self._check_index(index)
        size, count = self.config.image_size, int(self.counts[i])
        bits = np.unpackbits(self._packed_masks[i, :count], axis=-1, count=size * size)
        return torch.from_numpy(bits.reshape(count, size, size).astype(bool))

    def _build(self) -> dict[str, np.ndarray]:
        cfg, n, top = self.config, self.config.size_of(self.split), self.config.max_items
        images, labels, pool = self._pool()
        idx = np.arange(n)

        def draw(purpose: int, draws: int) -> np.ndarray:
            key = stream_key(cfg.seed, SPLIT_IDS[self.split], _SCENE_STREAM, self.epoch, purpose)
            return split_uniforms(key, idx, draws)

        # How many items, of which distinct classes, and which item of each class.
        cdf = np.cumsum(cfg.count_probabilities())
        counts = cfg.min_items + np.minimum(
            np.searchsorted(cdf, draw(_COUNT, 1)[:, 0], side="right"), len(cdf) - 1
        )
        classes = np.argsort(draw(_CLASSES, NUM_CLASSES), axis=1)[:, :top]
        picks = np.zeros((n, top), dtype=np.int64)
        u_pick = draw(_PICKS, top)
        for c in range(NUM_CLASSES):
            members = pool[labels[pool] == c]
            chosen = classes == c
            if chosen.any() and len(members) == 0:
                raise InputError(
                    f"the {self.split!r} item pool has no item of class {c}; scenes need "
                    "every class. Hint: raise val_items.",
                    argument="SceneConfig.val_items",
                )
            if chosen.any():
                at = np.minimum((u_pick[chosen] * len(members)).astype(np.int64), len(members) - 1)
                picks[chosen] = members[at]
        items = images[picks]  # (n, top, 28, 28)

        looks = draw(_LOOKS, 5 * top).reshape(n, top, 5)  # side, hue, sat, value, mirror
        item_u = np.empty((n, top, 7))
        item_u[..., 0], item_u[..., 3:] = looks[..., 0], looks[..., 1:]
        item_u[..., 1:3] = _place(items, item_u, counts, cfg, draw)
        rendered, masks, boxes = render_scenes(items, draw(_BACKGROUND, 6), item_u, counts, cfg)
        absent = np.arange(top)[None, :] >= counts[:, None]
        classes = np.where(absent, -1, classes).astype(np.int64)
        picks = np.where(absent, -1, picks)
        size = cfg.image_size
        return {
            "images": rendered,
            "counts": counts.astype(np.int64),
            "classes": classes,
            "boxes": boxes,
            "masks": np.packbits(masks.reshape(n, top, size * size), axis=-1),
            "item_indices": picks,
            "meta": np.asarray(json.dumps(self._meta(), sort_keys=True)),
        }

    def _meta(self) -> dict:
        return {
            "format": SCENES_FORMAT_VERSION,
            "kind": "scenes",
            "split": self.split,
            "epoch": self.epoch,
            "config": self.config.to_dict(),
        }

    def _check_arrays(self, arrays: dict[str, np.ndarray]) -> None:
        n, size = self.config.size_of(self.split), self.config.image_size
        top = self.config.max_items
        shapes = {
            "images": (n, 3, size, size),
            "counts": (n,),
            "classes": (n, top),
            "boxes": (n, top, 4),
            "masks": (n, top, (size * size + 7) // 8),
            "item_indices": (n, top),
        }
        for key, shape in shapes.items():
            if arrays[key].shape != shape:
                raise ValueError(f"its {key} have shape {arrays[key].shape}, not {shape}")

    # -- access -----------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self.counts)

    def __getitem__(self, index: int) -> tuple[Any, ...]:
        """Scene ``index``: ``(image, label, boxes, classes)``, or ``(image, label)``.

        Raises:
            TypeError: ``index`` is not an integer.
            IndexError: ``index`` is out of range.
        """
        i = self._check_index(index)
        image: Any = self.images[i].float().div_(255.0)
        label: Any = self.labels[i].clone()
        if self.transform is not None:
            image = self.transform(image)
        if self.target_transform is not None:
            label = self.target_transform(label)
        if not self.return_boxes:
            return image, label
        count = int(self.counts[i])
        return image, label, self.boxes[i, :count].clone(), self.classes[i, :count].clone()

    def float_images(
        self, indices: torch.Tensor | Sequence[int] | slice | None = None
    ) -> torch.Tensor:
        """Images as float32 ``(N, 3, S, S)`` in ``[0, 1]``, all of them or a selection."""
        selected = self.images if indices is None else self.images[indices]
        return selected.float().div_(255.0)

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(split={self.split!r}, n={len(self)}, epoch={self.epoch}, "
            f"items={self.config.min_items}..{self.config.max_items})"
        )


def _place(
    items: np.ndarray,
    item_u: np.ndarray,
    counts: np.ndarray,
    cfg: SceneConfig,
    draw: Callable[[int, int], np.ndarray],
) -> np.ndarray:
    """The ``(x, y)`` position uniforms ``(N, K, 2)`` of every item, by rejection sampling.

    Boxes are predicted from each item's visible pixels in its own frame (scaled to its side,
    mirrored with it, widened by a pixel for the interpolation); item ``k`` takes the
    first of ``placement_tries`` uniform places whose box has an IoU of at most ``max_iou``
    with the boxes of items ``0 .. k - 1``, or else the least overlapping place.
    """
    n, top, h, w = items.shape
    size, tries = cfg.image_size, cfg.placement_tries
    visible = items.astype(np.float64) / 255.0 * cfg.alpha_gain >= cfg.visible_alpha
    cols, rows = visible.any(axis=2), visible.any(axis=3)  # (n, top, w), (n, top, h)

    def extent(on: np.ndarray, length: int) -> tuple[np.ndarray, np.ndarray]:
        first = np.where(on.any(-1), on.argmax(-1), 0)
        last = np.where(on.any(-1), length - 1 - on[..., ::-1].argmax(-1), length - 1)
        return first.astype(np.float64), last + 1.0

    c0, c1 = extent(cols, w)
    r0, r1 = extent(rows, h)
    if cfg.flip_items:
        mirrored = item_u[..., 6] < 0.5
        c0, c1 = np.where(mirrored, w - c1, c0), np.where(mirrored, w - c0, c1)
    side = (cfg.scale_range[0] + item_u[..., 0] * (cfg.scale_range[1] - cfg.scale_range[0])) * size
    # Box of the item relative to its frame's corner, in canvas pixels (n, top, 4).
    rel = np.stack([c0 / w * side, r0 / h * side, c1 / w * side, r1 / h * side], -1)
    rel += np.array([-1.0, -1.0, 1.0, 1.0])
    out = np.empty((n, top, 2))
    placed = np.zeros((n, top, 4))
    for k in range(top):
        u = draw(_PLACES + k, 2 * tries).reshape(n, tries, 2)
        room = (size - side[:, k])[:, None]
        corner = u * room[..., None]  # (n, tries, 2)
        boxes = rel[:, k, None, :] + np.concatenate([corner, corner], -1)  # (n, tries, 4)
        if k == 0:
            choice = np.zeros(n, dtype=np.int64)
        else:
            worst = _iou(boxes[:, :, None, :], placed[:, None, :k, :]).max(-1)  # (n, tries)
            ok = worst <= cfg.max_iou
            choice = np.where(ok.any(1), ok.argmax(1), worst.argmin(1))
        out[:, k] = u[idx := np.arange(n), choice]
        placed[:, k] = boxes[idx, choice]
    return out


def _iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of broadcast boxes ``(..., 4)`` given as ``(x1, y1, x2, y2)`` edges."""
    wx = np.clip(np.minimum(a[..., 2], b[..., 2]) - np.maximum(a[..., 0], b[..., 0]), 0, None)
    wy = np.clip(np.minimum(a[..., 3], b[..., 3]) - np.maximum(a[..., 1], b[..., 1]), 0, None)
    inter = wx * wy
    area_a = (a[..., 2] - a[..., 0]) * (a[..., 3] - a[..., 1])
    area_b = (b[..., 2] - b[..., 0]) * (b[..., 3] - b[..., 1])
    return inter / np.maximum(area_a + area_b - inter, 1e-12)


def scene_collate(batch: Sequence[tuple[Any, ...]]) -> tuple[Any, ...]:
    """Batch scenes: stack images and labels, keep the variable-length boxes as lists.

    Args:
        batch: Items of :class:`FashionMNISTScenes`.

    Returns:
        ``(images (B, 3, S, S), labels (B, 10), boxes, classes)`` where ``boxes`` is a list
        of ``B`` int64 tensors ``(K_i, 4)`` and ``classes`` a list of ``B`` int64 tensors
        ``(K_i,)``; items without boxes are batched by PyTorch's default collate.
    """
    if batch and len(batch[0]) == 4:
        images, labels, boxes, classes = zip(*batch, strict=True)
        return default_collate(images), default_collate(labels), list(boxes), list(classes)
    return default_collate(batch)


def scene_dataloaders(
    config: SceneConfig | None = None,
    batch_size: int = 128,
    *,
    splits: Sequence[Split] = ("train", "val", "test"),
    return_boxes: bool = True,
    num_workers: int = 0,
    root: str | os.PathLike[str] | None = None,
    download: bool = False,
    cache_dir: str | os.PathLike[str] | None = None,
    cache: bool = True,
    generator: torch.Generator | None = None,
    transform: Callable[[torch.Tensor], Any] | None = None,
    target_transform: Callable[[torch.Tensor], Any] | None = None,
) -> dict[str, DataLoader]:
    """DataLoaders of the scene splits, batched with :func:`scene_collate`; only train shuffles.

    Args:
        config: The scene parameters (defaults: :class:`SceneConfig`).
        batch_size: Scenes per batch.
        splits: Which splits to build.
        return_boxes: Whether batches are ``(images, labels, boxes, classes)`` rather than
            ``(images, labels)``.
        num_workers: Passed to each DataLoader.
        root: Folder of the Fashion-MNIST IDX files.
        download: Let ``find_fashion_mnist`` download the files when they are nowhere.
        cache_dir: Cache folder (default :func:`default_cache_dir`).
        cache: Whether to use the on-disk cache.
        generator: Random generator of the training shuffle (seeded from ``config.seed``
            when None).
        transform: Given to every split's dataset.
        target_transform: Given to every split's dataset.

    Returns:
        A dictionary from split name to its DataLoader; ``loader.dataset`` is the
        :class:`FashionMNISTScenes`.
    """
    config = config if config is not None else SceneConfig()
    return split_dataloaders(
        FashionMNISTScenes,
        config,
        splits,
        batch_size,
        num_workers,
        generator,
        scene_collate,
        root=root,
        download=download,
        cache_dir=cache_dir,
        cache=cache,
        return_boxes=return_boxes,
        transform=transform,
        target_transform=target_transform,
    )
