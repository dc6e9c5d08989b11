"""The benchmark's method registry: every saliency method as ``explain(images, targets) -> map``.

A :class:`Method` turns a batch of images and classes into one map per image ``(N, 1, H, W)``.
``kind`` says how the benchmark scores it: ``"mask"`` maps are thresholded at 0.5 as the paper
does; ``"map"`` maps (gradients and friends) are min-max normalised per image and thresholded
at the value chosen on the validation split; ``"box"`` methods return a fixed box per image.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["Method", "captum_methods", "find_last_conv"]

Explain = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass
class Method:
    """One row of the benchmark.

    Attributes:
        name: Row label.
        explain: ``explain(images, targets) -> (N, 1, H, W)`` map (or None for box methods).
        kind: ``"mask"``, ``"map"`` or ``"box"``.
        box: For ``kind == "box"``: ``"centre"``, ``"max"`` or ``"gt"``.
        masker: For learned-mask rows: the attribution object, to measure absent classes.
        per_image_optimisation: Optimises every image (iterative mask, refinement): scored on
            the benchmark's smaller ``iterative_images`` subset.
        objective: For per-image optimisation: the objective's fields (recorded in the row).
    """

    name: str
    explain: Explain | None
    kind: str = "map"
    box: str | None = None
    masker: Any = None
    per_image_optimisation: bool = False
    objective: dict[str, Any] | None = None


def find_last_conv(model: nn.Module) -> nn.Module:
    """The last ``nn.Conv2d`` of a model (Grad-CAM's layer)."""
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    if not convs:
        raise ValueError("model has no Conv2d layer for Grad-CAM")
    return convs[-1]


def _channel_abs(attr: torch.Tensor) -> torch.Tensor:
    return attr.abs().sum(1, keepdim=True)


def captum_methods(model: nn.Module, image_size: int, ig_steps: int = 50) -> list[Method]:
    """Captum's gradient and perturbation baselines for ``model``.

    Gradient maps are scored by the absolute value summed over channels; Grad-CAM is
    upsampled bilinearly to the input size and its negative part dropped; Occlusion uses a
    window of an eighth of the image side with half-window strides and a zero baseline.
    """
    from captum.attr import (
        GuidedBackprop,
        InputXGradient,
        IntegratedGradients,
        LayerAttribution,
        LayerGradCam,
        Occlusion,
        Saliency,
    )

    saliency = Saliency(model)
    guided = GuidedBackprop(model)
    ig = IntegratedGradients(model)
    ixg = InputXGradient(model)
    gradcam = LayerGradCam(model, find_last_conv(model))
    occlusion = Occlusion(model)
    window = max(2, image_size // 8)
    stride = max(1, window // 2)

    def grad_cam(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        cam = gradcam.attribute(x, target=t, relu_attributions=True)
        return LayerAttribution.interpolate(cam, tuple(x.shape[-2:]), interpolate_mode="bilinear")

    def occlude(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        out = occlusion.attribute(
            x,
            target=t,
            sliding_window_shapes=(x.shape[1], window, window),
            strides=(x.shape[1], stride, stride),
            baselines=0.0,
            perturbations_per_eval=16,
        )
        return F.relu(out.sum(1, keepdim=True))

    return [
        Method(
            "Gradient (Saliency)",
            lambda x, t: saliency.attribute(x, target=t, abs=True).sum(1, keepdim=True),
        ),
        Method("Guided backprop", lambda x, t: _channel_abs(guided.attribute(x, target=t))),
        Method(
            f"Integrated gradients ({ig_steps} steps)",
            lambda x, t: _channel_abs(
                ig.attribute(x, target=t, n_steps=ig_steps, internal_batch_size=len(x) * 10)
            ),
        ),
        Method("Input x gradient", lambda x, t: _channel_abs(ixg.attribute(x, target=t))),
        Method("Grad-CAM", grad_cam),
        Method("Occlusion", occlude),
    ]
