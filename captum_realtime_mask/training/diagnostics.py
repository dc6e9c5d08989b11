"""Reading the end of a fit for the three ways a masker fails, and saying which knob helps.

Each epoch's record holds ``mask_area_real`` and ``mask_area_fake``: the masks' mean area for
the true classes and for the fake selectors (classes absent from the image). A healthy
masker keeps a clear mask for the true class and an almost empty one for absent classes.
Three failures are common, and the first that applies is reported:

* **empty masks**: the area term won before the masker found the object, and the masks of the
  true classes are (nearly) empty;
* **masks too large**: the true classes' masks cover most of the image, the area term too weak
  to make them pick the evidence out;
* **class-blind masks**: absent classes get about the same mask as the true one, so the class
  selector is ignored.

The fit is judged on its last :data:`RECENT_STEPS` steps, not on a whole epoch (an epoch's
mean still holds the masks of its first steps; in a one-epoch fit whose masks ended empty
it was 1.4%, over the 1% threshold), once, after its last epoch. Short fits are not judged:
every masker starts class-blind.
"""

from __future__ import annotations

import warnings

__all__ = [
    "CLASS_BLIND_RATIO",
    "DIAGNOSE_AFTER_STEPS",
    "EMPTY_AREA",
    "LARGE_AREA",
    "RECENT_STEPS",
    "collapse_warnings",
    "recent_areas",
]

#: Optimiser steps a fit must have run before its last epoch is judged.
DIAGNOSE_AFTER_STEPS = 200
#: Mean mask area of the true classes below which the masks count as empty.
EMPTY_AREA = 0.01
#: Mean mask area of the true classes above which the masks count as too large.
LARGE_AREA = 0.4
#: Absent-class area over true-class area above which the masks count as class-blind.
CLASS_BLIND_RATIO = 0.5
#: The fit's last steps whose mask areas are judged.
RECENT_STEPS = 50


def collapse_warnings(record: dict[str, float], steps: int) -> list[str]:
    """The failure message for mean mask areas of a fit of ``steps`` steps (maybe none).

    Example:
        >>> collapse_warnings({"mask_area_real": 0.30, "mask_area_fake": 0.02}, steps=500)
        []
        >>> collapse_warnings({"mask_area_real": 0.002, "mask_area_fake": 0.001}, 500)[0][:36]
        'fit: the masks of the true classes a'
    """
    real, fake = record.get("mask_area_real"), record.get("mask_area_fake")
    if steps < DIAGNOSE_AFTER_STEPS or real is None:
        return []
    if real < EMPTY_AREA:
        return [
            f"fit: the masks of the true classes are nearly empty (mean area {real:.2%} over "
            "the last steps): the area term won before the masker found the objects. Hint: "
            "lower the objective's area_weight (e.g. objective=ObjectiveConfig(area_weight=3)) "
            "or ramp it up over more of the run (fit(..., area_warmup=0.5))."
        ]
    if real > LARGE_AREA:
        return [
            f"fit: the masks of the true classes cover {real:.0%} of the image on average "
            "(over the last steps): if the objects are smaller, the area term is too weak to "
            "pick them out. Hint: raise the objective's area_weight (e.g. "
            "objective=ObjectiveConfig(area_weight=20)), or train longer."
        ]
    if fake is not None and fake > CLASS_BLIND_RATIO * real:
        return [
            f"fit: the masks barely depend on the class: absent classes get {fake / real:.0%} "
            f"of the true class's mask area (mean areas {fake:.3f} and {real:.3f} over the last "
            "steps). Hint: train longer, or let the class embeddings learn faster "
            "(fit(..., embedding_lr_scale=30)) or see more absent classes "
            "(ObjectiveConfig(fake_prob=0.7); the default is 0.5)."
        ]
    return []


def recent_areas(steps: list[dict[str, float]]) -> dict[str, float]:
    """Mean ``mask_area_real`` and ``mask_area_fake`` over per-step records (each where given).

    Example:
        >>> recent_areas([{"mask_area_real": 0.2}, {"mask_area_real": 0.4, "mask_area_fake": 0.1}])
        {'mask_area_real': 0.30000000000000004, 'mask_area_fake': 0.1}
    """
    out = {}
    for key in ("mask_area_real", "mask_area_fake"):
        values = [record[key] for record in steps if key in record]
        if values:
            out[key] = sum(values) / len(values)
    return out


def warn_if_collapsed(recent: list[dict[str, float]], steps: int, stacklevel: int) -> None:
    """Warn (UserWarning) when the fit's last steps (per-step records) show a failed masker."""
    for message in collapse_warnings(recent_areas(recent), steps) if recent else []:
        warnings.warn(message, UserWarning, stacklevel=stacklevel + 1)
