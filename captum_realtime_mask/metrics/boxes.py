"""Boxes from saliency maps, baseline boxes and box IoU, in inclusive pixel coordinates.

Box convention, shared by everything in :mod:`captum_realtime_mask.metrics`: a box is
``(x1, y1, x2, y2)`` in 0-based **inclusive** pixel indices of the image it belongs to (x along
the width, y along the height), stored as a float32 tensor holding whole numbers. The box covers
columns ``x1 .. x2`` and rows ``y1 .. y2``: a single pixel at column 3, row 5 is
``(3, 5, 3, 5)``, a box covers ``(x2 - x1 + 1) * (y2 - y1 + 1)`` pixels and its crop is
``image[..., y1:y2 + 1, x1:x2 + 1]``. This is what :func:`torchvision.ops.masks_to_boxes`
returns. :func:`torchvision.ops.box_iou` reads boxes as continuous edges instead, so
:func:`pixel_box_iou` adds 1 to ``x2`` and ``y2`` before calling it: the IoU is that of the two
sets of pixels.

Converting other conventions: continuous ``xyxy`` edges with exclusive ends (torchvision
detection targets, COCO after ``xywh`` to ``xyxy``) become ours with ``x2 - 1`` and ``y2 - 1``
once they are whole numbers; PASCAL VOC's 1-based inclusive boxes with ``- 1`` on all four
(:func:`~captum_realtime_mask.metrics.parse_voc_xml` does this and maps the boxes to the
resized input).

Boxes passed to the metrics (``boxes=`` and ``gt_boxes=``) may be given as one ``(4,)`` box for
every image, an ``(N, 4)`` tensor (one box per image), an ``(N, K, 4)`` tensor, or a sequence of
``N`` tensors shaped ``(K_i, 4)`` or ``(4,)`` (a different number of boxes per image).
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import numpy as np
import torch
from torch import Tensor
from torchvision.ops import box_iou, masks_to_boxes

from captum_realtime_mask._checks import attribution_batch, describe, integer, one_of, real
from captum_realtime_mask.errors import InputError

__all__ = [
    "EMPTY_FALLBACKS",
    "NORMALIZATIONS",
    "MapBoxes",
    "Normalization",
    "attributions_to_boxes",
    "box_area_fraction",
    "centre_box",
    "max_box",
    "normalize_attributions",
    "pixel_box_iou",
]

#: Names accepted by the ``normalize`` argument (a callable is accepted too).
NORMALIZATIONS = ("none", "minmax", "abs_minmax")
#: Names accepted by the ``empty_fallback`` argument.
EMPTY_FALLBACKS = ("max", "centre")

Normalization = str | Callable[[Tensor], Tensor]


class MapBoxes(NamedTuple):
    """Tightest boxes around thresholded maps, one per image.

    Attributes:
        boxes: ``(N, 4)`` float32 boxes in inclusive pixel coordinates (see the module doc).
        empty: ``(N,)`` bool, True where too few pixels passed the threshold and the box is the
            fallback box instead.
    """

    boxes: Tensor
    empty: Tensor


def normalize_attributions(
    attributions: Tensor | tuple[Tensor], normalize: Normalization = "none"
) -> Tensor:
    """Reduce attributions to one map per image, shaped ``(N, H, W)``.

    Normalisations:

    * ``"none"`` (for masks already in ``[0, 1]``): the mean over channels, so a mask repeated
      over the channels of the input comes back unchanged.
    * ``"minmax"``: the sum over channels, then per image ``(v - min) / (max - min)``. Signed
      evidence keeps its sign: the most negative pixel maps to 0 and the most positive to 1.
    * ``"abs_minmax"``: the absolute value of the sum over channels, then the per-image min-max
      (for gradient maps, where a large magnitude of either sign is evidence).
    * a callable: receives the ``(N, C, H, W)`` attributions (``C`` may be 1) and returns the
      ``(N, H, W)`` maps to threshold.

    A constant map (``max == min``) normalises to zeros, so with a threshold of 0 or more
    nothing passes and the image counts as an empty map.

    Args:
        attributions: Maps shaped ``(N, C, H, W)``, ``(N, 1, H, W)`` or ``(N, H, W)``, or a
            1-tuple holding one.
        normalize: ``"none"``, ``"minmax"``, ``"abs_minmax"`` or a callable (see above).

    Returns:
        The maps, shaped ``(N, H, W)``, floating point, on the attributions' device.

    Raises:
        InputError: A shape, a normalisation name or a non-finite value is wrong.

    Example:
        >>> grad = torch.tensor([[[[-2.0, 0.0], [1.0, 2.0]]]])
        >>> normalize_attributions(grad, "minmax")
        tensor([[[0.0000, 0.5000],
                 [0.7500, 1.0000]]])
        >>> normalize_attributions(grad, "abs_minmax")
        tensor([[[1.0000, 0.0000],
                 [0.5000, 1.0000]]])
    """
    a = attribution_batch(attributions)
    normalize = check_normalize(normalize)
    if callable(normalize):
        maps = normalize(a)
        if not isinstance(maps, Tensor) or maps.shape != (a.shape[0], *a.shape[2:]):
            raise InputError(
                f"(a callable) must return maps shaped {(a.shape[0], *a.shape[2:])} "
                f"(N, H, W); it returned {describe(maps)}.",
                argument="normalize",
            )
        if not maps.is_floating_point():
            maps = maps.to(a.dtype)
    elif normalize == "none":
        maps = a.mean(dim=1)
    else:  # "minmax" or "abs_minmax"
        maps = a.sum(dim=1)
        if normalize == "abs_minmax":
            maps = maps.abs()
        flat = maps.flatten(1)
        low = flat.min(dim=1).values[:, None, None]
        span = flat.max(dim=1).values[:, None, None] - low
        maps = torch.where(
            span > 0, (maps - low) / span.clamp_min(torch.finfo(maps.dtype).tiny), 0.0
        )
    if not torch.isfinite(maps).all():
        raise InputError(
            "hold NaN or infinite values (after normalisation); "
            "a box cannot be drawn around them. Check the attribution method's output.",
            argument="attributions",
        )
    return maps


def _fallback_box(height: int, width: int, empty_fallback: str, device: torch.device) -> Tensor:
    """Return the (4,) box used for empty maps."""
    if one_of(empty_fallback, "empty_fallback", EMPTY_FALLBACKS) == "centre":
        return centre_box(height, width, device=device)
    return max_box(height, width, device=device)


def check_normalize(normalize: Any) -> Normalization:
    """``normalize`` if it is one of :data:`NORMALIZATIONS` or a callable, else InputError."""
    if callable(normalize):
        return normalize
    return one_of(
        normalize,
        "normalize",
        NORMALIZATIONS,
        hint='Hint: use "none" for masks in [0, 1] and "abs_minmax" for gradient-like '
        "attributions, or pass a callable that returns the (N, H, W) maps.",
    )


def check_map_options(
    threshold: Any, normalize: Any, empty_fallback: Any, min_pixels: Any
) -> tuple[float, Normalization, str, int]:
    """Validate the options that turn maps into boxes; return them, or raise InputError.

    Shared by :func:`attributions_to_boxes` and the metrics' constructors, so an option is
    refused with the same words wherever it is passed.

    Example:
        >>> check_map_options(0.5, "minmax", "centre", 300)
        (0.5, 'minmax', 'centre', 300)
    """
    return (
        real(threshold, "threshold"),
        check_normalize(normalize),
        one_of(empty_fallback, "empty_fallback", EMPTY_FALLBACKS),
        integer(min_pixels, "min_pixels", 1),
    )


def attributions_to_boxes(
    attributions: Tensor | tuple[Tensor],
    threshold: float = 0.5,
    normalize: Normalization = "none",
    *,
    empty_fallback: str = "max",
    min_pixels: int = 1,
) -> MapBoxes:
    """Draw the tightest box around the pixels of each map that exceed ``threshold``.

    The maps come from :func:`normalize_attributions`; pixels strictly greater than
    ``threshold`` pass, and :func:`torchvision.ops.masks_to_boxes` gives the tightest box.

    Empty maps: when fewer than ``min_pixels`` pixels pass (by default: none), the image gets
    the fallback box, the whole image (``"max"``, default) or :func:`centre_box`
    (``"centre"``), and its ``empty`` flag is set. The authors' TensorFlow evaluator used
    ``min_pixels=300, empty_fallback="centre"`` at 224 x 224.

    Args:
        attributions: Maps shaped ``(N, C, H, W)``, ``(N, 1, H, W)`` or ``(N, H, W)``.
        threshold: Pixels strictly above it pass.
        normalize: See :func:`normalize_attributions`.
        empty_fallback: ``"max"`` or ``"centre"``: the box of an empty map.
        min_pixels: Fewer passing pixels than this make a map empty.

    Returns:
        ``MapBoxes(boxes, empty)``: ``(N, 4)`` float32 inclusive pixel boxes and ``(N,)`` bool
        flags, on the attributions' device.

    Raises:
        InputError: An argument has the wrong shape, type or value.

    Example:
        >>> mask = torch.zeros(2, 1, 4, 6)
        >>> mask[0, 0, 1:3, 2:5] = 1.0
        >>> attributions_to_boxes(mask)
        MapBoxes(boxes=tensor([[2., 1., 4., 2.],
                [0., 0., 5., 3.]]), empty=tensor([False,  True]))
    """
    threshold, normalize, empty_fallback, min_pixels = check_map_options(
        threshold, normalize, empty_fallback, min_pixels
    )
    maps = normalize_attributions(attributions, normalize)
    _, height, width = maps.shape
    fallback = _fallback_box(height, width, empty_fallback, maps.device)
    above = maps > threshold
    empty = above.flatten(1).sum(dim=1) < min_pixels
    boxes = masks_to_boxes(above).to(torch.float32)
    boxes = torch.where(empty[:, None], fallback, boxes)
    return MapBoxes(boxes, empty)


def as_box_tensor(boxes: Any, name: str) -> Tensor:
    """Return ``boxes`` as a float32 tensor shaped (..., 4), or raise InputError."""
    if not isinstance(boxes, Tensor):
        try:
            boxes = torch.as_tensor(boxes, dtype=torch.float32)
        except (TypeError, ValueError, RuntimeError) as err:
            hint = (
                " Hint: pass the annotation's `.boxes` tensor."
                if isinstance(getattr(boxes, "boxes", None), Tensor)
                else ""
            )
            raise InputError(
                f"must be boxes (x1, y1, x2, y2); got {describe(boxes)} ({err}).{hint}",
                argument=name,
            ) from None
    if boxes.dim() == 0 or boxes.shape[-1] != 4:
        raise InputError(
            f"must hold boxes (x1, y1, x2, y2) in its last dimension; got {describe(boxes)}.",
            argument=name,
        )
    if boxes.is_complex():
        raise InputError(f"must be real; got {describe(boxes)}.", argument=name)
    return boxes.to(torch.float32)


def pixel_box_iou(boxes1: Tensor, boxes2: Tensor) -> Tensor:
    """IoU of every pair of inclusive pixel boxes: the IoU of the two sets of pixels.

    Calls :func:`torchvision.ops.box_iou` on ``(x1, y1, x2 + 1, y2 + 1)``.

    Args:
        boxes1: ``(N, 4)`` or ``(4,)`` boxes in inclusive pixel coordinates.
        boxes2: ``(M, 4)`` or ``(4,)`` boxes in inclusive pixel coordinates.

    Returns:
        ``(N, M)`` float32 IoUs in ``[0, 1]`` (a ``(4,)`` box counts as ``N = 1``).

    Example:
        >>> pixel_box_iou(torch.tensor([0.0, 0.0, 1.0, 1.0]), torch.tensor([[1.0, 0.0, 2.0, 1.0]]))
        tensor([[0.3333]])
    """
    b1 = as_box_tensor(boxes1, "boxes1").reshape(-1, 4)
    b2 = as_box_tensor(boxes2, "boxes2").reshape(-1, 4).to(b1.device)
    for name, b in (("boxes1", b1), ("boxes2", b2)):
        if ((b[:, 2] < b[:, 0]) | (b[:, 3] < b[:, 1])).any():
            raise InputError(
                "must satisfy x1 <= x2 and y1 <= y2 (inclusive pixel boxes).", argument=name
            )
    one = torch.tensor([0.0, 0.0, 1.0, 1.0], device=b1.device)
    return box_iou(b1 + one, b2 + one)


def box_area_fraction(boxes: Tensor, height: int, width: int) -> Tensor:
    """Fraction of an ``height x width`` image covered by inclusive pixel boxes.

    Args:
        boxes: ``(..., 4)`` boxes in inclusive pixel coordinates.
        height: Image height in pixels.
        width: Image width in pixels.

    Returns:
        ``(...)`` fractions ``(x2 - x1 + 1) * (y2 - y1 + 1) / (height * width)``, in the
        boxes' dtype if floating (float32 otherwise).

    Example:
        >>> box_area_fraction(torch.tensor([[3.0, 5.0, 3.0, 5.0], [0.0, 0.0, 9.0, 4.0]]), 10, 10)
        tensor([0.0100, 0.5000])
    """
    height = integer(height, "height", 1)
    width = integer(width, "width", 1)
    b = (
        boxes
        if isinstance(boxes, Tensor) and boxes.is_floating_point()
        else as_box_tensor(boxes, "boxes")
    )
    # Computed in at least float32 and cast back: a float16 pixel count overflows (inf) from
    # 256 x 256 pixels on.
    wide = b.to(torch.promote_types(b.dtype, torch.float32))
    box_w = wide[..., 2] - wide[..., 0] + 1
    box_h = wide[..., 3] - wide[..., 1] + 1
    return (box_w * box_h / (height * width)).to(b.dtype)


def centre_box(
    height: int,
    width: int,
    area_fraction: float = 0.5,
    *,
    device: torch.device | str | None = None,
) -> Tensor:
    """The paper's centre-box baseline: a centred box of the image's aspect ratio.

    Its sides are ``side * sqrt(area_fraction)`` pixels rounded half up (at least 1; a 5 x 5
    image at 0.25 gets a 3 x 3 box, where Python's ``round(2.5)`` would give 2), so it covers about
    ``area_fraction`` of the image (half by default, as in the paper's table 3).

    Args:
        height: Image height in pixels.
        width: Image width in pixels.
        area_fraction: Target fraction of the image area, in ``(0, 1]``.
        device: Device of the returned tensor.

    Returns:
        A ``(4,)`` float32 box in inclusive pixel coordinates; pass it as ``boxes=`` to score
        the same box on every image.

    Example:
        >>> centre_box(224, 224)
        tensor([ 33.,  33., 190., 190.])
        >>> centre_box(4, 8)
        tensor([1., 0., 6., 2.])
        >>> centre_box(5, 5, 0.25)  # sides 2.5 -> 3 pixels
        tensor([1., 1., 3., 3.])
    """
    height = integer(height, "height", 1)
    width = integer(width, "width", 1)
    area_fraction = real(area_fraction, "area_fraction", 0.0, 1.0, low_open=True)
    scale = math.sqrt(area_fraction)
    box_w = max(1, math.floor(width * scale + 0.5))
    box_h = max(1, math.floor(height * scale + 0.5))
    x1 = (width - box_w) // 2
    y1 = (height - box_h) // 2
    return torch.tensor(
        [x1, y1, x1 + box_w - 1, y1 + box_h - 1], dtype=torch.float32, device=device
    )


def max_box(height: int, width: int, *, device: torch.device | str | None = None) -> Tensor:
    """The paper's max-box baseline: the whole image.

    Args:
        height: Image height in pixels.
        width: Image width in pixels.
        device: Device of the returned tensor.

    Returns:
        A ``(4,)`` float32 box ``(0, 0, width - 1, height - 1)`` in inclusive pixel coordinates.

    Example:
        >>> max_box(4, 6)
        tensor([0., 0., 5., 3.])
    """
    height = integer(height, "height", 1)
    width = integer(width, "width", 1)
    return torch.tensor([0, 0, width - 1, height - 1], dtype=torch.float32, device=device)


def _array_to_tensor(boxes: Any) -> Any:
    """A NumPy array of boxes as a tensor (the other accepted formats unchanged)."""
    if isinstance(boxes, np.ndarray):
        return torch.from_numpy(np.ascontiguousarray(boxes))
    return boxes


def box_count(boxes: Any) -> int | None:
    """Number of images a ``boxes`` argument describes; None for one box shared by all."""
    boxes = _array_to_tensor(boxes)
    if isinstance(boxes, Tensor):
        return None if boxes.dim() <= 1 else int(boxes.shape[0])
    if isinstance(boxes, Sequence) and not isinstance(boxes, (str, bytes)):
        if len(boxes) == 4 and all(isinstance(v, numbers.Real) for v in boxes):
            return None
        return len(boxes)
    return None


def box_sets(
    boxes: Any,
    n: int,
    name: str,
    device: torch.device,
    size: tuple[int, int] | None = None,
) -> list[Tensor]:
    """Turn any accepted ``boxes`` format into ``n`` validated (K_i, 4) float32 tensors.

    Every image must have at least one box. With ``size=(H, W)`` boxes must lie in the image.
    """
    if n < 1:
        raise InputError(f"must describe at least one image; got {describe(boxes)}.", argument=name)
    boxes = _array_to_tensor(boxes)
    count = box_count(boxes)
    if count is None:
        one = as_box_tensor(boxes, name).reshape(1, 4).to(device)
        sets = [one] * n
    elif count != n:
        raise InputError(
            f"must describe {n} images (one entry per example); got {describe(boxes)}. "
            "An (N, 4) tensor holds one box per image; give several boxes per image as an "
            "(N, K, 4) tensor or a list of N (K_i, 4) tensors (`[boxes]` for a single image).",
            argument=name,
        )
    elif isinstance(boxes, Tensor):
        b = as_box_tensor(boxes, name).to(device)
        if b.dim() == 2:
            sets = list(b.unsqueeze(1).unbind(0))
        elif b.dim() == 3:
            sets = list(b.unbind(0))
        else:
            raise InputError(
                f"as a tensor must be shaped (4,), (N, 4) or (N, K, 4); got {describe(boxes)}.",
                argument=name,
            )
    else:
        sets = []
        for i, item in enumerate(boxes):
            b = as_box_tensor(item, f"{name}[{i}]").to(device)
            if b.dim() > 2:
                raise InputError(
                    f"must be shaped (4,) or (K, 4); got {describe(b)}.", argument=f"{name}[{i}]"
                )
            sets.append(b.reshape(-1, 4))
    for i, b in enumerate(sets):
        if b.shape[0] == 0:
            raise InputError(
                "holds no box; every image needs at least one. "
                "Drop images without boxes before scoring them.",
                argument=f"{name}[{i}]",
            )
    flat = torch.cat(sets)
    bad = ~torch.isfinite(flat).all(dim=1) | (flat != flat.round()).any(dim=1)
    bad |= (flat[:, 2] < flat[:, 0]) | (flat[:, 3] < flat[:, 1]) | (flat[:, :2] < 0).any(dim=1)
    if size is not None:
        bad |= (flat[:, 2] > size[1] - 1) | (flat[:, 3] > size[0] - 1)
    if bad.any():
        first = int(bad.nonzero()[0, 0])
        image = int((torch.tensor([b.shape[0] for b in sets]).cumsum(0) <= first).sum())
        limits = f" and x2 <= {size[1] - 1}, y2 <= {size[0] - 1}" if size is not None else ""
        raise InputError(
            f"for image {image} holds the box {flat[first].tolist()}; boxes must be "
            f"whole-number inclusive pixel indices (x1, y1, x2, y2) with 0 <= x1 <= x2, "
            f"0 <= y1 <= y2{limits}. Hint: exclusive-end boxes need x2 - 1 and y2 - 1; "
            "resize_pixel_boxes maps boxes from the original image to the input size.",
            argument=name,
        )
    return sets
