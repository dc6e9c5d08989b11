"""Metrics for images with several objects: per-object localisation, pointing game, selectivity.

Convention for every function and class here:

* ``attributions``: one map per requested class, shaped ``(N, K, H, W)``: ``attributions[i, k]``
  is the map of image ``i`` for the class ``target[i, k]``. A multi-channel map is not accepted
  (reduce it to one channel first, e.g. with
  :func:`~captum_realtime_mask.metrics.normalize_attributions`).
* ``target``: ``(N, K)`` integer class ids of those maps. A negative id marks an unused slot
  (padding), so images may request different numbers of classes in one batch; a class may be
  requested at most once per image.
* ``gt_boxes``: the objects' boxes, at least one per image, in any format of
  :mod:`captum_realtime_mask.metrics.boxes` (inclusive pixel boxes of the maps' size): an
  ``(N, M, 4)`` tensor or a sequence of ``N`` tensors shaped ``(M_i, 4)``.
* ``gt_labels``: the objects' classes, matching ``gt_boxes``: an ``(N, M)`` tensor or a
  sequence of ``N`` integer tensors (or lists) shaped ``(M_i,)``, one class per box.

A requested class is *present* in an image when one of its objects has that class, *absent*
otherwise. The localisation, pointing and selectivity metrics score (image, present requested
class) pairs; a present class that was not requested is not scored. When a class has several
objects in an image, its *region* is the union of their boxes. Maps are normalised per map with
``normalize`` (see :func:`~captum_realtime_mask.metrics.normalize_attributions`; ``"none"``
for masks in ``[0, 1]``). Results are on the maps' device.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np
import torch
from torch import Tensor

from captum_realtime_mask._checks import describe, one_of, real, single_tensor
from captum_realtime_mask.errors import InputError
from captum_realtime_mask.metrics._accumulating import AccumulatingMetric
from captum_realtime_mask.metrics.boxes import (
    Normalization,
    attributions_to_boxes,
    box_sets,
    check_map_options,
    check_normalize,
    normalize_attributions,
    pixel_box_iou,
)

__all__ = [
    "POINTING_TOLERANCE_AT_224",
    "SELECTIVITY_COMPARISONS",
    "AbsentClassArea",
    "AbsentClassAreaResult",
    "AreaSummary",
    "ClassSelectivity",
    "PointingGame",
    "PointingGameResult",
    "SceneLocalisationEvaluator",
    "SceneLocalisationResult",
    "SelectivityResult",
    "absent_class_area",
    "absent_class_area_details",
    "class_selectivity",
    "class_selectivity_details",
    "pointing_game",
    "pointing_game_details",
    "pointing_tolerance",
    "scene_localisation_details",
    "scene_localisation_error",
]

#: The pointing game's tolerance in pixels for a 224-pixel shorter side (Zhang et al. 2016).
POINTING_TOLERANCE_AT_224 = 15.0
#: Names accepted by the ``compare`` argument of the selectivity metrics.
SELECTIVITY_COMPARISONS = ("mean", "sum")


class _Scene(NamedTuple):
    """A validated batch: normalised maps, requests and objects, on the maps' device."""

    maps: Tensor  # (N, K, H, W) normalised
    target: Tensor  # (N, K) long, < 0 for padding
    present: Tensor  # (N, K) bool: requested and present
    absent: Tensor  # (N, K) bool: requested and absent
    boxes: list[Tensor]  # N x (M_i, 4) float32
    labels: list[Tensor]  # N x (M_i,) long


def _scene(
    attributions: Any, target: Any, gt_boxes: Any, gt_labels: Any, normalize: Normalization
) -> _Scene:
    normalize = check_normalize(normalize)
    a = single_tensor(attributions, "attributions")
    if a.dim() != 4 or 0 in a.shape:
        raise InputError(
            f"must be one map per requested class, shaped (N, K, H, W) with no empty "
            f"dimension; got {describe(a)}. A single map per image is (N, 1, H, W).",
            argument="attributions",
        )
    n, k, height, width = a.shape
    device = a.device
    if isinstance(target, np.ndarray):
        target = torch.from_numpy(target)
    if not isinstance(target, Tensor):
        try:
            target = torch.as_tensor(target)
        except (TypeError, ValueError, RuntimeError):
            raise InputError(
                f"must be (N, K) integer class ids; got {describe(target)}.", argument="target"
            ) from None
    if target.dim() == 1 and k == 1:
        target = target[:, None]
    if target.shape != (n, k) or target.is_floating_point() or target.dtype == torch.bool:
        raise InputError(
            f"must be (N, K) = {(n, k)} integer class ids, one per map of `attributions` "
            f"(negative for an unused slot); got {describe(target)}.",
            argument="target",
        )
    target = target.to(device=device, dtype=torch.long)
    valid = target >= 0
    same = (target[:, :, None] == target[:, None, :]) & valid[:, :, None] & valid[:, None, :]
    if (same.sum(dim=(1, 2)) > valid.sum(dim=1)).any():
        raise InputError(
            "requests a class twice for one image; give each class of an image one map.",
            argument="target",
        )
    maps = normalize_attributions(a.reshape(n * k, 1, height, width), normalize)
    maps = maps.reshape(n, k, height, width)
    boxes = box_sets(gt_boxes, n, "gt_boxes", device, size=(height, width))
    labels = _label_sets(gt_labels, [b.shape[0] for b in boxes], device)
    present = torch.stack([(target[i][:, None] == labels[i][None, :]).any(dim=1) for i in range(n)])
    return _Scene(maps, target, present & valid, valid & ~present, boxes, labels)


def _label_sets(gt_labels: Any, counts: list[int], device: torch.device) -> list[Tensor]:
    """``gt_labels`` as N (M_i,) long tensors matching the box counts, or InputError."""
    if isinstance(gt_labels, np.ndarray):
        gt_labels = torch.from_numpy(gt_labels)
    if isinstance(gt_labels, Tensor):
        # (N,): one object per image; (N, M): M objects per image.
        dim = gt_labels.dim()
        items = list(gt_labels.reshape(-1, 1) if dim == 1 else gt_labels) if dim in (1, 2) else None
    elif isinstance(gt_labels, (list, tuple)):
        items = list(gt_labels)
    else:
        items = None
    if items is None or len(items) != len(counts):
        raise InputError(
            f"must give the class of every box of `gt_boxes` for each of the {len(counts)} "
            f"images: an (N, M) tensor or a list of N (M_i,) integer tensors; got "
            f"{describe(gt_labels)}.",
            argument="gt_labels",
        )
    sets = []
    for i, (item, count) in enumerate(zip(items, counts)):
        try:
            t = torch.as_tensor(item)
        except (TypeError, ValueError, RuntimeError):
            t = None
        if t is not None and t.dim() == 0:
            t = t.reshape(1)
        if (
            t is None
            or t.dim() != 1
            or t.shape[0] != count
            or t.is_floating_point()
            or t.is_complex()
            or t.dtype == torch.bool
            or (t < 0).any()
        ):
            raise InputError(
                f"must be {count} non-negative integer class ids, one per box of "
                f"gt_boxes[{i}]; got {describe(item)}.",
                argument=f"gt_labels[{i}]",
            )
        sets.append(t.to(device=device, dtype=torch.long))
    return sets


def _pairs(mask: Tensor, target: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Image index, slot and class of the (image, class) pairs where ``mask`` is True."""
    image, slot = mask.nonzero(as_tuple=True)
    return image, slot, target[image, slot]


def _region(boxes: Tensor, height: int, width: int) -> Tensor:
    """(M, H, W) bool: the pixels of each inclusive box."""
    ys = torch.arange(height, device=boxes.device)[None, :, None]
    xs = torch.arange(width, device=boxes.device)[None, None, :]
    b = boxes.long()
    return (
        (ys >= b[:, 1, None, None])
        & (ys <= b[:, 3, None, None])
        & (xs >= b[:, 0, None, None])
        & (xs <= b[:, 2, None, None])
    )


# --- per-object localisation -------------------------------------------------------------


@dataclass(frozen=True)
class SceneLocalisationResult:
    """Per-pair results of :func:`scene_localisation_details`, one row per scored pair.

    Attributes:
        image: ``(P,)`` long, the image of each (image, present requested class) pair.
        label: ``(P,)`` long, its class.
        hits: ``(P,)`` bool, True where the box's IoU with one of the class's boxes exceeds
            the IoU threshold.
        ious: ``(P,)`` float32, the best IoU with the class's boxes.
        boxes: ``(P, 4)`` float32 predicted boxes, inclusive pixel coordinates.
        empty: ``(P,)`` bool, True where the map was empty and the fallback box was used.
    """

    image: Tensor
    label: Tensor
    hits: Tensor
    ious: Tensor
    boxes: Tensor
    empty: Tensor

    @property
    def error(self) -> Tensor:
        """0-d float32 fraction of pairs that are not hits (NaN without any pair)."""
        return 1.0 - self.hits.float().mean()


def scene_localisation_details(
    attributions: Tensor,
    target: Any,
    gt_boxes: Any,
    gt_labels: Any,
    threshold: float = 0.5,
    iou_threshold: float = 0.5,
    normalize: Normalization = "none",
    *,
    empty_fallback: str = "max",
    min_pixels: int = 1,
) -> SceneLocalisationResult:
    """:func:`scene_localisation_error` with the per-pair hits, IoUs and boxes.

    Takes exactly the arguments of :func:`scene_localisation_error`.

    Returns:
        A :class:`SceneLocalisationResult`.

    Example:
        >>> maps = torch.zeros(1, 2, 8, 8)
        >>> maps[0, 0, 0:4, 0:4] = 1.0  # class 3 on the top-left object
        >>> maps[0, 1, 0:4, 0:4] = 1.0  # class 5 on the top-left too: a miss
        >>> boxes, labels = [[[0, 0, 3, 3], [4, 4, 7, 7]]], [[3, 5]]
        >>> r = scene_localisation_details(maps, [[3, 5]], boxes, labels)
        >>> r.label, r.ious, r.hits
        (tensor([3, 5]), tensor([1., 0.]), tensor([ True, False]))
    """
    iou_threshold = real(iou_threshold, "iou_threshold", 0.0, 1.0)
    threshold, normalize, empty_fallback, min_pixels = check_map_options(
        threshold, normalize, empty_fallback, min_pixels
    )
    s = _scene(attributions, target, gt_boxes, gt_labels, normalize)
    image, slot, label = _pairs(s.present, s.target)
    boxes, empty = attributions_to_boxes(
        s.maps[image, slot][:, None],
        threshold,
        "none",
        empty_fallback=empty_fallback,
        min_pixels=min_pixels,
    )
    ious = torch.zeros(len(image), device=s.maps.device)
    for p, (i, c) in enumerate(zip(image.tolist(), label.tolist())):
        ious[p] = pixel_box_iou(boxes[p], s.boxes[i][s.labels[i] == c]).max()
    return SceneLocalisationResult(image, label, ious > iou_threshold, ious, boxes, empty)


def scene_localisation_error(
    attributions: Tensor,
    target: Any,
    gt_boxes: Any,
    gt_labels: Any,
    threshold: float = 0.5,
    iou_threshold: float = 0.5,
    normalize: Normalization = "none",
    *,
    empty_fallback: str = "max",
    min_pixels: int = 1,
) -> Tensor:
    """Per-object localisation error: 1 - hit rate over (image, present class) pairs.

    The protocol of :func:`~captum_realtime_mask.metrics.localisation_error`, once per class:
    the map of each present requested class is thresholded by
    :func:`~captum_realtime_mask.metrics.attributions_to_boxes` (pixels strictly above
    ``threshold``, tightest box, the fallback box for an empty map), and the pair is a hit
    when that box's IoU with one of the class's boxes in the image is strictly greater than
    ``iou_threshold``. With one object per class (the usual scene) the pairs are the objects.

    Args:
        attributions: ``(N, K, H, W)`` maps, one per requested class (see the module doc).
        target: ``(N, K)`` class ids of the maps; negative for an unused slot.
        gt_boxes: The objects' boxes, e.g. a list of ``(M_i, 4)`` tensors.
        gt_labels: The objects' classes, e.g. a list of ``(M_i,)`` tensors.
        threshold: Map pixels strictly above it are inside the predicted region.
        iou_threshold: A hit needs an IoU strictly above it.
        normalize: ``"none"``, ``"minmax"``, ``"abs_minmax"`` or a callable, applied per map.
        empty_fallback: Box used for an empty map: ``"max"`` (whole image) or ``"centre"``.
        min_pixels: Fewer passing pixels than this make a map empty.

    Returns:
        0-d float32 error in ``[0, 1]`` (NaN when no requested class is present).

    Raises:
        InputError: An argument has the wrong shape, type or value.

    Example:
        >>> maps = torch.zeros(1, 2, 8, 8)
        >>> maps[0, 0, 0:4, 0:4] = 1.0
        >>> maps[0, 1, 4:8, 4:8] = 1.0
        >>> scene_localisation_error(maps, [[3, 5]], [[[0, 0, 3, 3], [4, 4, 7, 7]]], [[3, 5]])
        tensor(0.)
    """
    return scene_localisation_details(
        attributions,
        target,
        gt_boxes,
        gt_labels,
        threshold,
        iou_threshold,
        normalize,
        empty_fallback=empty_fallback,
        min_pixels=min_pixels,
    ).error


# --- pointing game -----------------------------------------------------------------------


def pointing_tolerance(height: int, width: int, tolerance: float | None = None) -> float:
    """The pointing game's tolerance in pixels for an ``height x width`` map.

    ``None`` scales the 15 px defined at 224 px to the map's shorter side:
    ``15 * min(height, width) / 224`` (7.5 px at 112, 15 at 224, 30 at 448), not rounded. A
    number is used as given, in pixels (``15`` reproduces TorchRay at any size).

    Example:
        >>> pointing_tolerance(112, 300)
        7.5
        >>> pointing_tolerance(112, 300, tolerance=15)
        15.0
    """
    if tolerance is not None:
        return real(tolerance, "tolerance", 0.0)
    return POINTING_TOLERANCE_AT_224 * min(height, width) / 224


def _class_accuracies(label: Tensor, hits: Tensor) -> tuple[Tensor, Tensor]:
    """Classes seen and the fraction of hits of each."""
    classes, inverse = torch.unique(label, return_inverse=True)
    count = torch.zeros(len(classes), device=hits.device).index_add_(
        0, inverse, torch.ones_like(hits, dtype=torch.float32)
    )
    hit = torch.zeros(len(classes), device=hits.device).index_add_(0, inverse, hits.float())
    return classes, hit / count


@dataclass(frozen=True)
class PointingGameResult:
    """Per-pair results of :func:`pointing_game_details`, one row per scored pair.

    Attributes:
        image: ``(P,)`` long, the image of each (image, present requested class) pair.
        label: ``(P,)`` long, its class.
        hits: ``(P,)`` bool, True where the map's maximum is within the tolerance of the
            class's region.
        points: ``(P, 2)`` long ``(x, y)``: the first maximum of the map in raster order.
        tolerance: The tolerance used, in pixels.
    """

    image: Tensor
    label: Tensor
    hits: Tensor
    points: Tensor
    tolerance: float

    @property
    def classes(self) -> Tensor:
        """``(C,)`` the classes seen, sorted."""
        return torch.unique(self.label)

    @property
    def class_accuracies(self) -> Tensor:
        """``(C,)`` fraction of hits of each class in :attr:`classes`."""
        return _class_accuracies(self.label, self.hits)[1]

    @property
    def accuracy(self) -> Tensor:
        """0-d mean of :attr:`class_accuracies` (NaN without any pair)."""
        return self.class_accuracies.mean()


def pointing_game_details(
    attributions: Tensor,
    target: Any,
    gt_boxes: Any,
    gt_labels: Any,
    tolerance: float | None = None,
    normalize: Normalization = "none",
) -> PointingGameResult:
    """:func:`pointing_game` with the per-pair points and hits.

    Takes exactly the arguments of :func:`pointing_game`.

    Returns:
        A :class:`PointingGameResult`.

    Example:
        >>> maps = torch.zeros(1, 1, 8, 8)
        >>> maps[0, 0, 6, 2] = 1.0  # (x, y) = (2, 6)
        >>> r = pointing_game_details(maps, [[7]], [[[3, 0, 7, 4]]], [[7]], tolerance=2)
        >>> r.points, r.hits  # 1 column and 2 rows from the box: distance sqrt(5) > 2
        (tensor([[2, 6]]), tensor([False]))
    """
    s = _scene(attributions, target, gt_boxes, gt_labels, normalize)
    height, width = s.maps.shape[2:]
    tol = pointing_tolerance(height, width, tolerance)
    image, slot, label = _pairs(s.present, s.target)
    flat = s.maps[image, slot].flatten(1).argmax(dim=1)  # the first maximum (torch.argmax)
    points = torch.stack([flat % width, flat // width], dim=1)
    hits = torch.zeros(len(image), dtype=torch.bool, device=s.maps.device)
    for p, (i, c) in enumerate(zip(image.tolist(), label.tolist())):
        b = s.boxes[i][s.labels[i] == c]
        x, y = points[p].to(b.dtype)
        dx = (b[:, 0] - x).clamp_min(0) + (x - b[:, 2]).clamp_min(0)
        dy = (b[:, 1] - y).clamp_min(0) + (y - b[:, 3]).clamp_min(0)
        d2 = dx**2 + dy**2
        hits[p] = ((d2 == 0) | (d2 < tol**2)).any()
    return PointingGameResult(image, label, hits, points, tol)


def pointing_game(
    attributions: Tensor,
    target: Any,
    gt_boxes: Any,
    gt_labels: Any,
    tolerance: float | None = None,
    normalize: Normalization = "none",
) -> Tensor:
    """Pointing game accuracy (Zhang et al. 2016, TorchRay's protocol): mean per-class accuracy.

    For each (image, present requested class) pair the point is the map's maximum: its first
    occurrence in raster order (row by row, as TorchRay's ``torch.argmax`` of the flattened
    map), so ties go to the top-most, then left-most pixel. The pair is a hit when some pixel
    of the class's region (the union of its boxes) lies at a Euclidean distance strictly less
    than ``tolerance`` from the point, as TorchRay tests it; a point inside a box always hits
    (also with ``tolerance=0``). The score is the mean over the classes seen of each class's
    fraction of hits. TorchRay averages over all of the dataset's classes; the two agree when
    every class occurs (as on VOC 2007 test).

    Args:
        attributions: ``(N, K, H, W)`` maps, one per requested class (see the module doc).
        target: ``(N, K)`` class ids of the maps; negative for an unused slot.
        gt_boxes: The objects' boxes, e.g. a list of ``(M_i, 4)`` tensors.
        gt_labels: The objects' classes, e.g. a list of ``(M_i,)`` tensors.
        tolerance: In pixels; None (default) scales the 15 px defined at 224 px to the maps'
            shorter side, see :func:`pointing_tolerance`. TorchRay applies 15 px at the
            original image's resolution: for its figures, pass maps at that size and 15.
        normalize: Applied per map before the maximum is taken (only ``"abs_minmax"`` or a
            callable can move it).

    Returns:
        0-d float32 accuracy in ``[0, 1]`` (NaN when no requested class is present).

    Raises:
        InputError: An argument has the wrong shape, type or value.

    Example:
        >>> maps = torch.zeros(2, 1, 8, 8)
        >>> maps[:, 0, 1, 1] = 1.0
        >>> boxes = [[[0, 0, 2, 2]], [[5, 5, 7, 7]]]
        >>> pointing_game(maps, [[0], [0]], boxes, [[0], [0]])  # class 0: 1 hit in 2
        tensor(0.5000)
    """
    return pointing_game_details(
        attributions, target, gt_boxes, gt_labels, tolerance, normalize
    ).accuracy


# --- class selectivity -------------------------------------------------------------------


@dataclass(frozen=True)
class SelectivityResult:
    """Per-pair results of :func:`class_selectivity_details`, one row per scored pair.

    Attributes:
        image: ``(P,)`` long, the image of each pair (images with an object of another class).
        label: ``(P,)`` long, its class.
        selective: ``(P,)`` bool, True where ``inside > other``.
        inside: ``(P,)`` the map's mass (``"sum"``) or mean (``"mean"``) in the class's region.
        other: ``(P,)`` the largest mass or mean in one box of an object of another class.
    """

    image: Tensor
    label: Tensor
    selective: Tensor
    inside: Tensor
    other: Tensor

    @property
    def selectivity(self) -> Tensor:
        """0-d float32 fraction of selective pairs (NaN without any pair)."""
        return self.selective.float().mean()


def class_selectivity_details(
    attributions: Tensor,
    target: Any,
    gt_boxes: Any,
    gt_labels: Any,
    compare: str = "mean",
    normalize: Normalization = "none",
) -> SelectivityResult:
    """:func:`class_selectivity` with the per-pair masses.

    Takes exactly the arguments of :func:`class_selectivity`.

    Returns:
        A :class:`SelectivityResult`.

    Example:
        >>> maps = torch.zeros(1, 1, 8, 8)
        >>> maps[0, 0, 0:2, 0:2] = 1.0
        >>> boxes, labels = [[[0, 0, 1, 1], [4, 4, 7, 7]]], [[1, 2]]
        >>> r = class_selectivity_details(maps, [[1]], boxes, labels, compare="sum")
        >>> r.inside, r.other, r.selective
        (tensor([4.]), tensor([0.]), tensor([True]))
    """
    compare = one_of(compare, "compare", SELECTIVITY_COMPARISONS)
    s = _scene(attributions, target, gt_boxes, gt_labels, normalize)
    height, width = s.maps.shape[2:]
    image, slot, label = _pairs(s.present, s.target)
    keep, inside, other = [], [], []
    for i, k, c in zip(image.tolist(), slot.tolist(), label.tolist()):
        mine = s.labels[i] == c
        if mine.all():
            keep.append(False)
            continue
        regions = _region(s.boxes[i], height, width)
        m = s.maps[i, k]
        own = regions[mine].any(dim=0)
        others = regions[~mine]
        own_mass = (m * own).sum()
        other_mass = (m * others).sum(dim=(1, 2))
        if compare == "mean":
            own_mass = own_mass / own.sum()
            other_mass = other_mass / others.sum(dim=(1, 2))
        keep.append(True)
        inside.append(own_mass)
        other.append(other_mass.max())
    keep_t = torch.tensor(keep, dtype=torch.bool, device=s.maps.device)
    empty = s.maps.new_zeros(0)
    inside_t = torch.stack(inside) if inside else empty
    other_t = torch.stack(other) if other else empty
    return SelectivityResult(image[keep_t], label[keep_t], inside_t > other_t, inside_t, other_t)


def class_selectivity(
    attributions: Tensor,
    target: Any,
    gt_boxes: Any,
    gt_labels: Any,
    compare: str = "mean",
    normalize: Normalization = "none",
) -> Tensor:
    """Class selectivity: how often a class's map favours that class's object over the others.

    Scored on images holding an object of another class besides the requested present class
    ``c``: the pair passes when the map's value inside ``c``'s region (the union of its boxes)
    is strictly greater than inside the box of every object of another class. Boxes are
    inclusive; a pixel in two boxes counts in both; a tie fails.

    ``compare="mean"`` (default) compares the mean map value per pixel of each region,
    ``"sum"`` the mass (the sum of the map's values in it). Boxes differ in area, and a sum
    rewards large boxes: a class-blind map covering the whole image would pass for the largest
    object of every image, so the sum measures box sizes as much as selectivity. The mean does
    not depend on the area: a constant map ties everywhere and fails.

    Args:
        attributions: ``(N, K, H, W)`` maps, one per requested class (see the module doc).
        target: ``(N, K)`` class ids of the maps; negative for an unused slot.
        gt_boxes: The objects' boxes, e.g. a list of ``(M_i, 4)`` tensors.
        gt_labels: The objects' classes, e.g. a list of ``(M_i,)`` tensors.
        compare: ``"mean"`` or ``"sum"`` (see above).
        normalize: ``"none"``, ``"minmax"``, ``"abs_minmax"`` or a callable, applied per map.

    Returns:
        0-d float32 fraction of selective pairs (NaN when no pair qualifies).

    Raises:
        InputError: An argument has the wrong shape, type or value.

    Example:
        >>> maps = torch.zeros(1, 2, 8, 8)
        >>> maps[0, :, 0:2, 0:2] = 1.0  # both maps on the first object
        >>> boxes, labels = [[[0, 0, 1, 1], [4, 4, 7, 7]]], [[1, 2]]
        >>> class_selectivity(maps, [[1, 2]], boxes, labels)
        tensor(0.5000)
    """
    return class_selectivity_details(
        attributions, target, gt_boxes, gt_labels, compare, normalize
    ).selectivity


# --- absent-class mask area ----------------------------------------------------------------


class AreaSummary(NamedTuple):
    """Mean mask areas of absent and present requested classes.

    Attributes:
        absent: 0-d mean map value over the maps of absent classes (NaN without one).
        present: 0-d mean map value over the maps of present classes (NaN without one).
        ratio: 0-d ``absent / present`` (inf or NaN when ``present`` is 0).
    """

    absent: Tensor
    present: Tensor
    ratio: Tensor


def _summary(areas: Tensor, present: Tensor) -> AreaSummary:
    absent_area = areas[~present].mean()
    present_area = areas[present].mean()
    return AreaSummary(absent_area, present_area, absent_area / present_area)


@dataclass(frozen=True)
class AbsentClassAreaResult:
    """Per-map results of :func:`absent_class_area_details`, one row per requested class.

    Attributes:
        image: ``(P,)`` long, the image of each requested (image, class) pair.
        label: ``(P,)`` long, its class.
        present: ``(P,)`` bool, True where the class is present in the image.
        areas: ``(P,)`` the mean value of the (normalised) map, its area for a mask.
    """

    image: Tensor
    label: Tensor
    present: Tensor
    areas: Tensor

    @property
    def summary(self) -> AreaSummary:
        """The mean absent and present areas and their ratio."""
        return _summary(self.areas, self.present)


def absent_class_area_details(
    attributions: Tensor,
    target: Any,
    gt_boxes: Any,
    gt_labels: Any,
    normalize: Normalization = "none",
) -> AbsentClassAreaResult:
    """:func:`absent_class_area` with the area of every requested map.

    Takes exactly the arguments of :func:`absent_class_area`.

    Returns:
        An :class:`AbsentClassAreaResult`.

    Example:
        >>> maps = torch.zeros(1, 2, 4, 4)
        >>> maps[0, 0, 0:2] = 1.0  # class 0 (present): half the image
        >>> maps[0, 1, 0] = 1.0  # class 9 (absent): a quarter
        >>> r = absent_class_area_details(maps, [[0, 9]], [[0, 0, 3, 1]], [[0]])
        >>> r.present, r.areas
        (tensor([ True, False]), tensor([0.5000, 0.2500]))
    """
    s = _scene(attributions, target, gt_boxes, gt_labels, normalize)
    image, slot, label = _pairs(s.target >= 0, s.target)
    areas = s.maps[image, slot].mean(dim=(1, 2))
    return AbsentClassAreaResult(image, label, s.present[image, slot], areas)


def absent_class_area(
    attributions: Tensor,
    target: Any,
    gt_boxes: Any,
    gt_labels: Any,
    normalize: Normalization = "none",
) -> AreaSummary:
    """Mean mask area of classes absent from the image, and its ratio to the present classes'.

    The area of a map is its mean value over the image (for a mask in ``[0, 1]``, the fraction
    of the image it keeps). ``absent`` averages the areas of the maps whose class has no object
    in the image, ``present`` those whose class has one, each map counting once; ``ratio`` is
    ``absent / present``. A class-selective masking model keeps the ratio near 0; a
    class-blind one (the same mask for every class) near 1.

    Args:
        attributions: ``(N, K, H, W)`` maps, one per requested class (see the module doc).
        target: ``(N, K)`` class ids of the maps; negative for an unused slot.
        gt_boxes: The objects' boxes, e.g. a list of ``(M_i, 4)`` tensors.
        gt_labels: The objects' classes, e.g. a list of ``(M_i,)`` tensors.
        normalize: ``"none"`` (default, for masks) or another normalisation, applied per map.

    Returns:
        An :class:`AreaSummary` ``(absent, present, ratio)`` of 0-d tensors.

    Raises:
        InputError: An argument has the wrong shape, type or value.

    Example:
        >>> maps = torch.zeros(1, 2, 4, 4)
        >>> maps[0, 0, 0:2] = 1.0
        >>> maps[0, 1, 0] = 1.0
        >>> absent_class_area(maps, [[0, 9]], [[0, 0, 3, 1]], [[0]]).ratio
        tensor(0.5000)
    """
    return absent_class_area_details(attributions, target, gt_boxes, gt_labels, normalize).summary


# --- accumulating metrics ------------------------------------------------------------------


class _PairMetric(AccumulatingMetric):
    """Keeps the class of every scored pair (``label_batches``) and one value per pair."""

    def _add_states(self, *names: str) -> None:
        for name in ("label_batches", *names):
            self.add_state(name, [], dist_reduce_fx="cat")

    def _append(self, **values: Tensor) -> None:
        for name, value in values.items():
            getattr(self, name).append(value.detach())

    @property
    def labels(self) -> Tensor:
        """``(num_pairs,)`` long: the class of every pair scored since the last reset."""
        return self.cat_state("label_batches", dtype=torch.long)

    @property
    def num_pairs(self) -> int:
        """Number of pairs scored since the last reset."""
        return self.state_length("label_batches")

    def _check_seen(self) -> None:
        if self.num_pairs == 0:
            raise RuntimeError(
                f"{type(self).__name__}.compute() needs an update() with at least one scored "
                "(image, class) pair first."
            )


class SceneLocalisationEvaluator(_PairMetric):
    """Accumulate :func:`scene_localisation_error` over a dataset, as a torchmetrics Metric.

    ``update(attributions, target, gt_boxes, gt_labels)`` returns the batch's
    :class:`SceneLocalisationResult`; ``compute`` gives the error over every pair seen.
    Per-pair results: :attr:`labels`, :attr:`hits`, :attr:`ious`, :attr:`empty`.

    Args:
        threshold: See :func:`scene_localisation_error`.
        iou_threshold: See :func:`scene_localisation_error`.
        normalize: See :func:`scene_localisation_error`.
        empty_fallback: See :func:`scene_localisation_error`.
        min_pixels: See :func:`scene_localisation_error`.
        kwargs: Options of :class:`torchmetrics.Metric`.

    Example:
        >>> metric = SceneLocalisationEvaluator()
        >>> maps = torch.zeros(1, 2, 8, 8)
        >>> maps[0, :, 0:4, 0:4] = 1.0
        >>> metric.update(maps, [[3, 5]], [[[0, 0, 3, 3], [4, 4, 7, 7]]], [[3, 5]]).hits
        tensor([ True, False])
        >>> metric.compute()
        tensor(0.5000)
    """

    is_differentiable = False
    higher_is_better = False
    plot_lower_bound = 0.0
    plot_upper_bound = 1.0

    def __init__(
        self,
        threshold: float = 0.5,
        iou_threshold: float = 0.5,
        normalize: Normalization = "none",
        *,
        empty_fallback: str = "max",
        min_pixels: int = 1,
        **kwargs: Any,
    ) -> None:
        iou_threshold = real(iou_threshold, "iou_threshold", 0.0, 1.0)
        threshold, normalize, empty_fallback, min_pixels = check_map_options(
            threshold, normalize, empty_fallback, min_pixels
        )
        super().__init__(**kwargs)
        self.threshold = threshold
        self.iou_threshold = iou_threshold
        self.normalize = normalize
        self.empty_fallback = empty_fallback
        self.min_pixels = min_pixels
        self._add_states("hit_batches", "iou_batches", "empty_batches")

    def update(
        self, attributions: Tensor, target: Any, gt_boxes: Any, gt_labels: Any
    ) -> SceneLocalisationResult:
        """Score a batch (see :func:`scene_localisation_error`) and keep its pairs."""
        r = scene_localisation_details(
            attributions,
            target,
            gt_boxes,
            gt_labels,
            self.threshold,
            self.iou_threshold,
            self.normalize,
            empty_fallback=self.empty_fallback,
            min_pixels=self.min_pixels,
        )
        self._append(
            label_batches=r.label, hit_batches=r.hits, iou_batches=r.ious, empty_batches=r.empty
        )
        return r

    @property
    def hits(self) -> Tensor:
        """``(num_pairs,)`` bool: True where the pair was localised."""
        return self.cat_state("hit_batches", dtype=torch.bool)

    @property
    def ious(self) -> Tensor:
        """``(num_pairs,)`` best IoU of each pair's box with its class's boxes."""
        return self.cat_state("iou_batches", dtype=torch.float32)

    @property
    def empty(self) -> Tensor:
        """``(num_pairs,)`` bool: True where the map was empty."""
        return self.cat_state("empty_batches", dtype=torch.bool)

    def compute(self) -> Tensor:
        """Return the per-object localisation error over every pair seen (0-d, in [0, 1])."""
        self._check_seen()
        return 1.0 - self.hits.float().mean()


class PointingGame(_PairMetric):
    """Accumulate :func:`pointing_game` over a dataset, as a torchmetrics Metric.

    ``update(attributions, target, gt_boxes, gt_labels)`` returns the batch's
    :class:`PointingGameResult`; ``compute`` gives the mean of the per-class accuracies over
    every pair seen (each class's accuracy pooled over all batches, not a mean of batch
    scores). :attr:`classes` and :attr:`class_accuracies` give the per-class figures.

    Args:
        tolerance: See :func:`pointing_game` (None: 15 px scaled to each batch's map size).
        normalize: See :func:`pointing_game`.
        kwargs: Options of :class:`torchmetrics.Metric`.

    Example:
        >>> metric = PointingGame(tolerance=0)
        >>> maps = torch.zeros(1, 1, 8, 8)
        >>> maps[0, 0, 1, 1] = 1.0
        >>> metric.update(maps, [[0]], [[[0, 0, 2, 2]]], [[0]]).hits
        tensor([True])
        >>> _ = metric.update(maps, [[4]], [[[5, 5, 7, 7]]], [[4]])
        >>> metric.class_accuracies, metric.compute()
        (tensor([1., 0.]), tensor(0.5000))
    """

    is_differentiable = False
    higher_is_better = True
    plot_lower_bound = 0.0
    plot_upper_bound = 1.0

    def __init__(
        self, tolerance: float | None = None, normalize: Normalization = "none", **kwargs: Any
    ) -> None:
        tolerance = real(tolerance, "tolerance", 0.0, none_ok=True)
        normalize = check_normalize(normalize)
        super().__init__(**kwargs)
        self.tolerance = tolerance
        self.normalize = normalize
        self._add_states("hit_batches")

    def update(
        self, attributions: Tensor, target: Any, gt_boxes: Any, gt_labels: Any
    ) -> PointingGameResult:
        """Score a batch (see :func:`pointing_game`) and keep its pairs."""
        r = pointing_game_details(
            attributions, target, gt_boxes, gt_labels, self.tolerance, self.normalize
        )
        self._append(label_batches=r.label, hit_batches=r.hits)
        return r

    @property
    def hits(self) -> Tensor:
        """``(num_pairs,)`` bool: True where the pair's point hit."""
        return self.cat_state("hit_batches", dtype=torch.bool)

    @property
    def classes(self) -> Tensor:
        """``(C,)`` the classes seen, sorted."""
        return torch.unique(self.labels)

    @property
    def class_accuracies(self) -> Tensor:
        """``(C,)`` fraction of hits of each class in :attr:`classes`."""
        return _class_accuracies(self.labels, self.hits)[1]

    def compute(self) -> Tensor:
        """Return the mean per-class accuracy over every pair seen (0-d, in [0, 1])."""
        self._check_seen()
        return self.class_accuracies.mean()


class ClassSelectivity(_PairMetric):
    """Accumulate :func:`class_selectivity` over a dataset, as a torchmetrics Metric.

    ``update(attributions, target, gt_boxes, gt_labels)`` returns the batch's
    :class:`SelectivityResult`; ``compute`` gives the fraction of selective pairs over every
    pair seen (:attr:`selective` per pair).

    Args:
        compare: See :func:`class_selectivity`.
        normalize: See :func:`class_selectivity`.
        kwargs: Options of :class:`torchmetrics.Metric`.

    Example:
        >>> metric = ClassSelectivity()
        >>> maps = torch.zeros(1, 2, 8, 8)
        >>> maps[0, :, 0:2, 0:2] = 1.0
        >>> metric(maps, [[1, 2]], [[[0, 0, 1, 1], [4, 4, 7, 7]]], [[1, 2]])
        tensor(0.5000)
    """

    is_differentiable = False
    higher_is_better = True
    plot_lower_bound = 0.0
    plot_upper_bound = 1.0

    def __init__(
        self, compare: str = "mean", normalize: Normalization = "none", **kwargs: Any
    ) -> None:
        compare = one_of(compare, "compare", SELECTIVITY_COMPARISONS)
        normalize = check_normalize(normalize)
        super().__init__(**kwargs)
        self.compare = compare
        self.normalize = normalize
        self._add_states("selective_batches")

    def update(
        self, attributions: Tensor, target: Any, gt_boxes: Any, gt_labels: Any
    ) -> SelectivityResult:
        """Score a batch (see :func:`class_selectivity`) and keep its pairs."""
        r = class_selectivity_details(
            attributions, target, gt_boxes, gt_labels, self.compare, self.normalize
        )
        self._append(label_batches=r.label, selective_batches=r.selective)
        return r

    @property
    def selective(self) -> Tensor:
        """``(num_pairs,)`` bool: True where the pair's map was selective."""
        return self.cat_state("selective_batches", dtype=torch.bool)

    def compute(self) -> Tensor:
        """Return the fraction of selective pairs over every pair seen (0-d, in [0, 1])."""
        self._check_seen()
        return self.selective.float().mean()


class AbsentClassArea(_PairMetric):
    """Accumulate :func:`absent_class_area` over a dataset, as a torchmetrics Metric.

    ``update(attributions, target, gt_boxes, gt_labels)`` returns the batch's
    :class:`AbsentClassAreaResult`; ``compute`` gives the :class:`AreaSummary` over every
    requested map seen (each map counting once). :attr:`areas` and :attr:`present` per map.

    Args:
        normalize: See :func:`absent_class_area`.
        kwargs: Options of :class:`torchmetrics.Metric`.

    Example:
        >>> metric = AbsentClassArea()
        >>> maps = torch.zeros(1, 2, 4, 4)
        >>> maps[0, 0, 0:2] = 1.0
        >>> maps[0, 1, 0] = 1.0
        >>> _ = metric.update(maps, [[0, 9]], [[0, 0, 3, 1]], [[0]])
        >>> metric.compute()
        AreaSummary(absent=tensor(0.2500), present=tensor(0.5000), ratio=tensor(0.5000))
    """

    is_differentiable = False
    higher_is_better = False

    def __init__(self, normalize: Normalization = "none", **kwargs: Any) -> None:
        normalize = check_normalize(normalize)
        super().__init__(**kwargs)
        self.normalize = normalize
        self._add_states("present_batches", "area_batches")

    def update(
        self, attributions: Tensor, target: Any, gt_boxes: Any, gt_labels: Any
    ) -> AbsentClassAreaResult:
        """Score a batch (see :func:`absent_class_area`) and keep its maps' areas."""
        r = absent_class_area_details(attributions, target, gt_boxes, gt_labels, self.normalize)
        self._append(label_batches=r.label, present_batches=r.present, area_batches=r.areas)
        return r

    @property
    def present(self) -> Tensor:
        """``(num_pairs,)`` bool: True where the map's class was present."""
        return self.cat_state("present_batches", dtype=torch.bool)

    @property
    def areas(self) -> Tensor:
        """``(num_pairs,)`` mean value of each requested map."""
        return self.cat_state("area_batches")

    def compute(self) -> AreaSummary:
        """Return the mean absent and present areas and their ratio over every map seen."""
        self._check_seen()
        return _summary(self.areas, self.present)
