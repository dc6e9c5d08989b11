"""Per-object localisation in scenes: a box around each requested present class's map."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from captum_realtime_mask._checks import real
from captum_realtime_mask.metrics.boxes import (
    Normalization,
    attributions_to_boxes,
    check_map_options,
    pixel_box_iou,
)
from captum_realtime_mask.metrics.scenes._pairs import (
    PairMetric,
    read_scene,
    scene_pairs,
)

__all__ = [
    "SceneLocalisationEvaluator",
    "SceneLocalisationResult",
    "scene_localisation_details",
    "scene_localisation_error",
]


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
    s = read_scene(attributions, target, gt_boxes, gt_labels, normalize)
    image, slot, label = scene_pairs(s.present, s.target)
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


class SceneLocalisationEvaluator(PairMetric):
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
