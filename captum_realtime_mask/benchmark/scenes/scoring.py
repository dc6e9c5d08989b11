"""One row of the scenes suite: a method's maps of every requested (scene, class) pair, scored.

Localisation is per object: each present class's map is thresholded, its tightest box is a
hit when its IoU with one of that class's boxes exceeds 0.5
(:func:`~captum_realtime_mask.metrics.scenes.scene_localisation_details`). Beside it: the
pointing game (tolerance 15 px at 224, scaled to the image), class selectivity (the map's mean
inside the class's region beats its mean inside every other object's box), the absent-class
area and its ratio to the present classes', deletion and insertion AUCs and ROAD on a subset,
and images per second. Masks (and the box baseline) are thresholded at 0.5; other maps are
min-max normalised and thresholded at the value with the lowest localisation error on the
validation scenes.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from captum_realtime_mask.benchmark._faithfulness import faithfulness_scores
from captum_realtime_mask.benchmark._scoring import batched, throughput
from captum_realtime_mask.benchmark.config import BenchmarkConfig
from captum_realtime_mask.benchmark.methods import Method
from captum_realtime_mask.benchmark.scenes.requests import Requests, SceneImages, scene_requests
from captum_realtime_mask.metrics.scenes import (
    absent_class_area,
    class_selectivity,
    pointing_game,
    scene_localisation_details,
)

__all__ = ["request_maps", "scene_row", "scene_scores"]


def scene_row(
    model: nn.Module,
    method: Method,
    cfg: BenchmarkConfig,
    val: SceneImages,
    test: SceneImages,
    figure_maps: dict[str, torch.Tensor],
    figure_requests: Requests | None = None,
) -> dict[str, Any]:
    """Score one method on the test scenes (its figure maps go into ``figure_maps``).

    The method's random draws start from ``cfg.seed`` whatever ran before it; torch's global
    random state is restored afterwards.

    Args:
        model: The multi-label black box (one logit per class).
        method: The method to score.
        cfg: The suite's configuration (subsets, batch sizes, seed).
        val: The validation scenes, on which non-mask thresholds are chosen.
        test: The test scenes.
        figure_maps: Receives the method's maps of ``figure_requests``.
        figure_requests: The pairs of the figure (None: no figure maps).

    Returns:
        The row: name, kind, scenes and maps scored, the scores, threshold, images per second
        and the seconds the row took.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        t0 = time.perf_counter()
        data = test.first(_subset(method, cfg))
        req = scene_requests(data, cfg.seed)
        row: dict[str, Any] = {
            "method": method.name,
            "kind": method.kind,
            "n_test": len(data.images),
            "n_maps": len(req.image),
        }
        if method.objective is not None:
            row["objective"] = method.objective
        if method.kind == "mask":
            threshold, normalize = 0.5, "none"
        else:
            chosen_on = val.first(_threshold_subset(method, cfg))
            threshold, normalize = _best_threshold(method, cfg, chosen_on), "minmax"
            row["threshold_images"] = len(chosen_on.images)
        maps = _explain(method, data.images, req, cfg.batch_size)
        row.update(scene_scores(maps, req, data, threshold, normalize))
        row["on_first"] = _on_first(maps, req, data, threshold, normalize, cfg)
        row.update(_faithfulness(model, maps, req, data, cfg))
        row["threshold"] = threshold
        tb = min(cfg.throughput_batch, len(req.image))
        x, t = data.images[req.image[:tb]], req.target[:tb]
        row["images_per_s"], row["throughput_calls"] = throughput(method.explain, x, t)
        if figure_requests is not None:
            figure_maps[method.name] = _explain(method, test.images, figure_requests, 64)
        row["seconds"] = time.perf_counter() - t0
        return row


def _subset(method: Method, cfg: BenchmarkConfig) -> int | None:
    """How many test scenes a method is given: fewer for the slow ones."""
    if method.per_image_optimisation:
        return cfg.iterative_images
    return cfg.costly_images if method.costly else None


def _threshold_subset(method: Method, cfg: BenchmarkConfig) -> int | None:
    """Validation scenes a map method's threshold is chosen on: fewer for the costly ones."""
    sizes = [n for n in (cfg.threshold_images, cfg.costly_images if method.costly else None) if n]
    return min(sizes) if sizes else None


def _explain(method: Method, images: torch.Tensor, req: Requests, bs: int) -> torch.Tensor:
    """The method's maps of every requested pair (see :func:`request_maps`)."""
    assert method.explain is not None
    return request_maps(method.explain, images, req, bs)


def request_maps(
    explain: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    images: torch.Tensor,
    req: Requests,
    batch_size: int,
) -> torch.Tensor:
    """The maps ``(P, 1, H, W)`` of every requested (scene, class) pair, in order.

    Args:
        explain: Maps a batch of images and one class per image to their maps.
        images: The scenes ``(N, C, H, W)`` the requests index.
        req: The pairs: ``req.image`` indexes ``images``, ``req.target`` is each pair's class.
        batch_size: Pairs per call of ``explain``.

    Returns:
        The maps, detached, one per pair in the order of ``req``.
    """
    return batched(lambda i, t: explain(images[i], t), req.image, req.target, batch_size)


def scene_scores(
    maps: torch.Tensor, req: Requests, data: SceneImages, threshold: float, normalize: str
) -> dict[str, Any]:
    """Per-object localisation, pointing, selectivity and absent-class area of ``maps``."""
    grid, target = req.layout(maps)
    objects = (grid, target, data.boxes, data.classes)
    loc = scene_localisation_details(*objects, threshold, normalize=normalize)
    area = absent_class_area(*objects, normalize=normalize)
    counts = torch.tensor([len(c) for c in data.classes])[loc.image]
    return {
        "localisation_error": 100.0 * float(loc.error),
        "localisation_error_one_item": _error(loc.hits, counts == 1),
        "localisation_error_several_items": _error(loc.hits, counts > 1),
        "mean_iou": float(loc.ious.mean()),
        "empty_maps": float(loc.empty.float().mean()),
        "pointing_accuracy": float(pointing_game(*objects, normalize=normalize)),
        "selectivity": float(class_selectivity(*objects, normalize=normalize)),
        "present_area": float(area.present),
        "absent_area": float(area.absent),
        "absent_to_present_area_ratio": float(area.ratio),
    }


def _on_first(
    maps: torch.Tensor,
    req: Requests,
    data: SceneImages,
    threshold: float,
    normalize: str,
    cfg: BenchmarkConfig,
) -> dict[str, dict[str, Any]]:
    """Scores on the first scenes of each smaller subset the slower rows are scored on."""
    out: dict[str, dict[str, Any]] = {}
    for n in sorted({cfg.iterative_images, cfg.costly_images} - {None}):
        if 0 < n < req.scenes:
            keep = req.image < n
            first = Requests(*req.where(keep)[:4], n, req.slots)
            out[str(n)] = scene_scores(maps[keep], first, data.first(n), threshold, normalize)
    return out


def _error(hits: torch.Tensor, subset: torch.Tensor) -> float | None:
    """Localisation error (%) over a boolean subset of pairs (None if it is empty)."""
    return 100.0 * (1.0 - float(hits[subset].float().mean())) if subset.any() else None


def _best_threshold(method: Method, cfg: BenchmarkConfig, val: SceneImages) -> float:
    """Threshold (on min-max normalised maps) with the lowest localisation error on ``val``."""
    req = scene_requests(val, cfg.seed, absent=False)
    grid, target = req.layout(_explain(method, val.images, req, cfg.batch_size))
    best, best_err = 0.5, float("inf")
    for t in [i / 20 for i in range(1, 20)]:
        err = float(
            scene_localisation_details(
                grid, target, val.boxes, val.classes, t, normalize="minmax"
            ).error
        )
        if err < best_err:
            best, best_err = t, err
    return best


def _faithfulness(
    model: nn.Module, maps: torch.Tensor, req: Requests, data: SceneImages, cfg: BenchmarkConfig
) -> dict[str, Any]:
    """Deletion, insertion and ROAD of the present classes of the first scenes."""
    n = cfg.faithfulness_images if cfg.faithfulness_images is not None else req.scenes
    keep = req.present & (req.image < n)
    x, a, t = data.images[req.image[keep]], maps[keep], req.target[keep]
    return faithfulness_scores(model, x, a, t, cfg.batch_size, cfg.seed, multi_label=True)
