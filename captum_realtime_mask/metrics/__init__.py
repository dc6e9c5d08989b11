"""Saliency metric, localisation and faithfulness for any attribution, in captum.metrics' style.

Functions (``saliency_metric``, ``localisation_error``, ``deletion_auc``, ``insertion_auc``)
score one batch and return tensors; the classes (``SaliencyMetric``, ``LocalisationEvaluator``,
``DeletionInsertionMetric``) are :class:`torchmetrics.Metric` subclasses that accumulate over a
dataset (and across processes) with ``update`` / ``compute`` / ``reset``. Boxes are inclusive
pixel indices (see :mod:`captum_realtime_mask.metrics.boxes`).
"""

from captum_realtime_mask.metrics.annotations import (
    BoxAnnotation,
    parse_voc_xml,
    resize_pixel_boxes,
)
from captum_realtime_mask.metrics.boxes import (
    EMPTY_FALLBACKS,
    NORMALIZATIONS,
    MapBoxes,
    Normalization,
    attributions_to_boxes,
    box_area_fraction,
    centre_box,
    max_box,
    normalize_attributions,
    pixel_box_iou,
)
from captum_realtime_mask.metrics.faithfulness import (
    DELETION_INSERTION_MODES,
    REMOVALS,
    DeletionInsertionMetric,
    DeletionInsertionResult,
    deletion_auc,
    deletion_insertion_curves,
    deletion_insertion_details,
    insertion_auc,
    removal_images,
    step_fractions,
)
from captum_realtime_mask.metrics.localisation import (
    LocalisationEvaluator,
    LocalisationResult,
    localisation_details,
    localisation_error,
)
from captum_realtime_mask.metrics.saliency import (
    SaliencyMetric,
    SaliencyResult,
    saliency_metric,
    saliency_metric_details,
)

__all__ = [
    "DELETION_INSERTION_MODES",
    "EMPTY_FALLBACKS",
    "NORMALIZATIONS",
    "REMOVALS",
    "BoxAnnotation",
    "DeletionInsertionMetric",
    "DeletionInsertionResult",
    "LocalisationEvaluator",
    "LocalisationResult",
    "MapBoxes",
    "Normalization",
    "SaliencyMetric",
    "SaliencyResult",
    "attributions_to_boxes",
    "box_area_fraction",
    "centre_box",
    "deletion_auc",
    "deletion_insertion_curves",
    "deletion_insertion_details",
    "insertion_auc",
    "localisation_details",
    "localisation_error",
    "max_box",
    "normalize_attributions",
    "parse_voc_xml",
    "pixel_box_iou",
    "removal_images",
    "resize_pixel_boxes",
    "saliency_metric",
    "saliency_metric_details",
    "step_fractions",
]
