"""The package's documented exception types."""

from __future__ import annotations

__all__ = ["CheckpointError", "InputError", "TrainingError"]


class _NamesItsArgument(Exception):
    """An error that may name the argument at fault: ``str(error)`` is ``"name: detail"``."""

    def __init__(self, detail: str, argument: str | None = None) -> None:
        self.detail = detail
        self.argument = argument
        super().__init__(f"{argument}: {detail}" if argument else detail)

    def __reduce__(self):  # keeps ``argument`` through pickling (DataLoader workers)
        return type(self), (self.detail, self.argument)


class InputError(_NamesItsArgument, ValueError):
    """An argument has the wrong shape, type, range or device.

    The message names the argument, what was expected, what came, and how to fix it.
    Subclasses :class:`ValueError`, so ``except ValueError`` also catches it.

    Attributes:
        argument: The name of the argument at fault (``"lr"``, ``"loader"``, ``"target"``),
            or None where no single argument is. ``str(error)`` starts with it.
        detail: The message without the argument's name, for callers (the command line)
            that name the argument their own way.

    Example:
        >>> err = InputError("expected a positive learning rate, got -1.0.", argument="lr")
        >>> str(err)
        'lr: expected a positive learning rate, got -1.0.'
        >>> err.argument, err.detail
        ('lr', 'expected a positive learning rate, got -1.0.')
    """


class CheckpointError(_NamesItsArgument, RuntimeError):
    """A saved masker or training checkpoint is missing, truncated, tampered or incompatible.

    Like :class:`InputError` it has ``argument`` (the argument that named the checkpoint,
    such as ``"directory"`` or ``"resume_from"``, or None) and ``detail``.
    """


class TrainingError(RuntimeError):
    """Training cannot go on (for example the loss stayed non-finite for many steps)."""
