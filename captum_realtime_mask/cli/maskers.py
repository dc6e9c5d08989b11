"""The masker folder: the one ``train`` writes, and the one ``explain`` and ``evaluate`` load."""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from torch import nn

from captum_realtime_mask.cli.usage import CLIError, options_named

__all__ = [
    "check_encoder_name",
    "check_image_size",
    "check_masker_output",
    "load_masker",
    "masker_num_classes",
]


def check_masker_output(path: str | os.PathLike[str]) -> None:
    """Refuse, before training, a ``--output`` that :meth:`save` would refuse after it."""
    from captum_realtime_mask.checkpoint import target_kind, target_path

    with options_named(directory=f"--output {path}"):
        target_kind(target_path(path))


def check_encoder_name(encoder: str) -> None:
    """Refuse an unknown timm or ``torchvision:<name>`` encoder before any data is loaded."""
    from captum_realtime_mask.masker.resolve import resolve_encoder

    with options_named(encoder=f"--encoder {encoder}"):
        resolve_encoder(encoder, pretrained=False)


def check_image_size(stride: int, size: int) -> None:
    """The masker needs sides divisible by its encoder's largest stride."""
    if size % stride:
        raise CLIError(
            f"--image-size: must be divisible by the encoder's stride {stride}, got {size}."
        )


def masker_num_classes(masker: Path) -> int | None:
    """The number of classes of the classifier a saved masker was trained for (else None)."""
    from captum_realtime_mask.checkpoint import CONFIG_NAME
    from captum_realtime_mask.saved import saved_num_classes

    try:
        config = json.loads((masker / CONFIG_NAME).read_text())
    except (OSError, ValueError):
        return None
    value = saved_num_classes(config) if isinstance(config, dict) else None
    return value if value is not None and value > 0 else None


def load_masker(masker: Path, model: nn.Module, device: torch.device, size: int):
    """The ``--masker`` folder loaded for ``model`` on ``device``, checked for ``size`` px.

    Returns:
        The :class:`~captum_realtime_mask.RealTimeMaskAttribution`.

    Raises:
        CLIError: The folder holds no masker, or ``size`` does not suit its encoder.
        CheckpointError: Broken or incompatible files (the message names them).
    """
    from captum_realtime_mask.attribution import RealTimeMaskAttribution

    with options_named(directory=f"--masker {masker}"):
        attr = RealTimeMaskAttribution.load(masker, model.to(device), device=device)
    check_image_size(attr.masker.max_stride, size)
    return attr
