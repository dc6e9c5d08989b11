"""One training step's forward pass: selectors (real and fake), evidence removal, loss terms.

:func:`step_terms` is the whole forward pass of a step: it draws which samples get a fake
class selector, runs the masker, removes evidence with the masks, calls the frozen classifier
once on every preserved and destroyed image, and returns the objective's terms.
:func:`evaluate_terms` averages the same terms over a loader without training.

Labels are class indices ``(N,)`` or multi-hot vectors ``(N, K)`` (scenes with several
objects). With multi-hot labels a sample's real selector is drawn uniformly among its present
classes and a fake selector among its absent ones (:func:`draw_selectors`); an image with no
class gets a fake selector whatever ``fake_prob`` says, and one with every class a real one.
"""

from __future__ import annotations

from collections.abc import Iterable
from contextlib import nullcontext

import torch
from torch import nn

from captum_realtime_mask._captum_compat import check_logits
from captum_realtime_mask.errors import InputError
from captum_realtime_mask.masker.model import MaskingModel
from captum_realtime_mask.objective import (
    LossTerms,
    ObjectiveConfig,
    alternative_images,
    class_probabilities,
    destroy_alternative,
    objective_loss,
    remove_evidence,
    resolve_objective,
)
from captum_realtime_mask.training.batches import check_loader, prepare_batch, training_dtypes

__all__ = [
    "BUCKETED_DEVICES",
    "autocast",
    "draw_selectors",
    "evaluate_terms",
    "shape_bucket",
    "step_terms",
]


#: Device types whose classifier batches are padded to a few shapes (see ``shape_bucket``).
BUCKETED_DEVICES = frozenset({"cuda"})


def shape_bucket(idx: torch.Tensor, real: torch.Tensor, multiple: int = 8) -> torch.Tensor:
    """``idx`` (the real selectors) padded with fake selectors up to a multiple of ``multiple``.

    The number of real selectors changes every step, so the classifier would see a new batch
    shape each time; with ``torch.backends.cudnn.benchmark`` on, every new shape is autotuned
    again (a 224-pixel step took 33 times its parts on an H100). Padding leaves a few shapes.
    The padded rows' logits are dropped, so they get no gradient and change no loss.
    """
    extra = (-len(idx)) % multiple
    if extra == 0:
        return idx
    return torch.cat([idx, (~real).nonzero().squeeze(1)[:extra]])


def _evidence_free_fakes(
    classifier: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    real: torch.Tensor,
    num_classes: int,
    objective: ObjectiveConfig,
    generator: torch.Generator,
    classifier_dtype: torch.dtype | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Fake selectors drawn from the classes the classifier finds absent from the clean image.

    A class is a candidate when it is not the label and its probability is below
    ``objective.fake_max_prob`` (a sigmoid probability with ``classifier_output="sigmoid"``,
    else a softmax one); a sample without a candidate keeps its label (real). Only
    the fake samples go to the classifier; every row is drawn from, so the random stream does
    not depend on the probabilities.
    """
    fake = ~real
    candidates = torch.ones(len(x), num_classes, dtype=torch.bool, device=x.device)
    if fake.any():
        with torch.no_grad():
            logits = classifier(_as_dtype(x[fake], classifier_dtype))
        check_logits(logits, int(fake.sum()), num_classes, batch=len(x))
        candidates[fake] = class_probabilities(logits, objective) < objective.fake_max_prob
    candidates.scatter_(1, y[:, None], False)
    has = candidates.any(1)
    # A row without a candidate stays real; any class will do for its (discarded) draw.
    weights = (candidates | ~has[:, None]).float()
    drawn = torch.multinomial(weights, 1, generator=generator).squeeze(1)
    real = real | ~has
    return real, torch.where(real, y, drawn)


def draw_selectors(
    y: torch.Tensor,
    real: torch.Tensor,
    generator: torch.Generator,
    candidates: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Class selectors for multi-hot labels: real among present classes, fake among absent.

    Every row is drawn from twice (its real and its fake class, each uniformly), so the random
    stream depends only on the batch's shape, not on its labels.

    Args:
        y: Multi-hot labels ``(N, K)`` (bool or 0/1).
        real: Boolean ``(N,)``: the samples drawn to get a real selector.
        generator: The training generator.
        candidates: Optional boolean ``(N, K)``: the classes a fake selector may take besides
            being absent (``fake_max_prob``). A sample with a present class but no candidate
            keeps a real selector; one with no present class falls back to any absent class.

    Returns:
        ``(real, selector)``: the final real flags (an image with no class is fake, one with
        every class (or no candidate) is real) and the ``(N,)`` class selectors.

    Example:
        >>> y = torch.tensor([[1, 0, 1], [0, 0, 0], [1, 1, 1]])
        >>> g = torch.Generator().manual_seed(0)
        >>> real, selector = draw_selectors(y, torch.tensor([True, True, False]), g)
        >>> real.tolist()
        [True, False, True]
        >>> bool(y[0, selector[0]]), bool(y[1, selector[1]])
        (True, False)
    """
    present = y.bool()
    has_class = present.any(1)
    # Rows without a present class draw a (discarded) real class from all of them.
    real_class = torch.multinomial(
        (present | ~has_class[:, None]).float(), 1, generator=generator
    ).squeeze(1)
    absent = ~present
    allowed = absent if candidates is None else absent & candidates
    has = allowed.any(1)
    allowed = torch.where((~has & ~has_class)[:, None], absent, allowed)
    has = has | ~has_class
    fake_class = torch.multinomial(
        (allowed | ~has[:, None]).float(), 1, generator=generator
    ).squeeze(1)
    real = (real & has_class) | ~has
    return real, torch.where(real, real_class, fake_class)


def _multi_hot_selectors(
    classifier: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    real: torch.Tensor,
    objective: ObjectiveConfig,
    generator: torch.Generator,
    classifier_dtype: torch.dtype | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`draw_selectors`, with ``fake_max_prob`` candidates from the clean images."""
    candidates = None
    fake = ~real | ~y.bool().any(1)  # the images with no class are fake whatever was drawn
    if objective.fake_max_prob is not None and fake.any():
        candidates = torch.ones_like(y, dtype=torch.bool)
        with torch.no_grad():
            logits = classifier(_as_dtype(x[fake], classifier_dtype))
        check_logits(logits, int(fake.sum()), y.shape[1], batch=len(x))
        candidates[fake] = class_probabilities(logits, objective) < objective.fake_max_prob
    return draw_selectors(y, real, generator, candidates)


def step_terms(
    masker: nn.Module,
    classifier: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    num_classes: int,
    objective: ObjectiveConfig,
    generator: torch.Generator,
    classifier_dtype: torch.dtype | None = None,
) -> tuple[LossTerms, torch.Tensor]:
    """Forward pass of one training step: returns the loss terms and the real-selector flags.

    A share ``objective.fake_prob`` of the selectors is replaced by a random other class (with
    ``objective.fake_max_prob``, one the classifier finds absent). Only
    the real selectors' preserved and destroyed images go to the classifier, in one batched call.
    With ``classifier_dtype`` the classifier's inputs are cast to it (a classifier converted
    with ``model.double()`` beside a float32 masker); its logits are used in float32.

    ``y`` holds class indices ``(N,)`` or multi-hot vectors ``(N, K)``; for multi-hot labels
    the selectors come from :func:`draw_selectors`. ``"auto"`` in ``classifier_output`` and
    ``fake_max_prob`` is resolved from ``y``
    and an area weight of None from ``num_classes``
    (:func:`~captum_realtime_mask.objective.resolve_objective`), for this step only;
    ``objective`` itself is not changed.
    """
    n = len(x)
    objective = resolve_objective(objective, num_classes, y)
    real = torch.rand(n, device=x.device, generator=generator) >= objective.fake_prob
    if y.dim() == 2:
        real, selector = _multi_hot_selectors(
            classifier, x, y, real, objective, generator, classifier_dtype
        )
    elif num_classes > 1 and objective.fake_max_prob is not None:
        real, selector = _evidence_free_fakes(
            classifier, x, y, real, num_classes, objective, generator, classifier_dtype
        )
    elif num_classes > 1:
        shift = torch.randint(1, num_classes, (n,), device=x.device, generator=generator)
        selector = torch.where(real, y, (y + shift) % num_classes)
    else:
        real = torch.ones_like(real)
        selector = y
    out = masker(x, selector)
    mask = out.mask.to(x.dtype)
    idx = real.nonzero().squeeze(1)
    logits_p = logits_d = None
    if len(idx):
        used = shape_bucket(idx, real) if x.device.type in BUCKETED_DEVICES else idx
        xr, mr = x[used], mask[used]
        preserved = remove_evidence(xr, mr, alternative_images(xr, objective, generator))
        alt = destroy_alternative(xr, mr, alternative_images(xr, objective, generator), objective)
        destroyed = remove_evidence(xr, 1 - mr, alt)
        logits = classifier(_as_dtype(torch.cat([preserved, destroyed]), classifier_dtype))
        check_logits(logits, 2 * len(used), num_classes, batch=n)
        logits = logits.float()
        lp, ld = (part[: len(idx)] for part in logits.chunk(2))
        k = logits.shape[1]
        logits_p = lp.new_zeros(n, k).index_copy(0, idx, lp)
        logits_d = ld.new_zeros(n, k).index_copy(0, idx, ld)
    terms = objective_loss(
        out.small_mask, logits_p, logits_d, selector, real, objective, out.gate_logit
    )
    terms.mask_area = out.small_mask.detach().float().mean(dim=(1, 2, 3))
    return terms, real


def _as_dtype(x: torch.Tensor, dtype: torch.dtype | None) -> torch.Tensor:
    return x if dtype is None or x.dtype == dtype else x.to(dtype)


def autocast(device: torch.device, enabled: bool):
    """Mixed precision on CUDA (bf16 where supported, else fp16); nothing elsewhere."""
    if enabled and device.type == "cuda":
        dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.autocast("cuda", dtype=dtype)
    return nullcontext()


def evaluate_terms(
    masker: MaskingModel,
    classifier: nn.Module,
    loader: Iterable,
    objective: ObjectiveConfig,
    device: torch.device,
    seed: int = 0,
    name: str = "val_loader",
) -> dict[str, float]:
    """Mean loss terms over a loader, without training (a fixed seed makes runs comparable).

    Its batches are checked like training batches and cast to the masker's dtype.

    Args:
        masker: The masking model (evaluated in eval mode, its mode restored afterwards).
        classifier: The black box.
        loader: Iterable of ``(images, labels[, ...])`` batches.
        objective: Loss weights and evidence removal.
        device: Where the batches go (the masker and classifier must be there already).
        seed: Seed of the fake selectors and alternative images.
        name: The loader's argument name in error messages.

    Returns:
        ``{"val_<term>": mean}`` over the loader's images.

    Raises:
        InputError: A bad batch, or a loader that yields nothing.
    """
    check_loader(loader, name)
    dtype, classifier_dtype = training_dtypes(masker, classifier)
    generator = torch.Generator(device).manual_seed(seed)
    sums: dict[str, float] = {}
    counts: dict[str, int] = {}  # a key may miss in a batch (no fake selector drawn)
    count = 0
    was_training = masker.training
    masker.eval()
    try:
        with torch.no_grad():
            for batch in loader:
                x, y = prepare_batch(batch, masker, device, dtype, name)
                terms, real = step_terms(
                    masker,
                    classifier,
                    x,
                    y,
                    masker.config.num_classes,
                    objective,
                    generator,
                    classifier_dtype=classifier_dtype,
                )
                for k, v in terms.means(real).items():
                    sums[k] = sums.get(k, 0.0) + v * len(x)
                    counts[k] = counts.get(k, 0) + len(x)
                count += len(x)
    finally:
        masker.train(was_training)
    if count == 0:
        raise InputError("the validation loader yielded no batches.", argument=name)
    return {f"val_{k}": v / counts[k] for k, v in sums.items()}
