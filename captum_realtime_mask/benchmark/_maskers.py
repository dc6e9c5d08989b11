"""The benchmark's learned maskers: trained once per setting, cached under a key of it."""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from captum_realtime_mask.attribution import RealTimeMaskAttribution
from captum_realtime_mask.benchmark._jobs import share_threads
from captum_realtime_mask.benchmark.blackbox import training_data_fields
from captum_realtime_mask.benchmark.config import BenchmarkConfig
from captum_realtime_mask.benchmark.methods import Method
from captum_realtime_mask.benchmark.settings import (
    FROZEN_ENCODER,
    SCRATCH_ENCODER,
    SCRATCH_FIT,
)
from captum_realtime_mask.datasets.config import ClutteredConfig
from captum_realtime_mask.datasets.scenes import SceneConfig
from captum_realtime_mask.masker.encoders import EncoderSpec
from captum_realtime_mask.objective import ObjectiveConfig, resolve_tv_weight
from captum_realtime_mask.training import RUN_SHAPING_OPTIONS, FitConfig

__all__ = [
    "MASKER_ROWS",
    "default_fit_record",
    "fit_masker",
    "mask_fn",
    "masker_key",
    "masker_methods",
    "train_loader",
]

#: fit() options that the benchmark sets itself (in the key as they are); the other
#: run-shaping options enter the key with their defaults.
_FIT_SET_HERE = ("epochs", "max_steps", "seed")

#: Revision of what a masker key stands for, raised when the training behind a key changes.
#: 2: each masker shuffles its own batches from the seed (row (b)'s masker used to continue
#: the loader that row (a)'s had used, when row (a)'s was trained in the same run).
_KEY_REVISION = 2


def masker_key(
    model: nn.Module,
    encoder: EncoderSpec,
    cfg: BenchmarkConfig,
    data: ClutteredConfig | SceneConfig,
    epochs: int,
    options: dict[str, Any],
) -> str:
    """Cache key of a benchmark masker: everything that changes its training.

    Args:
        model: The black box (its ``info`` record names its configuration and steps).
        encoder: The masker's encoder.
        cfg: The benchmark's configuration, with this black box's objective.
        data: The dataset the masker trains on.
        epochs: Epochs of training.
        options: The row's fit() options beyond the defaults.

    Returns:
        16 hex digits of a SHA-256 of all of the above.
    """
    blob = json.dumps(
        {
            "revision": _KEY_REVISION,
            "options": options,
            "blackbox": model.info.get("blackbox"),
            "blackbox_steps": model.info.get("steps"),
            "encoder": encoder.to_dict(),
            "objective": _keyed_objective(cfg, data, encoder),
            "fit": default_fit_record(),
            "train": training_data_fields(data),
            "epochs": epochs,
            "max_steps": cfg.masker_max_steps,
            "batch_size": cfg.batch_size,
            "seed": cfg.seed,
        },
        sort_keys=True,
        default=str,
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _keyed_objective(
    cfg: BenchmarkConfig, data: ClutteredConfig | SceneConfig, encoder: EncoderSpec
) -> dict[str, Any]:
    """The objective of a masker key, with a derived TV weight keyed by its value.

    So a masker trained with ``tv_weight`` 5 before the weight was derived keeps its key where
    the rule gives 5 (the 32-cell masks of 64 px images at stride 2).
    """
    side = data.image_size // encoder.min_reduction
    return resolve_tv_weight(ObjectiveConfig(**cfg.objective), (side, side)).to_dict()


def default_fit_record() -> dict[str, Any]:
    """The run-shaping fit() defaults every benchmark masker trains with (results, cache key).

    Example:
        >>> default_fit_record()["lr_schedule"]
        'cosine'
    """
    fit = FitConfig()
    return {k: getattr(fit, k) for k in RUN_SHAPING_OPTIONS if k not in _FIT_SET_HERE}


def fit_masker(
    model: nn.Module,
    encoder: EncoderSpec,
    train: Dataset,
    val_loader: DataLoader | None,
    cfg: BenchmarkConfig,
    epochs: int,
    options: dict[str, Any],
    folder: Path,
    log: Callable[[str], None],
) -> RealTimeMaskAttribution:
    """Load the cached masker in ``folder`` or train one on ``train`` and save it there.

    Args:
        model: The black box.
        encoder: The masker's encoder.
        train: The training images (batches of ``(images, labels, ...)``).
        val_loader: Validation batches, for fit()'s per-epoch report.
        cfg: The benchmark's configuration, with this black box's objective.
        epochs: Epochs of training.
        options: The row's fit() options beyond the defaults.
        folder: The masker's cache folder (named after :func:`masker_key`).
        log: Where progress lines go.

    Returns:
        The trained or loaded masker.
    """
    if (folder / "config.json").is_file():
        log(f"loading the cached masker {folder}")
        return RealTimeMaskAttribution.load(folder, model)
    attr = RealTimeMaskAttribution(
        model,
        num_classes=10,
        encoder=encoder,
        objective=ObjectiveConfig(**cfg.objective),
        seed=cfg.seed,
    )
    attr.fit(
        train_loader(train, cfg),
        epochs=epochs,
        max_steps=cfg.masker_max_steps,
        val_loader=val_loader,
        progress=False,
        **options,
    )
    attr.save(folder)
    return attr


def train_loader(train: Dataset, cfg: BenchmarkConfig) -> DataLoader:
    """A masker's training batches, shuffled from the benchmark's seed.

    Every masker gets a loader of its own, so its batch order does not depend on which other
    maskers were trained (rather than loaded from the cache) before it in the same run.
    fit() reads (images, labels) and ignores the boxes these batches also carry.
    """
    g = torch.Generator().manual_seed(cfg.seed)
    return DataLoader(train, batch_size=cfg.batch_size, shuffle=True, generator=g)


def mask_fn(
    attr: RealTimeMaskAttribution, k: int
) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """The method of a learned-mask row: the plain mask (``k == 0``) or ``k`` refinement steps."""
    if k == 0:
        return lambda x, t: attr.mask(x, target=t)
    return lambda x, t: attr.attribute(x, target=t, refine_steps=k)[:, :1]


#: The two learned-mask rows: label, encoder and fit() options beyond the defaults.
MASKER_ROWS = (
    ("RealTimeMask (frozen classifier encoder)", FROZEN_ENCODER, {}),
    ("RealTimeMask (encoder trained from scratch)", SCRATCH_ENCODER, SCRATCH_FIT),
)


def masker_methods(
    model: nn.Module,
    bb_name: str,
    cfg: BenchmarkConfig,
    data_cfg: ClutteredConfig | SceneConfig,
    cache: Path,
    train: Dataset,
    val: Dataset,
    log: Callable[[str], None],
) -> list[Method]:
    """The learned-mask rows: each masker's plain mask, and the refined frozen-encoder masks.

    ``cfg`` carries this black box's objective; ``train`` and ``val`` yield ``(images,
    labels, ...)`` items that PyTorch's default collate batches.
    """
    val_loader = DataLoader(val, batch_size=cfg.batch_size)
    methods: list[Method] = []
    for label, encoder, options in MASKER_ROWS:
        share_threads()
        t0 = time.perf_counter()
        epochs = cfg.masker_epochs_for(bb_name, scratch=encoder is SCRATCH_ENCODER)
        key = masker_key(model, encoder, cfg, data_cfg, epochs, options)
        folder = cache / "maskers" / f"{bb_name}-{key}"
        attr = fit_masker(model, encoder, train, val_loader, cfg, epochs, options, folder, log)
        log(f"[{bb_name}] masker '{label}' ready ({time.perf_counter() - t0:.0f} s)")
        for k in cfg.refine_steps if encoder is FROZEN_ENCODER else (0,):
            name = label if k == 0 else f"{label} + {k} refinement steps"
            methods.append(
                Method(
                    name,
                    mask_fn(attr, k),
                    kind="mask",
                    masker=attr if k == 0 else None,
                    per_image_optimisation=k > 0,
                    objective=attr.objective.to_dict() if k > 0 else None,
                )
            )
    return methods
