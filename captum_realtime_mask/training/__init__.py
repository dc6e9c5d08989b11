"""Training the masker against a frozen classifier.

:func:`fit_masker` trains a :class:`~captum_realtime_mask.masker.MaskingModel` against a
frozen classifier. It is what :meth:`RealTimeMaskAttribution.fit` runs; use it directly only to
drive training yourself. The package reads top-down along a fit:

* :mod:`.config`: :class:`FitConfig`, the loop's options;
* :mod:`.batches`: checks of loaders and batches, and their preparation;
* :mod:`.step`: one step's forward pass, selectors and loss terms;
* :mod:`.trainer`: the loop, as a :class:`~.trainer.Trainer` with named phases;
* :mod:`.state`: what a training checkpoint holds, and resuming from it;
* :mod:`.distributed`: ``torchrun`` helpers.
"""

from captum_realtime_mask.training.batches import unpack_batch
from captum_realtime_mask.training.config import (
    RUN_SHAPING_OPTIONS,
    TRAINING_IMAGES,
    FitConfig,
    default_epochs,
)
from captum_realtime_mask.training.step import evaluate_terms
from captum_realtime_mask.training.trainer import fit_masker

__all__ = [
    "RUN_SHAPING_OPTIONS",
    "TRAINING_IMAGES",
    "FitConfig",
    "default_epochs",
    "evaluate_terms",
    "fit_masker",
    "unpack_batch",
]
