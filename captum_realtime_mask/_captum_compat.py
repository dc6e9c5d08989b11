"""The one place that imports Captum's private helpers, plus input and target normalisation."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from captum._utils.common import _format_additional_forward_args as format_additional_forward_args

from captum_realtime_mask._checks import is_int
from captum_realtime_mask.errors import InputError

__all__ = [
    "LOGITS_HINT",
    "check_logits",
    "format_additional_forward_args",
    "format_inputs",
    "format_target",
    "forward",
    "predicted_target",
]

TargetLike = int | torch.Tensor | Sequence[int] | None

#: How to adapt a classifier that returns something else than a logits tensor (a Hugging Face
#: model's output object, a tuple): an nn.Module, so that fit() can freeze it.
LOGITS_HINT = (
    "wrap the model in an nn.Module whose forward returns one row of class logits per "
    "image, e.g. class Logits(nn.Module) with forward(self, x) returning self.model(x).logits "
    "(fit() needs an nn.Module to freeze: a lambda only works for attribute())."
)


def format_inputs(inputs: torch.Tensor | tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, bool]:
    """Unwrap Captum's input forms into one image batch.

    Captum's wrappers (``sensitivity_max``, ``NoiseTunnel``) send a tensor or a tuple of
    tensors; a mask method explains one image tensor, so a tuple must hold exactly one.

    Args:
        inputs: ``(N, C, H, W)`` tensor or a 1-tuple of one.

    Returns:
        ``(tensor, was_tuple)``: the batch, and whether to return attributions as a 1-tuple.

    Raises:
        InputError: For anything but a 4-D floating tensor or a 1-tuple holding one.

    Example:
        >>> x = torch.zeros(2, 3, 8, 8)
        >>> format_inputs((x,))[1], format_inputs(x)[0] is x
        (True, True)
    """
    was_tuple = isinstance(inputs, (tuple, list))
    if was_tuple:
        if len(inputs) != 1:
            raise InputError(
                "expected a tensor or a 1-tuple holding one (N, C, H, W) image batch, "
                f"got a {type(inputs).__name__} of {len(inputs)} items. Hint: mask methods "
                "explain one image input; pass the images alone and put any other model "
                "arguments in additional_forward_args.",
                argument="inputs",
            )
        inputs = inputs[0]
    if not isinstance(inputs, torch.Tensor):
        raise InputError(
            f"expected a torch.Tensor, got {type(inputs).__name__}.", argument="inputs"
        )
    if inputs.dim() != 4:
        raise InputError(
            "expected an image batch shaped (N, C, H, W), got shape "
            f"{tuple(inputs.shape)}. Hint: add a batch dimension with inputs.unsqueeze(0).",
            argument="inputs",
        )
    if not inputs.is_floating_point():
        raise InputError(
            f"expected a floating-point tensor, got dtype {inputs.dtype}. "
            "Hint: convert and normalise images as the classifier expects, e.g. x.float() / 255.",
            argument="inputs",
        )
    if inputs.shape[0] == 0:
        raise InputError("the batch is empty (N = 0).", argument="inputs")
    if inputs.shape[-2] == 0 or inputs.shape[-1] == 0:
        raise InputError(
            f"expected images with a positive height and width, got shape {tuple(inputs.shape)}.",
            argument="inputs",
        )
    if inputs.device.type == "meta":
        raise InputError(
            "expected a tensor with data, got one on the meta device (shapes only). "
            "Hint: materialise it on the classifier's device, e.g. inputs.to('cpu').",
            argument="inputs",
        )
    return inputs, was_tuple


def format_target(
    target: TargetLike,
    n: int,
    device: torch.device | str,
    num_classes: int | None = None,
) -> torch.Tensor:
    """Turn every target form Captum sends into one class index per example.

    Accepted: an int (same class for all); a 0-d or 1-element integer tensor (same); a list
    or tuple of ``n`` ints; a 1-D integer tensor (or NumPy array) of length ``n``. ``None``
    is not accepted here: resolve it with :func:`predicted_target` first.

    Args:
        target: The target as the user or a Captum wrapper passed it.
        n: Batch size.
        device: Device of the returned tensor (the inputs' device).
        num_classes: Number of classifier outputs, when known, to check the range.

    Returns:
        LongTensor shaped ``(n,)`` on ``device``.

    Raises:
        InputError: Wrong type, length or range, with the value that came.

    Example:
        >>> format_target(3, 2, "cpu")
        tensor([3, 3])
        >>> format_target(torch.tensor([1, 0]), 2, "cpu", num_classes=2)
        tensor([1, 0])
    """
    if target is None:
        raise InputError(
            "None must be resolved to the predicted classes before formatting "
            "(internal error: call predicted_target first).",
            argument="target",
        )
    if isinstance(target, np.ndarray):  # as a tensor: same rules (integer dtype, 0-d or 1-D)
        target = torch.from_numpy(np.ascontiguousarray(target))
    if is_int(target):
        check_class_range([int(target)], num_classes)
        out = torch.full((n,), int(target), dtype=torch.long, device=device)
    elif isinstance(target, torch.Tensor):
        if target.device.type == "meta":
            raise InputError(
                "expected a tensor with data, got one on the meta device. Hint: pass "
                "the class indices as ints or as a CPU tensor.",
                argument="target",
            )
        if target.is_floating_point() or target.is_complex() or target.dtype == torch.bool:
            raise InputError(
                f"expected integer class indices, got a tensor of dtype {target.dtype}. "
                "Hint: pass target.long().",
                argument="target",
            )
        if target.numel() == 1:
            out = target.reshape(()).to(device=device, dtype=torch.long).expand(n).clone()
        elif target.dim() == 1 and target.shape[0] == n:
            out = target.to(device=device, dtype=torch.long)
        else:
            raise InputError(
                f"expected a scalar or a 1-D tensor of length {n} (one class per "
                f"image), got shape {tuple(target.shape)}. Hint: use target.flatten() for an "
                "(N, 1) tensor.",
                argument="target",
            )
    elif isinstance(target, (list, tuple)):
        if len(target) != n or not all(is_int(t) for t in target):
            kinds = sorted({type(t).__name__ for t in target})
            raise InputError(
                f"a {type(target).__name__} must hold one int class index per image "
                f"({n}), got {len(target)} items of type {kinds}. Hint: a mask explains one "
                "class per image; Captum's multi-dimensional tuple targets are not supported.",
                argument="target",
            )
        values = [int(t) for t in target]
        # Checked before building the tensor: ints beyond int64 would overflow there.
        check_class_range(values, num_classes)
        out = torch.tensor(values, dtype=torch.long, device=device)
    else:
        raise InputError(
            "expected an int, an integer tensor, a list of ints or None, got "
            f"{type(target).__name__}.",
            argument="target",
        )
    if out.numel():
        check_class_range([int(out.min()), int(out.max())], num_classes, out.tolist())
    return out


def check_class_range(
    values: Sequence[int], num_classes: int | None, shown: Sequence[int] | None = None
) -> None:
    """Raise :class:`InputError` unless every value is a class index in ``[0, num_classes)``."""
    shown = list(values if shown is None else shown)
    if len(shown) > 8:
        shown = [*shown[:8], "..."]
    if any(v < 0 for v in values):
        raise InputError(f"class indices must be >= 0, got {shown}.", argument="target")
    if num_classes is not None and any(v >= num_classes for v in values):
        raise InputError(
            f"class indices must be < {num_classes} (the classifier's number of "
            f"outputs), got {shown}.",
            argument="target",
        )


def forward(
    forward_func: Callable[..., Any],
    inputs: torch.Tensor,
    additional_forward_args: Any = None,
    num_classes: int | None = None,
) -> torch.Tensor:
    """Call the classifier the way Captum does: ``forward_func(inputs, *additional_args)``.

    Args:
        forward_func: The classifier.
        inputs: Image batch.
        additional_forward_args: None, one extra argument, or a tuple of them.
        num_classes: When given, the number of class scores each row must have.

    Returns:
        The logits ``(N, K)``.

    Raises:
        InputError: When the output is not a 2-D tensor with one row per image (and
            ``num_classes`` columns).
    """
    extra = format_additional_forward_args(additional_forward_args)
    out = forward_func(inputs, *extra) if extra is not None else forward_func(inputs)
    check_logits(out, inputs.shape[0], num_classes)
    return out


def check_logits(
    out: Any, n: int, num_classes: int | None = None, batch: int | None = None
) -> None:
    """Raise :class:`InputError` unless ``out`` is a tensor of class scores ``(n, num_classes)``.

    Args:
        out: What the classifier returned.
        n: The number of images it was given.
        num_classes: When given, the number of class scores each row must have.
        batch: The size of the user's batch those ``n`` images were made from (fit() calls
            the classifier on masked copies), to name it in the message.

    Example:
        >>> check_logits(torch.zeros(2, 3), 2, num_classes=3)
    """
    if not isinstance(out, torch.Tensor) or out.dim() != 2 or out.shape[0] != n:
        shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        k = num_classes if num_classes is not None else "K"
        where = f"expected logits shaped (N, K) = ({n}, {k})"
        if batch is not None and batch != n:
            where = (
                f"for a batch of {batch} images, fit() called the classifier on {n} images made "
                f"from them and expected logits shaped (N, K) = ({n}, {k})"
            )
        raise InputError(f"{where}, got {shape}. Hint: {LOGITS_HINT}", argument="forward_func")
    if num_classes is not None and out.shape[1] != num_classes:
        raise InputError(
            f"expected {num_classes} class scores per image (num_classes), got "
            f"{out.shape[1]} (output shape {tuple(out.shape)}). Hint: pass the classifier's "
            f"real number of classes, num_classes={out.shape[1]}, or check that forward_func "
            "is the classifier the masker was built for.",
            argument="forward_func",
        )


@torch.no_grad()
def predicted_target(
    forward_func: Callable[..., Any],
    inputs: torch.Tensor,
    additional_forward_args: Any = None,
    num_classes: int | None = None,
) -> torch.Tensor:
    """The classifier's top class per image (what ``target=None`` means): one forward call.

    Args:
        forward_func: The classifier.
        inputs: Image batch.
        additional_forward_args: Extra classifier arguments.
        num_classes: When given, the number of class scores the classifier must return.

    Returns:
        LongTensor ``(N,)`` on the inputs' device.
    """
    logits = forward(forward_func, inputs, additional_forward_args, num_classes)
    return logits.argmax(dim=1).to(device=inputs.device, dtype=torch.long)
