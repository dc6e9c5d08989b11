"""The benchmark's masker settings: the two encoders and the few overrides of the defaults.

Every benchmark masker trains with the library's default recipe (``ObjectiveConfig()`` and
``FitConfig()``, the recipe chosen on this benchmark's validation split). What is here is what
differs from a plain ``RealTimeMaskAttribution(model).fit(loader)``, each with the validation
figures that justify it on the docs' benchmark page ("How the benchmark's settings were
chosen"), and each named in the report.
"""

from __future__ import annotations

from typing import Any

from captum_realtime_mask.masker.encoders import EncoderSpec

__all__ = [
    "BENCHMARK_OBJECTIVE_BY_BLACKBOX",
    "FROZEN_ENCODER",
    "SCRATCH_ENCODER",
    "SCRATCH_FIT",
]

#: The full mode's objective overrides by black box, on top of the default objective:
#: destroy power 1 for the ResNet's maskers (docs: "How the benchmark's settings were chosen").
BENCHMARK_OBJECTIVE_BY_BLACKBOX: dict[str, dict[str, Any]] = {"resnet": {"destroy_power": 1.0}}

#: Encoder of row (a): the black box's own backbone, frozen, with its stride-2 map feeding the
#: decoder too, so masks are 32x32 for 64-pixel images: what ``encoder="classifier"`` derives
#: for images under 224 px (``derived_min_reduction``), spelled out for the cache key.
FROZEN_ENCODER = EncoderSpec(kind="classifier", min_reduction=2)

#: Encoder of row (b): a small CNN trained with the masker from random weights (paper, 5.2).
SCRATCH_ENCODER = EncoderSpec(kind="small_cnn", width=16, min_reduction=2)

#: fit() options of row (b)'s maskers on top of the defaults: channels-last training
#: and the area weight ramped up over half the run (docs: "How the benchmark's settings were
#: chosen").
SCRATCH_FIT: dict[str, Any] = {"channels_last": True, "area_warmup": 0.5}
