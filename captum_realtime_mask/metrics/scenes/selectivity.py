"""Class selectivity: a class's map weighs more in its own object's box than in the others'."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from captum_realtime_mask._checks import one_of
from captum_realtime_mask.metrics.boxes import (
    Normalization,
    check_normalize,
)
from captum_realtime_mask.metrics.scenes._pairs import (
    PairMetric,
    class_region,
    read_scene,
    scene_pairs,
)

__all__ = [
    "SELECTIVITY_COMPARISONS",
    "ClassSelectivity",
    "SelectivityResult",
    "class_selectivity",
    "class_selectivity_details",
]


#: Names accepted by the ``compare`` argument of the selectivity metrics.
SELECTIVITY_COMPARISONS = ("mean", "sum")


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
    s = read_scene(attributions, target, gt_boxes, gt_labels, normalize)
    height, width = s.maps.shape[2:]
    image, slot, label = scene_pairs(s.present, s.target)
    keep, inside, other = [], [], []
    for i, k, c in zip(image.tolist(), slot.tolist(), label.tolist()):
        mine = s.labels[i] == c
        if mine.all():
            keep.append(False)
            continue
        regions = class_region(s.boxes[i], height, width)
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


class ClassSelectivity(PairMetric):
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
