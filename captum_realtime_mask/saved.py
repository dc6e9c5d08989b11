"""What :meth:`RealTimeMaskAttribution.save` writes and ``load`` reads, and its checks.

A saved masker is a checkpoint folder (see :mod:`captum_realtime_mask.checkpoint`) whose
``config.json`` has ``kind: "RealTimeMaskAttribution"``, the masker's and the objective's
configs, the seed, the training history and the class count of the classifier it was
trained for; its weights are in ``masker.safetensors``. Training ``step-*`` checkpoints have
the same keys, so either kind loads.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from captum_realtime_mask._model_state import find_module
from captum_realtime_mask.checkpoint import latest_checkpoint, read_checkpoint
from captum_realtime_mask.errors import CheckpointError, InputError
from captum_realtime_mask.masker.model import MaskerConfig
from captum_realtime_mask.masker.resolve import infer_num_classes
from captum_realtime_mask.objective import ObjectiveConfig

__all__ = ["KIND", "read_saved_masker", "saved_num_classes"]

#: The ``kind`` a saved masker's ``config.json`` records.
KIND = "RealTimeMaskAttribution"


def saved_num_classes(meta: dict[str, Any]) -> int | None:
    """The class count of the classifier a saved masker was trained for, from its config.

    Saves record ``classifier_num_classes``; older saves and training checkpoints only the
    masker's ``num_classes``. None when neither is an int.

    Example:
        >>> saved_num_classes({"classifier_num_classes": 10, "masker": {"num_classes": 10}})
        10
    """
    masker = meta.get("masker")
    for value in (
        meta.get("classifier_num_classes"),
        masker.get("num_classes") if isinstance(masker, dict) else None,
    ):
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    return None


def read_saved_masker(
    directory: Any, forward_func: Any, encoder: Any, device: str | torch.device
) -> tuple[Path, dict[str, Any], dict[str, dict[str, torch.Tensor]]]:
    """Check ``load()``'s arguments, read the checkpoint and check it fits ``forward_func``.

    A ``checkpoint_dir`` given to ``fit()`` resolves to its newest ``step-*`` folder.

    Returns:
        The folder read, its config and its tensors (the configs in it are readable).

    Raises:
        InputError: ``directory``, ``forward_func`` or ``encoder`` of the wrong type.
        CheckpointError: Not a saved masker, unreadable configs, or a classifier with another
            number of classes than the one the masker was trained for.
    """
    _check_load_args(directory, forward_func, encoder)
    path = Path(directory)
    if Path(os.path.abspath(path)).name:  # the filesystem root holds no checkpoint
        # A fit(checkpoint_dir=...) folder gives its newest step; where there is no
        # checkpoint at all, read_checkpoint below says what is missing.
        with contextlib.suppress(CheckpointError):
            path = latest_checkpoint(path)
    meta, tensors = read_checkpoint(path, device=device)
    if meta.get("kind") != KIND or "masker" not in tensors:
        raise CheckpointError(f"{path}: not a RealTimeMaskAttribution checkpoint.")
    try:
        masker_config = MaskerConfig.from_dict(meta["masker"])
        ObjectiveConfig.from_dict(meta["objective"])
    except (KeyError, TypeError, ValueError) as exc:
        raise CheckpointError(
            f"{path}: the masker or objective config cannot be read "
            f"({type(exc).__name__}: {exc}). Hint: load it with the release that wrote it."
        ) from exc
    saved = saved_num_classes(meta)
    if saved is None:
        saved = masker_config.num_classes
    found = infer_num_classes(find_module(forward_func))
    if found is not None and found != saved:
        raise CheckpointError(
            f"the masker in {str(path)!r} was trained for a classifier with "
            f"{saved} classes, but the classifier given has {found}. Hint: load it with "
            "the classifier it was trained for.",
            argument="forward_func",
        )
    return path, meta, tensors


def _check_load_args(directory: Any, forward_func: Callable | Any, encoder: Any) -> None:
    """The folder first, the classifier second, and an optional encoder module."""
    if not isinstance(directory, str | os.PathLike):
        hint = (
            "the arguments look swapped: call load(directory, forward_func), the folder "
            "first and the classifier second."
            if isinstance(forward_func, str | os.PathLike)
            else "pass the folder that save() wrote, e.g. 'runs/masker'."
        )
        raise InputError(
            "expected the checkpoint folder (a str or os.PathLike), got "
            f"{type(directory).__name__}. Hint: {hint}",
            argument="directory",
        )
    if not callable(forward_func):
        raise InputError(
            "expected the classifier the masker was trained for (a callable "
            f"such as an nn.Module), got {type(forward_func).__name__}. Hint: call "
            "load(directory, forward_func), the folder first and the classifier second.",
            argument="forward_func",
        )
    if encoder is not None and not isinstance(encoder, nn.Module):
        raise InputError(
            "expected the custom encoder (an nn.Module) or None, got "
            f"{type(encoder).__name__}. Hint: pass the module the masker was built with.",
            argument="encoder",
        )
