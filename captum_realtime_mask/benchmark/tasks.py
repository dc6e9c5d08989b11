"""What a black box learns: one class per image (softmax) or every class in a scene (sigmoid).

:func:`train_blackbox <captum_realtime_mask.benchmark.blackbox.train_blackbox>` trains on
either dataset of the package; the :class:`Task` of its dataset configuration says which
split class to read, which loss to minimise, which box its crops keep and how the model is
scored:

* :class:`~captum_realtime_mask.datasets.ClutteredConfig`: one item per image, cross-entropy
  with label smoothing, top-1 accuracy;
* :class:`~captum_realtime_mask.datasets.SceneConfig`: one to several items, binary
  cross-entropy on each class's logit (a multi-label classifier), macro-averaged average
  precision (mAP, torchmetrics' ``MultilabelAveragePrecision``); crops keep most of the box
  around all the scene's items.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from captum_realtime_mask.datasets.cluttered import ClutteredFashionMNIST
from captum_realtime_mask.datasets.config import ClutteredConfig
from captum_realtime_mask.datasets.scenes import NUM_CLASSES, FashionMNISTScenes, SceneConfig
from captum_realtime_mask.errors import InputError

__all__ = [
    "MULTI_LABEL",
    "SINGLE_LABEL",
    "Task",
    "evaluate_accuracy",
    "evaluate_map",
    "scene_union_boxes",
    "task_of",
]

Split = ClutteredFashionMNIST | FashionMNISTScenes


@torch.no_grad()
def _scores(model: nn.Module, dataset: Split, batch_size: int) -> torch.Tensor:
    """The model's logits on every image of ``dataset`` (its mode is restored afterwards)."""
    was_training = model.training
    model.eval()
    try:
        device = next(model.parameters()).device
        out = [
            model(dataset.float_images(slice(start, start + batch_size)).to(device)).float().cpu()
            for start in range(0, len(dataset), batch_size)
        ]
        return torch.cat(out) if out else torch.zeros(0, NUM_CLASSES)
    finally:
        model.train(was_training)


def evaluate_accuracy(model: nn.Module, dataset: Split, batch_size: int = 500) -> float:
    """Top-1 accuracy of ``model`` on a single-object ``dataset``.

    Args:
        model: A classifier of ``[0, 1]`` images.
        dataset: The images and their class indices (``dataset.labels``).
        batch_size: Images per forward pass.

    Returns:
        The fraction of images classified correctly.
    """
    logits = _scores(model, dataset, batch_size)
    return float((logits.argmax(dim=1) == dataset.labels).float().mean()) if len(logits) else 0.0


def evaluate_map(model: nn.Module, dataset: Split, batch_size: int = 500) -> float:
    """Macro-averaged average precision (mAP) of a multi-label ``model`` on scenes.

    Args:
        model: A classifier of ``[0, 1]`` images returning one logit per class.
        dataset: The images and their multi-hot labels (``dataset.labels``, ``(N, 10)``).
        batch_size: Images per forward pass.

    Returns:
        The mean over classes of each class's average precision (torchmetrics).
    """
    from torchmetrics.functional.classification import multilabel_average_precision

    logits = _scores(model, dataset, batch_size)
    labels = dataset.labels.long()
    return float(multilabel_average_precision(logits, labels, num_labels=labels.shape[1]))


def scene_union_boxes(boxes: torch.Tensor) -> torch.Tensor:
    """The box ``(N, 4)`` around all items of each scene, from ``(N, M, 4)`` boxes padded by -1."""
    valid = boxes[..., 0] >= 0
    big = torch.iinfo(boxes.dtype).max if not boxes.is_floating_point() else float("inf")
    low = torch.where(valid[..., None], boxes[..., :2], torch.full_like(boxes[..., :2], big))
    high = torch.where(valid[..., None], boxes[..., 2:], torch.full_like(boxes[..., 2:], -1))
    return torch.cat([low.amin(1), high.amax(1)], dim=1)


def _cross_entropy(logits: torch.Tensor, y: torch.Tensor, smoothing: float) -> torch.Tensor:
    return F.cross_entropy(logits, y, label_smoothing=smoothing)


def _binary_cross_entropy(logits: torch.Tensor, y: torch.Tensor, smoothing: float) -> torch.Tensor:
    """Binary cross-entropy summed over the classes, averaged over the images.

    Summed rather than averaged over the classes, so the gradient of each logit is on the
    scale of the softmax cross-entropy's: averaged, it is ten times smaller and the weight
    decay of the presets stalls training.
    """
    target = y * (1.0 - smoothing) + 0.5 * smoothing
    return F.binary_cross_entropy_with_logits(logits, target, reduction="none").sum(1).mean()


def _top1_hits(logits: torch.Tensor, y: torch.Tensor) -> float:
    return float((logits.argmax(dim=1) == y).sum())


def _label_hits(logits: torch.Tensor, y: torch.Tensor) -> float:
    """Images whose every class is decided right at logit 0 (the exact-match count)."""
    return float(((logits > 0) == (y > 0.5)).all(dim=1).sum())


@dataclass(frozen=True)
class Task:
    """How a black box is trained and scored on one kind of dataset.

    Attributes:
        name: ``"single-label"`` or ``"multi-label"``.
        split_class: The dataset class of the splits.
        loss: ``loss(logits, labels, label_smoothing)``.
        hits: ``hits(logits, labels)``: images classified right (training log).
        metric: Key of the score in the training record (``"accuracy"`` or ``"map"``).
        evaluate: ``evaluate(model, split)``: that score.
        crop_boxes: The box per image that training crops keep, from a split's ``boxes``.
    """

    name: str
    split_class: type
    loss: Callable[[torch.Tensor, torch.Tensor, float], torch.Tensor]
    hits: Callable[[torch.Tensor, torch.Tensor], float]
    metric: str
    evaluate: Callable[[nn.Module, Any], float]
    crop_boxes: Callable[[torch.Tensor], torch.Tensor]


SINGLE_LABEL = Task(
    "single-label",
    ClutteredFashionMNIST,
    _cross_entropy,
    _top1_hits,
    "accuracy",
    evaluate_accuracy,
    lambda boxes: boxes,
)
MULTI_LABEL = Task(
    "multi-label",
    FashionMNISTScenes,
    _binary_cross_entropy,
    _label_hits,
    "map",
    evaluate_map,
    scene_union_boxes,
)


def task_of(dataset: ClutteredConfig | SceneConfig) -> Task:
    """The task of a dataset configuration.

    Raises:
        InputError: ``dataset`` is neither a ``ClutteredConfig`` nor a ``SceneConfig``.
    """
    if isinstance(dataset, SceneConfig):
        return MULTI_LABEL
    if isinstance(dataset, ClutteredConfig):
        return SINGLE_LABEL
    raise InputError(
        f"must be a ClutteredConfig or a SceneConfig, got {type(dataset).__name__}.",
        argument="dataset",
    )
