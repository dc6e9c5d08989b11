"""Argument checks shared by the metric modules, raising InputError with a hint."""

from __future__ import annotations

import numbers
from collections.abc import Sequence
from typing import Any

import numpy as np
from torch import Tensor

from captum_realtime_mask.errors import InputError, _describe

__all__: list[str] = []


def _single_tensor(value: Any, name: str) -> Tensor:
    """Accept a tensor or a 1-tuple holding one tensor (Captum passes tuples)."""
    if isinstance(value, tuple) and len(value) == 1:
        value = value[0]
    if not isinstance(value, Tensor):
        raise InputError(
            f"`{name}` must be a Tensor or a 1-tuple holding one Tensor; got {_describe(value)}. "
            "The metrics score image batches with a single input tensor."
        )
    return value


def _image_batch(inputs: Any, name: str = "inputs") -> Tensor:
    """Return ``inputs`` as a floating (N, C, H, W) tensor, or raise InputError."""
    x = _single_tensor(inputs, name)
    if x.dim() != 4:
        raise InputError(
            f"`{name}` must be an image batch shaped (N, C, H, W); got {_describe(x)}. "
            "Add the batch dimension with `x.unsqueeze(0)` for a single image."
        )
    if not x.is_floating_point():
        raise InputError(
            f"`{name}` must be a floating-point tensor; got {_describe(x)}. "
            "Convert it with `x.float()` (and scale it as your classifier expects)."
        )
    if x.shape[0] == 0 or x.shape[2] == 0 or x.shape[3] == 0:
        raise InputError(f"`{name}` must hold at least one non-empty image; got {_describe(x)}.")
    return x


def _attribution_batch(attributions: Any, name: str = "attributions") -> Tensor:
    """Return attributions as a (N, C, H, W) tensor (C may be 1), or raise InputError."""
    a = _single_tensor(attributions, name)
    if a.dim() == 3:
        a = a.unsqueeze(1)
    if a.dim() != 4:
        raise InputError(
            f"`{name}` must be shaped (N, C, H, W), (N, 1, H, W) or (N, H, W); got {_describe(a)}."
        )
    if a.shape[0] == 0 or a.shape[2] == 0 or a.shape[3] == 0:
        raise InputError(f"`{name}` must hold at least one non-empty map; got {_describe(a)}.")
    if not a.is_floating_point():
        a = a.float()
    return a


def _positive_int(value: Any, name: str) -> int:
    """Return ``value`` as a positive int, or raise InputError."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise InputError(f"`{name}` must be a positive int; got {_describe(value)}.")
    return int(value)


def _real_in(value: Any, name: str, low: float, high: float) -> float:
    """Return ``value`` as a float in the closed range [low, high], or raise InputError."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise InputError(
            f"`{name}` must be a real number in [{low}, {high}]; got {_describe(value)}."
        )
    value = float(value)
    if not low <= value <= high:
        raise InputError(f"`{name}` must lie in [{low}, {high}]; got {value}.")
    return value


def _size_pair(size: Any, name: str) -> tuple[int, int]:
    """Return an int or an (height, width) pair as a pair of positive ints."""
    given = size
    if isinstance(size, numbers.Integral) and not isinstance(size, bool):
        size = (size, size)
    if (
        not isinstance(size, Sequence)
        or isinstance(size, (str, bytes))
        or len(size) != 2
        or any(isinstance(s, bool) or not isinstance(s, numbers.Integral) or s < 1 for s in size)
    ):
        shown = f"{type(given).__name__} {given!r}"
        if len(shown) > 80:
            shown = _describe(given)
        raise InputError(
            f"`{name}` must be a positive int or a (height, width) pair of positive ints; "
            f"got {shown}."
        )
    return int(size[0]), int(size[1])


def _flag(value: Any, name: str) -> bool:
    """Return ``value`` (a bool or a NumPy bool) as a bool, or raise InputError."""
    if not isinstance(value, (bool, np.bool_)):
        raise InputError(f"`{name}` must be True or False; got {_describe(value)}.")
    return bool(value)
