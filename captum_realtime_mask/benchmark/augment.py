"""Augmentation of the black boxes' training images: crops that keep the item, and flips."""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["augment", "box_aware_crops"]


def augment(
    images: torch.Tensor,
    boxes: torch.Tensor,
    crop_prob: float,
    min_cover: float,
    flip_prob: float,
    generator: torch.Generator,
) -> torch.Tensor:
    """Replace some images by :func:`box_aware_crops` of them, then mirror some left-right.

    Args:
        images: ``(N, C, H, W)`` float images.
        boxes: ``(N, 4)`` item boxes ``(x1, y1, x2, y2)`` with inclusive maxima, in pixels.
        crop_prob: Probability that an image is replaced by a crop.
        min_cover: Least fraction of the box a crop keeps along each axis.
        flip_prob: Probability of a left-right flip.
        generator: Random generator of every draw.

    Returns:
        The augmented images (``images`` itself when nothing was drawn).
    """
    n = len(images)
    if crop_prob > 0:
        chosen = torch.rand(n, generator=generator) < crop_prob
        if chosen.any():
            images = images.clone()
            images[chosen] = box_aware_crops(images[chosen], boxes[chosen], min_cover, generator)
    if flip_prob > 0:
        flip = (torch.rand(n, generator=generator) < flip_prob).view(n, 1, 1, 1)
        images = torch.where(flip, images.flip(-1), images)
    return images


def box_aware_crops(
    images: torch.Tensor,
    boxes: torch.Tensor,
    min_cover: float,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Random crops that keep most of each item, resized back to the full size.

    Along each axis independently, the crop's length is uniform between ``min_cover`` times
    the box's length and the whole side, and its position is uniform among those that keep
    at least ``min_cover`` of the box. The two axes are independent, so the item is also
    stretched, like the tightest-box crops the saliency metric resizes to the classifier's
    input size regardless of their aspect ratio.

    Args:
        images: ``(N, C, H, W)`` float images.
        boxes: ``(N, 4)`` boxes ``(x1, y1, x2, y2)`` with inclusive maxima, in pixels.
        min_cover: Least fraction of the box kept along each axis, in ``(0, 1]``.
        generator: Random generator.

    Returns:
        The crops, shaped like ``images``.
    """
    n, _, h, w = images.shape
    device = images.device
    lo = boxes[:, :2].to(torch.float32)
    hi = boxes[:, 2:].to(torch.float32) + 1  # exclusive pixel edges
    full = torch.tensor([w, h], dtype=torch.float32)
    length = (hi - lo).clamp(min=1.0)
    u = torch.rand(n, 2, 2, generator=generator)
    shortest = (min_cover * length).clamp(max=full)
    side = shortest + u[:, 0] * (full - shortest)
    kept = torch.minimum(min_cover * length, side)
    start_lo = (lo + kept - side).clamp(min=0.0)
    start_hi = torch.minimum(hi - kept, full - side).clamp(min=0.0)
    start = start_lo + u[:, 1] * (start_hi - start_lo).clamp(min=0.0)
    # Affine map from output grid [-1, 1] to the crop, in normalised input coordinates.
    scale = side / full
    shift = (2 * start + side) / full - 1
    theta = torch.zeros(n, 2, 3)
    theta[:, 0, 0], theta[:, 1, 1] = scale[:, 0], scale[:, 1]
    theta[:, 0, 2], theta[:, 1, 2] = shift[:, 0], shift[:, 1]
    grid = F.affine_grid(theta.to(device, images.dtype), list(images.shape), align_corners=False)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="border", align_corners=False)
