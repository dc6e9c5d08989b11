"""The package's documented exception types."""

from __future__ import annotations

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
