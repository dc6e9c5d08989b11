"""Real-time learned saliency masks (Dabkowski & Gal, NIPS 2017) for Captum."""

__version__ = "0.1.0.dev0"

from captum_realtime_mask.attribution import RealTimeMaskAttribution  # noqa: E402
from captum_realtime_mask.errors import CheckpointError, InputError, TrainingError
from captum_realtime_mask.iterative import IterativeMaskAttribution, optimise_masks  # noqa: E402
from captum_realtime_mask.masker import EncoderSpec, MaskerConfig, MaskingModel  # noqa: E402
from captum_realtime_mask.metrics import (  # noqa: E402
    LocalisationEvaluator,
    SaliencyMetric,
    localisation_error,
    saliency_metric,
)
from captum_realtime_mask.objective import ObjectiveConfig  # noqa: E402
from captum_realtime_mask.training import FitConfig  # noqa: E402

__all__ = [
    "CheckpointError",
    "EncoderSpec",
    "FitConfig",
    "InputError",
    "IterativeMaskAttribution",
    "LocalisationEvaluator",
    "MaskerConfig",
    "MaskingModel",
    "ObjectiveConfig",
    "RealTimeMaskAttribution",
    "SaliencyMetric",
    "TrainingError",
    "__version__",
    "localisation_error",
    "optimise_masks",
    "saliency_metric",
]
