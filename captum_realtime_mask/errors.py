"""The package's documented exception types."""

from __future__ import annotations

from typing import Any

__all__ = ["CheckpointError", "InputError", "TrainingError"]


class InputError(ValueError):
    """An argument has the wrong shape, type, range or device.

    The message names the argument, what was expected, what came, and how to fix it.
    Subclasses :class:`ValueError`, so ``except ValueError`` also catches it.
    """


class CheckpointError(RuntimeError):
    """A saved masker or training checkpoint is missing, truncated, tampered or incompatible."""


class TrainingError(RuntimeError):
    """Training cannot go on (for example the loss stayed non-finite for many steps)."""


def _describe(value: Any) -> str:
    """Say what a value is, for error messages (long reprs are cut at 60 characters)."""
    import torch

    if isinstance(value, torch.Tensor):
        return f"a Tensor of shape {tuple(value.shape)} and dtype {value.dtype}"
    if isinstance(value, (tuple, list)):
        kinds = ", ".join(type(v).__name__ for v in list(value)[:3])
        more = ", ..." if len(value) > 3 else ""
        return f"a {type(value).__name__} of {len(value)} items ({kinds}{more})"
    text = repr(value)
    if len(text) > 60:
        text = text[:57] + "..."
    return f"{type(value).__name__} {text}"
