"""The absent-class mask area: how much of a map is left for classes not in the image."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NamedTuple

import torch
from torch import Tensor

from captum_realtime_mask.metrics.boxes import (
    Normalization,
    check_normalize,
)
from captum_realtime_mask.metrics.scenes._pairs import (
    PairMetric,
    read_scene,
    scene_pairs,
)

__all__ = [
    "AbsentClassArea",
    "AbsentClassAreaResult",
    "AreaSummary",
    "absent_class_area",
    "absent_class_area_details",
]


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
    s = read_scene(attributions, target, gt_boxes, gt_labels, normalize)
    image, slot, label = scene_pairs(s.target >= 0, s.target)
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


class AbsentClassArea(PairMetric):
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
