"""Reading a fit's history for the two ways a masker collapses, and saying which knob helps.

Each epoch's record holds ``mask_area_real`` and ``mask_area_fake``: the masks' mean area for
the true classes and for the fake selectors (classes absent from the image). A healthy
masker keeps a clear mask for the true class and an almost empty one for absent classes. Two
failures are common:

* **empty masks**: the area term won before the masker found the object, and the masks of the
  true classes are (nearly) empty;
* **class-blind masks**: absent classes get about the same mask as the true one, so the class
  selector is ignored.

A fit that ends in either state warns (once, after its last epoch), naming the options that
usually fix it. Short fits are not judged: every masker starts class-blind.
"""

from __future__ import annotations

import warnings

__all__ = ["CLASS_BLIND_RATIO", "DIAGNOSE_AFTER_STEPS", "EMPTY_AREA", "collapse_warnings"]

#: Optimiser steps a fit must have run before its last epoch is judged.
DIAGNOSE_AFTER_STEPS = 200
#: Mean mask area of the true classes below which the masks count as empty.
EMPTY_AREA = 0.01
#: Absent-class area over true-class area above which the masks count as class-blind.
CLASS_BLIND_RATIO = 0.5


def collapse_warnings(record: dict[str, float], steps: int) -> list[str]:
    """The collapse messages for one epoch's record of a fit of ``steps`` steps (maybe none).

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
            f"fit: the masks of the true classes are nearly empty (mean area {real:.2%} in the "
            "last epoch): the area term won before the masker found the objects. Hint: lower "
            "the objective's area_weight (e.g. objective=ObjectiveConfig(area_weight=1.0)) or "
            "ramp it up over more of the run (fit(..., area_warmup=0.5))."
        ]
    if fake is not None and fake > CLASS_BLIND_RATIO * real:
        return [
            f"fit: the masks barely depend on the class: absent classes get {fake / real:.0%} "
            f"of the true class's mask area (mean areas {fake:.3f} and {real:.3f} in the last "
            "epoch). Hint: train longer, or let the class embeddings learn faster "
            "(fit(..., embedding_lr_scale=30)) or see more absent classes "
            "(ObjectiveConfig(fake_prob=0.5))."
        ]
    return []


def warn_if_collapsed(history: list[dict[str, float]], steps: int, stacklevel: int) -> None:
    """Warn (UserWarning) when the last epoch of ``history`` shows a collapsed masker."""
    for message in collapse_warnings(history[-1], steps) if history else []:
        warnings.warn(message, UserWarning, stacklevel=stacklevel + 1)
