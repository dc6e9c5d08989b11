"""Argument checks: the one way the package validates a value, raising InputError with a hint.

Every config dataclass, the metrics and the command line's argparse types check their
arguments with these functions, so a count, a rate or a flag is refused with the same words
wherever it is passed. Each returns the value converted to a plain Python type (NumPy scalars
become ``int``/``float``/``bool``) and raises :class:`InputError` naming the argument.
"""

from __future__ import annotations

import argparse
import math
import numbers
import os
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import numpy as np
from torch import Tensor

from captum_realtime_mask.errors import InputError

__all__ = [
    "argparse_type",
    "attribution_batch",
    "describe",
    "flag",
    "image_batch",
    "integer",
    "is_int",
    "one_of",
    "path_str",
    "real",
    "single_tensor",
    "size_pair",
]

T = TypeVar("T")


def describe(value: Any) -> str:
    """Say what a value is, for error messages (long reprs are cut at 60 characters).

    Example:
        >>> describe([1, "a"])
        'a list of 2 items (int, str)'
    """
    if isinstance(value, Tensor):
        return f"a Tensor of shape {tuple(value.shape)} and dtype {value.dtype}"
    if isinstance(value, (tuple, list)):
        kinds = ", ".join(type(v).__name__ for v in list(value)[:3])
        more = ", ..." if len(value) > 3 else ""
        return f"a {type(value).__name__} of {len(value)} items ({kinds}{more})"
    text = repr(value)
    if len(text) > 60:
        text = text[:57] + "..."
    return f"{type(value).__name__} {text}"


def is_int(value: Any) -> bool:
    """True for Python and NumPy integers, False for bools and everything else."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def integer(
    value: Any, name: str, low: int | None = None, *, none_ok: bool = False, hint: str = ""
) -> int | None:
    """``value`` as an int of at least ``low``; a bool is not a count.

    Args:
        value: What came.
        name: The argument's name, for the message.
        low: The smallest value accepted (None: any int).
        none_ok: Accept None (and return it).
        hint: Appended to the message.

    Example:
        >>> integer(np.int64(3), "epochs", 1)
        3
        >>> integer(0, "epochs", 1)
        Traceback (most recent call last):
        ...
        captum_realtime_mask.errors.InputError: epochs: expected a positive int, got int 0.
    """
    if value is None and none_ok:
        return None
    expected = "an int" if low is None else "a positive int" if low == 1 else f"an int >= {low}"
    if none_ok:
        expected += " or None"
    if isinstance(value, bool):
        hint = hint or f"Hint: pass a number, e.g. {name}={max(low or 0, 1)} (a bool is no count)."
    if not is_int(value) or (low is not None and value < low):
        raise InputError(f"expected {expected}, got {describe(value)}.{_space(hint)}", name)
    return int(value)


def real(
    value: Any,
    name: str,
    low: float | None = None,
    high: float | None = None,
    *,
    low_open: bool = False,
    none_ok: bool = False,
    finite: bool = True,
    hint: str = "",
) -> float | None:
    """``value`` as a float in a range: ``[low, high]``, or ``(low, high]`` with ``low_open``.

    Example:
        >>> real(0.5, "threshold", 0, 1)
        0.5
        >>> real(0, "lr", 0, low_open=True)
        Traceback (most recent call last):
        ...
        captum_realtime_mask.errors.InputError: lr: expected a finite real number > 0, got int 0.
    """
    if value is None and none_ok:
        return None
    number_kind = "a finite real number" if finite else "a real number"
    if low is not None and high is not None:
        expected = f"a real number in {'(' if low_open else '['}{low}, {high}]"
    elif low is not None:
        expected = f"{number_kind} {'>' if low_open else '>='} {low}"
    elif high is not None:
        expected = f"{number_kind} <= {high}"
    else:
        expected = number_kind
    if none_ok:
        expected += " or None"
    ok = isinstance(value, numbers.Real) and not isinstance(value, bool)
    if ok:
        number = float(value)
        ok = not math.isnan(number) and (not finite or math.isfinite(number))
        ok = ok and (low is None or number > low or (number == low and not low_open))
        ok = ok and (high is None or number <= high)
    if not ok:
        raise InputError(f"expected {expected}, got {describe(value)}.{_space(hint)}", name)
    return number


def flag(value: Any, name: str) -> bool:
    """``value`` (a bool or a NumPy bool) as a bool.

    Example:
        >>> flag(np.bool_(True), "amp")
        True
    """
    if not isinstance(value, (bool, np.bool_)):
        raise InputError(f"expected True or False, got {describe(value)}.", name)
    return bool(value)


def one_of(value: Any, name: str, options: Sequence[T], *, hint: str = "") -> T:
    """``value`` if it is one of ``options`` (compared with ``==``, strings exactly).

    Args:
        value: What came.
        name: The argument's name, for the message.
        options: The values accepted.
        hint: Appended to the message.

    Example:
        >>> one_of("cosine", "lr_schedule", ("constant", "cosine"))
        'cosine'
    """
    try:
        found = any(type(value) is type(o) and value == o for o in options)
    except (TypeError, ValueError):  # a tensor or an array compared with a string
        found = False
    if not found:
        shown = " or ".join(repr(o) for o in options)
        raise InputError(f"expected one of {shown}, got {describe(value)}.{_space(hint)}", name)
    return value


def path_str(value: Any, name: str, example: str, *, none_ok: bool = False) -> str | None:
    """A file or folder path (a str or ``os.PathLike``) as a str, e.g. for JSON configs."""
    if value is None and none_ok:
        return None
    if not isinstance(value, str | os.PathLike) or not isinstance(os.fspath(value), str):
        raise InputError(
            f"expected a path (a str or os.PathLike){' or None' if none_ok else ''}, got "
            f"{describe(value)}. Hint: pass e.g. {name}={example!r}.",
            name,
        )
    return os.fspath(value)


def size_pair(size: Any, name: str) -> tuple[int, int]:
    """An int or a ``(height, width)`` pair as a pair of positive ints.

    Example:
        >>> size_pair(64, "image_size")
        (64, 64)
    """
    given = size
    if is_int(size):
        size = (size, size)
    if (
        not isinstance(size, Sequence)
        or isinstance(size, (str, bytes))
        or len(size) != 2
        or any(not is_int(s) or s < 1 for s in size)
    ):
        shown = f"{type(given).__name__} {given!r}"
        if len(shown) > 80:
            shown = describe(given)
        raise InputError(
            f"must be a positive int or a (height, width) pair of positive ints; got {shown}.",
            name,
        )
    return int(size[0]), int(size[1])


def single_tensor(value: Any, name: str) -> Tensor:
    """A tensor, or the tensor of a 1-tuple (Captum passes inputs as tuples)."""
    if isinstance(value, tuple) and len(value) == 1:
        value = value[0]
    if not isinstance(value, Tensor):
        raise InputError(
            f"must be a Tensor or a 1-tuple holding one Tensor; got {describe(value)}. "
            "The metrics score image batches with a single input tensor.",
            name,
        )
    return value


def image_batch(inputs: Any, name: str = "inputs") -> Tensor:
    """``inputs`` as a floating ``(N, C, H, W)`` tensor holding at least one image."""
    x = single_tensor(inputs, name)
    if x.dim() != 4:
        raise InputError(
            f"must be an image batch shaped (N, C, H, W); got {describe(x)}. "
            "Add the batch dimension with `x.unsqueeze(0)` for a single image.",
            name,
        )
    if not x.is_floating_point():
        raise InputError(
            f"must be a floating-point tensor; got {describe(x)}. "
            "Convert it with `x.float()` (and scale it as your classifier expects).",
            name,
        )
    if x.shape[0] == 0 or x.shape[2] == 0 or x.shape[3] == 0:
        raise InputError(f"must hold at least one non-empty image; got {describe(x)}.", name)
    return x


def attribution_batch(attributions: Any, name: str = "attributions") -> Tensor:
    """Attributions as a floating ``(N, C, H, W)`` tensor (C may be 1; ``(N, H, W)`` too)."""
    a = single_tensor(attributions, name)
    if a.dim() == 3:
        a = a.unsqueeze(1)
    if a.dim() != 4:
        raise InputError(
            f"must be shaped (N, C, H, W), (N, 1, H, W) or (N, H, W); got {describe(a)}.", name
        )
    if a.shape[0] == 0 or a.shape[2] == 0 or a.shape[3] == 0:
        raise InputError(f"must hold at least one non-empty map; got {describe(a)}.", name)
    if not a.is_floating_point():
        a = a.float()
    return a


def argparse_type(
    parse: Callable[[str], Any], check: Callable[..., Any], **limits: Any
) -> Callable[[str], Any]:
    """An argparse ``type=`` that parses the text, then applies one of the checks above.

    The check's message (without the library's argument name: argparse names the option)
    becomes argparse's usage error.

    Example:
        >>> positive = argparse_type(int, integer, low=1)
        >>> positive("3")
        3
        >>> positive("0")
        Traceback (most recent call last):
        ...
        argparse.ArgumentTypeError: expected a positive int, got int 0.
    """

    def convert(text: str) -> Any:
        try:
            value = parse(text)
        except ValueError:
            kind = "an integer" if parse is int else "a number"
            raise argparse.ArgumentTypeError(f"expected {kind}, got {text!r}") from None
        try:
            return check(value, "value", **limits)
        except InputError as exc:
            raise argparse.ArgumentTypeError(exc.detail) from None

    convert.__name__ = getattr(check, "__name__", "value")  # argparse shows it in errors
    return convert


def _space(hint: str) -> str:
    return f" {hint}" if hint else ""
