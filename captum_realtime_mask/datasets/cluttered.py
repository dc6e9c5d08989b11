"""Cluttered Fashion-MNIST: items composited onto real photographs, with ground-truth boxes."""

from __future__ import annotations

import functools
import hashlib
import json
import operator
import os
import warnings
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset
from torchvision.ops import masks_to_boxes

from captum_realtime_mask.checkpoint import atomic_write
from captum_realtime_mask.datasets.fashion_mnist import load_fashion_mnist
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

Split = Literal["train", "val", "test"]

#: Environment variable that overrides the cache folder (default ``~/.cache/captum_realtime_mask``).
CACHE_ENV = "CAPTUM_REALTIME_MASK_CACHE"

#: Photographs and textures from ``skimage.data`` that ship inside the scikit-image wheel and
#: load offline (checked with scikit-image 0.22 to 0.26). Grey images are used as grey RGB.
DEFAULT_BACKGROUNDS: tuple[str, ...] = (
    "astronaut",
    "brick",
    "camera",
    "chelsea",
    "clock",
    "coffee",
    "coins",
    "grass",
    "gravel",
    "hubble_deep_field",
    "immunohistochemistry",
    "moon",
    "page",
    "retina",
    "rocket",
    "stereo_motorcycle",
    "text",
)

#: Per-channel mean of the default configuration's images in ``[0, 1]`` (measured on 5,000
#: training composites); pair with :data:`CLUTTERED_STD` in a normalisation layer.
CLUTTERED_MEAN: tuple[float, float, float] = (0.3232, 0.2957, 0.2874)
#: Per-channel standard deviation of the default configuration's images, as :data:`CLUTTERED_MEAN`.
CLUTTERED_STD: tuple[float, float, float] = (0.1559, 0.1536, 0.1563)

_SPLIT_IDS = {"train": 1, "val": 2, "test": 3}
_FORMAT_VERSION = 1
_ITEM_SIDE = 28
_GOLDEN = 0x9E3779B97F4A7C15
_MASK64 = (1 << 64) - 1
_CHUNK = 256


def default_cache_dir() -> Path:
    """The package's cache folder: ``$CAPTUM_REALTIME_MASK_CACHE``, else ``~/.cache/...``.

    Returns:
        ``$CAPTUM_REALTIME_MASK_CACHE`` when set, else ``$XDG_CACHE_HOME/captum_realtime_mask``,
        else ``~/.cache/captum_realtime_mask``. The folder is not created here.
    """
    env = os.environ.get(CACHE_ENV)
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "captum_realtime_mask"


@dataclass(frozen=True)
class ClutteredConfig:
    """Everything that decides the cluttered Fashion-MNIST images.

    Each image is a square crop of a real photograph (``backgrounds``), resized to
    ``image_size``, with its contrast lowered and its brightness scaled, and one
    Fashion-MNIST item drawn over it: resized to a random side, placed at a uniformly random
    position (fully inside the canvas, so usually off-centre), optionally mirrored, and
    painted in a random bright colour. The item's grey level gives both its shading and its
    opacity: ``alpha = min(1, alpha_gain * intensity)``.

    Attributes:
        image_size: Side of the square RGB images, in pixels.
        scale_range: Side of the item's 28x28 frame as a fraction of ``image_size``, drawn
            uniformly from this range. The visible item is usually a little narrower.
        backgrounds: Names of ``skimage.data`` functions that return the background pictures.
        background_crop: Side of the square background crop as a fraction of the picture's
            short side (after it is resized so that side is ``3 * image_size``).
        background_contrast: Factor applied to the background's deviation from its own mean.
        background_brightness: Range of a random factor on the background's brightness.
        tint_saturation: Range of the item colour's HSV saturation.
        tint_value: Range of the item colour's HSV value (brightness).
        shade_floor: Darkest shade of the item colour, where the item's grey level is 0.
        alpha_gain: Opacity per unit of the item's grey level, clipped to 1.
        visible_alpha: Pixels with at least this opacity are the item's visible pixels; the
            ground-truth box is the tightest box around them.
        flip_items: Whether items are mirrored left-right with probability 1/2.
        n_train: Number of training images.
        n_val: Number of validation images.
        n_test: Number of test images.
        val_items: Number of Fashion-MNIST training items (the last ones) kept for validation.
        seed: Seed of every random choice; with the split, epoch and index it fixes an image.
    """

    image_size: int = 64
    scale_range: tuple[float, float] = (0.30, 0.65)
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
    _version: int = field(default=_FORMAT_VERSION, repr=False)

    def __post_init__(self) -> None:
        for name in ("image_size", "n_train", "n_val", "n_test", "val_items", "seed"):
            object.__setattr__(self, name, _as_int(getattr(self, name), f"ClutteredConfig.{name}"))
        if isinstance(self.backgrounds, (str, bytes)):
            raise InputError(
                "must be a sequence of skimage.data names, got the "
                f"string {self.backgrounds!r}. Hint: backgrounds=({self.backgrounds!r},).",
                argument="ClutteredConfig.backgrounds",
            )
        for name in ("scale_range", "background_crop", "background_brightness"):
            object.__setattr__(self, name, tuple(float(v) for v in getattr(self, name)))
        for name in ("tint_saturation", "tint_value"):
            object.__setattr__(self, name, tuple(float(v) for v in getattr(self, name)))
        object.__setattr__(self, "backgrounds", tuple(self.backgrounds))
        if self.image_size < 8:
            raise InputError(
                f"must be >= 8, got {self.image_size}.", argument="ClutteredConfig.image_size"
            )
        lo, hi = self.scale_range
        if not 0 < lo <= hi <= 1:
            raise InputError(
                "must satisfy 0 < low <= high <= 1 (fractions of "
                f"the canvas side), got {self.scale_range}.",
                argument="ClutteredConfig.scale_range",
            )
        for name in ("background_crop", "tint_saturation", "tint_value", "background_brightness"):
            lo, hi = getattr(self, name)
            if not 0 <= lo <= hi <= 1:
                raise InputError(
                    f"must satisfy 0 <= low <= high <= 1, got {getattr(self, name)}.",
                    argument=f"ClutteredConfig.{name}",
                )
        if not self.backgrounds:
            raise InputError(
                "is empty; name at least one picture.", argument="ClutteredConfig.backgrounds"
            )
        if not 0 < self.visible_alpha <= 1:
            raise InputError(
                f"must be in (0, 1], got {self.visible_alpha}.",
                argument="ClutteredConfig.visible_alpha",
            )
        for name in ("n_train", "n_val", "n_test"):
            if getattr(self, name) < 0:
                raise InputError(
                    f"must be >= 0, got {getattr(self, name)}.", argument=f"ClutteredConfig.{name}"
                )
        if not 0 < self.val_items < 60000:
            raise InputError(
                f"must be in [1, 59999], got {self.val_items}.",
                argument="ClutteredConfig.val_items",
            )

    def size_of(self, split: Split) -> int:
        """Number of images in ``split``."""
        return {"train": self.n_train, "val": self.n_val, "test": self.n_test}[_check_split(split)]

    def to_dict(self) -> dict:
        """A JSON-ready dictionary; :meth:`from_dict` inverts it."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> ClutteredConfig:
        """Rebuild a configuration from :meth:`to_dict`'s output (unknown keys are refused)."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise InputError(
                f"unknown keys {unknown}; expected some of {sorted(known)}.",
                argument="ClutteredConfig.from_dict",
            )
        return cls(**data)

    def cache_key(self, split: Split, epoch: int = 0) -> str:
        """A short hash of everything that decides ``split``'s images at ``epoch``."""
        data = self.to_dict()
        for other in ("train", "val", "test"):
            if other != split:
                del data[f"n_{other}"]
        data.update(split=split, epoch=int(epoch))
        blob = json.dumps(data, sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:16]


def _as_int(value: object, name: str) -> int:
    """``value`` as a Python int (NumPy and 0-d integer tensors too); InputError otherwise."""
    if isinstance(value, bool):
        raise InputError(f"must be an integer, got the bool {value!r}.", argument=name)
    try:
        return operator.index(value)  # type: ignore[arg-type]
    except TypeError:
        raise InputError(
            f"must be an integer, got {type(value).__name__} {value!r}. "
            f"Hint: pass int({value!r}) if a whole number is meant.",
            argument=name,
        ) from None


def _check_split(split: str) -> Split:
    if split not in _SPLIT_IDS:
        raise InputError(f"must be one of 'train', 'val', 'test'; got {split!r}.", argument="split")
    return split  # type: ignore[return-value]


# ---------------------------------------------------------------------------------------------
# Counter-based random numbers: every draw is a hash of (seed, split, epoch, index, draw), so
# sample i is the same whatever the split size or the order in which samples are built.


def _mix64(z: np.ndarray) -> np.ndarray:
    """SplitMix64's finaliser on a uint64 array (wrapping arithmetic)."""
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


def _stream_key(*parts: int) -> int:
    state = np.zeros(1, dtype=np.uint64)
    for part in parts:
        state = _mix64(state ^ np.uint64(int(part) & _MASK64)) + np.uint64(_GOLDEN)
    return int(state[0])


def _uniforms(key: int, index: np.ndarray, draws: int) -> np.ndarray:
    """``(len(index), draws)`` float64 uniforms in [0, 1), one independent row per index."""
    index = np.asarray(index, dtype=np.uint64)
    with np.errstate(over="ignore"):
        row = _mix64(np.uint64(key) ^ _mix64(index + np.uint64(_GOLDEN)))
        cols = np.arange(1, draws + 1, dtype=np.uint64) * np.uint64(_GOLDEN)
        bits = _mix64(row[:, None] + cols[None, :])
    return (bits >> np.uint64(11)).astype(np.float64) * 2.0**-53


# ---------------------------------------------------------------------------------------------
# Backgrounds


@dataclass(frozen=True)
class _Atlas:
    """All background pictures side by side in one tensor, for one grid_sample call."""

    pixels: torch.Tensor  # (1, 3, H, W) float32 in [0, 1]
    boxes: np.ndarray  # (B, 4): x0, y0, width, height of each picture in the atlas


def _load_picture(name: str) -> np.ndarray:
    """A uint8 (H, W, 3) picture from ``skimage.data``."""
    try:
        import skimage.data
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError(
            "ClutteredFashionMNIST needs scikit-image for its background pictures: "
            "pip install 'captum-realtime-mask[data]' (or scikit-image)."
        ) from exc
    loader = getattr(skimage.data, name, None)
    if loader is None or not callable(loader):
        raise InputError(
            f"background {name!r} is not a skimage.data picture; choose from names such as "
            f"{', '.join(DEFAULT_BACKGROUNDS)}."
        )
    try:
        picture = loader()
    except Exception as exc:  # optional pooch downloads, missing files
        raise InputError(
            f"background {name!r} could not be loaded offline from scikit-image ({exc}); "
            f"choose pictures that ship inside the wheel, such as {', '.join(DEFAULT_BACKGROUNDS)}."
        ) from exc
    if isinstance(picture, tuple):  # stereo_motorcycle returns (left, right, disparity)
        picture = picture[0]
    picture = np.asarray(picture)
    if picture.ndim == 2:
        picture = np.repeat(picture[..., None], 3, axis=-1)
    if picture.ndim != 3 or picture.shape[-1] not in (3, 4) or min(picture.shape[:2]) < 32:
        raise InputError(
            f"background {name!r} is not a colour or grey picture of at least 32x32 pixels "
            f"(shape {picture.shape})."
        )
    picture = picture[..., :3]
    if picture.dtype != np.uint8:
        picture = np.clip(np.asarray(picture, dtype=np.float64) * 255.0 + 0.5, 0, 255)
    return np.ascontiguousarray(picture, dtype=np.uint8)


@functools.lru_cache(maxsize=4)
def _atlas(names: tuple[str, ...], short_side: int) -> _Atlas:
    from PIL import Image

    tiles = []
    for name in names:
        picture = _load_picture(name)
        h, w = picture.shape[:2]
        ratio = short_side / min(h, w)
        size = (max(short_side, round(w * ratio)), max(short_side, round(h * ratio)))
        resized = Image.fromarray(picture).resize(size, Image.Resampling.BILINEAR)
        tiles.append(torch.from_numpy(np.array(resized)).permute(2, 0, 1)[None].float() / 255)
    height = max(t.shape[-2] for t in tiles)
    width = sum(t.shape[-1] for t in tiles)
    pixels = torch.zeros(1, 3, height, width)
    boxes, x = [], 0
    for tile in tiles:
        h, w = tile.shape[-2:]
        pixels[..., :h, x : x + w] = tile.clamp(0, 1)
        boxes.append((x, 0, w, h))
        x += w
    return _Atlas(pixels, np.asarray(boxes, dtype=np.float64))


def load_backgrounds(names: Sequence[str] = DEFAULT_BACKGROUNDS) -> dict[str, np.ndarray]:
    """Load background pictures from ``skimage.data`` (useful to check which load offline).

    Args:
        names: ``skimage.data`` function names.

    Returns:
        Each name mapped to a ``uint8`` RGB picture ``(H, W, 3)``.

    Raises:
        InputError: A name is unknown or its picture does not load offline.

    Example:
        >>> pictures = load_backgrounds(["brick", "coffee"])
        >>> {k: v.shape for k, v in pictures.items()}
        {'brick': (512, 512, 3), 'coffee': (400, 600, 3)}
    """
    return {name: _load_picture(name) for name in names}


# ---------------------------------------------------------------------------------------------
# Rendering

_DRAWS = 13  # uniforms per sample; the order below is part of the format (bump _FORMAT_VERSION)


def _hsv_to_rgb(h: np.ndarray, s: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Vectorised HSV (all in [0, 1]) to RGB, shape (N, 3)."""
    k = (np.array([5.0, 3.0, 1.0])[None, :] + h[:, None] * 6.0) % 6.0
    return v[:, None] - v[:, None] * s[:, None] * np.clip(np.minimum(k, 4.0 - k), 0.0, 1.0)


def _lerp(u: np.ndarray, bounds: tuple[float, float]) -> np.ndarray:
    return bounds[0] + u * (bounds[1] - bounds[0])


def _pixel_grid(
    size: int, x0: np.ndarray, y0: np.ndarray, side_x: np.ndarray, side_y: np.ndarray
) -> torch.Tensor:
    """Sampling grid (N, size, size, 2) mapping canvas pixels into [x0, x0+side) boxes."""
    centres = torch.arange(size, dtype=torch.float64) + 0.5
    gx = (centres[None, :] - torch.from_numpy(x0)[:, None]) / torch.from_numpy(side_x)[:, None]
    gy = (centres[None, :] - torch.from_numpy(y0)[:, None]) / torch.from_numpy(side_y)[:, None]
    gx, gy = gx * 2 - 1, gy * 2 - 1
    grid = torch.stack(
        torch.broadcast_tensors(gx[:, None, :], gy[:, :, None]),
        dim=-1,
    )
    return grid.float()


def render_composites(
    items: np.ndarray,
    uniforms: np.ndarray,
    config: ClutteredConfig,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Draw items over background crops; the pure, vectorised core of the dataset.

    Args:
        items: ``uint8`` grey items ``(N, h, w)``, white on black (Fashion-MNIST's layout).
        uniforms: ``(N, 13)`` uniforms in ``[0, 1)`` that decide every random choice.
        config: The drawing parameters (its split sizes and seed are not used here).

    Returns:
        ``(images, masks, boxes)``: ``uint8`` images ``(N, 3, S, S)``, boolean masks of the
        visible item pixels ``(N, S, S)`` (opacity at least ``config.visible_alpha``), and
        ``int64`` boxes ``(N, 4)`` as ``(x1, y1, x2, y2)`` pixel indices with inclusive
        maxima: the tightest box around the mask (``torchvision.ops.masks_to_boxes``).
    """
    n, size = len(items), config.image_size
    if uniforms.shape != (n, _DRAWS):
        raise InputError(
            f"uniforms must be ({n}, {_DRAWS}), got {uniforms.shape}.", argument="render_composites"
        )
    images = np.empty((n, 3, size, size), dtype=np.uint8)
    masks = np.empty((n, size, size), dtype=bool)
    boxes = np.empty((n, 4), dtype=np.int64)
    if n == 0:
        return images, masks, boxes
    atlas = _atlas(config.backgrounds, 3 * size)
    for start in range(0, n, _CHUNK):
        stop = min(n, start + _CHUNK)
        out = _render_chunk(items[start:stop], uniforms[start:stop], config, atlas)
        images[start:stop], masks[start:stop], boxes[start:stop] = out
    return images, masks, boxes


def _render_chunk(
    items: np.ndarray, u: np.ndarray, config: ClutteredConfig, atlas: _Atlas
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    n, size = len(items), config.image_size
    # Background: a square crop of one picture, maybe mirrored, contrast and brightness changed.
    which = np.minimum((u[:, 0] * len(atlas.boxes)).astype(np.int64), len(atlas.boxes) - 1)
    ax, ay, aw, ah = (atlas.boxes[which, k] for k in range(4))
    crop = _lerp(u[:, 1], config.background_crop) * np.minimum(aw, ah)
    cx = ax + u[:, 2] * (aw - crop)
    cy = ay + u[:, 3] * (ah - crop)
    flip = u[:, 4] < 0.5
    atlas_h, atlas_w = atlas.pixels.shape[-2:]
    # Canvas pixel centre t in [0, size) maps to atlas x = cx + crop * t / size (mirrored: the
    # crop's right edge first). Grid coordinates are normalised to the whole atlas.
    t = (np.arange(size) + 0.5) / size
    xs = np.where(
        flip[:, None], cx[:, None] + crop[:, None] * (1 - t), cx[:, None] + crop[:, None] * t
    )
    ys = cy[:, None] + crop[:, None] * t
    gx = torch.from_numpy(xs / atlas_w * 2 - 1).float()
    gy = torch.from_numpy(ys / atlas_h * 2 - 1).float()
    grid = torch.stack(torch.broadcast_tensors(gx[:, None, :], gy[:, :, None]), dim=-1)
    grid = grid.reshape(1, n * size, size, 2)
    background = F.grid_sample(atlas.pixels, grid, mode="bilinear", align_corners=False)
    background = background.view(3, n, size, size).transpose(0, 1).contiguous()
    mean = background.mean(dim=(1, 2, 3), keepdim=True)
    brightness = torch.from_numpy(_lerp(u[:, 5], config.background_brightness)).float()
    brightness = brightness.view(n, 1, 1, 1)
    contrast = config.background_contrast
    # (mean + contrast * (background - mean)) * brightness, in place.
    background.mul_(contrast * brightness).add_(mean * ((1 - contrast) * brightness))

    # Item: a random side and position fully inside the canvas, maybe mirrored.
    side = _lerp(u[:, 6], config.scale_range) * size
    x0 = u[:, 7] * (size - side)
    y0 = u[:, 8] * (size - side)
    item = torch.from_numpy(np.ascontiguousarray(items)).float().div_(255.0)[:, None]
    if config.flip_items:
        mirrored = torch.from_numpy(u[:, 12] < 0.5)
        item = torch.where(mirrored.view(n, 1, 1, 1), item.flip(-1), item)
    grid = _pixel_grid(size, x0, y0, side, side)
    intensity = F.grid_sample(
        item, grid, mode="bilinear", padding_mode="zeros", align_corners=False
    )
    intensity = intensity.clamp_(0, 1)
    alpha = (config.alpha_gain * intensity).clamp_(max=1.0)

    # Colour: a bright random tint, shaded by the item's grey level.
    hue, sat = u[:, 9], _lerp(u[:, 10], config.tint_saturation)
    value = _lerp(u[:, 11], config.tint_value)
    tint = torch.from_numpy(_hsv_to_rgb(hue, sat, value)).float().view(n, 3, 1, 1)
    # background * (1 - alpha) + tint * shade * alpha, in place.
    image = (intensity * (1 - config.shade_floor)).add_(config.shade_floor).mul(tint)
    image.sub_(background).mul_(alpha).add_(background)
    image = image.clamp_(0, 1).mul_(255).round_().to(torch.uint8)

    mask = alpha[:, 0] >= config.visible_alpha
    empty = ~mask.flatten(1).any(dim=1)
    if empty.any():  # a blank item (does not occur in Fashion-MNIST): mark its brightest pixel
        flat = alpha[empty, 0].flatten(1).argmax(dim=1)
        mask[empty] = F.one_hot(flat, size * size).view(-1, size, size).bool()
    boxes = masks_to_boxes(mask).round().to(torch.int64)
    return image.numpy(), mask.numpy(), boxes.numpy()


# ---------------------------------------------------------------------------------------------
# The dataset


def _write_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    with open(path, "wb") as handle:
        np.savez(handle, **arrays)


class ClutteredFashionMNIST(Dataset):
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
        self.split: Split = _check_split(split)
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

    @property
    def cache_path(self) -> Path:
        """Where this split and epoch are (or would be) cached."""
        folder = self.cache_dir if self.cache_dir is not None else default_cache_dir()
        key = self.config.cache_key(self.split, self.epoch)
        return folder / "datasets" / f"cluttered-fmnist-{self.split}-e{self.epoch}-{key}.npz"

    def set_epoch(self, epoch: int) -> None:
        """Switch to draw ``epoch`` of the split (rebuilds or loads its images).

        Args:
            epoch: A non-negative integer; each gives an independent draw of the split.

        Raises:
            InputError: ``epoch`` is not a non-negative integer.
        """
        epoch = _as_int(epoch, "epoch")
        if epoch < 0:
            raise InputError(f"must be >= 0, got {epoch}.", argument="epoch")
        if epoch == self.epoch:
            return
        self.epoch = epoch
        arrays = self._load_cache() if self.cache else None
        if arrays is None:
            arrays = self._build()
            if self.cache:
                self._write_cache(arrays)
        size = self.config.image_size
        self.images = torch.from_numpy(arrays["images"])
        self.labels = torch.from_numpy(arrays["labels"])
        self.boxes = torch.from_numpy(arrays["boxes"])
        packed = arrays["masks"]
        self.masks = torch.from_numpy(
            np.unpackbits(packed, axis=-1, count=size * size).reshape(-1, size, size).astype(bool)
        )
        self.item_indices = torch.from_numpy(arrays["item_indices"])

    def _pool(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Item images, labels and their Fashion-MNIST indices available to this split."""
        source = "test" if self.split == "test" else "train"
        images, labels = load_fashion_mnist(source, root=self.root, download=self.download)
        index = np.arange(len(images))
        if self.split == "train":
            index = index[: len(images) - self.config.val_items]
        elif self.split == "val":
            index = index[len(images) - self.config.val_items :]
        return images, labels, index

    def _build(self) -> dict[str, np.ndarray]:
        cfg, n = self.config, self.config.size_of(self.split)
        images, labels, pool = self._pool()
        split_id = _SPLIT_IDS[self.split]
        order = np.argsort(
            _uniforms(_stream_key(cfg.seed, split_id, 0), np.arange(len(pool)), 1)[:, 0]
        )
        pick = pool[order[(np.arange(n) + self.epoch * n) % len(pool)]]
        u = _uniforms(_stream_key(cfg.seed, split_id, 1, self.epoch), np.arange(n), _DRAWS)
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
            "format": _FORMAT_VERSION,
            "split": self.split,
            "epoch": self.epoch,
            "config": self.config.to_dict(),
        }

    def _split_fields(self, meta: dict) -> dict:
        """``meta`` without the other splits' sizes, which do not change this split's images."""
        config = {k: v for k, v in meta.get("config", {}).items()}
        for other in ("train", "val", "test"):
            if other != self.split:
                config.pop(f"n_{other}", None)
        return {**meta, "config": config}

    def _write_cache(self, arrays: dict[str, np.ndarray]) -> None:
        """Store the arrays in the cache; a folder that cannot be written only warns."""
        path = self.cache_path
        try:
            atomic_write(path, functools.partial(_write_npz, arrays=arrays))
        except OSError as exc:  # read-only or full disk, a folder in the way: keep going
            warnings.warn(
                f"ClutteredFashionMNIST: could not write the cache file {path} ({exc}); the "
                f"images are kept in memory only. Hint: point cache_dir= or ${CACHE_ENV} at a "
                "writable folder, or pass cache=False.",
                RuntimeWarning,
                stacklevel=3,
            )

    def _load_cache(self) -> dict[str, np.ndarray] | None:
        path = self.cache_path
        if not path.is_file():
            return None
        try:
            # Our own handle, closed even when np.load fails on a truncated file.
            with open(path, "rb") as handle, np.load(handle, allow_pickle=False) as data:
                arrays = {key: data[key] for key in data.files}
            meta = json.loads(str(arrays["meta"]))
            n = self.config.size_of(self.split)
            wanted = json.loads(json.dumps(self._meta(), sort_keys=True))
            if self._split_fields(meta) != self._split_fields(wanted):
                raise ValueError("its parameters differ from the requested ones")
            if arrays["images"].shape != (n, 3, self.config.image_size, self.config.image_size):
                raise ValueError(f"its images have shape {arrays['images'].shape}")
            for key in ("labels", "boxes", "masks", "item_indices"):
                if len(arrays[key]) != n:
                    raise ValueError(f"its {key} have length {len(arrays[key])}, not {n}")
            return arrays
        except Exception as exc:  # unreadable, truncated or foreign file: rebuild it
            warnings.warn(
                f"ClutteredFashionMNIST: ignoring the cache file {path} ({exc}); rebuilding it.",
                RuntimeWarning,
                stacklevel=3,
            )
            return None

    # -- access -----------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self.labels)

    def _check_index(self, index: object) -> int:
        """``index`` as a non-negative int (negative ones count from the end, as for lists)."""
        try:
            if isinstance(index, bool):
                raise TypeError
            i = operator.index(index)  # type: ignore[arg-type]
        except TypeError:
            raise TypeError(
                f"{type(self).__name__} index must be an integer, got "
                f"{type(index).__name__}. Hint: for several images use float_images(indices), "
                "a DataLoader or torch.utils.data.Subset."
            ) from None
        n = len(self)
        if not -n <= i < n:
            raise IndexError(
                f"{type(self).__name__} index {i} is out of range for {n} images "
                f"(valid: {-n} to {n - 1})."
            )
        return i + n if i < 0 else i

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
    if generator is None:
        generator = torch.Generator().manual_seed(config.seed)
    loaders = {}
    for split in splits:
        dataset = ClutteredFashionMNIST(
            split,
            config,
            root=root,
            download=download,
            cache_dir=cache_dir,
            cache=cache,
            return_boxes=return_boxes,
            transform=transform,
            target_transform=target_transform,
        )
        loaders[split] = DataLoader(
            dataset,
            batch_size=batch_size,
            shuffle=split == "train",
            num_workers=num_workers,
            generator=generator if split == "train" else None,
        )
    return loaders


def _measure_normalisation(n: int = 5000) -> tuple[list[float], list[float]]:
    """Recompute :data:`CLUTTERED_MEAN` and :data:`CLUTTERED_STD` (for maintainers)."""
    dataset = ClutteredFashionMNIST("train", ClutteredConfig(n_train=n), cache=False)
    pixels = dataset.float_images().transpose(0, 1).reshape(3, -1).double()
    return [round(float(v), 4) for v in pixels.mean(1)], [round(float(v), 4) for v in pixels.std(1)]
