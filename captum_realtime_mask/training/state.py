"""Resumable training state: the loop's counters, the random states, training checkpoints.

A training checkpoint holds everything an interrupted fit needs to go on bit for bit: the
masker's weights, the optimiser's and the loss scaler's states, the training generator, the
random states of the interrupted epoch's start (to replay its batch order) and the loop's
counters and history. Tensors go to safetensors and the rest to JSON, through
:mod:`captum_realtime_mask.checkpoint`.
"""

from __future__ import annotations

import random
import warnings
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from captum_realtime_mask.checkpoint import (
    latest_checkpoint,
    prune_checkpoints,
    read_checkpoint,
    step_name,
    write_checkpoint,
)
from captum_realtime_mask.errors import CheckpointError
from captum_realtime_mask.masker.model import MaskingModel
from captum_realtime_mask.training.config import RUN_SHAPING_OPTIONS, FitConfig

__all__ = [
    "TrainState",
    "TrainingParts",
    "capture_epoch_rng",
    "restore_epoch_rng",
    "resume",
    "save_training_checkpoint",
]


@dataclass
class TrainState:
    """What a checkpoint must hold to resume exactly."""

    step: int = 0
    epoch: int = 0
    batch_in_epoch: int = 0
    history: list[dict[str, float]] = field(default_factory=list)
    epoch_sums: dict[str, float] = field(default_factory=dict)
    epoch_count: int = 0
    #: Steps of the epoch whose terms hold each key (``mask_area_fake`` misses in a batch
    #: without fake selectors); a key missing here was in every step (older checkpoints).
    epoch_counts: dict[str, int] = field(default_factory=dict)
    nonfinite: int = 0


@dataclass
class TrainingParts:
    """The objects whose states a training checkpoint saves besides :class:`TrainState`."""

    masker: MaskingModel
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    generator: torch.Generator


def _optimizer_tensors(opt: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict]:
    """Split an optimiser state dict into safetensors tensors and JSON metadata."""
    sd = opt.state_dict()
    tensors, scalars = {}, {}
    for pid, pstate in sd["state"].items():
        for key, value in pstate.items():
            if isinstance(value, torch.Tensor):
                tensors[f"opt.{pid}.{key}"] = value
            else:
                scalars[f"{pid}.{key}"] = value
    return tensors, {"param_groups": sd["param_groups"], "scalars": scalars}


def _load_optimizer(opt: torch.optim.Optimizer, tensors: dict, meta: dict) -> None:
    """Rebuild an optimiser's state from the tensors and metadata a checkpoint holds."""
    state: dict[int, dict[str, Any]] = {}
    for name, value in tensors.items():
        if name.startswith("opt."):
            _, pid, key = name.split(".", 2)
            state.setdefault(int(pid), {})[key] = value
    for name, value in meta["scalars"].items():
        pid, key = name.split(".", 1)
        state.setdefault(int(pid), {})[key] = value
    opt.load_state_dict({"state": state, "param_groups": meta["param_groups"]})


def _loader_generators(loader: Iterable) -> list[torch.Generator]:
    """The torch generators a DataLoader draws its order and worker seeds from."""
    out: list[torch.Generator] = []
    batch_sampler = getattr(loader, "batch_sampler", None)
    for owner in (
        loader,
        getattr(loader, "sampler", None),
        getattr(batch_sampler, "sampler", None),
    ):
        g = getattr(owner, "generator", None)
        if isinstance(g, torch.Generator) and all(g is not h for h in out):
            out.append(g)
    return out


def capture_epoch_rng(loader: Iterable) -> dict[str, Any]:
    """Every random state that decides an epoch's batches, taken before iterating the loader.

    The global torch RNG (DataLoader shuffling without a generator, worker seeds, torch-based
    augmentations), the loader's own generators, and Python's and NumPy's global RNGs (used by
    some augmentation libraries). Restoring them replays the interrupted epoch exactly.
    """
    np_state = np.random.get_state(legacy=True)
    version, py_state, gauss = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "loader": [g.get_state() for g in _loader_generators(loader)],
        "python": [version, list(py_state), gauss],
        "numpy": [
            str(np_state[0]),
            np_state[1].tolist(),
            int(np_state[2]),
            int(np_state[3]),
            float(np_state[4]),
        ],
    }


def restore_epoch_rng(loader: Iterable, states: dict[str, Any]) -> None:
    """Set the random states :func:`capture_epoch_rng` took (replays that epoch's order)."""
    torch.set_rng_state(states["torch"])
    for g, state in zip(_loader_generators(loader), states["loader"]):
        g.set_state(state)
    if states.get("python") is not None:
        version, py_state, gauss = states["python"]
        random.setstate((version, tuple(py_state), gauss))
    if states.get("numpy") is not None:
        name, keys, *rest = states["numpy"]
        np.random.set_state((name, np.asarray(keys, dtype=np.uint32), *rest))


def resume(
    path: Path, parts: TrainingParts, device: torch.device, config: FitConfig
) -> tuple[TrainState, dict[str, Any]]:
    """Load a training checkpoint into the masker, optimiser, scaler and generator.

    Warns when the options that shape the run (schedule, seed, length) differ from the
    interrupted run's: training then goes on, but not as the uninterrupted run would have.

    Returns:
        The loop state and the random states of the interrupted epoch's start.

    Raises:
        CheckpointError: Unreadable, tampered or incompatible checkpoints, with the folder.
    """
    ckpt = latest_checkpoint(path)
    meta, tensors = read_checkpoint(ckpt, device="cpu")
    if "training" not in meta or "training" not in tensors:
        raise CheckpointError(
            f"{ckpt} is a saved masker, not a training checkpoint.", argument="resume_from"
        )
    try:
        training, train_tensors = meta["training"], tensors["training"]
        parts.masker.load_state_dict(dict(tensors["masker"]), strict=True)
        parts.masker.to(device)
        _load_optimizer(parts.optimizer, train_tensors, training["optimizer"])
        if parts.scaler.is_enabled() and training.get("scaler"):
            parts.scaler.load_state_dict(training["scaler"])
        parts.generator.set_state(train_tensors["rng.generator"])
        rng_meta = training.get("epoch_rng") or {}
        epoch_rng = {
            "torch": train_tensors["rng.epoch_start"],
            "loader": [
                train_tensors[f"rng.epoch_start.loader.{j}"]
                for j in range(rng_meta.get("loaders", 0))
            ],
            "python": rng_meta.get("python"),
            "numpy": rng_meta.get("numpy"),
        }
        state = TrainState(**training["state"])
        saved = training.get("fit_config", {})
    except CheckpointError:
        raise
    except (KeyError, TypeError, ValueError, RuntimeError) as exc:
        raise CheckpointError(
            f"{ckpt} does not fit this masker and training setup "
            f"({type(exc).__name__}: {exc}). Hint: resume with the same classifier, encoder "
            "and options as the interrupted run.",
            argument="resume_from",
        ) from exc
    changed = [
        f"{k}={saved[k]!r} -> {getattr(config, k)!r}"
        for k in RUN_SHAPING_OPTIONS
        if k in saved and saved[k] != getattr(config, k)
    ]
    if changed:
        warnings.warn(
            f"resume_from: {ckpt} was written with other options ({', '.join(changed)}); the "
            "run goes on with the new ones, so it will not match an uninterrupted run.",
            UserWarning,
            stacklevel=5,
        )
    return state, epoch_rng


def save_training_checkpoint(
    root: Path,
    parts: TrainingParts,
    state: TrainState,
    epoch_states: dict[str, Any],
    config: FitConfig,
    extra: dict[str, Any],
) -> None:
    """Write the checkpoint of ``state`` into ``root`` and keep the newest ``keep_last``.

    Args:
        root: The ``checkpoint_dir``; the folder is named after the step.
        parts: The masker, optimiser, scaler and generator whose states are saved.
        state: The loop's counters and history.
        epoch_states: The random states of the current epoch's start.
        config: The fit's options (saved, and compared on resume).
        extra: More JSON metadata (the masker's config, to rebuild it).
    """
    opt_tensors, opt_meta = _optimizer_tensors(parts.optimizer)
    opt_tensors["rng.generator"] = parts.generator.get_state()
    opt_tensors["rng.epoch_start"] = epoch_states["torch"]
    for j, loader_state in enumerate(epoch_states["loader"]):
        opt_tensors[f"rng.epoch_start.loader.{j}"] = loader_state
    scaler = parts.scaler
    meta = {
        **extra,
        "training": {
            "state": asdict(state),
            "optimizer": opt_meta,
            "scaler": scaler.state_dict() if scaler.is_enabled() else None,
            "epoch_rng": {
                "loaders": len(epoch_states["loader"]),
                "python": epoch_states["python"],
                "numpy": epoch_states["numpy"],
            },
            "fit_config": asdict(config),
        },
    }
    tensors = {"masker": parts.masker.state_dict(), "training": opt_tensors}
    write_checkpoint(root / step_name(state.step), meta, tensors)
    prune_checkpoints(root, config.keep_last)
