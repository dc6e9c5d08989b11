"""What every scene metric shares: reading a batch's maps, targets and objects into pairs."""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np
import torch
from torch import Tensor

from captum_realtime_mask._checks import describe, single_tensor
from captum_realtime_mask.errors import InputError
from captum_realtime_mask.metrics._accumulating import AccumulatingMetric
from captum_realtime_mask.metrics.boxes import (
    Normalization,
    box_sets,
    check_normalize,
    normalize_attributions,
)

__all__ = [
    "PairMetric",
    "Scene",
    "class_region",
    "label_sets",
    "read_scene",
    "scene_pairs",
]


class Scene(NamedTuple):
    """A validated batch: normalised maps, requests and objects, on the maps' device."""

    maps: Tensor  # (N, K, H, W) normalised
    target: Tensor  # (N, K) long, < 0 for padding
    present: Tensor  # (N, K) bool: requested and present
    absent: Tensor  # (N, K) bool: requested and absent
    boxes: list[Tensor]  # N x (M_i, 4) float32
    labels: list[Tensor]  # N x (M_i,) long


def read_scene(
    attributions: Any, target: Any, gt_boxes: Any, gt_labels: Any, normalize: Normalization
) -> Scene:
    normalize = check_normalize(normalize)
    a = single_tensor(attributions, "attributions")
    if a.dim() != 4 or 0 in a.shape:
        raise InputError(
            f"must be one map per requested class, shaped (N, K, H, W) with no empty "
            f"dimension; got {describe(a)}. A single map per image is (N, 1, H, W).",
            argument="attributions",
        )
    n, k, height, width = a.shape
    device = a.device
    if isinstance(target, np.ndarray):
        target = torch.from_numpy(target)
    if not isinstance(target, Tensor):
        try:
            target = torch.as_tensor(target)
        except (TypeError, ValueError, RuntimeError):
            raise InputError(
                f"must be (N, K) integer class ids; got {describe(target)}.", argument="target"
            ) from None
    if target.dim() == 1 and k == 1:
        target = target[:, None]
    if target.shape != (n, k) or target.is_floating_point() or target.dtype == torch.bool:
        raise InputError(
            f"must be (N, K) = {(n, k)} integer class ids, one per map of `attributions` "
            f"(negative for an unused slot); got {describe(target)}.",
            argument="target",
        )
    target = target.to(device=device, dtype=torch.long)
    valid = target >= 0
    same = (target[:, :, None] == target[:, None, :]) & valid[:, :, None] & valid[:, None, :]
    if (same.sum(dim=(1, 2)) > valid.sum(dim=1)).any():
        raise InputError(
            "requests a class twice for one image; give each class of an image one map.",
            argument="target",
        )
    maps = normalize_attributions(a.reshape(n * k, 1, height, width), normalize)
    maps = maps.reshape(n, k, height, width)
    boxes = box_sets(gt_boxes, n, "gt_boxes", device, size=(height, width))
    labels = label_sets(gt_labels, [b.shape[0] for b in boxes], device)
    present = torch.stack([(target[i][:, None] == labels[i][None, :]).any(dim=1) for i in range(n)])
    return Scene(maps, target, present & valid, valid & ~present, boxes, labels)


def label_sets(gt_labels: Any, counts: list[int], device: torch.device) -> list[Tensor]:
    """``gt_labels`` as N (M_i,) long tensors matching the box counts, or InputError."""
    if isinstance(gt_labels, np.ndarray):
        gt_labels = torch.from_numpy(gt_labels)
    if isinstance(gt_labels, Tensor):
        # (N,): one object per image; (N, M): M objects per image.
        dim = gt_labels.dim()
        items = list(gt_labels.reshape(-1, 1) if dim == 1 else gt_labels) if dim in (1, 2) else None
    elif isinstance(gt_labels, (list, tuple)):
        items = list(gt_labels)
    else:
        items = None
    if items is None or len(items) != len(counts):
        raise InputError(
            f"must give the class of every box of `gt_boxes` for each of the {len(counts)} "
            f"images: an (N, M) tensor or a list of N (M_i,) integer tensors; got "
            f"{describe(gt_labels)}.",
            argument="gt_labels",
        )
    sets = []
    for i, (item, count) in enumerate(zip(items, counts)):
        try:
            t = torch.as_tensor(item)
        except (TypeError, ValueError, RuntimeError):
            t = None
        if t is not None and t.dim() == 0:
            t = t.reshape(1)
        if (
            t is None
            or t.dim() != 1
            or t.shape[0] != count
            or t.is_floating_point()
            or t.is_complex()
            or t.dtype == torch.bool
            or (t < 0).any()
        ):
            raise InputError(
                f"must be {count} non-negative integer class ids, one per box of "
                f"gt_boxes[{i}]; got {describe(item)}.",
                argument=f"gt_labels[{i}]",
            )
        sets.append(t.to(device=device, dtype=torch.long))
    return sets


def scene_pairs(mask: Tensor, target: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Image index, slot and class of the (image, class) pairs where ``mask`` is True."""
    image, slot = mask.nonzero(as_tuple=True)
    return image, slot, target[image, slot]


def class_region(boxes: Tensor, height: int, width: int) -> Tensor:
    """(M, H, W) bool: the pixels of each inclusive box."""
    ys = torch.arange(height, device=boxes.device)[None, :, None]
    xs = torch.arange(width, device=boxes.device)[None, None, :]
    b = boxes.long()
    return (
        (ys >= b[:, 1, None, None])
        & (ys <= b[:, 3, None, None])
        & (xs >= b[:, 0, None, None])
        & (xs <= b[:, 2, None, None])
    )


class PairMetric(AccumulatingMetric):
    """Keeps the class of every scored pair (``label_batches``) and one value per pair."""

    def _add_states(self, *names: str) -> None:
        for name in ("label_batches", *names):
            self.add_state(name, [], dist_reduce_fx="cat")

    def _append(self, **values: Tensor) -> None:
        for name, value in values.items():
            getattr(self, name).append(value.detach())

    @property
    def labels(self) -> Tensor:
        """``(num_pairs,)`` long: the class of every pair scored since the last reset."""
        return self.cat_state("label_batches", dtype=torch.long)

    @property
    def num_pairs(self) -> int:
        """Number of pairs scored since the last reset."""
        return self.state_length("label_batches")

    def _check_seen(self) -> None:
        if self.num_pairs == 0:
            raise RuntimeError(
                f"{type(self).__name__}.compute() needs an update() with at least one scored "
                "(image, class) pair first."
            )
