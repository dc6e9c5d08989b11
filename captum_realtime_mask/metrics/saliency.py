"""The saliency metric of Dabkowski & Gal (section 3.2, eq. 3), functional and accumulating.

For each image the metric crops the tightest box around the attribution map (or a given box),
resizes the crop bilinearly to the input size ignoring the aspect ratio, and asks the
classifier for the probability ``p`` of the target class on it:

    ``s = log(max(a, area_floor)) - log(p)``

where ``a`` is the fraction of the image the box covers. Lower is better: a small box that keeps
the classifier confident. Boxes follow :mod:`captum_realtime_mask.metrics.boxes` (inclusive
pixel indices); ``log(p)`` comes from ``log_softmax`` of the classifier's output, so the score
is finite even when ``p`` underflows.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from captum_realtime_mask._checks import (
    attribution_batch,
    describe,
    flag,
    image_batch,
    integer,
    is_int,
    real,
)
from captum_realtime_mask.errors import InputError
from captum_realtime_mask.metrics._accumulating import AccumulatingMetric
from captum_realtime_mask.metrics.boxes import (
    Normalization,
    attributions_to_boxes,
    box_area_fraction,
    box_sets,
    check_map_options,
)

__all__ = ["SaliencyMetric", "SaliencyResult", "saliency_metric", "saliency_metric_details"]


@dataclass(frozen=True)
class SaliencyResult:
    """Per-image and per-box results of :func:`saliency_metric_details`.

    Every image has one box when scored from attributions, and ``K_i`` boxes when scored from
    given boxes; the per-box fields list all ``M = sum(K_i)`` boxes in image order.

    Attributes:
        scores: ``(N,)`` saliency metric per image (the mean over its boxes' scores).
        empty: ``(N,)`` bool, True where the map was empty and the fallback box was scored
            (always False when boxes were given).
        boxes: ``(M, 4)`` float32 boxes scored, inclusive pixel coordinates.
        image_index: ``(M,)`` int64, the image each box belongs to.
        areas: ``(M,)`` area fraction ``a`` of each box, before the floor.
        probabilities: ``(M,)`` probability ``p`` of the target class on each resized crop.
        box_scores: ``(M,)`` ``log(max(a, area_floor)) - log(p)`` of each box.
    """

    scores: Tensor
    empty: Tensor
    boxes: Tensor
    image_index: Tensor
    areas: Tensor
    probabilities: Tensor
    box_scores: Tensor


_TARGET_HINT = (
    "Pass an int (the same class for every image), a list of N ints, a tensor with one or N "
    "class indices, or None for the classifier's predicted class."
)


def format_metric_target(target: Any, n: int, device: torch.device) -> Tensor:
    """Return Captum-style ``target`` (not None) as an int64 tensor of length ``n``."""
    if isinstance(target, bool):
        raise InputError(
            f"must name the class to score for each image; got {describe(target)}. {_TARGET_HINT}",
            argument="target",
        )
    if is_int(target):
        t = torch.full((n,), int(target), dtype=torch.long, device=device)
    elif isinstance(target, Tensor):
        if target.is_floating_point() or target.is_complex() or target.dtype == torch.bool:
            raise InputError(
                f"must hold integer class indices; got {describe(target)}. {_TARGET_HINT}",
                argument="target",
            )
        if target.numel() == 1:
            t = target.reshape(1).to(device=device, dtype=torch.long).expand(n)
        elif target.dim() == 1 and target.numel() == n:
            t = target.to(device=device, dtype=torch.long)
        else:
            raise InputError(
                f"must hold 1 or N = {n} class indices; got {describe(target)}. {_TARGET_HINT}",
                argument="target",
            )
    elif isinstance(target, (list, tuple)) and all(is_int(v) for v in target):
        if len(target) != n:
            raise InputError(
                f"must list N = {n} class indices; got {describe(target)}. {_TARGET_HINT}",
                argument="target",
            )
        t = torch.tensor([int(v) for v in target], dtype=torch.long, device=device)
    else:
        raise InputError(
            f"has an unsupported type: {describe(target)}. {_TARGET_HINT}", argument="target"
        )
    if (t < 0).any():
        raise InputError(
            f"must hold non-negative class indices; got {t.tolist()}.", argument="target"
        )
    return t


def format_forward_args(additional_forward_args: Any) -> tuple[Any, ...]:
    """Return Captum-style ``additional_forward_args`` as a tuple."""
    if additional_forward_args is None:
        return ()
    if isinstance(additional_forward_args, tuple):
        return additional_forward_args
    return (additional_forward_args,)


def select_args(args: tuple[Any, ...], n: int, index: Tensor) -> tuple[Any, ...]:
    """Pick the rows of per-example tensor arguments that belong to the crops in ``index``."""
    return tuple(
        arg[index.to(arg.device)]
        if isinstance(arg, Tensor) and arg.dim() > 0 and arg.shape[0] == n
        else arg
        for arg in args
    )


def _check_options(
    forward_func: Any, area_floor: Any, max_examples_per_batch: Any, apply_softmax: Any
) -> tuple[float, int | None, bool]:
    """Validate the metric's scalar options; return them, or raise InputError."""
    if not callable(forward_func):
        raise InputError(
            f"must be callable (a model or function); got {describe(forward_func)}.",
            argument="forward_func",
        )
    return (
        real(area_floor, "area_floor", 0.0, 1.0),
        integer(max_examples_per_batch, "max_examples_per_batch", 1, none_ok=True),
        flag(apply_softmax, "apply_softmax"),
    )


def _target_log_probs(out: Tensor, tgt: Tensor, apply_softmax: bool, index: Tensor) -> Tensor:
    """``log p`` of the target class of each row of ``out``, or InputError on unusable scores."""
    if apply_softmax:
        logp = torch.log_softmax(out, dim=1).gather(1, tgt[:, None])[:, 0]
        bad = torch.isnan(logp)
        problem = "NaN or +inf scores (logits)"
        fix = (
            "The saliency metric needs finite logits: check the classifier, and run it in "
            "float32 if float16 logits overflow."
        )
    else:
        p = out.gather(1, tgt[:, None])[:, 0]
        bad = torch.isnan(p) | (p < 0) | (p > 1 + 1e-3)
        problem = "target-class probabilities that are NaN or outside [0, 1]"
        fix = (
            "With apply_softmax=False it must return probabilities; "
            "keep apply_softmax=True for logits."
        )
        logp = p.clamp(torch.finfo(out.dtype).tiny, 1.0).log()
    if bad.any():
        images = sorted(set(index[bad.to(index.device)].tolist()))
        raise InputError(
            f"returned {problem} for the crops of image(s) {images[:10]}. {fix}",
            argument="forward_func",
        )
    return logp


def _crop_and_resize(x: Tensor, image_index: Tensor, boxes: Tensor) -> Tensor:
    """Crop each box of its image and resize it bilinearly to the full input size."""
    height, width = x.shape[-2:]
    crops = []
    for i, (x1, y1, x2, y2) in zip(image_index.tolist(), boxes.long().tolist()):
        crop = x[i : i + 1, :, y1 : y2 + 1, x1 : x2 + 1]
        if crop.shape[-2:] != (height, width):
            crop = F.interpolate(crop, size=(height, width), mode="bilinear", align_corners=False)
        crops.append(crop)
    return torch.cat(crops)


def classify(
    forward_func: Callable[..., Tensor], batch: Tensor, what: str, args: tuple[Any, ...]
) -> Tensor:
    """``forward_func(batch, *args)``, checked to be ``(batch, classes)`` scores."""
    out = forward_func(batch, *args)
    if not isinstance(out, Tensor) or out.dim() != 2 or out.shape[0] != batch.shape[0]:
        raise InputError(
            "must return scores shaped (batch, classes); for a batch of "
            f"{batch.shape[0]} {what} it returned {describe(out)}.",
            argument="forward_func",
        )
    return out


@torch.no_grad()
def predicted_classes(
    forward_func: Callable[..., Tensor], x: Tensor, args: tuple[Any, ...], step: int
) -> Tensor:
    """The classifier's top class on each full image (``target=None``), in chunks of ``step``."""
    n = x.shape[0]
    predicted = []
    for start in range(0, n, step):
        index = torch.arange(start, min(start + step, n), device=x.device)
        chunk = x[start : start + step]
        out = classify(forward_func, chunk, "images", select_args(args, n, index))
        if torch.isnan(out).any():
            raise InputError(
                "returned NaN scores on the full images, so their predicted class "
                "(target=None) is undefined. Check the classifier, or pass `target`.",
                argument="forward_func",
            )
        predicted.append(out.argmax(dim=1).to(device=x.device, dtype=torch.long))
    return torch.cat(predicted)


def _boxes_to_score(
    x: Tensor,
    attributions: Any,
    boxes: Any,
    threshold: Any,
    normalize: Any,
    empty_fallback: Any,
    min_pixels: Any,
) -> tuple[Tensor, Tensor, Tensor]:
    """The boxes to crop: ``(boxes (M, 4), image index (M,), empty flags (N,))``."""
    n, _, height, width = x.shape
    if (attributions is None) == (boxes is None):
        raise InputError(
            "Give exactly one of `attributions` (boxes are drawn around the map) and `boxes` "
            f"(scored as given); got attributions={describe(attributions)} "
            f"and boxes={describe(boxes)}."
        )
    if boxes is not None:
        sets = box_sets(boxes, n, "boxes", x.device, size=(height, width))
        image_index = torch.repeat_interleave(
            torch.arange(n, device=x.device),
            torch.tensor([s.shape[0] for s in sets], device=x.device),
        )
        return torch.cat(sets), image_index, torch.zeros(n, dtype=torch.bool, device=x.device)
    a = attribution_batch(attributions)
    if a.shape[0] != n or a.shape[2:] != x.shape[2:] or a.shape[1] not in (1, x.shape[1]):
        raise InputError(
            f"must be shaped like `inputs` {tuple(x.shape)}, or (N, 1, H, W), "
            f"or (N, H, W); got {describe(a)}.",
            argument="attributions",
        )
    map_boxes, empty = attributions_to_boxes(
        a.to(x.device), threshold, normalize, empty_fallback=empty_fallback, min_pixels=min_pixels
    )
    return map_boxes, torch.arange(n, device=x.device), empty


@torch.no_grad()
def _crop_log_probs(
    forward_func: Callable[..., Tensor],
    x: Tensor,
    boxes: Tensor,
    image_index: Tensor,
    targets: Tensor,
    args: tuple[Any, ...],
    step: int,
    apply_softmax: bool,
) -> Tensor:
    """``log p`` of each box's target class on its resized crop, ``step`` crops per call."""
    dtype = torch.promote_types(x.dtype, torch.float32)
    log_probs = []
    for start in range(0, boxes.shape[0], step):
        index = image_index[start : start + step]
        crops = _crop_and_resize(x, index, boxes[start : start + step])
        out = classify(forward_func, crops, "crops", select_args(args, x.shape[0], index))
        tgt = targets[index].to(out.device)
        if int(tgt.max()) >= out.shape[1]:
            raise InputError(
                f"holds class {int(tgt.max())} but `forward_func` returns only "
                f"{out.shape[1]} classes.",
                argument="target",
            )
        logp = _target_log_probs(out.to(dtype), tgt, apply_softmax, index)
        log_probs.append(logp.to(x.device))
    return torch.cat(log_probs)


def saliency_metric_details(
    forward_func: Callable[..., Tensor],
    inputs: Tensor | tuple[Tensor],
    attributions: Tensor | tuple[Tensor] | None,
    target: int | list[int] | Tensor | None,
    threshold: float = 0.5,
    area_floor: float = 0.05,
    additional_forward_args: Any = None,
    max_examples_per_batch: int | None = None,
    normalize: Normalization = "none",
    boxes: Any = None,
    *,
    empty_fallback: str = "max",
    min_pixels: int = 1,
    apply_softmax: bool = True,
) -> SaliencyResult:
    """:func:`saliency_metric` with every intermediate value, per image and per box.

    Takes exactly the arguments of :func:`saliency_metric`.

    Returns:
        A :class:`SaliencyResult`.

    Example:
        >>> uniform = lambda x: torch.zeros(x.shape[0], 4)  # p = 1/4 for any crop
        >>> x = torch.rand(1, 3, 4, 4)
        >>> r = saliency_metric_details(uniform, x, None, 0, boxes=[[[0, 0, 1, 1], [0, 0, 3, 3]]])
        >>> r.areas, r.probabilities
        (tensor([0.2500, 1.0000]), tensor([0.2500, 0.2500]))
        >>> r.scores  # mean of (log 0.25 - log 0.25) and (log 1 - log 0.25)
        tensor([0.6931])
    """
    x = image_batch(inputs)
    n, _, height, width = x.shape
    area_floor, max_examples_per_batch, apply_softmax = _check_options(
        forward_func, area_floor, max_examples_per_batch, apply_softmax
    )
    flat_boxes, image_index, empty = _boxes_to_score(
        x, attributions, boxes, threshold, normalize, empty_fallback, min_pixels
    )
    args = format_forward_args(additional_forward_args)
    step = max_examples_per_batch or max(n, flat_boxes.shape[0])
    if target is None:
        targets = predicted_classes(forward_func, x, args, step)
    else:
        targets = format_metric_target(target, n, x.device)
    log_p = _crop_log_probs(
        forward_func, x, flat_boxes, image_index, targets, args, step, apply_softmax
    )
    areas = box_area_fraction(flat_boxes.to(log_p.dtype), height, width)
    box_scores = areas.clamp_min(area_floor).log() - log_p
    sums = torch.zeros(n, dtype=log_p.dtype, device=x.device).index_add_(0, image_index, box_scores)
    counts = torch.bincount(image_index, minlength=n).to(log_p.dtype)
    return SaliencyResult(
        scores=sums / counts,
        empty=empty,
        boxes=flat_boxes,
        image_index=image_index,
        areas=areas,
        probabilities=log_p.exp(),
        box_scores=box_scores,
    )


def saliency_metric(
    forward_func: Callable[..., Tensor],
    inputs: Tensor | tuple[Tensor],
    attributions: Tensor | tuple[Tensor] | None,
    target: int | list[int] | Tensor | None,
    threshold: float = 0.5,
    area_floor: float = 0.05,
    additional_forward_args: Any = None,
    max_examples_per_batch: int | None = None,
    normalize: Normalization = "none",
    boxes: Any = None,
    *,
    empty_fallback: str = "max",
    min_pixels: int = 1,
    apply_softmax: bool = True,
) -> Tensor:
    """The paper's saliency metric of each image: ``log(max(a, area_floor)) - log(p)``.

    ``a`` is the area fraction of the tightest box around the pixels of the (normalised)
    attribution map strictly above ``threshold``; ``p`` is the softmax probability of
    ``target`` that ``forward_func`` gives to that box's crop of the input, resized bilinearly
    to the input size ignoring the aspect ratio. Lower is better. The paper reports the mean
    over a dataset (:class:`SaliencyMetric` accumulates it).

    Given ``boxes`` instead of attributions (ground-truth boxes, or a baseline such as
    :func:`~captum_realtime_mask.metrics.centre_box`), each box is scored and an image's score
    is the mean over its boxes (the paper's "ground truth boxes" row).

    Empty maps: when fewer than ``min_pixels`` pixels pass the threshold, the fallback box is
    scored (the whole image by default, so ``a = 1`` and ``s = -log p`` on the full image), and
    the image is flagged in :attr:`SaliencyResult.empty` (see :func:`saliency_metric_details`).
    No input gives NaN: ``log p`` comes from ``log_softmax``, and a classifier output that
    would give NaN (NaN or ``+inf`` logits) raises :class:`InputError`.

    Args:
        forward_func: The classifier: called as ``forward_func(crops, *additional_forward_args)``
            under ``torch.no_grad()`` and returning ``(batch, classes)`` logits (or
            probabilities with ``apply_softmax=False``). Its train/eval mode is left as it
            is: call ``model.eval()`` first.
        inputs: Images ``(N, C, H, W)`` as the classifier takes them, or a 1-tuple holding them.
        attributions: Maps shaped like ``inputs``, ``(N, 1, H, W)`` or ``(N, H, W)``, or None
            when ``boxes`` is given.
        target: The class to score: an int for all images, a list of N ints, a tensor with
            1 or N indices, or None for the class the classifier predicts on each full image
            (as in ``attribute(target=None)``; one more call of ``forward_func``, on the
            uncropped inputs).
        threshold: Map pixels strictly above it are inside the saliency region.
        area_floor: ``a`` is raised to at least this (0.05 in the paper), in ``[0, 1]``.
        additional_forward_args: Extra arguments for ``forward_func``, a value or a tuple.
            Tensors whose first dimension is ``N`` are per-example: each crop gets its image's
            rows. Other values are passed unchanged.
        max_examples_per_batch: At most this many crops per call of ``forward_func`` (None:
            all at once). Does not change the result.
        normalize: How attributions become a map to threshold: ``"none"`` (masks in
            ``[0, 1]``), ``"minmax"``, ``"abs_minmax"`` (gradient-like maps) or a callable;
            see :func:`~captum_realtime_mask.metrics.normalize_attributions`.
        boxes: Boxes to score instead of attributions, in inclusive pixel coordinates of the
            input (formats in :mod:`captum_realtime_mask.metrics.boxes`).
        empty_fallback: Box scored for an empty map: ``"max"`` (whole image) or ``"centre"``.
        min_pixels: Fewer passing pixels than this make a map empty (the authors' evaluator
            used 300 at 224 x 224 with a centre box).
        apply_softmax: False when ``forward_func`` already returns probabilities (they are
            clamped to the smallest positive float before the log; a target-class value
            outside ``[0, 1]`` raises :class:`InputError`, as logits would give).

    Returns:
        ``(N,)`` scores on the inputs' device, in the inputs' dtype promoted to at least
        float32.

    Raises:
        InputError: An argument has the wrong shape, type or value, or ``forward_func``
            returns unusable scores (NaN, ``+inf``, or probabilities outside ``[0, 1]``).

    Example:
        >>> uniform = lambda x: torch.zeros(x.shape[0], 4)  # p = 1/4 for any crop
        >>> x = torch.rand(2, 3, 4, 4)
        >>> mask = torch.zeros(2, 1, 4, 4)
        >>> mask[0, :, :2, :] = 1.0  # top half: a = 0.5; image 1 is empty: whole image
        >>> saliency_metric(uniform, x, mask, target=0)
        tensor([0.6931, 1.3863])
        >>> likes_2 = lambda x: torch.tensor([[0.0, 0.0, 2.0]]).expand(x.shape[0], 3)
        >>> saliency_metric(likes_2, x, mask, target=None)  # class 2: p = e^2 / (e^2 + 2)
        tensor([-0.4536,  0.2395])
    """
    return saliency_metric_details(
        forward_func,
        inputs,
        attributions,
        target,
        threshold,
        area_floor,
        additional_forward_args,
        max_examples_per_batch,
        normalize,
        boxes,
        empty_fallback=empty_fallback,
        min_pixels=min_pixels,
        apply_softmax=apply_softmax,
    ).scores


class SaliencyMetric(AccumulatingMetric):
    """Accumulate :func:`saliency_metric` over a dataset, as a :class:`torchmetrics.Metric`.

    ``update`` scores a batch (the arguments of :func:`saliency_metric` that are not options
    of the metric) and returns its ``(N,)`` scores; ``compute`` gives the mean score over every
    example seen since the last ``reset`` (the paper's table 3 number); calling the metric
    (``forward``) scores a batch, accumulates it and returns the batch's mean, calling the
    classifier once. Per-example scores and empty-map flags stay available as :attr:`scores`
    and :attr:`empty`, on the device of the batches.

    The results are kept in list states reduced with ``"cat"`` (``score_batches`` and
    ``empty_batches``), so in a distributed run ``compute`` averages over every process's
    examples, and :meth:`~torchmetrics.Metric.merge_state` combines metrics.

    The classifier is used, not owned: it is not a submodule of the metric, so
    ``metric.to(device)``, ``metric.state_dict()`` and ``metric.parameters()`` leave it out.
    Put it on the batches' device yourself.

    Args:
        forward_func: The classifier (see :func:`saliency_metric`).
        threshold: See :func:`saliency_metric`.
        area_floor: See :func:`saliency_metric`.
        max_examples_per_batch: See :func:`saliency_metric`.
        normalize: See :func:`saliency_metric`.
        empty_fallback: See :func:`saliency_metric`.
        min_pixels: See :func:`saliency_metric`.
        apply_softmax: See :func:`saliency_metric`.
        kwargs: Options of :class:`torchmetrics.Metric` (``dist_sync_on_step``,
            ``process_group``, ``sync_on_compute``, ``compute_on_cpu``, ...).

    Raises:
        InputError: An argument has the wrong type or value (checked here, before any batch).

    Example:
        >>> metric = SaliencyMetric(lambda x: torch.zeros(x.shape[0], 4))
        >>> metric.update(torch.rand(2, 3, 4, 4), torch.ones(2, 1, 4, 4), target=1)
        tensor([1.3863, 1.3863])
        >>> metric(torch.rand(1, 3, 4, 4), None, target=1, boxes=[[0, 0, 1, 1]])  # batch mean
        tensor(0.)
        >>> metric.compute(), metric.num_examples
        (tensor(0.9242), 3)
    """

    is_differentiable = False
    higher_is_better = False

    def __init__(
        self,
        forward_func: Callable[..., Tensor],
        threshold: float = 0.5,
        area_floor: float = 0.05,
        max_examples_per_batch: int | None = None,
        normalize: Normalization = "none",
        *,
        empty_fallback: str = "max",
        min_pixels: int = 1,
        apply_softmax: bool = True,
        **kwargs: Any,
    ) -> None:
        # Validate now, not at the first update(), so a typo fails where it was made.
        area_floor, max_examples_per_batch, apply_softmax = _check_options(
            forward_func, area_floor, max_examples_per_batch, apply_softmax
        )
        threshold, normalize, empty_fallback, min_pixels = check_map_options(
            threshold, normalize, empty_fallback, min_pixels
        )
        super().__init__(**kwargs)
        self.forward_func = forward_func
        self.threshold = threshold
        self.area_floor = area_floor
        self.max_examples_per_batch = max_examples_per_batch
        self.normalize = normalize
        self.empty_fallback = empty_fallback
        self.min_pixels = min_pixels
        self.apply_softmax = apply_softmax
        self.add_state("score_batches", [], dist_reduce_fx="cat")
        self.add_state("empty_batches", [], dist_reduce_fx="cat")

    def __setattr__(self, name: str, value: Any) -> None:
        if name == "forward_func":  # a plain attribute, never a registered submodule
            self.__dict__[name] = value
        else:
            super().__setattr__(name, value)

    def update(
        self,
        inputs: Tensor | tuple[Tensor],
        attributions: Tensor | tuple[Tensor] | None,
        target: int | list[int] | Tensor | None,
        additional_forward_args: Any = None,
        boxes: Any = None,
    ) -> Tensor:
        """Score a batch and remember its per-example results.

        Args:
            inputs: See :func:`saliency_metric`.
            attributions: See :func:`saliency_metric`.
            target: See :func:`saliency_metric` (None: the classifier's predicted class).
            additional_forward_args: See :func:`saliency_metric`.
            boxes: See :func:`saliency_metric`.

        Returns:
            The batch's ``(N,)`` scores.

        Example:
            >>> metric = SaliencyMetric(lambda x: torch.zeros(x.shape[0], 2))
            >>> metric.update(torch.rand(1, 3, 4, 4), None, target=None, boxes=[[0, 0, 3, 3]])
            tensor([0.6931])
        """
        result = saliency_metric_details(
            self.forward_func,
            inputs,
            attributions,
            target,
            self.threshold,
            self.area_floor,
            additional_forward_args,
            self.max_examples_per_batch,
            self.normalize,
            boxes,
            empty_fallback=self.empty_fallback,
            min_pixels=self.min_pixels,
            apply_softmax=self.apply_softmax,
        )
        self.score_batches.append(result.scores.detach())
        self.empty_batches.append(result.empty.detach())
        return result.scores

    @property
    def num_examples(self) -> int:
        """Number of examples seen since the last reset."""
        return self.state_length("score_batches")

    @property
    def scores(self) -> Tensor:
        """``(num_examples,)`` per-example scores, in the order seen."""
        return self.cat_state("score_batches")

    @property
    def empty(self) -> Tensor:
        """``(num_examples,)`` bool flags: True where a map was empty (fallback box scored)."""
        return self.cat_state("empty_batches", dtype=torch.bool)

    def compute(self) -> Tensor:
        """Return the mean score over every example seen (the paper's table 3 number).

        Raises:
            RuntimeError: No example was seen since the last reset.

        Example:
            >>> metric = SaliencyMetric(lambda x: torch.zeros(x.shape[0], 2))
            >>> _ = metric.update(torch.rand(2, 3, 4, 4), None, 0, boxes=[[0, 0, 1, 1]] * 2)
            >>> metric.compute()  # log(0.25) - log(0.5) for both images
            tensor(-0.6931)
        """
        scores = self.scores
        if scores.shape[0] == 0:
            raise RuntimeError("SaliencyMetric.compute() needs at least one update() first.")
        return scores.mean()
