"""The options of a fit, checked on construction and saved in every training checkpoint."""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

from captum_realtime_mask import _checks as check

__all__ = ["RUN_SHAPING_OPTIONS", "TRAINING_IMAGES", "FitConfig", "default_epochs"]

#: Images a fit shows the masker when neither ``epochs`` nor ``max_steps`` is given (see
#: :func:`default_epochs`). Chosen on the benchmark's validation splits: on the scenes
#: (10,000 training images, ResNet, seed 0) 4 and 6 epochs gave a per-object error of 32.8%
#: and 31.3% and an absent / present area of 0.13 and 0.09 (seed 1 at 6 epochs: 60.4% and
#: 0.125, a spread between seeds larger than the gain); the single-object suite's maskers
#: train 3 to 4 epochs of 20,000 images (docs: "Training on your own data").
TRAINING_IMAGES = 60_000


def default_epochs(loader: Iterable) -> int:
    """Passes over ``loader`` that show the masker about :data:`TRAINING_IMAGES` images.

    Known for a loader with a sized ``dataset`` (a :class:`~torch.utils.data.DataLoader`):
    ``ceil(TRAINING_IMAGES / len(loader.dataset))``, at least 1. Any other iterable (a list
    of batches, a generator) gets 1 pass, since its number of images is not known.

    Example:
        >>> import torch
        >>> from torch.utils.data import DataLoader, TensorDataset
        >>> data = TensorDataset(torch.zeros(25_000, 1), torch.zeros(25_000))
        >>> default_epochs(DataLoader(data, batch_size=64)), default_epochs([(0, 0)] * 10)
        (3, 1)
    """
    try:
        images = len(loader.dataset)  # type: ignore[attr-defined]
    except (AttributeError, TypeError):
        return 1
    return max(1, math.ceil(TRAINING_IMAGES / images)) if images else 1


@dataclass
class FitConfig:
    """Options of :func:`~captum_realtime_mask.training.fit_masker` (all have working defaults).

    Every option is checked on construction and a wrong one raises :class:`InputError` naming
    it: counts must be ints (a bool is not a count), rates and weights real numbers (NumPy
    scalars are converted to Python ones).

    Attributes:
        epochs: Passes over the loader. None with ``max_steps`` None: enough passes for about
            :data:`TRAINING_IMAGES` (60,000) images when the loader has a sized dataset
            (:func:`default_epochs`), else 1. None with ``max_steps``: until ``max_steps``.
        max_steps: Stop after this many optimiser steps (across epochs).
        lr: Adam learning rate.
        weight_decay: Adam weight decay.
        lr_schedule: ``"cosine"`` (the default: decays to 0 over the run; needs a loader
            with a length or ``max_steps``, else it runs constant with a warning) or
            ``"constant"``. Each fit() call is a run of its own, so a second call starts at
            ``lr`` again.
        grad_clip: Clip the gradient norm to this value (None: no clipping).
        amp: Mixed precision on CUDA (bf16 where supported, else fp16 with loss scaling).
            Ignored on CPU.
        seed: Seed of the training randomness (fake selectors, alternative images); an int.
        progress: Show a tqdm progress bar with the loss terms (rank 0 only).
        checkpoint_dir: Write training checkpoints here, one folder per checkpoint named
            after its step (``step-000000123``); a str or ``os.PathLike``, stored as a str. It
            must not be a file; this is checked before the first step.
        checkpoint_every: Steps between checkpoints (also one at the end of every epoch).
        keep_last: Number of step checkpoints kept (at least 1).
        area_warmup: Fraction of the run (of ``max_steps``, or of the loader's length times
            ``epochs``) over which the area weight ramps linearly from 0 to its value. Not in
            the paper: without it the area term can win before the masker has found the
            object, and the masker collapses to an empty mask. 0 turns it off. Without a
            loader length or ``max_steps`` the run's length is unknown and it is off (with a
            warning).
        nonfinite_patience: Consecutive non-finite losses or gradients tolerated (each step
            skipped with a warning) before training stops with :class:`TrainingError`.
        embedding_lr_scale: The class embeddings of the feature filters learn at ``lr`` times
            this. Not in the paper. The gate logit is a dot product scaled by
            ``1/sqrt(channels)``, so at ``lr`` it moves slowly and a short fit leaves absent
            and present classes with similar gates (the masks then ignore the class).
        channels_last: Train in channels-last (NHWC) memory format: the batches, the masker's
            4-D weights and the classifier's are stored channels-last during the fit, and
            both models get their own memory format back afterwards (the classifier exactly
            as it was). It changes only floating-point rounding. On 2 CPU threads a step of
            a ResNet-18 masker at 64 px took 17% less time (see the docs' performance page);
            on GPUs it is the usual companion of ``amp``.

    Example:
        >>> FitConfig(epochs=2, lr=3e-4).lr_schedule
        'cosine'
    """

    epochs: int | None = None
    max_steps: int | None = None
    lr: float = 1e-3
    weight_decay: float = 0.0
    lr_schedule: str = "cosine"
    grad_clip: float | None = None
    amp: bool = True
    seed: int = 0
    progress: bool = True
    checkpoint_dir: str | None = None
    checkpoint_every: int | None = None
    keep_last: int = 3
    area_warmup: float = 0.2
    nonfinite_patience: int = 10
    embedding_lr_scale: float = 10.0
    channels_last: bool = False

    def __post_init__(self) -> None:
        for name in ("epochs", "max_steps", "checkpoint_every"):
            setattr(self, name, check.integer(getattr(self, name), name, 1, none_ok=True))
        for name in ("keep_last", "nonfinite_patience"):
            setattr(self, name, check.integer(getattr(self, name), name, 1))
        self.seed = check.integer(
            self.seed,
            "seed",
            hint="Hint: pass e.g. seed=0, or leave it out to use the seed given to "
            "RealTimeMaskAttribution.",
        )
        self.lr = check.real(self.lr, "lr", 0, low_open=True, hint="Hint: e.g. lr=1e-3.")
        self.grad_clip = check.real(self.grad_clip, "grad_clip", 0, low_open=True, none_ok=True)
        self.embedding_lr_scale = check.real(
            self.embedding_lr_scale, "embedding_lr_scale", 0, low_open=True
        )
        self.weight_decay = check.real(self.weight_decay, "weight_decay", 0)
        self.area_warmup = check.real(self.area_warmup, "area_warmup", 0, 1)
        for name in ("amp", "progress", "channels_last"):
            setattr(self, name, check.flag(getattr(self, name), name))
        self.lr_schedule = check.one_of(self.lr_schedule, "lr_schedule", ("constant", "cosine"))
        # Stored as a str: the config is saved as JSON in every checkpoint.
        self.checkpoint_dir = check.path_str(
            self.checkpoint_dir, "checkpoint_dir", "runs/ckpt", none_ok=True
        )


#: FitConfig fields that change what a run learns (a resumed run warns when they differ).
RUN_SHAPING_OPTIONS = (
    "epochs",
    "max_steps",
    "lr",
    "weight_decay",
    "lr_schedule",
    "grad_clip",
    "seed",
    "area_warmup",
    "embedding_lr_scale",
)
