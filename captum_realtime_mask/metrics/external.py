"""Adapters to faithfulness metrics written elsewhere: pytorch-grad-cam's ROAD and Quantus.

They let the package's metrics be checked against independent code on the same images,
classifier and maps (``benchmarks/faithfulness_crosscheck.py`` does this). Both libraries are
optional, installed by the ``faithfulness`` extra (``pip install
"captum-realtime-mask[faithfulness]"``) and imported only when an adapter is called.

* :func:`road_scores`: ROAD (Rong et al. 2022) as implemented in pytorch-grad-cam
  (``pytorch_grad_cam.metrics.road``): the pixels above (MoRF) or below (LeRF) a percentile of
  the map are replaced by a noisy linear imputation from their neighbours, and the change of the
  target's probability is averaged over the percentiles.
* :func:`quantus_scores`: any Quantus metric, called with NumPy arrays (channel-first images,
  ``(N, 1, H, W)`` maps, integer labels), the classifier in eval mode, and, for metrics that
  explain perturbed inputs again, an ``explain_func`` made by :func:`quantus_explain_func` from
  a Captum-style ``explain(inputs, target) -> attributions``.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from captum_realtime_mask._checks import (
    attribution_batch,
    describe,
    flag,
    image_batch,
    integer,
    is_int,
)
from captum_realtime_mask._model_state import find_module, frozen_model
from captum_realtime_mask.errors import InputError
from captum_realtime_mask.metrics.saliency import format_metric_target, predicted_classes

__all__ = ["RoadResult", "quantus_explain_func", "quantus_scores", "road_scores"]

#: The percentiles of pytorch-grad-cam's ROAD averages (its defaults).
ROAD_PERCENTILES: tuple[int, ...] = (10, 20, 30, 40, 50, 60, 70, 80, 90)

_EXTRA = 'pip install "captum-realtime-mask[faithfulness]"'


def _require(module: str, package: str) -> Any:
    """Import an optional dependency, or raise an ImportError naming the extra."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise ImportError(
            f"this adapter needs the optional package {package!r} ({module} could not be "
            f"imported: {exc}). Install the faithfulness extra: {_EXTRA} (or pip install "
            f"{package})."
        ) from exc


@dataclass(frozen=True)
class RoadResult:
    """ROAD scores of each image, as pytorch-grad-cam computes them.

    Attributes:
        morf: ``(N,)`` mean over the percentiles of ``p(imputed) - p(image)`` when the most
            relevant pixels are imputed (lower is better: a faithful map's pixels matter).
        lerf: ``(N,)`` the same when the least relevant pixels are imputed (higher is better).
        combined: ``(N,)`` ``(lerf - morf) / 2``, pytorch-grad-cam's ``ROADCombined`` (higher
            is better).
        targets: ``(N,)`` int64 class scored for each image.
        percentiles: The percentiles averaged over.
    """

    morf: Tensor
    lerf: Tensor
    combined: Tensor
    targets: Tensor
    percentiles: tuple[int, ...]


def _targets(
    forward_func: Callable[..., Tensor], x: Tensor, target: Any, step: int | None
) -> Tensor:
    if target is None:
        with frozen_model(forward_func), torch.no_grad():
            return predicted_classes(forward_func, x, (), step or x.shape[0])
    return format_metric_target(target, x.shape[0], x.device)


def _map_batch(attributions: Any, x: Tensor) -> Tensor:
    """Attributions summed over channels, ``(N, 1, H, W)`` float32, checked against ``x``."""
    a = attribution_batch(attributions)
    if a.shape[0] != x.shape[0] or a.shape[2:] != x.shape[2:] or a.shape[1] not in (1, x.shape[1]):
        raise InputError(
            f"must be shaped like `inputs` {tuple(x.shape)}, or (N, 1, H, W), or (N, H, W); "
            f"got {describe(a)}.",
            argument="attributions",
        )
    a = a.detach().float().sum(dim=1, keepdim=True)
    if not torch.isfinite(a).all():
        raise InputError("holds NaN or infinite values.", argument="attributions")
    return a


def _percentiles(percentiles: Any) -> tuple[int, ...]:
    if (
        not isinstance(percentiles, Sequence)
        or isinstance(percentiles, str)
        or not percentiles
        or not all(is_int(p) and 0 < p < 100 for p in percentiles)
    ):
        raise InputError(
            "must be a non-empty sequence of ints strictly between 0 and 100, e.g. "
            f"{list(ROAD_PERCENTILES)}; got {describe(percentiles)}.",
            argument="percentiles",
        )
    return tuple(int(p) for p in percentiles)


def road_scores(
    forward_func: Callable[[Tensor], Tensor],
    inputs: Tensor | tuple[Tensor],
    attributions: Tensor | tuple[Tensor],
    target: int | list[int] | Tensor | None,
    percentiles: Sequence[int] = ROAD_PERCENTILES,
    max_examples_per_batch: int | None = None,
    *,
    apply_softmax: bool = True,
    seed: int = 0,
) -> RoadResult:
    """ROAD most- and least-relevant-first scores, computed by pytorch-grad-cam.

    Calls ``ROADMostRelevantFirstAverage`` and ``ROADLeastRelevantFirstAverage`` of
    ``pytorch_grad_cam.metrics.road`` on the maps summed over channels, with
    ``ClassifierOutputSoftmaxTarget`` (or ``ClassifierOutputTarget`` with
    ``apply_softmax=False``) of each image's class. In pytorch-grad-cam's convention the
    MoRF score at percentile ``q`` imputes the pixels at or above the map's ``q``-th
    percentile (the top ``100 - q`` %), and the LeRF score imputes those at or below its
    ``(100 - q)``-th percentile, so both average over the same removed fractions.

    The imputation (sparse linear solves, on the CPU, one image at a time) adds Gaussian noise
    drawn from torch's global generator; it is seeded with ``seed`` inside a forked generator,
    so the caller's random state is left untouched and a call is reproducible for the same
    ``max_examples_per_batch``.

    Args:
        forward_func: The classifier, called as ``forward_func(images)`` on batches of up to
            ``max_examples_per_batch`` images (no additional arguments). A module runs in
            eval mode with frozen parameters, restored afterwards.
        inputs: Images ``(N, C, H, W)``.
        attributions: Maps shaped like ``inputs``, ``(N, 1, H, W)`` or ``(N, H, W)``.
        target: An int, a list of N ints, a tensor of 1 or N indices, or None for the
            predicted class.
        percentiles: Percentiles to average over (pytorch-grad-cam's default 10, 20, ..., 90).
        max_examples_per_batch: Images per call of pytorch-grad-cam (None: all at once).
        apply_softmax: Score the softmax probability (True) or the raw output.
        seed: Seed of the imputation noise.

    Returns:
        A :class:`RoadResult` of tensors on the CPU.

    Raises:
        ImportError: grad-cam is not installed (the ``faithfulness`` extra).
        InputError: An argument has the wrong shape, type or value.

    Example:
        >>> f = lambda x: torch.stack([x.sum((1, 2, 3)), torch.zeros(len(x))], 1)
        >>> x = torch.linspace(0, 1, 16).view(1, 1, 4, 4)
        >>> r = road_scores(f, x, x, 0, percentiles=[50])
        >>> bool(r.morf < 0), bool(r.lerf > r.morf)  # imputing the bright pixels lowers p
        (True, True)
    """
    road = _require("pytorch_grad_cam.metrics.road", "grad-cam")
    model_targets = _require("pytorch_grad_cam.utils.model_targets", "grad-cam")
    if not callable(forward_func):
        raise InputError(f"must be callable; got {describe(forward_func)}.", "forward_func")
    x = image_batch(inputs).detach()
    cams = _map_batch(attributions, x)[:, 0].cpu().numpy()
    percentiles = _percentiles(percentiles)
    step = integer(max_examples_per_batch, "max_examples_per_batch", 1, none_ok=True)
    apply_softmax = flag(apply_softmax, "apply_softmax")
    seed = integer(seed, "seed")
    targets = _targets(forward_func, x, target, step)
    kind = (
        model_targets.ClassifierOutputSoftmaxTarget
        if apply_softmax
        else model_targets.ClassifierOutputTarget
    )
    lerf_average = road.ROADLeastRelevantFirstAverage(list(percentiles))
    morf_average = road.ROADMostRelevantFirstAverage(list(percentiles))
    n = x.shape[0]
    step = step or n
    lerf, morf = [], []
    with frozen_model(forward_func), torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for start in range(0, n, step):
            chunk = slice(start, start + step)
            classes = [kind(int(t)) for t in targets[chunk].tolist()]
            # LeRF first, then MoRF: the order of pytorch-grad-cam's ROADCombined.
            lerf.append(np.asarray(lerf_average(x[chunk], cams[chunk], classes, forward_func)))
            morf.append(np.asarray(morf_average(x[chunk], cams[chunk], classes, forward_func)))
    lerf_t = torch.from_numpy(np.concatenate(lerf).astype(np.float32))
    morf_t = torch.from_numpy(np.concatenate(morf).astype(np.float32))
    return RoadResult(
        morf=morf_t,
        lerf=lerf_t,
        combined=(lerf_t - morf_t) / 2,
        targets=targets.cpu(),
        percentiles=percentiles,
    )


def quantus_explain_func(
    explain: Callable[[Tensor, Tensor], Tensor],
) -> Callable[..., np.ndarray]:
    """Quantus's ``explain_func(model, inputs, targets, **kwargs)`` from a Captum-style one.

    Quantus calls ``explain_func`` with NumPy arrays when a metric needs maps of inputs it
    perturbed itself (robustness and randomisation metrics, or any metric given no
    ``a_batch``). The returned function turns the arrays into tensors on the device Quantus
    names (``kwargs["device"]``, else the model's), calls ``explain(images, targets)`` and
    returns the maps summed over channels as a float32 ``(N, 1, H, W)`` array.

    Args:
        explain: ``explain(images (N, C, H, W), targets (N,) int64) -> maps`` with maps shaped
            like the images or ``(N, 1, H, W)``; e.g. ``lambda x, t:
            Saliency(model).attribute(x, target=t)`` or a masker's ``attr.mask``.

    Returns:
        The function to pass to a Quantus metric as ``explain_func``.

    Example:
        >>> net = nn.Sequential(nn.Flatten(), nn.Linear(12, 3))
        >>> fn = quantus_explain_func(lambda x, t: x * (t[:, None, None, None] + 1))
        >>> fn(net, np.ones((2, 3, 2, 2), np.float32), np.array([0, 2])).shape
        (2, 1, 2, 2)
    """
    if not callable(explain):
        raise InputError(f"must be callable; got {describe(explain)}.", argument="explain")

    def explain_func(model: Any, inputs: Any, targets: Any, **kwargs: Any) -> np.ndarray:
        device = kwargs.get("device")
        if device is None:
            module = find_module(model)
            param = next(module.parameters(), None) if module is not None else None
            device = param.device if param is not None else "cpu"
        x = torch.as_tensor(np.asarray(inputs), dtype=torch.float32, device=device)
        t = torch.as_tensor(np.asarray(targets), dtype=torch.long, device=device).reshape(-1)
        maps = attribution_batch(explain(x, t.expand(x.shape[0]) if t.numel() == 1 else t))
        return maps.detach().float().sum(dim=1, keepdim=True).cpu().numpy()

    return explain_func


def quantus_scores(
    metric: Any,
    model: nn.Module,
    inputs: Tensor | tuple[Tensor],
    attributions: Tensor | tuple[Tensor] | None,
    target: int | list[int] | Tensor | None,
    *,
    explain: Callable[[Tensor, Tensor], Tensor] | None = None,
    apply_softmax: bool = True,
    batch_size: int = 64,
    **call_kwargs: Any,
) -> list[Any]:
    """Call a Quantus metric on tensors: the NumPy conversions and the model's mode done here.

    Args:
        metric: An instance of a Quantus metric, e.g. ``quantus.PixelFlipping(...)``.
        model: The classifier, a :class:`torch.nn.Module` (Quantus wraps modules only). It is
            put in eval mode with frozen parameters for the call (Quantus refuses a model in
            train mode) and restored afterwards.
        inputs: Images ``(N, C, H, W)``; passed as a float32 channel-first array.
        attributions: Maps shaped like ``inputs``, ``(N, 1, H, W)`` or ``(N, H, W)``, passed
            summed over channels as ``(N, 1, H, W)`` (Quantus broadcasts them over the
            channels); or None to let Quantus compute them with ``explain``.
        target: An int, a list of N ints, a tensor of 1 or N indices, or None for the
            predicted class; passed as an int64 array.
        explain: A Captum-style ``explain(images, targets) -> maps``, passed as Quantus's
            ``explain_func`` through :func:`quantus_explain_func` (needed when
            ``attributions`` is None and by metrics that explain perturbed inputs).
        apply_softmax: Quantus's ``softmax`` argument: score probabilities (True) or logits.
        batch_size: Quantus's ``batch_size``.
        call_kwargs: Further keyword arguments of the metric's ``__call__``.

    Returns:
        What the metric returns: a list with one score (or one curve) per image.

    Raises:
        ImportError: Quantus is not installed (the ``faithfulness`` extra).
        InputError: An argument has the wrong shape, type or value.
    """
    _require("quantus", "quantus")
    module = find_module(model)
    if module is None:
        raise InputError(
            f"must be a torch.nn.Module (Quantus wraps modules only); got {describe(model)}.",
            argument="model",
        )
    x = image_batch(inputs).detach()
    apply_softmax = flag(apply_softmax, "apply_softmax")
    batch_size = integer(batch_size, "batch_size", 1)
    a = None if attributions is None else _map_batch(attributions, x).cpu().numpy()
    if a is None and explain is None:
        raise InputError(
            "is None and no `explain` was given: Quantus needs maps or a way to compute them.",
            argument="attributions",
        )
    targets = _targets(module, x, target, batch_size)
    if explain is not None:
        call_kwargs.setdefault("explain_func", quantus_explain_func(explain))
    with frozen_model(module):
        return metric(
            model=module,
            x_batch=x.float().cpu().numpy(),
            y_batch=targets.cpu().numpy(),
            a_batch=a,
            device=str(x.device),
            softmax=apply_softmax,
            batch_size=batch_size,
            **call_kwargs,
        )
