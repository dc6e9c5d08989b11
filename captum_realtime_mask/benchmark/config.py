"""What the benchmark runs: :class:`BenchmarkConfig` and its quick and full presets."""

from __future__ import annotations

import copy
from dataclasses import dataclass, field, fields, replace
from typing import Any, Literal

import torch

from captum_realtime_mask._checks import describe, flag, integer, one_of, path_str
from captum_realtime_mask.benchmark.blackbox import BLACKBOX_PRESETS
from captum_realtime_mask.benchmark.settings import (
    BENCHMARK_OBJECTIVE_BY_BLACKBOX,
    FROZEN_ENCODER,
)
from captum_realtime_mask.datasets.config import ClutteredConfig
from captum_realtime_mask.datasets.scenes import SceneConfig
from captum_realtime_mask.errors import InputError
from captum_realtime_mask.objective import (
    ObjectiveConfig,
    resolve_objective,
)

__all__ = ["SUITES", "BenchmarkConfig", "Mode", "Suite", "trained_objective"]

Mode = Literal["quick", "full"]
Suite = Literal["single", "scenes"]

#: The benchmark's suites: one item per cluttered image, and scenes of one to three items.
SUITES = ("single", "scenes")

#: Counts of at least one, and those that may also be None.
_POSITIVE = (
    "n_train",
    "n_val",
    "n_test",
    "masker_epochs",
    "iterative_steps",
    "ig_steps",
    "batch_size",
    "throughput_batch",
    "jobs",
)
_POSITIVE_OR_NONE = (
    "blackbox_epochs",
    "blackbox_max_steps",
    "masker_max_steps",
    "threads",
    "scratch_masker_epochs",
    "threshold_images",
    "faithfulness_images",
    "costly_images",
)


@dataclass
class BenchmarkConfig:
    """What the benchmark runs; ``quick`` and ``full`` differ only in sizes.

    ``suite="single"`` is the paper's protocol on cluttered Fashion-MNIST (one item per
    image, :class:`~captum_realtime_mask.datasets.ClutteredConfig`); ``suite="scenes"`` runs
    the same methods on :class:`~captum_realtime_mask.datasets.FashionMNISTScenes` (one to
    three items of distinct classes per 96-pixel image) with multi-label black boxes, and
    scores every present class of every image (see
    :mod:`captum_realtime_mask.benchmark.scenes`).

    The full mode's choices below were made on the validation split; the docs' benchmark
    page gives the figures behind each ("How the benchmark's settings were chosen").

    Attributes:
        mode: ``"quick"`` (minutes; the README's main job) or ``"full"`` (the results in
            the docs).
        suite: ``"single"`` (cluttered Fashion-MNIST) or ``"scenes"``.
        output: Folder for ``results.json``, ``results.md`` and ``figure.png``.
        cache_dir: Cache for datasets, black boxes and maskers (default: the package's).
        blackboxes: Keys of ``BLACKBOX_PRESETS``.
        n_train: Training composites per epoch, for the black boxes and the maskers.
        n_val: Validation images (thresholds of non-mask methods are chosen on them).
        threshold_images: Validation images on which each non-mask method's threshold is
            chosen (the first ones; None: all ``n_val``). The full mode uses 250 to keep
            occlusion and integrated gradients within its time budget.
        n_test: Test images.
        blackbox_epochs: Overrides the black boxes' epochs (None: their presets).
        blackbox_max_steps: Cap on the black boxes' optimiser steps (smoke tests).
        masker_epochs: Epochs of masker training.
        masker_epochs_by_blackbox: Epochs of masker training for some black boxes, by key
            (the others get ``masker_epochs``). The full mode gives the ResNet's maskers 4.
        scratch_masker_epochs: Epochs of the from-scratch encoder's maskers (None: the same
            as the black box's frozen-encoder masker). The full mode uses 4.
        masker_max_steps: Cap on each masker's optimiser steps (smoke tests).
        iterative_images: Test images given to the methods that optimise every image (the
            iterative mask and the refinement rows; they are slow). The full mode uses 64.
        iterative_steps: Iterations of the iterative mask.
        refine_steps: Refinement steps reported for the learned masks (0 is the plain mask;
            the full mode reports 0, 10 and 50).
        ig_steps: Integrated-gradients steps (50 as in the issue's throughput target).
        batch_size: Images per batch everywhere.
        throughput_batch: Batch on which every method's images/s is timed.
        seed: Seed of datasets, training and evaluation.
        objective: Overrides of :class:`~captum_realtime_mask.ObjectiveConfig`'s defaults
            for the maskers (none by default; recorded in the results).
        objective_by_blackbox: Further overrides for some black boxes' maskers, by key, on
            top of ``objective`` (both rows of that black box; part of their cache keys).
            The full mode uses ``BENCHMARK_OBJECTIVE_BY_BLACKBOX``.
        jobs: Black boxes evaluated at once, each in its own process with
            ``threads // jobs`` torch threads (1: one after the other in this process).
        threads: Torch threads in all (None: ``torch.get_num_threads()``).
        channels_last: Evaluate each black box in channels-last memory format, which its
            maskers' frozen encoder and the baselines then use too (faster on CPU); the
            scores change only by floating-point rounding.
        faithfulness_images: Test images (scenes: their present classes) also scored with
            deletion, insertion and ROAD (the first ones; None: all). The full modes use 100
            images and 25 scenes, to keep their time budgets.
        costly_images: Scenes suite: test scenes given to the methods that cost hundreds of
            forward passes per map (ScoreCAM; the first ones; None: all).
        extra: Free-form notes, recorded in ``results.json`` with the rest of the config.

    Raises:
        InputError: An option has the wrong type or is out of range, or names an unknown
            black box or ObjectiveConfig field.
    """

    mode: Mode = "quick"
    suite: Suite = "single"
    output: str = "runs/demo"
    cache_dir: str | None = None
    blackboxes: tuple[str, ...] = ("resnet", "cspdarknet")
    n_train: int = 20000
    n_val: int = 500
    threshold_images: int | None = None
    n_test: int = 1000
    blackbox_epochs: int | None = None
    blackbox_max_steps: int | None = None
    masker_epochs: int = 3
    masker_epochs_by_blackbox: dict[str, int] = field(default_factory=dict)
    scratch_masker_epochs: int | None = None
    masker_max_steps: int | None = None
    iterative_images: int = 200
    iterative_steps: int = 300
    refine_steps: tuple[int, ...] = (0, 10, 50)
    ig_steps: int = 50
    batch_size: int = 64
    throughput_batch: int = 32
    seed: int = 0
    objective: dict[str, Any] = field(default_factory=dict)
    objective_by_blackbox: dict[str, dict[str, Any]] = field(default_factory=dict)
    jobs: int = 2
    threads: int | None = None
    channels_last: bool = True
    faithfulness_images: int | None = None
    costly_images: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        def name(attr: str) -> str:
            return f"BenchmarkConfig.{attr}"

        self.mode = one_of(self.mode, name("mode"), ("quick", "full"))
        self.suite = one_of(self.suite, name("suite"), SUITES)
        self.output = path_str(self.output, name("output"), "runs/demo")
        self.cache_dir = path_str(self.cache_dir, name("cache_dir"), "~/.cache", none_ok=True)
        self.blackboxes = _blackbox_keys(self.blackboxes, name("blackboxes"))
        for attr in _POSITIVE:
            setattr(self, attr, integer(getattr(self, attr), name(attr), 1))
        for attr in _POSITIVE_OR_NONE:
            setattr(self, attr, integer(getattr(self, attr), name(attr), 1, none_ok=True))
        self.iterative_images = integer(self.iterative_images, name("iterative_images"), 0)
        self.seed = integer(self.seed, name("seed"))
        self.channels_last = flag(self.channels_last, name("channels_last"))
        if self.threshold_images is not None and self.threshold_images > self.n_val:
            raise InputError(
                f"{self.threshold_images} is more than n_val={self.n_val}; lower it or raise n_val",
                argument=name("threshold_images"),
            )
        if not isinstance(self.refine_steps, (list, tuple)):
            raise InputError(
                f"expected a sequence of ints >= 0, got {describe(self.refine_steps)}.",
                argument=name("refine_steps"),
            )
        self.refine_steps = tuple(integer(k, name("refine_steps"), 0) for k in self.refine_steps)
        _by_blackbox(self.masker_epochs_by_blackbox, name("masker_epochs_by_blackbox"), "epochs")
        self.masker_epochs_by_blackbox = {
            key: integer(epochs, name(f"masker_epochs_by_blackbox[{key!r}]"), 1)
            for key, epochs in self.masker_epochs_by_blackbox.items()
        }
        _objective(self.objective, name("objective"))
        _by_blackbox(
            self.objective_by_blackbox,
            name("objective_by_blackbox"),
            "dicts of ObjectiveConfig fields",
        )
        for key, overrides in self.objective_by_blackbox.items():
            attr = name(f"objective_by_blackbox[{key!r}]")
            _objective(overrides, attr)  # a dict, and its fields on their own
            _objective(self.objective_for(key), attr)  # and on top of ``objective``

    def data_config(self) -> ClutteredConfig | SceneConfig:
        """The dataset of a run: the suite's default images at the run's sizes and seed."""
        kind = SceneConfig if self.suite == "scenes" else ClutteredConfig
        return kind(n_train=self.n_train, n_val=self.n_val, n_test=self.n_test, seed=self.seed)

    def masker_epochs_for(self, blackbox: str, scratch: bool = False) -> int:
        """Epochs of masker training for one black box (``scratch``: row (b)'s masker)."""
        if scratch and self.scratch_masker_epochs is not None:
            return self.scratch_masker_epochs
        return self.masker_epochs_by_blackbox.get(blackbox, self.masker_epochs)

    def objective_for(self, blackbox: str) -> dict[str, Any]:
        """Objective overrides of one black box's maskers: ``objective`` and its own."""
        return {**self.objective, **self.objective_by_blackbox.get(blackbox, {})}

    @classmethod
    def for_mode(cls, mode: Mode, suite: Suite = "single", **overrides: Any) -> BenchmarkConfig:
        """The preset sizes of a mode and suite, with overrides (checked like the constructor's)."""
        mode = one_of(mode, "mode", ("quick", "full"))
        suite = one_of(suite, "suite", SUITES)
        base = _PRESETS[suite, mode]()
        unknown = sorted(set(overrides) - {f.name for f in fields(cls)})
        if unknown:
            raise InputError(f"unknown options {unknown}", argument="BenchmarkConfig.for_mode")
        return replace(base, **overrides)


def _single_quick() -> BenchmarkConfig:
    return BenchmarkConfig(
        mode="quick",
        blackboxes=("resnet",),
        n_train=4000,
        n_val=100,
        n_test=200,
        blackbox_epochs=6,
        masker_epochs=3,
        iterative_images=32,
        iterative_steps=100,
        refine_steps=(0, 10),
        faithfulness_images=32,
    )


def _single_full() -> BenchmarkConfig:
    return BenchmarkConfig(
        mode="full",
        iterative_images=64,
        refine_steps=(0, 10, 50),
        threshold_images=250,
        faithfulness_images=100,
        masker_epochs_by_blackbox={"resnet": 4},
        scratch_masker_epochs=4,
        objective_by_blackbox=copy.deepcopy(BENCHMARK_OBJECTIVE_BY_BLACKBOX),
    )


def _scenes_quick() -> BenchmarkConfig:
    return BenchmarkConfig(
        mode="quick",
        suite="scenes",
        blackboxes=("resnet",),
        n_train=2000,
        n_val=40,
        n_test=60,
        blackbox_epochs=4,
        masker_epochs=2,
        iterative_images=8,
        iterative_steps=100,
        refine_steps=(0,),
        ig_steps=20,
        faithfulness_images=16,
        costly_images=8,
    )


def _scenes_full() -> BenchmarkConfig:
    return BenchmarkConfig(
        mode="full",
        suite="scenes",
        n_train=10000,
        n_val=500,
        threshold_images=150,
        n_test=500,
        blackbox_epochs=12,
        masker_epochs=6,
        scratch_masker_epochs=2,
        iterative_images=16,
        iterative_steps=300,
        refine_steps=(0,),
        ig_steps=25,
        faithfulness_images=25,
        costly_images=40,
    )


#: The presets of :meth:`BenchmarkConfig.for_mode`, by (suite, mode).
_PRESETS = {
    ("single", "quick"): _single_quick,
    ("single", "full"): _single_full,
    ("scenes", "quick"): _scenes_quick,
    ("scenes", "full"): _scenes_full,
}


def _blackbox_keys(value: Any, name: str) -> tuple[str, ...]:
    """A non-empty sequence of ``BLACKBOX_PRESETS`` keys, as a tuple."""
    keys = list(value) if isinstance(value, (list, tuple)) else None
    if not keys:
        raise InputError(
            f"expected a non-empty tuple of BLACKBOX_PRESETS keys {list(BLACKBOX_PRESETS)}, "
            f"got {describe(value)}",
            argument=name,
        )
    return tuple(one_of(key, name, tuple(BLACKBOX_PRESETS)) for key in keys)


def _by_blackbox(value: Any, name: str, values: str) -> None:
    """Check a per-black-box option: a dict of ``BLACKBOX_PRESETS`` keys to ``values``."""
    if not isinstance(value, dict):
        raise InputError(
            f"expected a dict of black-box keys to {values}, got {describe(value)}",
            argument=name,
        )
    for key in value:
        if key not in BLACKBOX_PRESETS:
            raise InputError(
                f"{key!r} is not a key of BLACKBOX_PRESETS {list(BLACKBOX_PRESETS)}",
                argument=name,
            )


def _objective(overrides: Any, name: str) -> None:
    """Check ObjectiveConfig overrides by building the configuration they make."""
    if not isinstance(overrides, dict):
        raise InputError(
            f"expected a dict of ObjectiveConfig fields, got {describe(overrides)}", argument=name
        )
    try:
        ObjectiveConfig.from_dict(overrides)
    except (TypeError, ValueError) as err:
        raise InputError(f"{err}", argument=name) from None


def trained_objective(
    overrides: dict[str, Any], data: ClutteredConfig | SceneConfig
) -> ObjectiveConfig:
    """The objective the benchmark's maskers train on, resolved as fit() resolves it.

    The single-object suite's labels are class indices, so ``"auto"`` means ``"softmax"``;
    the scenes suite's are multi-hot vectors, so it means ``"sigmoid"``. Both have 10 classes,
    which fixes a derived area weight (10). Both encoders hand their stride-2 map to the
    decoder, so a derived TV weight is that of ``image_size / 2`` cells a side (5 at 64 px,
    7.5 for the 96 px scenes).

    Example:
        >>> trained_objective({}, SceneConfig()).tv_weight
        7.5
    """
    multi_label = isinstance(data, SceneConfig)
    labels = torch.zeros(1, 10) if multi_label else torch.zeros(1, dtype=torch.long)
    side = data.image_size // FROZEN_ENCODER.min_reduction
    return resolve_objective(ObjectiveConfig(**overrides), 10, labels, (side, side))
