"""Metrics for images with several objects: per-object localisation, pointing game, selectivity.

Convention for every function and class here:

* ``attributions``: one map per requested class, shaped ``(N, K, H, W)``: ``attributions[i, k]``
  is the map of image ``i`` for the class ``target[i, k]``. A multi-channel map is not accepted
  (reduce it to one channel first, e.g. with
  :func:`~captum_realtime_mask.metrics.normalize_attributions`).
* ``target``: ``(N, K)`` integer class ids of those maps. A negative id marks an unused slot
  (padding), so images may request different numbers of classes in one batch; a class may be
  requested at most once per image.
* ``gt_boxes``: the objects' boxes, at least one per image, in any format of
  :mod:`captum_realtime_mask.metrics.boxes` (inclusive pixel boxes of the maps' size): an
  ``(N, M, 4)`` tensor or a sequence of ``N`` tensors shaped ``(M_i, 4)``.
* ``gt_labels``: the objects' classes, matching ``gt_boxes``: an ``(N, M)`` tensor or a
  sequence of ``N`` integer tensors (or lists) shaped ``(M_i,)``, one class per box.

A requested class is *present* in an image when one of its objects has that class, *absent*
otherwise. The localisation, pointing and selectivity metrics score (image, present requested
class) pairs; a present class that was not requested is not scored. When a class has several
objects in an image, its *region* is the union of their boxes. Maps are normalised per map with
``normalize`` (see :func:`~captum_realtime_mask.metrics.normalize_attributions`; ``"none"``
for masks in ``[0, 1]``). Results are on the maps' device.
"""

from captum_realtime_mask.metrics.scenes.area import (
    AbsentClassArea,
    AbsentClassAreaResult,
    AreaSummary,
    absent_class_area,
    absent_class_area_details,
)
from captum_realtime_mask.metrics.scenes.localisation import (
    SceneLocalisationEvaluator,
    SceneLocalisationResult,
    scene_localisation_details,
    scene_localisation_error,
)
from captum_realtime_mask.metrics.scenes.pointing import (
    POINTING_TOLERANCE_AT_224,
    PointingGame,
    PointingGameResult,
    pointing_game,
    pointing_game_details,
    pointing_tolerance,
)
from captum_realtime_mask.metrics.scenes.selectivity import (
    SELECTIVITY_COMPARISONS,
    ClassSelectivity,
    SelectivityResult,
    class_selectivity,
    class_selectivity_details,
)

__all__ = [
    "POINTING_TOLERANCE_AT_224",
    "SELECTIVITY_COMPARISONS",
    "AbsentClassArea",
    "AbsentClassAreaResult",
    "AreaSummary",
    "ClassSelectivity",
    "PointingGame",
    "PointingGameResult",
    "SceneLocalisationEvaluator",
    "SceneLocalisationResult",
    "SelectivityResult",
    "absent_class_area",
    "absent_class_area_details",
    "class_selectivity",
    "class_selectivity_details",
    "pointing_game",
    "pointing_game_details",
    "pointing_tolerance",
    "scene_localisation_details",
    "scene_localisation_error",
]
