"""Rendering cluttered Fashion-MNIST: items drawn over crops of real photographs.

:func:`render_composites` is the pure, vectorised core of the dataset: given the items and one
row of uniforms per image, it returns the images, the masks of the items' visible pixels and
their tightest boxes. The background pictures come from ``skimage.data``, loaded offline and
packed side by side into one atlas so that every crop is one ``grid_sample`` call.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torchvision.ops import masks_to_boxes

from captum_realtime_mask.datasets.config import DEFAULT_BACKGROUNDS, ClutteredConfig
from captum_realtime_mask.errors import InputError

__all__ = [
    "BACKGROUND_UNIFORMS",
    "ITEM_UNIFORMS",
    "UNIFORMS_PER_IMAGE",
    "load_backgrounds",
    "render_composites",
    "render_scenes",
]

#: Uniforms that decide one image. Which uniform decides what (see :func:`render_composites`)
#: is part of the images' format: changing it means raising ``config.FORMAT_VERSION``.
UNIFORMS_PER_IMAGE = 13
#: Uniforms that decide a background (the first six of an image's uniforms).
BACKGROUND_UNIFORMS = 6
#: Uniforms that decide one item over it (the last seven): side, x, y, hue, saturation,
#: value, mirror.
ITEM_UNIFORMS = 7

#: Images rendered per batch of tensor operations (bounds the memory of large splits).
_CHUNK = 256


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

    Raises:
        InputError: ``uniforms`` is not shaped ``(N, 13)``.
    """
    n, size = len(items), config.image_size
    if uniforms.shape != (n, UNIFORMS_PER_IMAGE):
        raise InputError(
            f"uniforms must be ({n}, {UNIFORMS_PER_IMAGE}), got {uniforms.shape}.",
            argument="render_composites",
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


def render_scenes(
    items: np.ndarray,
    background_uniforms: np.ndarray,
    item_uniforms: np.ndarray,
    counts: np.ndarray,
    config: Any,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Draw several items over each background crop, with the compositing of the cluttered set.

    Image ``i`` is the background decided by ``background_uniforms[i]`` (as uniforms 0 to 5
    of :func:`render_composites`) with items ``0 .. counts[i] - 1`` drawn over it in that
    order, item ``k`` decided by ``item_uniforms[i, k]`` (as uniforms 6 to 12), so a later
    item covers an earlier one where they meet. With one item per image the images are
    exactly those of :func:`render_composites` for the concatenated uniforms.

    Args:
        items: ``uint8`` grey items ``(N, K, h, w)``; those past an image's count are ignored.
        background_uniforms: ``(N, 6)`` uniforms in ``[0, 1)``.
        item_uniforms: ``(N, K, 7)`` uniforms in ``[0, 1)``.
        counts: ``(N,)`` ints in ``[0, K]``: how many items each image shows.
        config: The drawing parameters: a :class:`ClutteredConfig` or any object with its
            drawing fields (``image_size``, ``scale_range``, ``backgrounds``, ...), such as a
            ``SceneConfig``.

    Returns:
        ``(images, masks, boxes)``: ``uint8`` images ``(N, 3, S, S)``; boolean masks
        ``(N, K, S, S)`` of each item's own visible pixels (opacity at least
        ``config.visible_alpha``, whether or not a later item covers them); ``int64`` boxes
        ``(N, K, 4)`` as inclusive ``(x1, y1, x2, y2)`` pixel indices, the tightest box
        around each mask. Items past an image's count have an empty mask and boxes of -1.

    Raises:
        InputError: An array has the wrong shape or a count is out of range.
    """
    n, k = items.shape[:2] if items.ndim == 4 else (len(items), -1)
    size = config.image_size
    counts = np.asarray(counts)
    if (
        items.ndim != 4
        or background_uniforms.shape != (n, BACKGROUND_UNIFORMS)
        or item_uniforms.shape != (n, k, ITEM_UNIFORMS)
        or counts.shape != (n,)
        or (n and (counts.min() < 0 or counts.max() > k))
    ):
        raise InputError(
            f"expected items (N, K, h, w), background uniforms (N, {BACKGROUND_UNIFORMS}), "
            f"item uniforms (N, K, {ITEM_UNIFORMS}) and counts (N,) in [0, K]; got "
            f"{items.shape}, {background_uniforms.shape}, {item_uniforms.shape} and "
            f"{counts.shape}.",
            argument="render_scenes",
        )
    images = np.empty((n, 3, size, size), dtype=np.uint8)
    masks = np.zeros((n, k, size, size), dtype=bool)
    boxes = np.full((n, k, 4), -1, dtype=np.int64)
    if n == 0:
        return images, masks, boxes
    atlas = _atlas(tuple(config.backgrounds), 3 * size)
    for start in range(0, n, _CHUNK):
        stop = min(n, start + _CHUNK)
        image = _background_crops(background_uniforms[start:stop], config, atlas)
        for layer in range(k):
            present = counts[start:stop] > layer
            if not present.any():
                break
            image, alpha = _draw_items(
                image,
                items[start:stop, layer],
                item_uniforms[start:stop, layer],
                config,
                present=present,
            )
            rows = np.flatnonzero(present)
            mask, box = _visible_boxes(alpha[torch.from_numpy(rows), 0], config)
            masks[start + rows, layer] = mask.numpy()
            boxes[start + rows, layer] = box.numpy()
        images[start:stop] = image.clamp_(0, 1).mul_(255).round_().to(torch.uint8).numpy()
    return images, masks, boxes


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
# One chunk of images: the background, then the item over it


def _render_chunk(
    items: np.ndarray, u: np.ndarray, config: ClutteredConfig, atlas: _Atlas
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Images, masks and boxes of one chunk; ``u`` holds each image's 13 uniforms."""
    background = _background_crops(u, config, atlas)
    image, alpha = _draw_items(background, items, u[:, 6:], config)
    image = image.clamp_(0, 1).mul_(255).round_().to(torch.uint8)
    mask, boxes = _visible_boxes(alpha[:, 0], config)
    return image.numpy(), mask.numpy(), boxes.numpy()


def _draw_items(
    background: torch.Tensor,
    items: np.ndarray,
    u: np.ndarray,
    config: ClutteredConfig,
    present: np.ndarray | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Composite one item over each background: the shared core of every dataset's images.

    Args:
        background: Float canvases ``(N, 3, S, S)`` in ``[0, 1]`` (not changed).
        items: ``uint8`` grey items ``(N, h, w)``.
        u: ``(N, 7)`` uniforms: side, x, y (as fractions of the free room), hue, saturation,
            value, mirror (uniforms 6 to 12 of :func:`render_composites`).
        config: The drawing parameters.
        present: Optional ``(N,)`` booleans; where False the canvas is left as it is.

    Returns:
        ``(image, alpha)``: the float canvases ``(N, 3, S, S)`` (not yet clipped) and each
        item's opacity ``(N, 1, S, S)``.
    """
    n, size = len(items), config.image_size
    # Item: a random side and position fully inside the canvas, maybe mirrored.
    side = _lerp(u[:, 0], config.scale_range) * size
    x0 = u[:, 1] * (size - side)
    y0 = u[:, 2] * (size - side)
    item = torch.from_numpy(np.ascontiguousarray(items)).float().div_(255.0)[:, None]
    if config.flip_items:
        mirrored = torch.from_numpy(u[:, 6] < 0.5)
        item = torch.where(mirrored.view(n, 1, 1, 1), item.flip(-1), item)
    grid = _pixel_grid(size, x0, y0, side, side)
    intensity = F.grid_sample(
        item, grid, mode="bilinear", padding_mode="zeros", align_corners=False
    )
    intensity = intensity.clamp_(0, 1)
    alpha = (config.alpha_gain * intensity).clamp_(max=1.0)
    if present is not None:
        alpha.mul_(torch.from_numpy(np.asarray(present, dtype=np.float32)).view(n, 1, 1, 1))

    # Colour: a bright random tint, shaded by the item's grey level.
    hue, sat = u[:, 3], _lerp(u[:, 4], config.tint_saturation)
    value = _lerp(u[:, 5], config.tint_value)
    tint = torch.from_numpy(_hsv_to_rgb(hue, sat, value)).float().view(n, 3, 1, 1)
    # background * (1 - alpha) + tint * shade * alpha, in place.
    image = (intensity * (1 - config.shade_floor)).add_(config.shade_floor).mul(tint)
    image.sub_(background).mul_(alpha).add_(background)
    return image, alpha


def _visible_boxes(
    alpha: torch.Tensor, config: ClutteredConfig
) -> tuple[torch.Tensor, torch.Tensor]:
    """Masks ``(N, S, S)`` of the pixels with opacity ``>= visible_alpha`` and their boxes."""
    size = alpha.shape[-1]
    mask = alpha >= config.visible_alpha
    empty = ~mask.flatten(1).any(dim=1)
    if empty.any():  # a blank item (does not occur in Fashion-MNIST): mark its brightest pixel
        flat = alpha[empty].flatten(1).argmax(dim=1)
        mask[empty] = F.one_hot(flat, size * size).view(-1, size, size).bool()
    boxes = masks_to_boxes(mask).round().to(torch.int64)
    return mask, boxes


def _background_crops(u: np.ndarray, config: ClutteredConfig, atlas: _Atlas) -> torch.Tensor:
    """``(N, 3, S, S)`` backgrounds, decided by uniforms 0 to 5.

    Each is a square crop of one picture, maybe mirrored, with its contrast and brightness
    changed.
    """
    n, size = len(u), config.image_size
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
    return background.mul_(contrast * brightness).add_(mean * ((1 - contrast) * brightness))


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


# ---------------------------------------------------------------------------------------------
# Background pictures


@dataclass(frozen=True)
class _Atlas:
    """All background pictures side by side in one tensor, for one grid_sample call."""

    pixels: torch.Tensor  # (1, 3, H, W) float32 in [0, 1]
    boxes: np.ndarray  # (B, 4): x0, y0, width, height of each picture in the atlas


@functools.lru_cache(maxsize=4)
def _atlas(names: tuple[str, ...], short_side: int) -> _Atlas:
    """The pictures ``names``, each resized so its short side is ``short_side``, side by side."""
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
