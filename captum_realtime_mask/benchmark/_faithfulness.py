"""Faithfulness columns of both suites: deletion and insertion AUCs, and ROAD.

Deletion and insertion (the package's :mod:`~captum_realtime_mask.metrics.faithfulness`)
blur the pixels in the map's order in :data:`FAITHFULNESS_STEPS` steps and take the area
under the class's probability; ROAD is pytorch-grad-cam's (an optional extra), at
:data:`ROAD_PERCENTILES`. The single-object suite reads the softmax probability, the scenes
suite the class's sigmoid (its black boxes are multi-label).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from captum_realtime_mask.metrics import deletion_auc, insertion_auc

__all__ = ["FAITHFULNESS_STEPS", "ROAD_PERCENTILES", "faithfulness_scores"]

#: Steps of the deletion and insertion curves (a twentieth of the pixels per step), blurred.
FAITHFULNESS_STEPS = 20

#: ROAD's imputed fractions: pytorch-grad-cam's percentiles 20, 50 and 80.
ROAD_PERCENTILES = (20, 50, 80)


def faithfulness_scores(
    model: Callable[[torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    maps: torch.Tensor,
    target: torch.Tensor,
    batch_size: int,
    seed: int,
    multi_label: bool = False,
) -> dict[str, Any]:
    """Mean deletion and insertion AUCs, their difference, and ROAD, of one method's maps.

    Args:
        model: The black box (logits).
        x: Images ``(P, C, H, W)``.
        maps: Their maps ``(P, 1, H, W)``.
        target: The class of each map ``(P,)``.
        batch_size: Perturbed images per forward pass.
        seed: Seed of ROAD's noise.
        multi_label: Score the class's sigmoid probability rather than its softmax.

    Returns:
        ``faithfulness_maps``, ``deletion_auc``, ``insertion_auc``, ``insertion_minus_deletion``
        and its standard error, and (with pytorch-grad-cam installed) ``road_morf``,
        ``road_lerf`` and ``road_combined``; empty when there are no maps.
    """
    if len(x) == 0:
        return {}
    if multi_label:

        def forward(inputs: torch.Tensor) -> torch.Tensor:
            return torch.sigmoid(model(inputs))

    else:
        forward = model
    options = {"max_examples_per_batch": batch_size, "apply_softmax": not multi_label}
    deletion = deletion_auc(forward, x, maps, target, FAITHFULNESS_STEPS, "blur", **options)
    insertion = insertion_auc(forward, x, maps, target, FAITHFULNESS_STEPS, "blur", **options)
    gain = insertion - deletion
    row: dict[str, Any] = {
        "faithfulness_maps": len(x),
        "deletion_auc": float(deletion.mean()),
        "insertion_auc": float(insertion.mean()),
        "insertion_minus_deletion": float(gain.mean()),
        "insertion_minus_deletion_se": float(gain.std() / len(gain) ** 0.5) if len(x) > 1 else 0.0,
    }
    try:
        from captum_realtime_mask.metrics.external import road_scores

        road = road_scores(forward, x, maps, target, ROAD_PERCENTILES, seed=seed, **options)
    except ImportError:
        return row
    row["road_morf"], row["road_lerf"] = float(road.morf.mean()), float(road.lerf.mean())
    row["road_combined"] = float(road.combined.mean())
    return row
