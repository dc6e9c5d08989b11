"""What comes from the user's loader: checks of loaders and batches, and their preparation.

Every batch is checked before it trains (shape, dtype, channels, stride, labels, finiteness),
moved to the training device and cast to the masker's dtype. The BatchNorm helpers here turn
the one case a batch cannot train (a single image whose deepest map is 1x1) into a clear
error or a skipped batch.
"""

from __future__ import annotations

import contextlib
import itertools
import os
from collections.abc import Iterable, Iterator
from typing import Any

import torch
from torch import nn

from captum_realtime_mask._model_state import floating_dtype
from captum_realtime_mask.errors import InputError
from captum_realtime_mask.masker.model import MaskingModel

__all__ = [
    "MAX_SINGLES_IN_A_ROW",
    "check_loader",
    "check_trainable_tensors",
    "one_pixel_map",
    "peek_image_size",
    "prepare_batch",
    "single_image_error",
    "single_value_batch_norm",
    "trainable_batchnorm",
    "training_dtypes",
    "unpack_batch",
]


def unpack_batch(batch: Any, name: str = "loader") -> tuple[torch.Tensor, torch.Tensor]:
    """Images and labels from a batch ``(images, labels, ...)`` or a dict with those keys.

    Args:
        batch: One batch of a loader.
        name: The loader's argument name, for error messages.

    Raises:
        InputError: The batch has no images and labels.
    """
    if isinstance(batch, dict):
        for ik, lk in (("images", "labels"), ("image", "label"), ("inputs", "targets")):
            if ik in batch and lk in batch:
                return batch[ik], batch[lk]
    elif isinstance(batch, (list, tuple)) and len(batch) >= 2:
        return batch[0], batch[1]
    raise InputError(
        "each batch must be (images, labels[, ...]) or a dict with 'images' and "
        f"'labels'; got {type(batch).__name__}.",
        argument=name,
    )


def peek_image_size(loader: Any) -> tuple[int, int] | None:
    """Height and width of the loader's images, read without consuming or reshuffling it.

    A DataLoader over a map-style dataset gives its first item (``dataset[0]``, with torch's,
    NumPy's and Python's random states put back afterwards, so random transforms leave no
    trace); a list or tuple of batches gives its first batch. Anything else (a one-shot
    iterator, an iterable dataset, items that are not image tensors) gives None.

    Example:
        >>> peek_image_size([(torch.rand(2, 3, 64, 48), torch.tensor([0, 1]))])
        (64, 48)
        >>> peek_image_size(iter([])) is None
        True
    """
    if isinstance(loader, (list, tuple)):
        first = loader[0] if loader else None
    elif isinstance(loader, torch.utils.data.DataLoader) and not isinstance(
        loader.dataset, torch.utils.data.IterableDataset
    ):
        try:
            with _random_states_kept():
                first = loader.dataset[0]
        except Exception:  # noqa: BLE001 - a size hint only: the fit reports real problems
            return None
    else:
        return None
    try:
        images = unpack_batch(first)[0]
    except InputError:
        return None
    if not isinstance(images, torch.Tensor) or images.ndim < 3:
        return None
    return int(images.shape[-2]), int(images.shape[-1])


@contextlib.contextmanager
def _random_states_kept() -> Iterator[None]:
    """Put torch's (CPU), NumPy's and Python's global random states back on exit."""
    import random

    import numpy as np

    py, npy = random.getstate(), np.random.get_state()
    with torch.random.fork_rng(devices=[]):
        try:
            yield
        finally:
            random.setstate(py)
            np.random.set_state(npy)


def check_loader(loader: Any, name: str) -> None:
    """Reject what cannot be a loader of batches before anything trains."""
    from torch.utils.data import Dataset, IterableDataset

    wrap = "Hint: wrap it, e.g. torch.utils.data.DataLoader(dataset, batch_size=32)."
    if loader is None:
        raise InputError(
            "expected an iterable of (images, labels) batches, e.g. a "
            "torch.utils.data.DataLoader or a list of (images, labels) tuples; got None.",
            argument=name,
        )
    if isinstance(loader, Dataset) and not isinstance(loader, IterableDataset):
        raise InputError(
            f"expected batches, got the dataset {type(loader).__name__}, which holds "
            f"single samples. {wrap}",
            argument=name,
        )
    if isinstance(loader, str | bytes | os.PathLike):
        raise InputError(
            "expected an iterable of (images, labels) batches, got the path "
            f"{loader!r}. Hint: build a Dataset from it (e.g. torchvision.datasets."
            "ImageFolder) and pass torch.utils.data.DataLoader(dataset, batch_size=32).",
            argument=name,
        )
    if isinstance(loader, torch.Tensor):
        raise InputError(
            "expected an iterable of (images, labels) batches, got a tensor of shape "
            f"{tuple(loader.shape)}. Hint: pass [(images, labels)] for a single batch.",
            argument=name,
        )
    if not (isinstance(loader, Iterable) or hasattr(loader, "__getitem__")):
        raise InputError(
            "expected an iterable of (images, labels) batches, got "
            f"{type(loader).__name__}. Hint: pass a torch.utils.data.DataLoader or a list of "
            "(images, labels) tuples.",
            argument=name,
        )


def _check_batch(
    x: Any, y: Any, num_classes: int, in_chans: int, stride: int, name: str = "loader"
) -> None:
    if not isinstance(x, torch.Tensor) or x.dim() != 4:
        shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        hint = ""
        if isinstance(x, torch.Tensor) and x.dim() == 3:
            hint = (
                " That looks like a single image: the loader must yield batches. Hint: wrap a "
                "Dataset in torch.utils.data.DataLoader(dataset, batch_size=32)."
            )
        raise InputError(
            f"images must be a 4-D tensor (N, C, H, W); got {shape}.{hint}", argument=name
        )
    if not x.is_floating_point():
        raise InputError(
            f"images must be a floating-point tensor; got dtype {x.dtype}. Hint: "
            "convert and normalise them as the classifier expects, e.g. x.float() / 255.",
            argument=name,
        )
    if x.shape[0] == 0 or x.shape[-2] == 0 or x.shape[-1] == 0:
        raise InputError(f"got an empty image batch of shape {tuple(x.shape)}.", argument=name)
    if x.shape[1] != in_chans:
        raise InputError(
            f"images have {x.shape[1]} channels but the encoder takes {in_chans}.", argument=name
        )
    if x.shape[-2] % stride or x.shape[-1] % stride:
        raise InputError(
            f"image size {tuple(x.shape[-2:])} is not divisible by the encoder's "
            f"stride {stride}. Hint: resize or pad the images to a multiple of {stride}.",
            argument=name,
        )
    _check_labels(y, len(x), num_classes, name)


def _check_labels(y: Any, n: int, num_classes: int, name: str = "loader") -> None:
    """Class indices ``(N,)`` or multi-hot label vectors ``(N, num_classes)``.

    Multi-hot vectors are bool, or integer or floating 0/1 values. A row of zeros (an image
    with no class) is allowed: it gets fake selectors only (see ``step_terms``).
    """
    if not isinstance(y, torch.Tensor) or y.dim() not in (1, 2) or len(y) != n:
        shape = tuple(y.shape) if isinstance(y, torch.Tensor) else type(y).__name__
        hint = ""
        if isinstance(y, torch.Tensor) and y.dim() > 2:
            hint = (
                " Labels with more than 2 dimensions (per-pixel or per-box labels) are not "
                "image labels. Hint: reduce them to the classes present in each image, "
                "an (N, num_classes) 0/1 tensor."
            )
        raise InputError(
            f"labels must be a 1-D tensor of length {n} (class indices) or a 2-D tensor "
            f"({n}, {num_classes}) of multi-hot 0/1 label vectors; got {shape}.{hint}",
            argument=name,
        )
    if y.dtype.is_complex:
        raise InputError(f"labels must be real; got dtype {y.dtype}.", argument=name)
    if y.dim() == 2:
        _check_multi_hot(y, num_classes, name)
        return
    if y.dtype.is_floating_point or y.dtype == torch.bool:
        raise InputError(
            f"labels must be integer class indices; got dtype {y.dtype}. Hint: labels.long().",
            argument=name,
        )
    if int(y.min()) < 0 or int(y.max()) >= num_classes:
        raise InputError(
            f"labels must be integer classes in [0, {num_classes}) (num_classes="
            f"{num_classes}); got range [{y.min().item()}, {y.max().item()}].",
            argument=name,
        )


def _check_multi_hot(y: torch.Tensor, num_classes: int, name: str) -> None:
    """Multi-hot label vectors: ``num_classes`` columns of 0/1 values."""
    if y.shape[1] != num_classes:
        hint = ""
        if y.shape[1] == 1 and not (y.dtype.is_floating_point or y.dtype == torch.bool):
            hint = " Hint: class indices must be 1-D, labels.squeeze(1)."
        raise InputError(
            f"multi-hot labels must have one column per class, shape ({len(y)}, "
            f"{num_classes}) (num_classes={num_classes}); got {tuple(y.shape)}.{hint}",
            argument=name,
        )
    if y.dtype != torch.bool:
        binary = (y == 0) | (y == 1)
        if not bool(binary.all()):
            bad = y[~binary].flatten()[0].item()
            raise InputError(
                f"multi-hot labels must hold only 0 and 1 (or be bool); got the value {bad!r} "
                f"in labels of shape {tuple(y.shape)}. Hint: threshold soft labels, e.g. "
                "labels > 0.5.",
                argument=name,
            )


def _check_finite(x: torch.Tensor, name: str = "loader") -> None:
    """Images with NaN or Inf would only show up later as a non-finite loss."""
    finite = torch.isfinite(x)
    if not finite.all():
        raise InputError(
            f"images must be finite; got {int((~finite).sum())} NaN or Inf values in "
            f"a batch of shape {tuple(x.shape)}. Hint: check the dataset's preprocessing.",
            argument=name,
        )


def prepare_batch(
    batch: Any,
    masker: MaskingModel,
    device: torch.device,
    dtype: torch.dtype,
    name: str,
    channels_last: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Check one batch and move it to ``device``, images cast to the masker's ``dtype``.

    Floating images of another precision (float64 from ``torch.from_numpy``, float16,
    bfloat16) are cast; integer images keep their error. Batches made inside
    ``torch.inference_mode()`` are copied into ordinary tensors that autograd can use.
    """
    x, y = unpack_batch(batch, name)
    _check_batch(
        x, y, masker.config.num_classes, masker.config.encoder.in_chans, masker.max_stride, name
    )
    x = x.to(device, dtype=dtype, non_blocking=True)
    y = y.to(device, non_blocking=True)
    if x.is_inference():
        x = x.clone()
    if y.is_inference():
        y = y.clone()
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    _check_finite(x, name)  # on the training device: cheap there
    return x, y


def check_trainable_tensors(masker: nn.Module, classifier: nn.Module) -> None:
    """Tensors made inside ``torch.inference_mode()`` cannot take part in training."""
    problems = (
        (
            classifier,
            "forward_func: the classifier's weights were created inside "
            "torch.inference_mode(), so no gradient can flow through it to the masker. "
            "Hint: create or load the classifier outside torch.inference_mode() (fit() "
            "itself may run inside it).",
        ),
        (
            masker,
            "masker: its weights were created inside torch.inference_mode() (the "
            "RealTimeMaskAttribution was built there), and inference tensors cannot be "
            "trained. Hint: build the RealTimeMaskAttribution outside "
            "torch.inference_mode(); fit() itself may then run inside it.",
        ),
    )
    for module, message in problems:
        if any(t.is_inference() for t in itertools.chain(module.parameters(), module.buffers())):
            raise InputError(message)


def training_dtypes(
    masker: MaskingModel, classifier: nn.Module
) -> tuple[torch.dtype, torch.dtype | None]:
    """The masker's dtype (images are cast to it) and the classifier's (its inputs are).

    Raises:
        InputError: The masker's own weights mix dtypes (a custom encoder module of another
            precision than the decoder's).
    """
    own = masker.filter.embedding.weight.dtype
    classifier_dtype = floating_dtype(classifier)
    # The classifier's backbone as encoder (held outside the masker's module tree) gets the
    # images in its own dtype and returns its maps in the masker's (ClassifierBackbone).
    for pname, t in itertools.chain(masker.named_parameters(), masker.named_buffers()):
        if not t.is_floating_point() or t.dtype == own:
            continue
        raise InputError(
            f"the masker's weights mix dtypes ({pname} is {t.dtype}, the class "
            f"embedding {own}). Hint: convert the encoder module with .float() before building "
            "the RealTimeMaskAttribution.",
            argument="encoder",
        )
    return own, classifier_dtype


def trainable_batchnorm(masker: MaskingModel) -> bool:
    """Whether the masker's encoder has BatchNorm layers that train (need 2+ values each)."""
    return any(
        isinstance(m, nn.modules.batchnorm._BatchNorm) and m.training
        for m in masker.encoder.modules()
    )


#: Single-image batches skipped in a row (see ``one_pixel_map``) before fit() gives up: an
#: endless stream of them would otherwise be skipped forever without training a step.
MAX_SINGLES_IN_A_ROW = 100


def one_pixel_map(x: torch.Tensor, masker: MaskingModel) -> bool:
    """Whether the encoder's deepest map is 1x1 for images like ``x``."""
    stride = masker.max_stride
    return x.shape[-2] // stride == 1 and x.shape[-1] // stride == 1


def single_image_error(x: torch.Tensor, why: str) -> InputError:
    """The error for single-image batches that trainable BatchNorm layers cannot take."""
    return InputError(
        f"{why}, but the masker's encoder trains BatchNorm layers, which need more "
        f"than one value per channel: a single image of size {tuple(x.shape[-2:])} gives them "
        "a 1x1 map. Hint: use batches of 2 or more images (DataLoader(..., batch_size=32, "
        "drop_last=True)), larger images, or a frozen encoder (pretrained=True or "
        "encoder='classifier').",
        argument="loader",
    )


@contextlib.contextmanager
def single_value_batch_norm(x: torch.Tensor) -> Iterator[None]:
    """Turn BatchNorm's error on a one-value batch (a custom encoder) into an InputError."""
    try:
        yield
    except ValueError as exc:
        if "Expected more than 1 value per channel" not in str(exc):
            raise
        raise InputError(
            f"a batch of {len(x)} image(s) of size {tuple(x.shape[-2:])} gives a "
            f"BatchNorm layer of the masker a single value per channel ({exc}). Hint: use "
            "batches of 2 or more images (DataLoader(..., drop_last=True) drops a short last "
            "batch), or larger images.",
            argument="loader",
        ) from exc
