"""The pointing game (Zhang et al. 2016, TorchRay's protocol) for scenes."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from captum_realtime_mask._checks import real
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
    "POINTING_TOLERANCE_AT_224",
    "PointingGame",
    "PointingGameResult",
    "pointing_game",
    "pointing_game_details",
    "pointing_tolerance",
]


#: The pointing game's tolerance in pixels for a 224-pixel shorter side (Zhang et al. 2016).
POINTING_TOLERANCE_AT_224 = 15.0


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
    s = read_scene(attributions, target, gt_boxes, gt_labels, normalize)
    height, width = s.maps.shape[2:]
    tol = pointing_tolerance(height, width, tolerance)
    image, slot, label = scene_pairs(s.present, s.target)
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


class PointingGame(PairMetric):
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
