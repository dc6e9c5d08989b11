"""One row of the benchmark: a method's maps or boxes on the test images, scored.

The paper's protocol: localisation error (threshold, tightest box, a hit when IoU > 0.5 with
the item's box), the saliency metric, the mean box area, and images per second on one batch;
beside it deletion, insertion and ROAD on the first ``faithfulness_images`` test images.
Learned masks are thresholded at 0.5; other maps are min-max normalised and thresholded at
the value with the lowest localisation error on the validation images.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from captum_realtime_mask.benchmark._faithfulness import faithfulness_scores
from captum_realtime_mask.benchmark.config import BenchmarkConfig
from captum_realtime_mask.benchmark.methods import Method
from captum_realtime_mask.metrics import (
    box_area_fraction,
    centre_box,
    localisation_details,
    max_box,
    saliency_metric,
)

__all__ = [
    "THROUGHPUT_BUDGET_S",
    "THROUGHPUT_CALLS",
    "Images",
    "absent_classes",
    "batched",
    "error_on",
    "masker_scores",
    "method_row",
    "throughput",
]

#: Images, labels and item boxes ``(x1, y1, x2, y2)`` of one split.
Images = tuple[torch.Tensor, torch.Tensor, torch.Tensor]

#: Throughput is the median of at most this many timed calls on the same batch; no call
#: starts once the calls so far have taken ``THROUGHPUT_BUDGET_S`` (slow methods: one call).
THROUGHPUT_CALLS = 5
THROUGHPUT_BUDGET_S = 3.0


def method_row(
    model: nn.Module,
    method: Method,
    cfg: BenchmarkConfig,
    val: Images,
    test: Images,
    correct: torch.Tensor,
    figure_maps: dict[str, torch.Tensor],
) -> dict[str, Any]:
    """Score one method on the test images (its figure maps go into ``figure_maps``).

    The method's random draws start from ``cfg.seed`` whatever ran before it, so that its row
    does not depend on the methods (and timed calls) before it; torch's global random state is
    restored afterwards.

    Args:
        model: The black box.
        method: The method to score.
        cfg: The benchmark's configuration (batch sizes, subsets, seed).
        val: The validation images, on which non-mask thresholds are chosen.
        test: The test images.
        correct: Which test images the black box classifies correctly.
        figure_maps: Receives the method's maps of the first 8 test images.

    Returns:
        The row: the method's name and kind, the number of test images scored, its scores,
        threshold, images per second and the seconds the row took.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        t0 = time.perf_counter()
        xt, yt, bt = test
        subset = min(cfg.iterative_images, len(xt)) if method.per_image_optimisation else len(xt)
        images = (xt[:subset], yt[:subset], bt[:subset])
        row: dict[str, Any] = {"method": method.name, "kind": method.kind, "n_test": subset}
        if method.objective is not None:
            row["objective"] = method.objective
        if method.kind == "box":
            row.update(_box_scores(model, method, cfg, images, correct[:subset]))
        else:
            scores = _map_scores(model, method, cfg, val, images, correct[:subset], figure_maps)
            row.update(scores)
        row["seconds"] = time.perf_counter() - t0
        return row


def batched(fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], x, y, bs: int):
    """``fn`` on batches of ``bs`` images and targets, its outputs concatenated (detached)."""
    return torch.cat([fn(x[i : i + bs], y[i : i + bs]).detach() for i in range(0, len(x), bs)])


def throughput(fn, x, y) -> tuple[float, int]:
    """Images per second on one batch (median over timed calls after a warm-up), and the calls."""
    fn(x[:2], y[:2])
    times: list[float] = []
    while len(times) < THROUGHPUT_CALLS and sum(times) < THROUGHPUT_BUDGET_S:
        start = time.perf_counter()
        fn(x, y)
        times.append(time.perf_counter() - start)
    return len(x) / max(statistics.median(times), 1e-9), len(times)


def error_on(hits: torch.Tensor, subset: torch.Tensor) -> float | None:
    """Localisation error (%) over the images in a boolean ``subset`` (None if it is empty)."""
    if not subset.any():
        return None
    return 100.0 * (1.0 - float(hits[subset].float().mean()))


def _box_scores(
    model: nn.Module, method: Method, cfg: BenchmarkConfig, images: Images, correct: torch.Tensor
) -> dict[str, Any]:
    """Scores of a fixed box per image (centre, whole image, or the item's own box)."""
    x, y, b = images
    size = x.shape[-1]
    boxes = _fixed_boxes(method.box, b, size)
    loc = localisation_details(None, list(b.unsqueeze(1)), boxes=list(boxes.unsqueeze(1)))
    sal = saliency_metric(
        model, x, None, y, boxes=list(boxes.unsqueeze(1)), max_examples_per_batch=cfg.batch_size
    )
    area = box_area_fraction(boxes.float(), size, size)
    errors = {
        "localisation_error": 100.0 * float(loc.error),
        **_errors_by_outcome(loc.hits, correct),
    }
    first = _first_images(loc.hits, sal, cfg.iterative_images)
    if method.box == "gt":  # the item's own boxes: scored on the saliency metric only
        errors = dict.fromkeys(errors)
        if first:
            first["first_localisation_error"] = None
    return {
        **errors,
        **first,
        "saliency_metric": float(sal.mean()),
        "box_area": float(area.mean()),
        "threshold": None,
        "images_per_s": None,
    }


def _map_scores(
    model: nn.Module,
    method: Method,
    cfg: BenchmarkConfig,
    val: Images,
    images: Images,
    correct: torch.Tensor,
    figure_maps: dict[str, torch.Tensor],
) -> dict[str, Any]:
    """Scores of a method that returns maps, its threshold, throughput and absent classes."""
    x, y, b = images
    bs = cfg.batch_size
    row: dict[str, Any] = {}
    if method.kind == "mask":
        threshold, normalize = 0.5, "none"
    else:
        xv, yv, bv = val
        nv = cfg.threshold_images or len(xv)
        vmaps = batched(method.explain, xv[:nv], yv[:nv], bs)
        threshold, normalize = _best_threshold(xv[:nv], yv[:nv], bv[:nv], vmaps), "minmax"
        row["threshold_images"] = nv
    maps = batched(method.explain, x, y, bs)
    row.update(
        _score(model, x, y, b, maps, threshold, normalize, bs, correct, cfg.iterative_images)
    )
    n = min(cfg.faithfulness_images or len(x), len(x))
    row.update(faithfulness_scores(model, x[:n], maps[:n], y[:n], bs, cfg.seed))
    row["threshold"] = threshold
    tb = min(cfg.throughput_batch, len(x))
    row["images_per_s"], row["throughput_calls"] = throughput(method.explain, x[:tb], y[:tb])
    if method.kind == "mask":
        row["mask_mean"] = float(maps.mean())
    if method.masker is not None:
        row.update(_absent_class_area(method.masker, x, y, maps, cfg))
    figure_maps[method.name] = maps[:8]
    return row


def _score(
    model, x, y, boxes, maps, threshold, normalize, bs, correct, first: int
) -> dict[str, float]:
    """Scores of one method's maps; ``correct`` marks the images the black box classifies right.

    ``first``: also score the first images alone (the per-image optimisation subset).
    """
    loc = localisation_details(maps, list(boxes.unsqueeze(1)), threshold, normalize=normalize)
    sal = saliency_metric(
        model, x, maps, y, threshold=threshold, normalize=normalize, max_examples_per_batch=bs
    )
    area = box_area_fraction(loc.boxes.float(), x.shape[-2], x.shape[-1])
    return {
        "localisation_error": 100.0 * float(loc.error),
        "saliency_metric": float(sal.mean()),
        "box_area": float(area.mean()),
        "empty_maps": float(loc.empty.float().mean()),
        **_errors_by_outcome(loc.hits, correct),
        **_first_images(loc.hits, sal, first),
    }


def _first_images(hits: torch.Tensor, sal: torch.Tensor, first: int) -> dict[str, float]:
    """Localisation error (%) and saliency metric on the first images, if they are fewer."""
    if not 0 < first < len(hits):
        return {}
    return {
        "first_images": first,
        "first_localisation_error": error_on(hits, torch.arange(len(hits)) < first),
        "first_saliency_metric": float(sal[:first].mean()),
    }


def _errors_by_outcome(hits: torch.Tensor, correct: torch.Tensor) -> dict[str, float | None]:
    """Localisation error (%) on the images the black box classifies correctly, and the others."""
    return {
        "localisation_error_correct": error_on(hits, correct),
        "localisation_error_misclassified": error_on(hits, ~correct),
    }


def _best_threshold(x, y, boxes, maps) -> float:
    """Threshold (on min-max normalised maps) with the lowest validation localisation error."""
    best, best_err = 0.5, float("inf")
    for t in [i / 20 for i in range(1, 20)]:
        err = float(
            localisation_details(maps, list(boxes.unsqueeze(1)), t, normalize="minmax").error
        )
        if err < best_err:
            best, best_err = t, err
    return best


def absent_classes(labels: torch.Tensor, num_classes: int, seed: int) -> torch.Tensor:
    """One random class other than each image's label, the same for the same seed.

    Example:
        >>> y = torch.tensor([0, 3, 9])
        >>> bool((absent_classes(y, 10, seed=0) != y).all())
        True
    """
    g = torch.Generator().manual_seed(seed)
    return (labels + torch.randint(1, num_classes, labels.shape, generator=g)) % num_classes


def _absent_class_area(attr, x, y, maps, cfg: BenchmarkConfig) -> dict[str, float]:
    """Mean mask for a random class that is not in the image, and its ratio to the true one."""
    return _area_ratio(maps, _absent_masks(attr, x, y, cfg.seed, cfg.batch_size)[1])


def _absent_masks(attr, x, y, seed: int, bs: int) -> tuple[torch.Tensor, torch.Tensor]:
    """One random absent class per image (:func:`absent_classes`), and the masker's masks for it."""
    wrong = absent_classes(y, attr.num_classes, seed)
    return wrong, batched(lambda a, t: attr.mask(a, target=t), x, wrong, bs)


def _area_ratio(true: torch.Tensor, absent: torch.Tensor) -> dict[str, float]:
    """The absent-class mean mask and its ratio to the true-class mean mask."""
    return {
        "absent_class_mask_mean": float(absent.mean()),
        "absent_to_true_area_ratio": float(absent.mean() / true.mean().clamp_min(1e-8)),
    }


def masker_scores(
    attr: Any, x: torch.Tensor, y: torch.Tensor, boxes: torch.Tensor, seed: int = 0, bs: int = 64
) -> dict[str, Any]:
    """A learned masker's scores on single-object images, as the benchmark's masker rows.

    The masks for the images' classes are thresholded at 0.5 (no normalisation) for the
    localisation error; the masks for one random absent class per image
    (:func:`absent_classes` with ``seed``) give the absent-class area. The recipe studies in
    ``benchmarks/`` score their maskers with this.

    Args:
        attr: A fitted :class:`~captum_realtime_mask.RealTimeMaskAttribution`.
        x: Images ``(N, C, H, W)``.
        y: Their classes ``(N,)``.
        boxes: Their items' boxes ``(N, 4)``.
        seed: Seed of the absent classes.
        bs: Images per :meth:`~captum_realtime_mask.RealTimeMaskAttribution.mask` call.

    Returns:
        ``localisation_error`` (%), ``empty_masks`` (share), ``true_class_mask_mean``,
        ``absent_class_mask_mean``, ``absent_to_true_area_ratio``, ``images``, and the
        tensors ``masks``, ``absent_masks`` and ``absent_targets``.
    """
    true = batched(lambda a, t: attr.mask(a, target=t), x, y, bs)
    wrong, absent = _absent_masks(attr, x, y, seed, bs)
    loc = localisation_details(true, list(boxes.float().unsqueeze(1)), 0.5, normalize="none")
    return {
        "localisation_error": 100.0 * float(loc.error),
        "empty_masks": float(loc.empty.float().mean()),
        "true_class_mask_mean": float(true.mean()),
        **_area_ratio(true, absent),
        "images": len(x),
        "masks": true,
        "absent_masks": absent,
        "absent_targets": wrong,
    }


def _fixed_boxes(kind: str | None, gt: torch.Tensor, size: int) -> torch.Tensor:
    """The boxes of a box method: the item's own (``"gt"``), the centre box or the whole image."""
    if kind == "gt":
        return gt
    box = centre_box(size, size) if kind == "centre" else max_box(size, size)
    return box.float().expand(len(gt), 4)
