"""Saliency metric and weakly supervised localisation for any attribution, in captum.metrics' style.

Functions (``saliency_metric``, ``localisation_error``) score one batch and return tensors;
the classes (``SaliencyMetric``, ``LocalisationEvaluator``) are :class:`torchmetrics.Metric`
subclasses that accumulate over a dataset (and across processes) with ``update`` /
``compute`` / ``reset``. Boxes are inclusive pixel indices (see
:mod:`captum_realtime_mask.metrics.boxes`).
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
    "EMPTY_FALLBACKS",
    "NORMALIZATIONS",
    "BoxAnnotation",
    "LocalisationEvaluator",
    "LocalisationResult",
    "MapBoxes",
    "Normalization",
    "SaliencyMetric",
    "SaliencyResult",
    "attributions_to_boxes",
    "box_area_fraction",
    "centre_box",
    "localisation_details",
    "localisation_error",
    "max_box",
    "normalize_attributions",
    "parse_voc_xml",
    "pixel_box_iou",
    "resize_pixel_boxes",
    "saliency_metric",
    "saliency_metric_details",
]
