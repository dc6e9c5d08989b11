"""The parameters of cluttered Fashion-MNIST: :class:`ClutteredConfig` and the split names."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Literal

from captum_realtime_mask._checks import describe, flag, integer, real
from captum_realtime_mask.errors import InputError

__all__ = [
    "CLUTTERED_MEAN",
    "CLUTTERED_STD",
    "DEFAULT_BACKGROUNDS",
    "FORMAT_VERSION",
    "SPLITS",
    "ClutteredConfig",
    "Split",
    "check_split",
]

Split = Literal["train", "val", "test"]

#: The split names, in the order of their random streams.
SPLITS: tuple[str, ...] = ("train", "val", "test")

#: Version of the images a configuration stands for (part of its cache key and of the cache
#: files); raised whenever the same configuration would render other images.
FORMAT_VERSION = 1

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

#: Fashion-MNIST's training items, of which ``val_items`` are kept for validation.
_TRAINING_ITEMS = 60000


def check_split(split: Any) -> Split:
    """``split`` if it is ``"train"``, ``"val"`` or ``"test"``; InputError otherwise."""
    if not isinstance(split, str) or split not in SPLITS:
        raise InputError(f"must be one of 'train', 'val', 'test'; got {split!r}.", argument="split")
    return split  # type: ignore[return-value]


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
        image_size: Side of the square RGB images, in pixels (at least 8).
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

    Raises:
        InputError: A field has the wrong type or is out of range (NumPy integers and floats
            are taken and stored as Python ones).
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
    _version: int = field(default=FORMAT_VERSION, repr=False)

    def __post_init__(self) -> None:
        def name(attr: str) -> str:
            return f"ClutteredConfig.{attr}"

        checked = check_drawing_fields(self, name)
        for attr, value in checked.items():
            object.__setattr__(self, attr, value)

    def size_of(self, split: Split) -> int:
        """Number of images in ``split``."""
        return {"train": self.n_train, "val": self.n_val, "test": self.n_test}[check_split(split)]

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
        for other in SPLITS:
            if other != split:
                del data[f"n_{other}"]
        data.update(split=split, epoch=int(epoch))
        blob = json.dumps(data, sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:16]


def check_drawing_fields(config: Any, name: Callable[[str], str]) -> dict[str, Any]:
    """The checked values of the fields every built-in dataset config has.

    The image size, item scale, backgrounds and their colour ranges, the item drawing, the
    split sizes, ``val_items`` and the seed (of :class:`ClutteredConfig` and the scenes'
    ``SceneConfig``); ``name`` turns a field into the name errors give.
    """
    checked: dict[str, Any] = {
        "image_size": integer(config.image_size, name("image_size"), 8),
        "scale_range": split_fractions(config.scale_range, name("scale_range"), low_open=True),
        "backgrounds": picture_names(config.backgrounds, name("backgrounds")),
        "background_contrast": real(config.background_contrast, name("background_contrast"), 0),
        "shade_floor": real(config.shade_floor, name("shade_floor"), 0, 1),
        "alpha_gain": real(config.alpha_gain, name("alpha_gain"), 0, low_open=True),
        "visible_alpha": real(config.visible_alpha, name("visible_alpha"), 0, 1, low_open=True),
        "flip_items": flag(config.flip_items, name("flip_items")),
        "val_items": val_items(config.val_items, name("val_items")),
        "seed": integer(config.seed, name("seed")),
    }
    for attr in ("background_crop", "background_brightness", "tint_saturation", "tint_value"):
        checked[attr] = split_fractions(getattr(config, attr), name(attr))
    for attr in ("n_train", "n_val", "n_test"):
        checked[attr] = integer(getattr(config, attr), name(attr), 0)
    return checked


def split_fractions(value: Any, name: str, low_open: bool = False) -> tuple[float, float]:
    """A ``(low, high)`` range of fractions, ``0 <= low <= high <= 1`` (``0 < low``: low_open)."""
    if isinstance(value, (str, bytes)) or not hasattr(value, "__len__") or len(value) != 2:
        raise InputError(f"expected a (low, high) pair of fractions, got {describe(value)}.", name)
    low, high = (real(v, name, 0, 1, low_open=low_open) for v in value)
    if low > high:
        raise InputError(f"expected low <= high, got ({low}, {high}).", name)
    return low, high


def picture_names(value: Any, name: str) -> tuple[str, ...]:
    """A non-empty sequence of ``skimage.data`` names as a tuple of str."""
    if isinstance(value, (str, bytes)):
        raise InputError(
            f"must be a sequence of skimage.data names, got the string {value!r}. "
            f"Hint: backgrounds=({value!r},).",
            name,
        )
    try:
        names = tuple(value)
    except TypeError:
        names = None
    if names is None or any(not isinstance(n, str) for n in names):
        raise InputError(
            f"must be a sequence of skimage.data names (str), got {describe(value)}.", name
        )
    if not names:
        raise InputError("is empty; name at least one picture.", name)
    return names


def val_items(value: Any, name: str) -> int:
    """Validation items: at least one, and fewer than Fashion-MNIST's training items."""
    count = integer(value, name, 1)
    if count >= _TRAINING_ITEMS:
        raise InputError(
            f"expected an int in [1, {_TRAINING_ITEMS - 1}] (Fashion-MNIST has "
            f"{_TRAINING_ITEMS:,} training items), got {count}.",
            name,
        )
    return count
