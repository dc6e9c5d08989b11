"""Weakly supervised localisation error (paper section 5.1.1): box IoU against ground truth.

Each map is thresholded (default 0.5), the tightest box around it is drawn with
:func:`torchvision.ops.masks_to_boxes`, and the image is a hit when that box's IoU with any of
its ground-truth boxes is strictly greater than ``iou_threshold`` (default 0.5). The error is
the fraction of images that are not hits, in ``[0, 1]``; multiply by 100 for the paper's
percentages (e.g. 36.9 for the masking model on GoogLeNet). Boxes follow
:mod:`captum_realtime_mask.metrics.boxes` (inclusive pixel indices; the IoU is that of the
two sets of pixels).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from captum_realtime_mask._checks import attribution_batch, describe, real
from captum_realtime_mask.errors import InputError
from captum_realtime_mask.metrics._accumulating import AccumulatingMetric
from captum_realtime_mask.metrics.boxes import (
    Normalization,
    attributions_to_boxes,
    box_count,
    box_sets,
    check_map_options,
    pixel_box_iou,
)

__all__ = [
    "LocalisationEvaluator",
    "LocalisationResult",
    "localisation_details",
    "localisation_error",
]


@dataclass(frozen=True)
class LocalisationResult:
    """Per-image results of :func:`localisation_details`.

    Attributes:
        hits: ``(N,)`` bool, True where the best IoU exceeds the IoU threshold.
        ious: ``(N,)`` float32, the best IoU of the predicted box with any ground-truth box.
        boxes: ``(N, 4)`` float32 predicted boxes, inclusive pixel coordinates.
        empty: ``(N,)`` bool, True where the map was empty and the fallback box was used
            (always False when boxes were given).
    """

    hits: Tensor
    ious: Tensor
    boxes: Tensor
    empty: Tensor

    @property
    def error(self) -> Tensor:
        """0-d float32 fraction of images that are not hits, in ``[0, 1]``."""
        return 1.0 - self.hits.float().mean()


def localisation_details(
    attributions: Tensor | tuple[Tensor] | None,
    gt_boxes: Any,
    threshold: float = 0.5,
    iou_threshold: float = 0.5,
    normalize: Normalization = "none",
    boxes: Any = None,
    *,
    empty_fallback: str = "max",
    min_pixels: int = 1,
) -> LocalisationResult:
    """:func:`localisation_error` with the per-image hits, IoUs and predicted boxes.

    Takes exactly the arguments of :func:`localisation_error`.

    Returns:
        A :class:`LocalisationResult`.

    Example:
        >>> mask = torch.zeros(1, 1, 8, 8)
        >>> mask[0, 0, 0:4, 0:4] = 1.0
        >>> r = localisation_details(mask, [[[0, 0, 3, 1], [0, 0, 3, 4]]])
        >>> r.boxes, r.ious, r.hits
        (tensor([[0., 0., 3., 3.]]), tensor([0.8000]), tensor([True]))
    """
    iou_threshold = real(iou_threshold, "iou_threshold", 0.0, 1.0)
    if (attributions is None) == (boxes is None):
        raise InputError(
            "Give exactly one of `attributions` (boxes are drawn around the map) and `boxes` "
            f"(predicted boxes as given); got attributions={describe(attributions)} and "
            f"boxes={describe(boxes)}."
        )
    if attributions is not None:
        a = attribution_batch(attributions)
        n, size, device = a.shape[0], (a.shape[2], a.shape[3]), a.device
        predicted, empty = attributions_to_boxes(
            a, threshold, normalize, empty_fallback=empty_fallback, min_pixels=min_pixels
        )
    else:
        n = box_count(boxes) or box_count(gt_boxes) or 1
        size = None
        device = boxes.device if isinstance(boxes, Tensor) else torch.device("cpu")
        sets = box_sets(boxes, n, "boxes", device)
        if any(s.shape[0] != 1 for s in sets):
            raise InputError(
                "must give exactly one predicted box per image; got "
                f"{[s.shape[0] for s in sets]} boxes per image.",
                argument="boxes",
            )
        predicted = torch.cat(sets)
        empty = torch.zeros(n, dtype=torch.bool, device=device)
    gt_sets = box_sets(gt_boxes, n, "gt_boxes", device, size=size)
    ious = torch.stack([pixel_box_iou(predicted[i], gt).max() for i, gt in enumerate(gt_sets)])
    return LocalisationResult(hits=ious > iou_threshold, ious=ious, boxes=predicted, empty=empty)


def localisation_error(
    attributions: Tensor | tuple[Tensor] | None,
    gt_boxes: Any,
    threshold: float = 0.5,
    iou_threshold: float = 0.5,
    normalize: Normalization = "none",
    boxes: Any = None,
    *,
    empty_fallback: str = "max",
    min_pixels: int = 1,
) -> Tensor:
    """Weakly supervised localisation error of a batch, as a fraction in ``[0, 1]``.

    An image is a hit when the tightest box around its map's pixels strictly above
    ``threshold`` has an IoU strictly greater than ``iou_threshold`` with any of the image's
    ground-truth boxes. Empty maps (fewer than ``min_pixels`` passing pixels) are scored with
    the fallback box, the whole image by default, and flagged in
    :attr:`LocalisationResult.empty` (see :func:`localisation_details`).

    Args:
        attributions: Maps shaped ``(N, C, H, W)``, ``(N, 1, H, W)`` or ``(N, H, W)``, or None
            when ``boxes`` is given.
        gt_boxes: Ground-truth boxes of each image, at least one per image, in inclusive pixel
            coordinates of the maps' size: an ``(N, 4)`` or ``(N, K, 4)`` tensor, a sequence of
            ``(K_i, 4)`` tensors (e.g. ``[a.boxes for a in annotations]`` from
            :func:`~captum_realtime_mask.metrics.parse_voc_xml`), or one ``(4,)`` box for all.
        threshold: Map pixels strictly above it are inside the predicted region.
        iou_threshold: A hit needs an IoU strictly above it (0.5 in the paper).
        normalize: How attributions become a map to threshold: ``"none"``, ``"minmax"``,
            ``"abs_minmax"`` or a callable; see
            :func:`~captum_realtime_mask.metrics.normalize_attributions`.
        boxes: Predicted boxes, one per image, instead of attributions (e.g.
            :func:`~captum_realtime_mask.metrics.centre_box` for the paper's baseline).
        empty_fallback: Box used for an empty map: ``"max"`` (whole image) or ``"centre"``.
        min_pixels: Fewer passing pixels than this make a map empty.

    Returns:
        0-d float32 tensor: the fraction of images that are not hits (times 100 for percent).

    Raises:
        InputError: An argument has the wrong shape, type or value.

    Example:
        >>> from captum_realtime_mask.metrics import centre_box
        >>> mask = torch.zeros(2, 1, 8, 8)
        >>> mask[:, :, 0:4, 0:4] = 1.0
        >>> gt = [torch.tensor([[0.0, 0.0, 3.0, 4.0]]), torch.tensor([[4.0, 4.0, 7.0, 7.0]])]
        >>> localisation_error(mask, gt)
        tensor(0.5000)
        >>> localisation_error(None, gt, boxes=centre_box(8, 8))
        tensor(1.)
    """
    return localisation_details(
        attributions,
        gt_boxes,
        threshold,
        iou_threshold,
        normalize,
        boxes,
        empty_fallback=empty_fallback,
        min_pixels=min_pixels,
    ).error


class LocalisationEvaluator(AccumulatingMetric):
    """Accumulate localisation results over a dataset, as a :class:`torchmetrics.Metric`.

    ``update`` scores a batch (the arguments of :func:`localisation_error`) and returns its
    :class:`LocalisationResult`; ``compute`` gives the localisation error over every image seen
    since the last ``reset``; calling the evaluator (``forward``) scores a batch, accumulates
    it and returns the batch's error. Per-image results stay available as :attr:`hits`,
    :attr:`ious`, :attr:`boxes` and :attr:`empty`, on the device of the batches.

    The results are kept in list states reduced with ``"cat"`` (``hit_batches``,
    ``iou_batches``, ``box_batches``, ``empty_batches``), so in a distributed run ``compute``
    scores every process's images (each image once when the sampler does not repeat any), and
    :meth:`~torchmetrics.Metric.merge_state` combines evaluators.

    Args:
        threshold: See :func:`localisation_error`.
        iou_threshold: See :func:`localisation_error`.
        normalize: See :func:`localisation_error`.
        empty_fallback: See :func:`localisation_error`.
        min_pixels: See :func:`localisation_error`.
        kwargs: Options of :class:`torchmetrics.Metric` (``dist_sync_on_step``,
            ``process_group``, ``sync_on_compute``, ``compute_on_cpu``, ...).

    Raises:
        InputError: An argument has the wrong type or value (checked here, before any batch).

    Example:
        >>> from captum_realtime_mask.metrics import max_box
        >>> evaluator = LocalisationEvaluator()
        >>> mask = torch.zeros(2, 1, 8, 8)
        >>> mask[:, :, 0:4, 0:4] = 1.0
        >>> evaluator.update(mask, [[0, 0, 3, 3], [4, 4, 7, 7]]).hits
        tensor([ True, False])
        >>> evaluator(None, [[0, 0, 7, 7]], boxes=max_box(8, 8))  # this batch's error
        tensor(0.)
        >>> evaluator.compute(), evaluator.hits
        (tensor(0.3333), tensor([ True, False,  True]))
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
        # Validate now, not at the first update(), so a typo fails where it was made.
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
        self.add_state("hit_batches", [], dist_reduce_fx="cat")
        self.add_state("iou_batches", [], dist_reduce_fx="cat")
        self.add_state("box_batches", [], dist_reduce_fx="cat")
        self.add_state("empty_batches", [], dist_reduce_fx="cat")

    def update(
        self,
        attributions: Tensor | tuple[Tensor] | None,
        gt_boxes: Any,
        boxes: Any = None,
    ) -> LocalisationResult:
        """Score a batch and remember its per-image results.

        Args:
            attributions: See :func:`localisation_error`.
            gt_boxes: See :func:`localisation_error`.
            boxes: See :func:`localisation_error`.

        Returns:
            The batch's :class:`LocalisationResult`.

        Example:
            >>> evaluator = LocalisationEvaluator()
            >>> evaluator.update(torch.ones(1, 4, 4), [[0, 0, 3, 3]]).ious
            tensor([1.])
        """
        result = localisation_details(
            attributions,
            gt_boxes,
            self.threshold,
            self.iou_threshold,
            self.normalize,
            boxes,
            empty_fallback=self.empty_fallback,
            min_pixels=self.min_pixels,
        )
        self.hit_batches.append(result.hits.detach())
        self.iou_batches.append(result.ious.detach())
        self.box_batches.append(result.boxes.detach())
        self.empty_batches.append(result.empty.detach())
        return result

    @property
    def num_examples(self) -> int:
        """Number of images seen since the last reset."""
        return self.state_length("hit_batches")

    @property
    def hits(self) -> Tensor:
        """``(num_examples,)`` bool: True where the image was localised."""
        return self.cat_state("hit_batches", dtype=torch.bool)

    @property
    def ious(self) -> Tensor:
        """``(num_examples,)`` best IoU of each image's predicted box with its ground truth."""
        return self.cat_state("iou_batches", dtype=torch.float32)

    @property
    def boxes(self) -> Tensor:
        """``(num_examples, 4)`` predicted boxes, inclusive pixel coordinates."""
        return self.cat_state("box_batches", (4,), dtype=torch.float32)

    @property
    def empty(self) -> Tensor:
        """``(num_examples,)`` bool: True where a map was empty and the fallback box was used."""
        return self.cat_state("empty_batches", dtype=torch.bool)

    def compute(self) -> Tensor:
        """Return the localisation error over every image seen, a 0-d fraction in ``[0, 1]``.

        Raises:
            RuntimeError: No image was seen since the last reset.

        Example:
            >>> evaluator = LocalisationEvaluator()
            >>> _ = evaluator.update(torch.ones(2, 4, 4), [[0, 0, 3, 3], [0, 0, 1, 1]])
            >>> evaluator.compute()  # the second image's IoU is 4/16: a miss
            tensor(0.5000)
        """
        hits = self.hits
        if hits.shape[0] == 0:
            raise RuntimeError("LocalisationEvaluator.compute() needs at least one update() first.")
        return 1.0 - hits.float().mean()
