"""Check a user's ``device`` argument before any work is done on it."""

from __future__ import annotations

import numbers
from typing import Any

import torch

from captum_realtime_mask._checks import describe
from captum_realtime_mask.errors import InputError

__all__: list[str] = []


def check_device(device: Any, allow_meta: bool = True) -> torch.device:
    """``device`` as a :class:`torch.device` that exists on this machine.

    Args:
        device: A :class:`torch.device`, a string such as ``"cpu"`` or ``"cuda:1"``, or a
            CUDA device index.
        allow_meta: Accept the ``meta`` device (shapes only). Where tensors must hold data,
            such as loaded weights, pass False.

    Returns:
        The device.

    Raises:
        InputError: Not a device, an unknown device string, ``meta`` where it is not
            allowed, or a device type whose backend is not available (CUDA without a GPU, for
            example) or an index past the last GPU.
    """
    if isinstance(device, torch.device):
        dev = device
    elif isinstance(device, str) or (
        isinstance(device, numbers.Integral) and not isinstance(device, bool)
    ):
        try:
            dev = torch.device(device)
        except (RuntimeError, ValueError, TypeError) as exc:
            raise InputError(
                f"{device!r} is not a device torch knows ({exc}). Hint: pass 'cpu', "
                "'cuda', 'cuda:0' or a torch.device.",
                argument="device",
            ) from exc
    else:
        raise InputError(
            "expected a torch.device or a string such as 'cpu' or 'cuda:0'; got "
            f"{describe(device)}.",
            argument="device",
        )
    if dev.type == "meta" and not allow_meta:
        raise InputError(
            "expected a device that holds data, got 'meta' (shapes only: the saved "
            "weights would be dropped). Hint: load on 'cpu' or a GPU.",
            argument="device",
        )
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise InputError(
                f"{str(dev)!r} is not available here: CUDA is not available "
                "(torch.cuda.is_available() is False: no NVIDIA GPU or driver, or a CPU-only "
                "torch build). Hint: pass device='cpu', or leave device unset where None "
                "uses CUDA only when it is present.",
                argument="device",
            )
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise InputError(
                f"{str(dev)!r} is not available here: only "
                f"{torch.cuda.device_count()} CUDA device(s) are visible. Hint: pass an index "
                f"below {torch.cuda.device_count()}.",
                argument="device",
            )
    elif dev.type == "mps":
        mps = getattr(torch.backends, "mps", None)
        if mps is None or not mps.is_available():
            raise InputError(
                f"{str(dev)!r} is not available here: the MPS backend is missing. "
                "Hint: pass device='cpu'.",
                argument="device",
            )
    elif dev.type not in ("cpu", "meta"):
        backend = getattr(torch, dev.type, None)
        available = getattr(backend, "is_available", None)
        if callable(available) and not available():
            raise InputError(
                f"{str(dev)!r} is not available here: torch.{dev.type} reports no "
                "device. Hint: pass device='cpu'.",
                argument="device",
            )
    return dev
