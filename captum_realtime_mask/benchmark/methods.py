"""The benchmark's method registry: every saliency method as ``explain(images, targets) -> map``.

A :class:`Method` turns a batch of images and classes into one map per image ``(N, 1, H, W)``.
``kind`` says how the benchmark scores it: ``"mask"`` maps are thresholded at 0.5 as the paper
does; ``"map"`` maps (gradients and friends) are min-max normalised per image and thresholded
at the value chosen on the validation split; ``"box"`` methods return a fixed box per image.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["Method", "captum_methods", "find_last_conv", "iterative_method"]

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
        costly: Costs hundreds of forward passes per map (scenes suite: scored on its
            ``costly_images`` subset).
    """

    name: str
    explain: Explain | None
    kind: str = "map"
    box: str | None = None
    masker: Any = None
    per_image_optimisation: bool = False
    objective: dict[str, Any] | None = None
    costly: bool = False


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


def iterative_method(model: nn.Module, steps: int, objective: Any) -> Method:
    """The iterative mask's row: ``steps`` iterations of ``objective`` on every image.

    The benchmark gives it the objective its maskers are trained on, so that the slow method
    and the learned one are compared on equal terms.
    """
    from captum_realtime_mask.iterative import IterativeMaskAttribution

    iterative = IterativeMaskAttribution(model)
    return Method(
        f"Iterative mask ({steps} steps)",
        lambda x, t: iterative.attribute(x, target=t, n_iter=steps, objective=objective)[:, :1],
        kind="mask",
        per_image_optimisation=True,
        objective=objective.to_dict(),
    )


def feature_layer(model: nn.Module) -> nn.Module:
    """The last feature stage of a timm classifier (the block output before pooling).

    Read from timm's feature API (``feature_info``), so it is the stage pytorch-grad-cam's
    documentation recommends (``layer4`` of a ResNet, the last stage of a CSPDarknet); models
    without ``feature_info`` fall back to their last ``nn.Conv2d``.
    """
    net = getattr(model, "classifier", model)
    info = getattr(net, "feature_info", None)
    if info:
        return net.get_submodule(info[-1]["module"])
    return find_last_conv(model)


@contextmanager
def _quiet_score_cam() -> Iterator[None]:
    """Silence the progress bar pytorch-grad-cam's ScoreCAM draws for every image."""
    import functools
    import types

    import tqdm
    from pytorch_grad_cam import score_cam

    old = score_cam.tqdm
    score_cam.tqdm = types.SimpleNamespace(tqdm=functools.partial(tqdm.tqdm, disable=True))
    try:
        yield
    finally:
        score_cam.tqdm = old


def cam_library_methods(model: nn.Module, score_cam_batch: int = 64) -> list[Method]:
    """pytorch-grad-cam's GradCAM++ and ScoreCAM on ``model``'s last feature stage.

    The second peer library's maps, as it computes them (each map min-max normalised to
    ``[0, 1]`` by the library, upsampled to the input), for the class's raw score
    (``ClassifierOutputTarget``). ScoreCAM is gradient-free: one forward pass per channel of
    the stage, ``score_cam_batch`` at a time, so it is marked ``costly``.

    Raises:
        ImportError: pytorch-grad-cam is not installed (``pip install grad-cam``, or the
            package's ``faithfulness`` extra).
    """
    from pytorch_grad_cam import GradCAMPlusPlus, ScoreCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    layers = [feature_layer(model)]

    def run(cam_class: type, batch: int | None = None) -> Explain:
        def explain(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            targets = [ClassifierOutputTarget(int(c)) for c in t]
            fresh = [p for p in model.parameters() if p.grad is None]
            try:
                with cam_class(model, target_layers=layers) as cam, _quiet_score_cam():
                    if batch is not None:
                        cam.batch_size = batch
                    out = cam(input_tensor=x, targets=targets)
            finally:
                for p in fresh:  # the library's backward pass leaves them in .grad
                    p.grad = None
            return torch.from_numpy(out).to(x.dtype)[:, None]

        return explain

    return [
        Method("GradCAM++ (pytorch-grad-cam)", run(GradCAMPlusPlus)),
        Method("ScoreCAM (pytorch-grad-cam)", run(ScoreCAM, score_cam_batch), costly=True),
    ]
