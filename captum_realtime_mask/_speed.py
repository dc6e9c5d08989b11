"""Inference speed options of the masker: channels_last, autocast and torch.compile.

:class:`InferenceOptions` says how :meth:`RealTimeMaskAttribution.attribute` runs the masker;
:func:`masker_forward` runs it that way and :func:`apply_inference_options` prepares the masker
(memory format of its own weights, compiled decoder modules). The classifier is never changed:
with ``encoder="classifier"`` the encoder is the user's model, so only the masker's own modules
are converted or compiled, and channels_last reaches the classifier's backbone through its
input alone (convolutions follow the memory format of their input).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from torch import nn

from captum_realtime_mask.errors import InputError
from captum_realtime_mask.masker.model import MaskerOutput

__all__ = [
    "AutocastArg",
    "InferenceOptions",
    "apply_inference_options",
    "masker_forward",
    "optimize_for_inference",
    "resolve_autocast",
]

AutocastArg = Literal["auto", "bf16", "fp16"] | torch.dtype | bool | None

_LOW_PRECISION = (torch.float16, torch.bfloat16)
_DTYPE_NAMES = {
    "bf16": torch.bfloat16,
    "bfloat16": torch.bfloat16,
    "fp16": torch.float16,
    "float16": torch.float16,
    "half": torch.float16,
}


@dataclass
class InferenceOptions:
    """How the masker runs at inference; the defaults are plain float32 eager execution.

    Attributes:
        channels_last: Feed the masker NHWC (channels_last) images and keep its own
            convolution weights in that format (cuDNN and oneDNN are usually faster so,
            especially with bf16/fp16 on GPUs with tensor cores).
        autocast: ``None`` (float32; half-precision inputs on CUDA still run under autocast in
            their own dtype), ``"auto"`` (bf16 on CUDA where supported, else fp16; nothing on
            CPU), ``"bf16"`` or ``"fp16"`` (also accepted as ``torch.bfloat16`` /
            ``torch.float16``). Masks are computed in float32 by the head and returned in the
            inputs' dtype.
        compile: Compile the masker's decoder (feature filter, upsamplers, head) and an
            encoder the masker owns with :func:`torch.compile`, for inference only. The
            classifier's backbone (``encoder="classifier"``) and a user's encoder module are
            left as they are.
        compile_kwargs: Keyword arguments for :func:`torch.compile` (``mode``, ``dynamic``,
            ``backend``, ...).
    """

    channels_last: bool = False
    autocast: AutocastArg = None
    compile: bool = False
    compile_kwargs: dict[str, Any] = field(default_factory=dict)


def resolve_autocast(
    device: torch.device | str,
    autocast: AutocastArg = None,
    input_dtype: torch.dtype = torch.float32,
) -> torch.dtype | None:
    """The dtype the masker autocasts to on ``device``, or None to run it in float32.

    Args:
        device: Where the masker runs.
        autocast: The requested setting (see :class:`InferenceOptions`).
        input_dtype: The images' dtype. Without a request, float16/bfloat16 images on CUDA
            run under autocast in their own dtype and any other input runs in float32.

    Returns:
        ``torch.bfloat16``, ``torch.float16`` or None.

    Raises:
        InputError: An unknown setting, a device without autocast, or bf16 requested on a
            GPU that does not support it.

    Example:
        >>> resolve_autocast("cpu", None) is None, resolve_autocast("cpu", "auto") is None
        (True, True)
        >>> resolve_autocast("cpu", "bf16")
        torch.bfloat16
    """
    device = torch.device(device)
    if autocast is None or autocast is False:
        if input_dtype in _LOW_PRECISION and device.type == "cuda":
            return input_dtype
        return None
    if autocast is True or autocast == "auto":
        if device.type == "cuda":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return None
    dtype = _DTYPE_NAMES.get(autocast) if isinstance(autocast, str) else autocast
    if dtype not in _LOW_PRECISION:
        raise InputError(
            "expected None, 'auto', 'bf16', 'fp16', torch.bfloat16 or torch.float16; "
            f"got {autocast!r}.",
            argument="autocast",
        )
    if not torch.amp.is_autocast_available(device.type):
        raise InputError(
            f"torch has no autocast for device type {device.type!r}. Hint: pass autocast=None.",
            argument="autocast",
        )
    if device.type == "cuda" and dtype == torch.bfloat16 and not torch.cuda.is_bf16_supported():
        raise InputError(
            "this GPU does not support bfloat16. Hint: pass autocast='fp16' or 'auto'.",
            argument="autocast",
        )
    return dtype


def _owned_encoder(masker: nn.Module) -> nn.Module | None:
    """The masker's encoder when it holds the masker's own weights, else None.

    The classifier's backbone (``kind="classifier"``) and a user's module (``kind="module"``)
    belong to the user and are never converted or compiled.
    """
    if masker.config.encoder.kind in ("timm", "torchvision", "small_cnn"):
        return masker.encoder
    return None


def _encode_decode(
    masker: nn.Module, x: torch.Tensor, target: torch.Tensor, confidence: float
) -> MaskerOutput:
    """The whole masker forward, for maskers whose encoder is their own (compiled whole)."""
    return masker.decode(masker.encoder(x), target, confidence, x.shape[-2:])


def _eager_encoder_then(
    decode: Callable[..., MaskerOutput],
    masker: nn.Module,
    x: torch.Tensor,
    target: torch.Tensor,
    confidence: float,
) -> MaskerOutput:
    """The user's encoder run eagerly, then the compiled ``MaskingModel.decode``."""
    return decode(masker, masker.encoder(x), target, confidence, x.shape[-2:])


def apply_inference_options(masker: nn.Module, options: InferenceOptions) -> None:
    """Prepare a :class:`~captum_realtime_mask.masker.MaskingModel` for ``options`` in place.

    Sets the memory format of the masker's own 4-D weights (channels_last or contiguous; a
    checkpoint stores them contiguous either way). With ``options.compile`` the decoder is
    compiled as one function (one graph: compiling each upsampler separately would make
    dynamo recompile the shared ``forward`` code for every width and batch size), together
    with the encoder when the masker owns it; without it, an earlier compile is dropped.
    Parameter names, values and ``state_dict()`` keys do not change, so saving, loading and
    ``fit()`` keep working (training always runs the masker eagerly). The classifier is not
    touched.

    Args:
        masker: The masking model.
        options: What to apply.
    """
    fmt = torch.channels_last if options.channels_last else torch.contiguous_format
    own = [module for name, module in masker.named_children() if name != "encoder"]
    encoder = _owned_encoder(masker)
    if encoder is not None:
        own.append(encoder)
    for module in own:
        module.to(memory_format=fmt)
    masker.__dict__.pop("_speed_forward", None)
    masker.__dict__.pop("_speed_decode", None)
    if options.compile:
        if encoder is not None:
            compiled = torch.compile(_encode_decode, **options.compile_kwargs)
        else:
            decode = torch.compile(type(masker).decode, **options.compile_kwargs)
            compiled = functools.partial(_eager_encoder_then, decode)
            # The compiled decoder alone, for several classes per encoder pass (multiclass).
            masker._speed_decode = decode
        # A plain attribute: not a submodule, not in state_dict(), not used by fit().
        masker._speed_forward = compiled


def masker_forward(
    masker: nn.Module,
    inputs: torch.Tensor,
    target: torch.Tensor,
    confidence: float = 0.0,
    options: InferenceOptions | None = None,
) -> torch.Tensor:
    """Masks ``(N, 1, H, W)`` in the inputs' dtype, computed as ``options`` say.

    Args:
        masker: The masking model, on the inputs' device, in the mode the caller wants.
        inputs: Images ``(N, C, H, W)``.
        target: Class selectors ``(N,)``.
        confidence: Offset of the feature filter's gate logits.
        options: Inference options; None means the defaults.

    Returns:
        The masks, values in ``[0, 1]``.
    """
    options = options or InferenceOptions()
    dtype = resolve_autocast(inputs.device, options.autocast, inputs.dtype)
    # The masker's weights stay float32; autocast casts to ``dtype`` where it pays off and
    # keeps the rest (normalisation, interpolation) in float32, which needs float32 inputs.
    x = inputs.float()
    if options.channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    context = torch.autocast(inputs.device.type, dtype=dtype) if dtype else nullcontext()
    compiled = getattr(masker, "_speed_forward", None) if options.compile else None
    with context:
        if compiled is None or masker.training:
            mask = masker(x, target, confidence).mask
        else:
            mask = compiled(masker, x, target, confidence).mask
    return mask.to(inputs.dtype)


def optimize_for_inference(
    attribution: Any,
    channels_last: bool = False,
    autocast: AutocastArg = None,
    compile: bool = False,
    **compile_kwargs: Any,
) -> Any:
    """Set the inference options of a ``RealTimeMaskAttribution`` and prepare its masker.

    What ``RealTimeMaskAttribution.optimize_for_inference`` runs. Calling it again replaces
    the options (``compile=False`` undoes an earlier compile). A masker rebuilt by ``load()``
    starts with the defaults.

    Args:
        attribution: The attribution object (its ``masker`` is prepared, its
            ``_inference`` options are set).
        channels_last: See :class:`InferenceOptions`.
        autocast: See :class:`InferenceOptions`.
        compile: See :class:`InferenceOptions`.
        **compile_kwargs: Passed to :func:`torch.compile`.

    Returns:
        ``attribution``.

    Raises:
        InputError: An unknown ``autocast`` setting.
    """
    if isinstance(autocast, (str, torch.dtype)) and autocast != "auto":
        resolve_autocast("cpu", autocast)  # validates the name early; the device comes later
    if compile_kwargs and not compile:
        raise InputError(
            f"{sorted(compile_kwargs)} are torch.compile options; pass compile=True with them.",
            argument="optimize_for_inference",
        )
    options = InferenceOptions(bool(channels_last), autocast, bool(compile), dict(compile_kwargs))
    apply_inference_options(attribution.masker, options)
    attribution._inference = options
    return attribution
