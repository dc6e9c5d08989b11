"""Deletion and insertion (Petsiuk et al. 2018, RISE): faithfulness of any attribution map.

Both metrics change an image's pixels in the order of its attribution map, from the most
important down, and follow the classifier's probability of the target class:

* **deletion** starts from the image and *removes* the pixels (replaces them by their value in
  a removal image); a faithful map makes the probability fall fast: *lower AUC is better*.
* **insertion** starts from the removal image and *restores* the pixels of the image; a faithful
  map makes the probability rise fast: *higher AUC is better*.

The protocol, fixed here so that numbers can be compared:

* *Order.* A map ``(N, C, H, W)`` is first **summed over its channels** (a pixel's channels are
  changed together; summing orders pixels as the channel mean does). The ``H * W`` values are
  sorted in decreasing order with a stable sort of the row-major flattened map, so tied pixels
  are taken in raster order (top row first, left to right).
* *Steps.* Step ``k = 0 .. steps`` has the first ``n_k = round(k * H * W / steps)`` pixels of
  that order changed (rounded half up, in exact integer arithmetic). Step 0 is the untouched
  image (deletion) or the removal image (insertion); step ``steps`` is the other one.
* *Removal.* ``"blur"`` (default): a Gaussian blur of the image with sigma ``blur_sigma`` at a
  224-pixel side, scaled with the image's longer side (10 at 224 px is 2.9 px at 64 px), reflect
  padding, radius ``3 sigma`` (the blur of :mod:`captum_realtime_mask.objective`, used to train
  the masks). ``"constant"``: every channel set to ``fill_value`` (default 0) *in the
  classifier's input space*: 0 is black for images in ``[0, 1]`` and the mean colour for
  standardised inputs.
* *Score.* ``p_k`` is the softmax probability of the target class on step ``k`` (or the
  classifier's output itself with ``apply_softmax=False``); the AUC is the trapezoid rule over
  ``(n_k / (H W), p_k)``, so it lies in ``[0, 1]``.

A known caveat: the removal decides part of the ranking. Removing scattered single pixels by
their blurred value leaves the object's shape readable, while removing contiguous regions
blurs it away, so smooth maps can gain from a blur removal whatever their faithfulness (Song
et al. 2023; on removal baselines see also Gomez et al. 2022, Rong et al. 2022); a constant
removal favours scattered maps in deletion (black speckle is itself out of distribution), and
insertion favours smooth maps under both. Report both removals, and score a spatially smoothed
random map beside an unsmoothed one as controls (``docs/evaluation.md`` has a cross-check).

Functions score one batch and return tensors; :class:`DeletionInsertionMetric` is a
:class:`torchmetrics.Metric` that accumulates the AUCs over a dataset.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import Tensor

from captum_realtime_mask._checks import (
    attribution_batch,
    describe,
    flag,
    image_batch,
    integer,
    one_of,
    real,
)
from captum_realtime_mask._model_state import frozen_model
from captum_realtime_mask.errors import InputError
from captum_realtime_mask.metrics._accumulating import AccumulatingMetric
from captum_realtime_mask.metrics.saliency import (
    classify,
    format_forward_args,
    format_metric_target,
    predicted_classes,
    select_args,
)
from captum_realtime_mask.objective import blur

__all__ = [
    "DELETION_INSERTION_MODES",
    "REMOVALS",
    "DeletionInsertionMetric",
    "DeletionInsertionResult",
    "deletion_auc",
    "deletion_insertion_curves",
    "deletion_insertion_details",
    "insertion_auc",
    "removal_images",
    "step_fractions",
]

#: The two orders of :func:`deletion_insertion_curves`.
DELETION_INSERTION_MODES: tuple[str, ...] = ("deletion", "insertion")
#: What a removed pixel becomes (see the module's docstring).
REMOVALS: tuple[str, ...] = ("blur", "constant")

Mode = Literal["deletion", "insertion"]
Removal = Literal["blur", "constant"]

#: Blur sigma at a 224-pixel side, the default of the removal (and of the masks' objective).
DEFAULT_BLUR_SIGMA = 10.0


@dataclass(frozen=True)
class DeletionInsertionResult:
    """Everything :func:`deletion_insertion_details` computed, per image.

    Attributes:
        curves: ``(N, steps + 1)`` probability of the target class at each step.
        fractions: ``(steps + 1,)`` fraction of the pixels changed at each step, ``n_k / (H W)``.
        auc: ``(N,)`` trapezoid area under each curve over ``fractions``.
        targets: ``(N,)`` int64 class scored for each image (the predicted one for
            ``target=None``).
    """

    curves: Tensor
    fractions: Tensor
    auc: Tensor
    targets: Tensor


def step_fractions(height: int, width: int, steps: int = 50) -> Tensor:
    """Fraction of the pixels changed at each step: ``round(k * H * W / steps) / (H * W)``.

    Args:
        height: Image height.
        width: Image width.
        steps: Number of steps (the curve has ``steps + 1`` points).

    Returns:
        ``(steps + 1,)`` float64 tensor from 0 to 1.

    Example:
        >>> step_fractions(2, 3, steps=4)  # 6 pixels: 0, 1.5 -> 2, 3, 4.5 -> 5, 6 changed
        tensor([0.0000, 0.3333, 0.5000, 0.8333, 1.0000], dtype=torch.float64)
    """
    height = integer(height, "height", 1)
    width = integer(width, "width", 1)
    steps = integer(steps, "steps", 1)
    return _pixel_counts(height * width, steps).double() / (height * width)


def _pixel_counts(pixels: int, steps: int, device: Any = None) -> Tensor:
    """``n_k = round(k * pixels / steps)``, rounded half up, for ``k = 0 .. steps`` (int64)."""
    k = torch.arange(steps + 1, dtype=torch.long, device=device)
    return (2 * k * pixels + steps) // (2 * steps)


def removal_images(
    inputs: Tensor | tuple[Tensor],
    removal: Removal = "blur",
    *,
    fill_value: float = 0.0,
    blur_sigma: float = DEFAULT_BLUR_SIGMA,
) -> Tensor:
    """The image every removed pixel is taken from: a blur of the input, or a constant.

    Args:
        inputs: Images ``(N, C, H, W)`` as the classifier takes them.
        removal: ``"blur"`` or ``"constant"`` (see the module's docstring).
        fill_value: The value of ``"constant"``, in the classifier's input space.
        blur_sigma: Gaussian sigma of ``"blur"`` at a 224-pixel side, scaled with the images'
            longer side.

    Returns:
        Tensor shaped and typed like ``inputs``.

    Example:
        >>> x = torch.rand(1, 3, 8, 8)
        >>> removal_images(x, "constant", fill_value=0.5).unique()
        tensor([0.5000])
        >>> flat = torch.full((1, 3, 8, 8), 0.25)
        >>> torch.equal(removal_images(flat, "blur"), flat)  # a constant image blurs to itself
        True
    """
    x = image_batch(inputs)
    removal, fill_value, blur_sigma = _check_removal(removal, fill_value, blur_sigma)
    return _removal_images(x.detach(), removal, fill_value, blur_sigma)


def _removal_images(x: Tensor, removal: str, fill_value: float, blur_sigma: float) -> Tensor:
    if removal == "constant":
        return torch.full_like(x, fill_value)
    with torch.no_grad():
        return blur(x, blur_sigma)


def _check_removal(removal: Any, fill_value: Any, blur_sigma: Any) -> tuple[str, float, float]:
    return (
        one_of(removal, "removal", REMOVALS),
        real(fill_value, "fill_value"),
        real(blur_sigma, "blur_sigma", 0, low_open=True),
    )


def _check_options(
    forward_func: Any,
    mode: Any,
    steps: Any,
    removal: Any,
    max_examples_per_batch: Any,
    fill_value: Any,
    blur_sigma: Any,
    apply_softmax: Any,
) -> tuple[str, int, str, int | None, float, float, bool]:
    """Validate the options shared by the functions and the metric; return them converted."""
    if not callable(forward_func):
        raise InputError(
            f"must be callable (a model or function); got {describe(forward_func)}.",
            argument="forward_func",
        )
    mode = one_of(mode, "mode", DELETION_INSERTION_MODES)
    steps = integer(steps, "steps", 1)
    removal, fill_value, blur_sigma = _check_removal(removal, fill_value, blur_sigma)
    max_examples_per_batch = integer(
        max_examples_per_batch, "max_examples_per_batch", 1, none_ok=True
    )
    return (
        mode,
        steps,
        removal,
        max_examples_per_batch,
        fill_value,
        blur_sigma,
        flag(apply_softmax, "apply_softmax"),
    )


def _pixel_ranks(a: Tensor, x: Tensor) -> Tensor:
    """``(N, H * W)`` int64 rank of each pixel in the deletion order (0: the most important)."""
    n, c = x.shape[:2]
    if a.shape[0] != n or a.shape[2:] != x.shape[2:] or a.shape[1] not in (1, c):
        raise InputError(
            f"must be shaped like `inputs` {tuple(x.shape)}, or (N, 1, H, W), or (N, H, W); "
            f"got {describe(a)}.",
            argument="attributions",
        )
    flat = a.detach().to(x.device).sum(dim=1).flatten(1)
    if not torch.isfinite(flat).all():
        bad = sorted(set(torch.nonzero(~torch.isfinite(flat))[:, 0].tolist()))
        raise InputError(
            f"holds NaN or infinite values (image(s) {bad[:10]}); the pixel order is undefined.",
            argument="attributions",
        )
    order = torch.sort(flat, dim=1, descending=True, stable=True).indices
    ranks = torch.empty_like(order)
    positions = torch.arange(order.shape[1], device=order.device).expand_as(order)
    return ranks.scatter_(1, order, positions)


def _target_probs(out: Tensor, tgt: Tensor, apply_softmax: bool, image: Tensor) -> Tensor:
    """Probability of the target class of each row of ``out``, or InputError on unusable scores."""
    if int(tgt.max()) >= out.shape[1]:
        raise InputError(
            f"holds class {int(tgt.max())} but `forward_func` returns only {out.shape[1]} classes.",
            argument="target",
        )
    if apply_softmax:
        p = torch.softmax(out, dim=1).gather(1, tgt[:, None])[:, 0]
        bad = torch.isnan(p)
        problem = "NaN or +inf scores (logits)"
        fix = "Check the classifier, and run it in float32 if float16 logits overflow."
    else:
        p = out.gather(1, tgt[:, None])[:, 0]
        bad = torch.isnan(p) | (p < 0) | (p > 1 + 1e-3)
        problem = "target-class probabilities that are NaN or outside [0, 1]"
        fix = (
            "With apply_softmax=False it must return probabilities; "
            "keep apply_softmax=True for logits."
        )
        p = p.clamp(0.0, 1.0)
    if bad.any():
        images = sorted(set(image[bad.to(image.device)].tolist()))
        raise InputError(
            f"returned {problem} on the perturbed copies of image(s) {images[:10]}. {fix}",
            argument="forward_func",
        )
    return p


@torch.no_grad()
def _curves(
    forward_func: Callable[..., Tensor],
    x: Tensor,
    baseline: Tensor,
    ranks: Tensor,
    counts: Tensor,
    targets: Tensor,
    args: tuple[Any, ...],
    deletion: bool,
    step: int,
    apply_softmax: bool,
) -> Tensor:
    """Probabilities of every (image, step) pair, ``step`` perturbed images per call."""
    n, _, height, width = x.shape
    points = counts.shape[0]
    dtype = torch.promote_types(x.dtype, torch.float32)
    curves = torch.empty(n * points, dtype=dtype, device=x.device)
    channels_last = not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last)
    for start in range(0, n * points, step):
        flat = torch.arange(start, min(start + step, n * points), device=x.device)
        image, k = flat // points, flat % points
        changed = (ranks[image] < counts[k][:, None]).view(-1, 1, height, width)
        kept, removed = x[image], baseline[image]
        batch = (
            torch.where(changed, removed, kept) if deletion else torch.where(changed, kept, removed)
        )
        if channels_last:  # keep the inputs' layout (indexing and where() may not)
            batch = batch.contiguous(memory_format=torch.channels_last)
        out = classify(forward_func, batch, "perturbed images", select_args(args, n, image))
        tgt = targets[image].to(out.device)
        probs = _target_probs(out.to(dtype), tgt, apply_softmax, image)
        curves[flat] = probs.to(x.device)
    return curves.view(n, points)


def deletion_insertion_details(
    forward_func: Callable[..., Tensor],
    inputs: Tensor | tuple[Tensor],
    attributions: Tensor | tuple[Tensor],
    target: int | list[int] | Tensor | None,
    mode: Mode = "deletion",
    steps: int = 50,
    removal: Removal = "blur",
    additional_forward_args: Any = None,
    max_examples_per_batch: int | None = None,
    *,
    fill_value: float = 0.0,
    blur_sigma: float = DEFAULT_BLUR_SIGMA,
    apply_softmax: bool = True,
) -> DeletionInsertionResult:
    """:func:`deletion_insertion_curves` with the step fractions, the AUCs and the targets.

    Takes exactly the arguments of :func:`deletion_insertion_curves`.

    Returns:
        A :class:`DeletionInsertionResult`.

    Example:
        >>> mean_logit = lambda x: torch.stack([x.mean((1, 2, 3)), torch.zeros(len(x))], 1)
        >>> x = torch.ones(1, 1, 1, 2)  # two pixels
        >>> r = deletion_insertion_details(
        ...     mean_logit, x, torch.ones(1, 1, 1, 2), 0, steps=2, removal="constant"
        ... )
        >>> r.fractions, r.curves  # p = sigmoid(mean): sigmoid(1), sigmoid(0.5), sigmoid(0)
        (tensor([0.0000, 0.5000, 1.0000]), tensor([[0.7311, 0.6225, 0.5000]]))
        >>> r.auc  # (0.7311 + 2 * 0.6225 + 0.5) / 4
        tensor([0.6190])
    """
    x = image_batch(inputs)
    mode, steps, removal, max_examples_per_batch, fill_value, blur_sigma, apply_softmax = (
        _check_options(
            forward_func,
            mode,
            steps,
            removal,
            max_examples_per_batch,
            fill_value,
            blur_sigma,
            apply_softmax,
        )
    )
    n, _, height, width = x.shape
    ranks = _pixel_ranks(attribution_batch(attributions), x)
    counts = _pixel_counts(height * width, steps, x.device)
    args = format_forward_args(additional_forward_args)
    with frozen_model(forward_func), torch.no_grad():
        x = x.detach()
        if target is None:
            targets = predicted_classes(forward_func, x, args, max_examples_per_batch or n)
        else:
            targets = format_metric_target(target, n, x.device)
        baseline = _removal_images(x, removal, fill_value, blur_sigma)
        step = max_examples_per_batch or n * (steps + 1)
        curves = _curves(
            forward_func,
            x,
            baseline,
            ranks,
            counts,
            targets,
            args,
            mode == "deletion",
            step,
            apply_softmax,
        )
    fractions = counts.to(curves.dtype) / (height * width)
    auc = torch.trapezoid(curves, fractions, dim=1)
    return DeletionInsertionResult(curves=curves, fractions=fractions, auc=auc, targets=targets)


def deletion_insertion_curves(
    forward_func: Callable[..., Tensor],
    inputs: Tensor | tuple[Tensor],
    attributions: Tensor | tuple[Tensor],
    target: int | list[int] | Tensor | None,
    mode: Mode = "deletion",
    steps: int = 50,
    removal: Removal = "blur",
    additional_forward_args: Any = None,
    max_examples_per_batch: int | None = None,
    *,
    fill_value: float = 0.0,
    blur_sigma: float = DEFAULT_BLUR_SIGMA,
    apply_softmax: bool = True,
) -> Tensor:
    """Deletion or insertion curve of each image: the target's probability at each step.

    Step ``k`` has the ``round(k * H * W / steps)`` pixels of highest attribution (summed over
    channels; ties in raster order) removed (``mode="deletion"``, starting from the image) or
    restored (``mode="insertion"``, starting from the removal image). See the module's
    docstring for the protocol. All steps of a chunk of images go to the classifier together,
    at most ``max_examples_per_batch`` perturbed images per call, in the inputs' memory format
    (channels-last inputs give channels-last batches).

    Args:
        forward_func: The classifier: called as ``forward_func(images,
            *additional_forward_args)`` under ``torch.no_grad()``, returning ``(batch,
            classes)`` logits (or probabilities with ``apply_softmax=False``). When it is a
            module (or a bound method of one) it runs in eval mode with frozen parameters,
            and every module's mode and every parameter's ``requires_grad`` are restored
            afterwards.
        inputs: Images ``(N, C, H, W)`` as the classifier takes them, or a 1-tuple holding them.
        attributions: Maps shaped like ``inputs``, ``(N, 1, H, W)`` or ``(N, H, W)``; higher is
            more important. Only their order matters (summed over channels).
        target: The class to score: an int for all images, a list of N ints, a tensor with 1
            or N indices, or None for the class the classifier predicts on each full image
            (one more call of ``forward_func``).
        mode: ``"deletion"`` or ``"insertion"``.
        steps: Number of steps; the curve has ``steps + 1`` points.
        removal: ``"blur"`` or ``"constant"``: what removed pixels become.
        additional_forward_args: Extra arguments for ``forward_func``, a value or a tuple.
            Tensors whose first dimension is ``N`` are per-example: each perturbed image gets
            its own image's rows. Other values are passed unchanged.
        max_examples_per_batch: At most this many perturbed images per call of
            ``forward_func`` (None: all ``N * (steps + 1)`` at once). Does not change the result.
        fill_value: The value of removed pixels with ``removal="constant"``, in the classifier's
            input space.
        blur_sigma: Gaussian sigma of ``removal="blur"`` at a 224-pixel side, scaled with the
            image's longer side.
        apply_softmax: False when ``forward_func`` already returns probabilities (a value
            outside ``[0, 1]`` then raises :class:`InputError`).

    Returns:
        ``(N, steps + 1)`` probabilities on the inputs' device, in the inputs' dtype promoted to
        at least float32.

    Raises:
        InputError: An argument has the wrong shape, type or value, or ``forward_func`` returns
            unusable scores (NaN, ``+inf``, or probabilities outside ``[0, 1]``).

    Example:
        >>> # logits (x0 + x1, 0) on 1 x 2 images; the map ranks pixel 1 first
        >>> f = lambda x: torch.stack([x.sum((1, 2, 3)), torch.zeros(len(x))], 1)
        >>> x = torch.tensor([[[[1.0, 2.0]]]])
        >>> a = torch.tensor([[[[0.1, 0.9]]]])
        >>> deletion_insertion_curves(f, x, a, 0, steps=2, removal="constant")  # logits 3, 1, 0
        tensor([[0.9526, 0.7311, 0.5000]])
        >>> deletion_insertion_curves(f, x, a, 0, "insertion", 2, "constant")  # 0, 2, 3
        tensor([[0.5000, 0.8808, 0.9526]])
    """
    return deletion_insertion_details(
        forward_func,
        inputs,
        attributions,
        target,
        mode,
        steps,
        removal,
        additional_forward_args,
        max_examples_per_batch,
        fill_value=fill_value,
        blur_sigma=blur_sigma,
        apply_softmax=apply_softmax,
    ).curves


def deletion_auc(
    forward_func: Callable[..., Tensor],
    inputs: Tensor | tuple[Tensor],
    attributions: Tensor | tuple[Tensor],
    target: int | list[int] | Tensor | None,
    steps: int = 50,
    removal: Removal = "blur",
    additional_forward_args: Any = None,
    max_examples_per_batch: int | None = None,
    *,
    fill_value: float = 0.0,
    blur_sigma: float = DEFAULT_BLUR_SIGMA,
    apply_softmax: bool = True,
) -> Tensor:
    """Area under each image's deletion curve (lower is better).

    The arguments are those of :func:`deletion_insertion_curves` without ``mode``.

    Returns:
        ``(N,)`` AUCs in ``[0, 1]`` (trapezoid over the fraction of pixels removed).

    Example:
        >>> f = lambda x: torch.stack([x.sum((1, 2, 3)), torch.zeros(len(x))], 1)
        >>> x = torch.tensor([[[[1.0, 2.0]]]])
        >>> good, bad = torch.tensor([[[[0.1, 0.9]]]]), torch.tensor([[[[0.9, 0.1]]]])
        >>> deletion_auc(f, x, good, 0, 2, "constant"), deletion_auc(f, x, bad, 0, 2, "constant")
        (tensor([0.7287]), tensor([0.8035]))
    """
    return deletion_insertion_details(
        forward_func,
        inputs,
        attributions,
        target,
        "deletion",
        steps,
        removal,
        additional_forward_args,
        max_examples_per_batch,
        fill_value=fill_value,
        blur_sigma=blur_sigma,
        apply_softmax=apply_softmax,
    ).auc


def insertion_auc(
    forward_func: Callable[..., Tensor],
    inputs: Tensor | tuple[Tensor],
    attributions: Tensor | tuple[Tensor],
    target: int | list[int] | Tensor | None,
    steps: int = 50,
    removal: Removal = "blur",
    additional_forward_args: Any = None,
    max_examples_per_batch: int | None = None,
    *,
    fill_value: float = 0.0,
    blur_sigma: float = DEFAULT_BLUR_SIGMA,
    apply_softmax: bool = True,
) -> Tensor:
    """Area under each image's insertion curve (higher is better).

    The arguments are those of :func:`deletion_insertion_curves` without ``mode``.

    Returns:
        ``(N,)`` AUCs in ``[0, 1]`` (trapezoid over the fraction of pixels restored).

    Example:
        >>> f = lambda x: torch.stack([x.sum((1, 2, 3)), torch.zeros(len(x))], 1)
        >>> x = torch.tensor([[[[1.0, 2.0]]]])
        >>> good, bad = torch.tensor([[[[0.1, 0.9]]]]), torch.tensor([[[[0.9, 0.1]]]])
        >>> insertion_auc(f, x, good, 0, 2, "constant"), insertion_auc(f, x, bad, 0, 2, "constant")
        (tensor([0.8035]), tensor([0.7287]))
    """
    return deletion_insertion_details(
        forward_func,
        inputs,
        attributions,
        target,
        "insertion",
        steps,
        removal,
        additional_forward_args,
        max_examples_per_batch,
        fill_value=fill_value,
        blur_sigma=blur_sigma,
        apply_softmax=apply_softmax,
    ).auc


class DeletionInsertionMetric(AccumulatingMetric):
    """Accumulate deletion or insertion AUCs over a dataset, as a :class:`torchmetrics.Metric`.

    ``update`` scores a batch (the arguments of :func:`deletion_insertion_curves` that are not
    options of the metric) and returns its ``(N,)`` AUCs; ``compute`` gives the mean AUC over
    every example seen since the last ``reset``; calling the metric (``forward``) scores a
    batch, accumulates it and returns the batch's mean AUC. Per-example AUCs and curves stay
    available as :attr:`auc` and :attr:`curves`.

    ``higher_is_better`` is False for deletion and True for insertion. The states are lists
    reduced with ``"cat"`` (``auc_batches`` and ``curve_batches``), so a distributed run
    averages every process's examples. The classifier is used, not owned: it is not a
    submodule of the metric.

    Args:
        forward_func: The classifier (see :func:`deletion_insertion_curves`).
        mode: ``"deletion"`` or ``"insertion"``.
        steps: See :func:`deletion_insertion_curves`.
        removal: See :func:`deletion_insertion_curves`.
        max_examples_per_batch: See :func:`deletion_insertion_curves`.
        fill_value: See :func:`deletion_insertion_curves`.
        blur_sigma: See :func:`deletion_insertion_curves`.
        apply_softmax: See :func:`deletion_insertion_curves`.
        kwargs: Options of :class:`torchmetrics.Metric` (``dist_sync_on_step``,
            ``process_group``, ``sync_on_compute``, ``compute_on_cpu``, ...).

    Raises:
        InputError: An argument has the wrong type or value (checked here, before any batch).

    Example:
        >>> f = lambda x: torch.stack([x.sum((1, 2, 3)), torch.zeros(len(x))], 1)
        >>> metric = DeletionInsertionMetric(f, "deletion", steps=2, removal="constant")
        >>> x = torch.tensor([[[[1.0, 2.0]]]])
        >>> metric.update(x, torch.tensor([[[[0.1, 0.9]]]]), target=0)
        tensor([0.7287])
        >>> metric.update(x, torch.tensor([[[[0.9, 0.1]]]]), target=0)
        tensor([0.8035])
        >>> metric.compute(), metric.num_examples, metric.higher_is_better
        (tensor(0.7661), 2, False)
    """

    is_differentiable = False
    full_state_update = False

    def __init__(
        self,
        forward_func: Callable[..., Tensor],
        mode: Mode = "deletion",
        steps: int = 50,
        removal: Removal = "blur",
        max_examples_per_batch: int | None = None,
        *,
        fill_value: float = 0.0,
        blur_sigma: float = DEFAULT_BLUR_SIGMA,
        apply_softmax: bool = True,
        **kwargs: Any,
    ) -> None:
        # Validate now, not at the first update(), so a typo fails where it was made.
        options = _check_options(
            forward_func,
            mode,
            steps,
            removal,
            max_examples_per_batch,
            fill_value,
            blur_sigma,
            apply_softmax,
        )
        super().__init__(**kwargs)
        self.forward_func = forward_func
        (
            self.mode,
            self.steps,
            self.removal,
            self.max_examples_per_batch,
            self.fill_value,
            self.blur_sigma,
            self.apply_softmax,
        ) = options
        self.add_state("auc_batches", [], dist_reduce_fx="cat")
        self.add_state("curve_batches", [], dist_reduce_fx="cat")

    @property
    def higher_is_better(self) -> bool:  # type: ignore[override]
        """False for deletion (a faithful map makes the curve fall fast), True for insertion."""
        return self.mode == "insertion"

    def __setattr__(self, name: str, value: Any) -> None:
        if name == "forward_func":  # a plain attribute, never a registered submodule
            self.__dict__[name] = value
        else:
            super().__setattr__(name, value)

    def update(
        self,
        inputs: Tensor | tuple[Tensor],
        attributions: Tensor | tuple[Tensor],
        target: int | list[int] | Tensor | None,
        additional_forward_args: Any = None,
    ) -> Tensor:
        """Score a batch and remember its AUCs and curves.

        Args:
            inputs: See :func:`deletion_insertion_curves`.
            attributions: See :func:`deletion_insertion_curves`.
            target: See :func:`deletion_insertion_curves` (None: the predicted class).
            additional_forward_args: See :func:`deletion_insertion_curves`.

        Returns:
            The batch's ``(N,)`` AUCs.

        Example:
            >>> metric = DeletionInsertionMetric(lambda x: torch.zeros(len(x), 4), steps=4)
            >>> metric.update(torch.rand(2, 3, 8, 8), torch.rand(2, 8, 8), target=None)
            tensor([0.2500, 0.2500])
        """
        result = deletion_insertion_details(
            self.forward_func,
            inputs,
            attributions,
            target,
            self.mode,
            self.steps,
            self.removal,
            additional_forward_args,
            self.max_examples_per_batch,
            fill_value=self.fill_value,
            blur_sigma=self.blur_sigma,
            apply_softmax=self.apply_softmax,
        )
        self.auc_batches.append(result.auc.detach())
        self.curve_batches.append(result.curves.detach())
        return result.auc

    @property
    def num_examples(self) -> int:
        """Number of examples seen since the last reset."""
        return self.state_length("auc_batches")

    @property
    def auc(self) -> Tensor:
        """``(num_examples,)`` per-example AUCs, in the order seen."""
        return self.cat_state("auc_batches")

    @property
    def curves(self) -> Tensor:
        """``(num_examples, steps + 1)`` per-example curves, in the order seen."""
        return self.cat_state("curve_batches", (self.steps + 1,))

    def compute(self) -> Tensor:
        """Return the mean AUC over every example seen.

        Raises:
            RuntimeError: No example was seen since the last reset.
        """
        auc = self.auc
        if auc.shape[0] == 0:
            raise RuntimeError(
                "DeletionInsertionMetric.compute() needs at least one update() first."
            )
        return auc.mean()
