"""Per-image mask optimisation of the saliency objective: a baseline and a refinement step.

This is the slow competitor of the learned masker (the paper's "Mask" row, Fong & Vedaldi
2017), run on exactly the objective the masker is trained on (paper eq. 4 with real selectors:
TV, area, preserve and destroy terms, from :mod:`captum_realtime_mask.objective`), so that the
two are compared on equal terms. Starting it from a learned mask (``init_mask``) refines that
mask for a few steps.

Defaults, and where they come from:

* Mask parameter: one logit per cell of a low-resolution grid, ``mask = sigmoid(logits)``,
  upsampled bilinearly to the input size. Grid: input side / 8, as Fong & Vedaldi's 28 x 28
  mask for 224 x 224 images, but at least 8 cells per side (or the whole side when smaller) so
  that small inputs (CIFAR, 32 px) still get a usable grid. Resizing is the smoothness
  mechanism the paper's section 3.1 discusses; TV and area are taken on this grid.
* Initialisation: 0.5 everywhere (logits 0), neither preserving nor deleting.
* Optimiser: Adam, learning rate 0.1 on the logits, 300 iterations (Fong & Vedaldi's
  PyTorch code uses Adam at 0.1 for 300 iterations; the paper says more than 100 are needed).
* Weights: :class:`~captum_realtime_mask.objective.ObjectiveConfig`'s defaults unchanged
  (the TV weight derived from this grid, 5 x side / 32: 1.25 on the 8 x 8 grid of a 64 px
  image, 4.375 on the 28 x 28 of a 224 px one; the area weight derived from the number of
  classes, 10 from 10 classes up; destroy weight 5 and power 0.3), the rules the masker is
  trained with. Because TV is a mean over neighbour pairs, the derived weight makes a hard
  edge cost the same share of the loss on this grid as on the masker's finer one.
  ``fake_prob`` and ``embedding_weight`` play no part here (every selector
  is real; there is no gate).
* Evidence removal: ``Phi(X, M)`` and ``Phi(X, 1 - M)`` each draw a fresh alternative image
  at every step (paper section 4.1), with
  :func:`~captum_realtime_mask.objective.alternative_images`.

Determinism: every image gets its own random generator, seeded from one base seed (drawn from
``generator``, or from torch's global generator) and a hash of the image's own values, and
its alternative images (with colour statistics of that image alone) are drawn from it. So an
image's mask does not depend on which other images share the batch or on
``internal_batch_size``: ``optimise_masks(f, x, t)[i]`` equals ``optimise_masks(f, x[i:i+1],
t[i])`` after re-seeding, up to floating-point differences of batched kernels. Two identical
images in one call get identical masks.
"""

from __future__ import annotations

import hashlib
import inspect
import math
import struct
from collections.abc import Callable, Sequence
from typing import Any, Literal, overload

import torch
import torch.nn.functional as F
from captum.attr import PerturbationAttribution
from captum.log import log_usage
from tqdm.auto import tqdm

from captum_realtime_mask import _checks as check
from captum_realtime_mask._captum_compat import (
    format_additional_forward_args,
    format_inputs,
    format_target,
    forward,
    predicted_target,
)
from captum_realtime_mask._model_state import find_module, floating_dtype, frozen_model
from captum_realtime_mask.errors import InputError
from captum_realtime_mask.objective import (
    ObjectiveConfig,
    alternative_images,
    destroy_alternative,
    objective_loss,
    remove_evidence,
)

__all__ = [
    "DEFAULT_LR",
    "DEFAULT_N_ITER",
    "IterativeMaskAttribution",
    "default_mask_size",
    "optimise_masks",
]

DEFAULT_N_ITER = 300
"""Adam steps per image (Fong & Vedaldi's PyTorch code)."""
DEFAULT_LR = 0.1
"""Adam learning rate on the mask logits (Fong & Vedaldi)."""
_MASK_STRIDE = 8
_MIN_MASK_SIDE = 8
_INIT_CLAMP = 0.01
"""``init_mask`` is clamped to ``[0.01, 0.99]`` (logits within +-4.6) so that a few Adam steps
of size ``lr`` can still move cells a learned mask put at exactly 0 or 1."""
_HISTORY_KEYS = ("loss", "tv", "area", "preserve", "destroy")

TargetType = int | torch.Tensor | Sequence[int] | None


def default_mask_size(height: int, width: int) -> tuple[int, int]:
    """Grid of the optimised mask for an input of this size: side / 8, at least 8 cells.

    Example:
        >>> default_mask_size(224, 224), default_mask_size(32, 64), default_mask_size(5, 16)
        ((28, 28), (8, 8), (5, 8))
    """

    def side(s: int) -> int:
        return max(math.ceil(s / _MASK_STRIDE), min(s, _MIN_MASK_SIDE))

    return side(height), side(width)


def _mask_size(mask_size: int | tuple[int, int] | None, height: int, width: int) -> tuple[int, int]:
    """Validate ``mask_size`` (an int, an ``(h, w)`` pair or None for the default)."""
    if mask_size is None:
        return default_mask_size(height, width)
    if check.is_int(mask_size):
        size: tuple[Any, ...] = (mask_size, mask_size)
    elif isinstance(mask_size, (tuple, list, torch.Size)):
        size = tuple(mask_size)
    else:
        size = ()
    if len(size) != 2 or not all(check.is_int(s) for s in size):
        raise InputError(
            f"expected an int or an (h, w) pair of ints, got {mask_size!r}.", argument="mask_size"
        )
    if min(size) < 1:
        raise InputError(f"sides must be >= 1, got {mask_size!r}.", argument="mask_size")
    return int(size[0]), int(size[1])


def _per_example_args(additional_forward_args: Any, n: int) -> tuple[Any, ...] | None:
    """The extra arguments as a tuple, each marked per-example or shared.

    Returns ``((arg, per_example), ...)``, or None without extra arguments: a tensor is
    per-example when its first dimension is the batch size ``n`` (the rule the docstring of
    :func:`optimise_masks` states); scalars, other tensors and non-tensors are shared.
    """
    extra = format_additional_forward_args(additional_forward_args)
    if extra is None:
        return None
    return tuple(
        (a, isinstance(a, torch.Tensor) and a.dim() > 0 and a.shape[0] == n) for a in extra
    )


def _chunk_args(marked: tuple[Any, ...] | None, start: int, end: int) -> tuple[Any, ...] | None:
    """Extra arguments for images ``start:end`` evaluated twice (keep, then drop).

    Per-example tensors are cut to the chunk and repeated (``torch.cat([a, a])``) to match
    the doubled batch; shared arguments are passed unchanged.
    """
    if marked is None:
        return None
    return tuple(
        torch.cat([a[start:end], a[start:end]]) if per_example else a for a, per_example in marked
    )


def _base_seed(generator: torch.Generator | None) -> int:
    """One 63-bit seed drawn from ``generator`` or from torch's global generator."""
    if generator is None:
        return int(torch.randint(0, 2**62, (), dtype=torch.long))
    return int(torch.randint(0, 2**62, (), generator=generator, device=generator.device))


def _image_generators(x: torch.Tensor, base_seed: int) -> list[torch.Generator]:
    """One generator per image, seeded from the base seed and a hash of the image's values."""
    raw = x.detach().cpu().contiguous()
    header = struct.pack("<q", base_seed) + repr((tuple(raw.shape[1:]), str(raw.dtype))).encode()
    gens = []
    for i in range(raw.shape[0]):
        digest = hashlib.blake2b(header, digest_size=8)
        digest.update(raw[i].reshape(-1).view(torch.uint8).numpy().tobytes())
        seed = int.from_bytes(digest.digest(), "little") & (2**63 - 1)
        gen = torch.Generator(device=x.device)
        gen.manual_seed(seed)
        gens.append(gen)
    return gens


def _init_logits(
    init_mask: torch.Tensor | None,
    x: torch.Tensor,
    size: tuple[int, int],
) -> torch.Tensor:
    """Initial logits ``(N, 1, h, w)``: 0 (mask 0.5) or the clamped logit of ``init_mask``."""
    n, c = x.shape[:2]
    if init_mask is None:
        return torch.zeros(n, 1, *size, device=x.device, dtype=torch.float32)
    if not isinstance(init_mask, torch.Tensor) or init_mask.dim() != 4:
        got = tuple(init_mask.shape) if isinstance(init_mask, torch.Tensor) else type(init_mask)
        raise InputError(
            f"expected a tensor shaped (N, 1, H, W) with values in [0, 1], got {got}.",
            argument="init_mask",
        )
    if init_mask.shape[0] != n or init_mask.shape[1] not in (1, c):
        raise InputError(
            f"expected shape ({n}, 1, H, W) or ({n}, {c}, H, W) to match inputs "
            f"{tuple(x.shape)}, got {tuple(init_mask.shape)}. Hint: under NoiseTunnel, repeat "
            "the mask with init_mask.repeat_interleave(nt_samples, 0).",
            argument="init_mask",
        )
    m = init_mask.detach().to(device=x.device, dtype=torch.float32)
    if m.shape[1] > 1:
        m = m.mean(dim=1, keepdim=True)
    if not bool(torch.isfinite(m).all()) or float(m.min()) < -1e-4 or float(m.max()) > 1 + 1e-4:
        raise InputError(
            "values must be finite and within [0, 1], got range "
            f"[{float(m.min()):.4g}, {float(m.max()):.4g}].",
            argument="init_mask",
        )
    if tuple(m.shape[-2:]) != size:
        m = F.interpolate(m, size=size, mode="bilinear", align_corners=False, antialias=True)
    return torch.logit(m.clamp(_INIT_CLAMP, 1 - _INIT_CLAMP))


def _upsample(mask_low: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Bilinear resize of the low-resolution mask to the input size (stays within [0, 1])."""
    if tuple(mask_low.shape[-2:]) == (height, width):
        return mask_low
    return F.interpolate(mask_low, size=(height, width), mode="bilinear", align_corners=False)


def _optimise_chunk(
    forward_func: Callable[..., Any],
    x: torch.Tensor,
    target: torch.Tensor,
    logits: torch.Tensor,
    gens: list[torch.Generator],
    extra2: tuple[Any, ...] | None,
    n_iter: int,
    lr: float,
    config: ObjectiveConfig,
    history: torch.Tensor,
    bar: Any,
    check_range: bool,
) -> torch.Tensor:
    """Run Adam on one chunk's logits; add its per-step loss sums to ``history`` (5, n_iter).

    ``extra2`` are the extra classifier arguments for the chunk's doubled batch (see
    :func:`_chunk_args`).
    """
    b, _, height, width = x.shape
    logits = logits.clone().requires_grad_(True)
    optimiser = torch.optim.Adam([logits], lr=lr)
    real = torch.ones(b, dtype=torch.bool, device=x.device)
    for step in range(n_iter):
        alt_keep = torch.cat(
            [alternative_images(x[i : i + 1], config, g) for i, g in enumerate(gens)]
        )
        alt_drop = torch.cat(
            [alternative_images(x[i : i + 1], config, g) for i, g in enumerate(gens)]
        )
        mask_low = torch.sigmoid(logits)
        mask = _upsample(mask_low, height, width).to(x.dtype)
        alt_drop = destroy_alternative(x, mask, alt_drop, config)
        batch = torch.cat(
            [remove_evidence(x, mask, alt_keep), remove_evidence(x, 1 - mask, alt_drop)]
        )
        out = forward(forward_func, batch, extra2)
        if check_range and step == 0:
            format_target(target, b, x.device, num_classes=out.shape[1])
        terms = objective_loss(mask_low, out[:b], out[b:], target, real, config)
        # Sum of per-example losses: each image's gradient is its own, whatever the batch.
        (grad,) = torch.autograd.grad(terms.total * b, logits)
        logits.grad = grad
        optimiser.step()
        logits.grad = None
        with torch.no_grad():
            history[:, step] += torch.stack(
                [
                    terms.total.detach() * b,
                    terms.tv.detach().sum(),
                    terms.area.detach().sum(),
                    terms.preserve.detach().sum(),
                    terms.destroy.detach().sum(),
                ]
            ).to(history)
        bar.update(1)
    return torch.sigmoid(logits.detach())


@overload
def optimise_masks(
    forward_func: Callable[..., Any],
    inputs: torch.Tensor,
    target: TargetType = ...,
    *,
    init_mask: torch.Tensor | None = ...,
    n_iter: int = ...,
    mask_size: int | tuple[int, int] | None = ...,
    lr: float = ...,
    objective: ObjectiveConfig | None = ...,
    additional_forward_args: Any = ...,
    generator: torch.Generator | None = ...,
    internal_batch_size: int | None = ...,
    progress: bool = ...,
    return_history: Literal[False] = ...,
) -> torch.Tensor: ...


@overload
def optimise_masks(
    forward_func: Callable[..., Any],
    inputs: torch.Tensor,
    target: TargetType = ...,
    *,
    init_mask: torch.Tensor | None = ...,
    n_iter: int = ...,
    mask_size: int | tuple[int, int] | None = ...,
    lr: float = ...,
    objective: ObjectiveConfig | None = ...,
    additional_forward_args: Any = ...,
    generator: torch.Generator | None = ...,
    internal_batch_size: int | None = ...,
    progress: bool = ...,
    return_history: Literal[True],
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]: ...


def optimise_masks(
    forward_func: Callable[..., Any],
    inputs: torch.Tensor,
    target: TargetType = None,
    *,
    init_mask: torch.Tensor | None = None,
    n_iter: int = DEFAULT_N_ITER,
    mask_size: int | tuple[int, int] | None = None,
    lr: float = DEFAULT_LR,
    objective: ObjectiveConfig | None = None,
    additional_forward_args: Any = None,
    generator: torch.Generator | None = None,
    internal_batch_size: int | None = None,
    progress: bool = False,
    return_history: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Optimise one saliency mask per image on the paper's objective (eq. 4).

    The classifier is frozen for the duration (eval mode, no parameter gradients, see
    :func:`~captum_realtime_mask._model_state.frozen_model`) and restored exactly afterwards,
    also when an error interrupts the optimisation; gradients are taken with respect to the
    mask logits only, so no ``.grad`` ever lands on the classifier. That needs the module
    itself (or its bound ``forward``): a lambda or plain function that hides it cannot be
    switched to eval mode from here, so put such a model in eval mode yourself, or batch
    norm statistics will move. See the module docstring for the defaults and the
    determinism guarantee.

    Args:
        forward_func: The classifier: ``forward_func(inputs, *additional_forward_args)``
            returns logits ``(N, K)``.
        inputs: Images ``(N, C, H, W)`` as the classifier takes them (or a 1-tuple of them).
        target: Class per image in any Captum form (int, tensor, list); None explains the
            predicted class (one extra forward call).
        init_mask: Optional starting masks ``(N, 1, H', W')`` (or ``(N, C, H', W')``, averaged
            over channels) with values in ``[0, 1]``, e.g. a learned mask to refine; resized to
            the mask grid and clamped to ``[0.01, 0.99]``. None starts from 0.5.
        n_iter: Adam steps; 0 returns the (resized) initial mask.
        mask_size: Side(s) of the optimised grid; None for :func:`default_mask_size`.
        lr: Adam learning rate on the logits.
        objective: Term weights and evidence removal; None for ``ObjectiveConfig()``.
        additional_forward_args: Extra arguments for ``forward_func``; tensors whose first
            dimension is N are treated as per-example.
        generator: Source of the base seed; None draws it from torch's global generator
            (so ``torch.manual_seed`` makes a call reproducible).
        internal_batch_size: Optimise at most this many images at once (memory); the result
            does not depend on it.
        progress: Show a tqdm progress bar over the steps.
        return_history: Also return the loss history.

    Returns:
        Masks ``(N, 1, H, W)`` in ``[0, 1]`` on the inputs' device and dtype; with
        ``return_history`` also a dict of CPU float tensors shaped ``(n_iter,)``: ``"loss"``
        (the weighted objective) and the terms ``"tv"``, ``"area"``, ``"preserve"``,
        ``"destroy"``, each averaged over the images, at each step (before its update).

    Raises:
        InputError: Malformed inputs, target, init_mask or settings.

    Example:
        >>> net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 8 * 8, 4))
        >>> masks = optimise_masks(net, torch.rand(2, 3, 8, 8), target=1, n_iter=2)
        >>> masks.shape, bool(masks.min() >= 0), bool(masks.max() <= 1)
        (torch.Size([2, 1, 8, 8]), True, True)
    """
    x, _ = format_inputs(inputs)
    out_dtype = x.dtype
    # The optimisation runs in the classifier's precision (float32 for a float32 classifier,
    # whatever the inputs' precision); the masks come back in the inputs' dtype.
    module = find_module(forward_func)
    x = x.detach().to((floating_dtype(module) if module is not None else None) or x.dtype)
    n, _, height, width = x.shape
    n_iter, lr = _check_settings(n_iter, lr, internal_batch_size, generator, objective)
    config = objective if objective is not None else ObjectiveConfig()
    size = _mask_size(mask_size, height, width)
    logits0 = _init_logits(init_mask, x, size)
    target_known = target is not None
    if target_known:
        target_t = format_target(target, n, x.device)
    gens = _image_generators(x, _base_seed(generator))
    chunk = int(internal_batch_size or n)
    # Autograd is needed whatever the caller's mode, torch.inference_mode() included (tensors
    # made there are copied into ordinary ones).
    with torch.inference_mode(False):
        x, logits0 = (t.clone() if t.is_inference() else t for t in (x, logits0))
        if target_known and target_t.is_inference():
            target_t = target_t.clone()  # gather saves it for backward
        history = torch.zeros(len(_HISTORY_KEYS), n_iter, dtype=torch.float32, device=x.device)
        masks = _optimise_all(
            forward_func, x, target_t if target_known else None, logits0, gens,
            additional_forward_args, n_iter, lr, config, history, chunk, progress,
        )  # fmt: skip
    mask = _upsample(torch.cat(masks), height, width).to(out_dtype).contiguous()
    if not return_history:
        return mask
    hist = (history / n).float().cpu()
    return mask, dict(zip(_HISTORY_KEYS, hist, strict=True))


def _check_settings(
    n_iter: Any, lr: Any, internal_batch_size: Any, generator: Any, objective: Any
) -> tuple[int, float]:
    """Check :func:`optimise_masks`' settings; returns ``n_iter`` and ``lr`` as plain numbers."""
    n_iter = check.integer(n_iter, "n_iter", 0)
    lr = check.real(lr, "lr", 0, low_open=True)
    check.integer(internal_batch_size, "internal_batch_size", 1, none_ok=True)
    if generator is not None and not isinstance(generator, torch.Generator):
        raise InputError(
            f"expected a torch.Generator or None, got {type(generator).__name__}. "
            "Hint: generator=torch.Generator().manual_seed(0).",
            argument="generator",
        )
    if objective is not None and not isinstance(objective, ObjectiveConfig):
        raise InputError(
            f"expected an ObjectiveConfig or None, got {type(objective).__name__}.",
            argument="objective",
        )
    return n_iter, lr


def _optimise_all(
    forward_func: Callable[..., Any],
    x: torch.Tensor,
    target_t: torch.Tensor | None,
    logits0: torch.Tensor,
    gens: list[torch.Generator],
    additional_forward_args: Any,
    n_iter: int,
    lr: float,
    config: ObjectiveConfig,
    history: torch.Tensor,
    chunk: int,
    progress: bool,
) -> list[torch.Tensor]:
    """Optimise the masks chunk by chunk, the classifier frozen; one mask tensor per chunk."""
    n = len(x)
    masks = []
    target_known = target_t is not None
    marked = _per_example_args(additional_forward_args, n)
    with frozen_model(forward_func), torch.enable_grad():
        if not target_known:
            target_t = predicted_target(forward_func, x, additional_forward_args)
        with tqdm(
            total=n_iter * math.ceil(n / chunk),
            disable=not progress,
            desc="mask optimisation",
            unit="step",
        ) as bar:
            for start in range(0, n, chunk):
                end = min(start + chunk, n)
                masks.append(
                    _optimise_chunk(
                        forward_func,
                        x[start:end],
                        target_t[start:end],
                        logits0[start:end],
                        gens[start:end],
                        _chunk_args(marked, start, end),
                        n_iter,
                        lr,
                        config,
                        history,
                        bar,
                        check_range=target_known,
                    )
                )
    return masks


class IterativeMaskAttribution(PerturbationAttribution):
    """Captum attribution by per-image mask optimisation (Fong & Vedaldi style baseline).

    Runs :func:`optimise_masks` on the same objective and evidence removal as the learned
    masker, and returns the masks broadcast over the input's channels. The classifier is left
    exactly as it was (mode, gradient flags, parameters, buffers, hooks).

    Attributes:
        last_history: Loss history of the latest :meth:`attribute` call (see
            :func:`optimise_masks`), or None before the first call.

    Example:
        >>> net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 8 * 8, 4))
        >>> attr = IterativeMaskAttribution(net).attribute(torch.rand(2, 3, 8, 8), 0, n_iter=2)
        >>> attr.shape
        torch.Size([2, 3, 8, 8])
    """

    def __init__(self, forward_func: Callable[..., Any]) -> None:
        """Wrap a classifier.

        Args:
            forward_func: A module or callable returning logits ``(N, K)``.
        """
        PerturbationAttribution.__init__(self, forward_func)
        self.last_history: dict[str, torch.Tensor] | None = None

    @property
    def multiplies_by_inputs(self) -> bool:
        """False: the attribution is a mask, not multiplied by the inputs."""
        return False

    def has_convergence_delta(self) -> bool:
        """False: there is no completeness property to measure."""
        return False

    @log_usage(part_of_slo=True)
    def attribute(
        self,
        inputs: torch.Tensor | tuple[torch.Tensor],
        target: TargetType = None,
        additional_forward_args: Any = None,
        n_iter: int = DEFAULT_N_ITER,
        mask_size: int | tuple[int, int] | None = None,
        lr: float = DEFAULT_LR,
        objective: ObjectiveConfig | None = None,
        init_mask: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
        internal_batch_size: int | None = None,
        progress: bool = False,
    ) -> torch.Tensor | tuple[torch.Tensor]:
        """Optimise a mask for each image and class; return it shaped like the inputs.

        Gradients are enabled inside (the method needs them), whatever the caller's context.

        Args:
            inputs: Images ``(N, C, H, W)`` or a 1-tuple of them.
            target: Class per image: int, 0-d/1-element tensor, list or tuple of ints, 1-D
                tensor, or None for the classifier's predicted class.
            additional_forward_args: Extra arguments for the classifier.
            n_iter: Adam steps per image.
            mask_size: Side(s) of the optimised grid; None for input side / 8 (at least 8).
            lr: Adam learning rate on the mask logits.
            objective: Term weights and evidence removal; None for ``ObjectiveConfig()``.
            init_mask: Optional starting masks in ``[0, 1]`` (refinement).
            generator: Source of the random seed; None uses torch's global generator.
            internal_batch_size: Images optimised at once; does not change the result.
            progress: Show a progress bar.

        Returns:
            Masks broadcast to the inputs' shape (contiguous), values in ``[0, 1]``, on the
            inputs' device; a 1-tuple when the inputs were a 1-tuple.
        """
        x, was_tuple = format_inputs(inputs)
        mask, self.last_history = optimise_masks(
            self.forward_func,
            x,
            target,
            init_mask=init_mask,
            n_iter=n_iter,
            mask_size=mask_size,
            lr=lr,
            objective=objective,
            additional_forward_args=additional_forward_args,
            generator=generator,
            internal_batch_size=internal_batch_size,
            progress=progress,
            return_history=True,
        )
        out = mask.expand_as(x).contiguous()
        return (out,) if was_tuple else out


_REFINE_FIXED = (
    "additional_forward_args",
    "init_mask",
    "inputs",
    "n_iter",
    "return_history",
    "target",
)


def check_refinement(steps: Any, options: Any) -> None:
    """Check the refinement arguments of :meth:`RealTimeMaskAttribution.attribute`."""
    check.integer(steps, "refine_steps", 0, hint="(0 for no refinement)")
    if options is not None and not isinstance(options, dict):
        raise InputError(
            f"expected a dict of optimise_masks arguments or None, got {type(options).__name__}.",
            argument="refine_options",
        )
    if not options:
        return  # the usual call: no signature to read on the real-time path
    known = set(inspect.signature(optimise_masks).parameters) - {"forward_func"}
    unknown = sorted(set(options) - known)
    if unknown:
        raise InputError(
            f"unknown options {unknown}; accepted: {sorted(known - set(_REFINE_FIXED))}.",
            argument="refine_options",
        )
    fixed = sorted(set(options) & set(_REFINE_FIXED))
    if fixed:
        raise InputError(
            f"{', '.join(fixed)} cannot be set through attribute(). Pass the "
            "steps as refine_steps and extra classifier arguments as additional_forward_args; "
            "for the loss history call captum_realtime_mask.iterative.optimise_masks directly.",
            argument="refine_options",
        )
