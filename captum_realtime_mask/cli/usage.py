"""How the command line reports an error the user can fix: one line, exit code 2.

:class:`CLIError` is the command line's own error. Library errors (:class:`InputError`,
:class:`CheckpointError`) name the library's argument (``directory``, ``encoder``,
``device``); :func:`options_named` rewords them to name the option that supplied it instead.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from captum_realtime_mask.errors import CheckpointError, InputError

__all__ = ["CLIError", "argument_and_detail", "one_line", "options_named"]


class CLIError(Exception):
    """A user error of the command line: printed as one line, exit code 2."""


def argument_and_detail(exc: BaseException) -> tuple[str | None, str]:
    """The library argument an error is about (None if none) and its message without it.

    Args:
        exc: An :class:`InputError` or :class:`CheckpointError` (both carry ``argument``
            and ``detail``) or any other exception.

    Returns:
        ``(argument, detail)``, or ``(None, str(exc))`` for an error about no one argument.

    Example:
        >>> argument_and_detail(InputError("expected a folder.", argument="directory"))
        ('directory', 'expected a folder.')
    """
    argument = getattr(exc, "argument", None)
    if argument is not None:
        return argument, getattr(exc, "detail", str(exc))
    return None, str(exc)


@contextlib.contextmanager
def options_named(**options: str) -> Iterator[None]:
    """Within the block, library errors about these arguments name the option instead.

    An :class:`InputError` or :class:`CheckpointError` about the library argument ``name``
    is raised again as a :class:`CLIError` reading ``f"{options[name]}: {detail}"``; errors
    about other arguments pass unchanged.

    Args:
        **options: For each library argument, the option (and value) that supplied it, e.g.
            ``directory="--masker runs/masker"``.

    Example:
        >>> with options_named(lr="--lr"):
        ...     raise InputError("expected a real number > 0, got int 0.", argument="lr")
        Traceback (most recent call last):
        ...
        captum_realtime_mask.cli.usage.CLIError: --lr: expected a real number > 0, got int 0.
    """
    try:
        yield
    except (InputError, CheckpointError) as exc:
        argument, detail = argument_and_detail(exc)
        if argument not in options:
            raise
        raise CLIError(f"{options[argument]}: {detail}") from None


def one_line(exc: BaseException, limit: int = 1200) -> str:
    """The message of ``exc`` on one line, of about ``limit`` characters at most.

    An error raised in a DataLoader worker comes back with the worker's traceback in its
    message; only its last line, the original message, is kept. A longer message (a state
    dict's key lists, say) keeps its start and its end, where the hint is.

    Args:
        exc: The error to report.
        limit: About the most characters kept.

    Returns:
        The message, whitespace runs collapsed to single spaces.
    """
    text = str(exc)
    if "Original Traceback" in text:
        last = text.strip().splitlines()[-1]
        text = last.split(": ", 1)[1] if ": " in last else last
    text = " ".join(text.split()) or type(exc).__name__
    if len(text) > limit:
        head, tail = text[: limit * 2 // 3], text[-(limit // 3) :]
        text = f"{head} ... ({len(text) - len(head) - len(tail)} characters left out) ... {tail}"
    return text
