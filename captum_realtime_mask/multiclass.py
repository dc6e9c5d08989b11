"""Masks for several classes per image with one encoder pass (``attribute_classes``).

The masker's encoder does not depend on the class: only the feature filter, the upsamplers and
the head do. :func:`multiclass_masks` therefore runs :meth:`MaskingModel.encode` once per batch
and :meth:`MaskingModel.decode` on the maps repeated along the batch, a chunk of classes at a
time, which is what :meth:`RealTimeMaskAttribution.attribute_classes` calls.
"""

from __future__ import annotations

from contextlib import nullcontext
from typing import Any

import numpy as np
import torch

from captum_realtime_mask import _checks as check
from captum_realtime_mask._speed import InferenceOptions, resolve_autocast
from captum_realtime_mask.errors import InputError
from captum_realtime_mask.masker.model import MaskingModel

__all__ = ["format_classes", "multiclass_masks"]

_CLASSES_HINT = (
    "Hint: pass a list or 1-D tensor of K classes for every image, an (N, K) tensor of "
    "classes per image, or None for every class."
)


def format_classes(
    classes: Any, n: int, num_classes: int, device: torch.device | str
) -> torch.Tensor:
    """Turn the ``classes`` argument into a LongTensor ``(n, K)`` of class indices.

    Args:
        classes: None (every class, ``K = num_classes``); a list, tuple, 1-D integer tensor or
            NumPy array of K classes shared by all images; or an ``(n, K)`` integer tensor,
            array or list of lists, K classes per image.
        n: Batch size.
        num_classes: Number of classes of the masker; every index must be in
            ``[0, num_classes)``.
        device: Device of the returned tensor.

    Returns:
        The classes ``(n, K)``, ``K >= 1``.

    Raises:
        InputError: Another type, a non-integer dtype, a wrong shape, no classes, or indices
            out of range.

    Example:
        >>> format_classes([2, 0], 3, 5, "cpu")
        tensor([[2, 0],
                [2, 0],
                [2, 0]])
        >>> format_classes(None, 1, 3, "cpu")
        tensor([[0, 1, 2]])
    """
    if classes is None:
        return torch.arange(num_classes, device=device).expand(n, -1).clone()
    if isinstance(classes, np.ndarray):
        classes = torch.from_numpy(np.ascontiguousarray(classes))
    if isinstance(classes, (list, tuple)):
        if all(check.is_int(c) for c in classes):
            classes = torch.tensor([int(c) for c in classes], dtype=torch.long)
        elif classes and all(
            isinstance(row, (list, tuple)) and all(check.is_int(c) for c in row) for row in classes
        ):
            if len({len(row) for row in classes}) != 1:
                raise InputError(
                    f"expected rows of one length, got lengths {[len(r) for r in classes]}. "
                    + _CLASSES_HINT,
                    argument="classes",
                )
            classes = torch.tensor([[int(c) for c in row] for row in classes], dtype=torch.long)
        else:
            raise InputError(
                f"expected class indices (ints), got {check.describe(classes)}. " + _CLASSES_HINT,
                argument="classes",
            )
    if not isinstance(classes, torch.Tensor):
        hint = (
            " For one class use mask(inputs, target=c) or pass [c]."
            if check.is_int(classes)
            else ""
        )
        raise InputError(
            f"expected a list, tensor or None, got {check.describe(classes)}.{hint} "
            + _CLASSES_HINT,
            argument="classes",
        )
    if classes.is_floating_point() or classes.is_complex() or classes.dtype == torch.bool:
        raise InputError(
            f"expected integer class indices, got a tensor of dtype {classes.dtype}. "
            "Hint: pass classes.long().",
            argument="classes",
        )
    if classes.device.type == "meta":
        raise InputError(
            "expected a tensor with data, got one on the meta device.", argument="classes"
        )
    if classes.dim() == 1:
        classes = classes.reshape(1, -1).expand(n, -1)
    elif classes.dim() != 2 or classes.shape[0] != n:
        raise InputError(
            f"expected a 1-D tensor of K classes or an ({n}, K) tensor for {n} images, got "
            f"shape {tuple(classes.shape)}. " + _CLASSES_HINT,
            argument="classes",
        )
    if classes.shape[1] == 0:
        raise InputError(
            "expected at least one class, got none. " + _CLASSES_HINT, argument="classes"
        )
    bad = classes[(classes < 0) | (classes >= num_classes)]
    if bad.numel():
        shown = sorted({int(c) for c in bad.flatten()[:100]})[:5]
        raise InputError(
            f"expected class indices in [0, {num_classes - 1}], got {shown} "
            f"({bad.numel()} out of range).",
            argument="classes",
        )
    return classes.to(device=device, dtype=torch.long).contiguous()


def _repeat(t: torch.Tensor, k: int, channels_last: bool) -> torch.Tensor:
    """``(N, ...)`` -> ``(N * k, ...)``, each row ``k`` times in a row (image-major)."""
    out = t.unsqueeze(1).expand(t.shape[0], k, *t.shape[1:]).reshape(-1, *t.shape[1:])
    if channels_last and out.dim() == 4:
        out = out.contiguous(memory_format=torch.channels_last)
    return out


def multiclass_masks(
    masker: MaskingModel,
    inputs: torch.Tensor,
    classes: torch.Tensor,
    confidence: float = 0.0,
    options: InferenceOptions | None = None,
    max_classes_per_batch: int | None = None,
) -> torch.Tensor:
    """Masks ``(N, K, H, W)`` for ``classes`` ``(N, K)``: one encoder pass, K decodes per image.

    Args:
        masker: The masking model, on the inputs' device, in eval mode.
        inputs: Images ``(N, C, H, W)``, already checked.
        classes: Class indices ``(N, K)`` (see :func:`format_classes`).
        confidence: Offset of the feature filter's gate logits.
        options: Inference options (channels_last and autocast apply to both the encoder and
            the decoder; with ``compile`` a compiled decoder is used where one exists, the
            classifier-backbone encoder, and the decoder runs eagerly otherwise).
        max_classes_per_batch: Classes decoded together per image: the decoder batch is
            ``N * max_classes_per_batch``. None decodes all K at once.

    Returns:
        Masks in ``[0, 1]``, in the inputs' dtype; ``out[:, k]`` equals
        ``masker_forward(masker, inputs, classes[:, k])[:, 0]`` up to float rounding.
    """
    options = options or InferenceOptions()
    n, k = classes.shape
    chunk = k if max_classes_per_batch is None else min(k, max_classes_per_batch)
    dtype = resolve_autocast(inputs.device, options.autocast, inputs.dtype)
    x = inputs.float()
    if options.channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    context = torch.autocast(inputs.device.type, dtype=dtype) if dtype else nullcontext()
    decode = getattr(masker, "_speed_decode", None) if options.compile else None
    decode = decode if decode is not None else type(masker).decode
    size = tuple(inputs.shape[-2:])
    out = torch.empty(n, k, *size, dtype=inputs.dtype, device=inputs.device)
    with context:
        maps = masker.encode(x)
        for start in range(0, k, chunk):
            stop = min(k, start + chunk)
            c = stop - start
            reps = maps if c == 1 else [_repeat(m, c, options.channels_last) for m in maps]
            target = classes[:, start:stop].reshape(-1)
            mask = decode(masker, reps, target, confidence, size).mask
            out[:, start:stop] = mask.reshape(n, c, *size).to(inputs.dtype)
    return out
