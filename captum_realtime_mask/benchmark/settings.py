"""The benchmark's masker settings: objective weights, fit() options and the two encoders.

Each value was chosen on the validation split; the trainings and figures behind every one are
on the docs' benchmark page, section "How the benchmark's settings were chosen".
"""

from __future__ import annotations

from typing import Any

from captum_realtime_mask.masker.encoders import EncoderSpec

__all__ = [
    "BENCHMARK_FIT",
    "BENCHMARK_OBJECTIVE",
    "BENCHMARK_OBJECTIVE_BY_BLACKBOX",
    "FROZEN_ENCODER",
    "SCRATCH_ENCODER",
    "SCRATCH_FIT",
]

#: ObjectiveConfig overrides of every benchmark masker: area weight 10, TV weight 5, fake
#: selectors on half the samples drawn among classes under 5%, and the destroyed region
#: inpainted from the pixels around it (docs: "How the benchmark's settings were chosen").
BENCHMARK_OBJECTIVE: dict[str, Any] = {
    "area_weight": 10.0,
    "tv_weight": 5.0,
    "fake_prob": 0.5,
    "fake_max_prob": 0.05,
    "destroy_weight": 5.0,
    "destroy_fill": "inpaint",
}

#: fit() options of every benchmark masker beyond epochs, steps and seed: the learning rate
#: decays on a cosine over the run (docs: "How the benchmark's settings were chosen").
BENCHMARK_FIT: dict[str, Any] = {"lr_schedule": "cosine"}

#: The full mode's objective overrides by black box, on top of :data:`BENCHMARK_OBJECTIVE`:
#: destroy power 1 for the ResNet's maskers (docs: "How the benchmark's settings were chosen").
BENCHMARK_OBJECTIVE_BY_BLACKBOX: dict[str, dict[str, Any]] = {"resnet": {"destroy_power": 1.0}}

#: Encoder of row (a): the black box's own backbone, frozen, with its stride-2 map feeding the
#: decoder too, so masks are 32x32 for 64-pixel images (docs: "How the benchmark's settings
#: were chosen").
FROZEN_ENCODER = EncoderSpec(kind="classifier", min_reduction=2)

#: Encoder of row (b): a small CNN trained with the masker from random weights (paper, 5.2).
SCRATCH_ENCODER = EncoderSpec(kind="small_cnn", width=16, min_reduction=2)

#: fit() options of row (b)'s maskers on top of :data:`BENCHMARK_FIT`: channels-last training
#: and the area weight ramped up over half the run (docs: "How the benchmark's settings were
#: chosen").
SCRATCH_FIT: dict[str, Any] = {"channels_last": True, "area_warmup": 0.5}
