"""The fit loop: a small trainer object whose methods are the phases of a fit.

:func:`fit_masker` checks its arguments, then a :class:`Trainer` plans the run (its length,
the optimiser, the random generator), resumes it from a checkpoint if asked, and runs it:
epochs of steps, each step one batched classifier call (:func:`~.step.step_terms`), the
history and the checkpoints at the end of each epoch. The classifier stays frozen and is
restored exactly afterwards, even after an exception.
"""

from __future__ import annotations

import collections
import contextlib
import itertools
import math
import os
import warnings
from collections.abc import Callable, Iterable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

from captum_realtime_mask._devices import check_device
from captum_realtime_mask._model_state import frozen_model, weights_in_format
from captum_realtime_mask.checkpoint import check_checkpoint_dir, clean_checkpoint_dir
from captum_realtime_mask.errors import InputError, TrainingError
from captum_realtime_mask.masker.blocks import FeatureFilter
from captum_realtime_mask.masker.model import MaskingModel
from captum_realtime_mask.objective import (
    ObjectiveConfig,
    resolve_classifier_output,
    resolve_objective,
)
from captum_realtime_mask.training.batches import (
    MAX_SINGLES_IN_A_ROW,
    check_loader,
    check_trainable_tensors,
    one_pixel_map,
    prepare_batch,
    single_image_error,
    single_value_batch_norm,
    trainable_batchnorm,
    training_dtypes,
)
from captum_realtime_mask.training.config import FitConfig, default_epochs
from captum_realtime_mask.training.diagnostics import RECENT_STEPS, warn_if_collapsed
from captum_realtime_mask.training.distributed import distributed, shard_loader
from captum_realtime_mask.training.state import (
    TrainingParts,
    TrainState,
    capture_epoch_rng,
    restore_epoch_rng,
    resume,
    save_training_checkpoint,
)
from captum_realtime_mask.training.step import autocast, evaluate_terms, step_terms

__all__ = ["Trainer", "fit_masker"]

#: ``stacklevel`` of a warning raised in a function that ``Trainer.run`` or ``__init__``
#: calls, so that it points at the user's call of ``RealTimeMaskAttribution.fit`` (that
#: function -> run -> fit_masker -> fit -> user); one more for each level deeper.
_USER = 5


def fit_masker(
    masker: MaskingModel,
    classifier: nn.Module,
    loader: Iterable,
    objective: ObjectiveConfig,
    config: FitConfig,
    device: torch.device | str,
    val_loader: Iterable | None = None,
    resume_from: str | os.PathLike[str] | None = None,
    save_extra: Callable[[], dict[str, Any]] | None = None,
) -> list[dict[str, float]]:
    """Train ``masker`` in place; the classifier is frozen and restored exactly afterwards.

    Training runs with gradients enabled whatever the caller's mode: inside
    ``torch.no_grad()`` or ``torch.inference_mode()`` too (batches made in inference mode are
    copied into ordinary tensors; a masker or classifier *created* in inference mode cannot be
    trained and raises :class:`InputError`). Images of another floating dtype than the
    masker's (float64, float16, bfloat16) are cast to it; a classifier of another dtype gets
    its inputs cast to its own dtype (also as the masker's encoder, whose maps come back in
    the masker's dtype).

    Args:
        masker: The masking model (moved to ``device``).
        classifier: The black box. Its parameters, buffers, modes, ``requires_grad`` flags
            and device are the same after the call as before, even after an exception.
        loader: Iterable of ``(images, labels[, ...])`` batches. A one-shot iterator that runs
            out before ``epochs`` or ``max_steps`` is reached ends training with a warning
            (the history holds the epochs trained); one that yields nothing raises.
        objective: Loss weights and evidence removal.
        config: Loop options.
        device: Where to train.
        val_loader: Optional loader whose mean loss terms are added to each epoch's history.
            Its batches are checked like the training batches.
        resume_from: A checkpoint directory (or a ``checkpoint_dir``) to continue from.
        save_extra: Returns extra JSON metadata stored in checkpoints (the masker config).

    Returns:
        The per-epoch history: one dict of mean loss terms per epoch.

    Raises:
        InputError: Bad loaders, batches, device, ``checkpoint_dir`` or dtypes; checked before
            the first step where they can be (a batch when it arrives).
        TrainingError: The loss or gradient stayed non-finite for ``nonfinite_patience`` steps.
    """
    device = check_device(device)
    check_loader(loader, "loader")
    if val_loader is not None:
        check_loader(val_loader, "val_loader")
    if config.checkpoint_dir is not None:
        check_checkpoint_dir(config.checkpoint_dir)
    check_trainable_tensors(masker, classifier)
    # Training needs autograd whatever the caller's mode (no_grad, inference_mode).
    with torch.inference_mode(False), torch.enable_grad():
        trainer = Trainer(masker, classifier, loader, objective, config, device, save_extra)
        if resume_from is not None:
            trainer.resume(Path(resume_from))
        return trainer.run(val_loader)


class Trainer:
    """One fit of a masker against a frozen classifier, phase by phase.

    Construction plans the run (sharding under ``torchrun``, the run's length, dtypes, the
    optimiser and the generator); :meth:`resume` loads a checkpoint; :meth:`run` trains. The
    loop's counters live in :attr:`state` (a :class:`~.state.TrainState`), which is what a
    checkpoint saves.
    """

    def __init__(
        self,
        masker: MaskingModel,
        classifier: nn.Module,
        loader: Iterable,
        objective: ObjectiveConfig,
        config: FitConfig,
        device: torch.device,
        save_extra: Callable[[], dict[str, Any]] | None = None,
    ) -> None:
        self.is_distributed, self.rank, _ = distributed()
        self.loader = shard_loader(loader, config.seed) if self.is_distributed else loader
        self.masker, self.classifier = masker, classifier
        self.objective = resolve_objective(objective, masker.config.num_classes)
        self.config, self.device, self.save_extra = config, device, save_extra
        self.epochs = config.epochs or (None if config.max_steps else default_epochs(loader))
        self.total = self._run_length()
        self.classifier_device = _check_devices(classifier, device)
        self.dtype, self.classifier_dtype = training_dtypes(masker, classifier)
        if self.total is None:
            _warn_unknown_length(config)
        masker.to(device)
        groups = _param_groups(masker, config)
        self.params = [p for group in groups for p in group["params"]]
        optimizer = torch.optim.Adam(groups, lr=config.lr, weight_decay=config.weight_decay)
        self.use_amp = config.amp and device.type == "cuda"
        bf16 = self.use_amp and torch.cuda.is_bf16_supported()
        scaler = torch.amp.GradScaler("cuda", enabled=self.use_amp and not bf16)
        generator = torch.Generator(device).manual_seed(config.seed + self.rank)
        self.parts = TrainingParts(masker, optimizer, scaler, generator)
        self.state = TrainState()
        self.epoch_rng: dict[str, Any] | None = None  # the interrupted epoch's, when resuming
        self._single = {"warned": False, "in_a_row": 0}
        # The last steps' mask areas, which the end-of-fit diagnostics judge.
        self.recent: collections.deque[dict[str, float]] = collections.deque(maxlen=RECENT_STEPS)
        root = config.checkpoint_dir
        if root is not None and self.rank == 0 and Path(root).is_dir():
            clean_checkpoint_dir(Path(root))

    def _run_length(self) -> int | None:
        """Optimiser steps in the run: ``max_steps``, or the loader's length times epochs."""
        try:
            per_epoch = len(self.loader)  # type: ignore[arg-type]
        except TypeError:
            per_epoch = None
        if per_epoch == 0:
            raise InputError(
                "the training loader is empty (len 0). Hint: check the dataset.",
                argument="loader",
            )
        if self.config.max_steps:
            return self.config.max_steps
        return per_epoch * self.epochs if per_epoch and self.epochs else None

    # ------------------------------------------------------------------------------ phases
    def resume(self, path: Path) -> None:
        """Continue the run a training checkpoint (or a ``checkpoint_dir``) holds."""
        self.state, self.epoch_rng = resume(path, self.parts, self.device, self.config)

    def run(self, val_loader: Iterable | None = None) -> list[dict[str, float]]:
        """Train until ``epochs`` or ``max_steps``; returns the per-epoch history."""
        bar = tqdm(
            total=self.total,
            initial=self.state.step,
            disable=not self.config.progress or self.rank != 0,
            desc="fit masker",
            dynamic_ncols=True,
        )
        first_epoch = self.state.epoch
        try:
            with contextlib.ExitStack() as stack:
                model = self._enter_training(stack)
                epoch = self.state.epoch
                while self._more_epochs(epoch):
                    seen = self._epoch(model, epoch, first_epoch, bar)
                    if not seen:
                        break
                    self._end_epoch(epoch, val_loader)
                    epoch += 1
            warn_if_collapsed(list(self.recent), self.state.step, stacklevel=_USER - 1)
        finally:
            bar.close()
            self.classifier.to(self.classifier_device)
            self.masker.eval()
        return self.state.history

    def _enter_training(self, stack: contextlib.ExitStack) -> nn.Module:
        """Freeze and move the classifier, set memory formats, wrap in DDP; the step's model."""
        stack.enter_context(frozen_model(self.classifier))
        self.classifier.to(self.device)
        if self.config.channels_last:
            stack.enter_context(
                weights_in_format([self.classifier, self.masker], torch.channels_last)
            )
        model: nn.Module = self.masker
        if self.is_distributed:  # wrapped after the layout change: DDP's buckets follow strides
            from torch.nn.parallel import DistributedDataParallel

            ids = [self.device.index] if self.device.type == "cuda" else None
            model = DistributedDataParallel(self.masker, device_ids=ids)
        self.masker.train()
        self.single_fails = trainable_batchnorm(self.masker)
        return model

    def _more_epochs(self, epoch: int) -> bool:
        state, total = self.state, self.total
        return (self.epochs is None or epoch < self.epochs) and (
            total is None or state.step < total
        )

    def _epoch(self, model: nn.Module, epoch: int, first_epoch: int, bar: tqdm) -> bool:
        """Train one epoch (or the rest of an interrupted one); False when the loader ran dry."""
        state = self.state
        resuming = self.epoch_rng is not None
        if resuming:  # replay the interrupted epoch's order; its first batches are skipped
            restore_epoch_rng(self.loader, self.epoch_rng)
        else:
            self.epoch_rng = capture_epoch_rng(self.loader)
            state.batch_in_epoch, state.epoch_sums, state.epoch_count = 0, {}, 0
            state.epoch_counts = {}
        sampler = getattr(self.loader, "sampler", None)
        if hasattr(sampler, "set_epoch"):
            sampler.set_epoch(epoch)
        seen = skipped = 0
        x = None
        for i, batch in _batches(self.loader, state.batch_in_epoch if resuming else 0):
            seen += 1
            x, y = prepare_batch(
                batch, self.masker, self.device, self.dtype, "loader", self.config.channels_last
            )
            if "auto" in (self.objective.classifier_output, self.objective.fake_max_prob):
                self._resolve_auto_fields(y)  # once, on the first batch
            if not self._usable(x):
                skipped += 1
                state.batch_in_epoch = i + 1
                continue
            self._step(model, x, y, i, bar)
            if self.total is not None and state.step >= self.total:
                break
        if not seen and not resuming:
            self._ran_dry(epoch, first_epoch)
            return False
        if seen and seen == skipped:
            raise single_image_error(x, "every batch of the epoch had 1 image")
        return True

    def _resolve_auto_fields(self, labels: torch.Tensor) -> None:
        """Fix the ``"auto"`` fields from the labels for the whole run (the masker records them)."""
        resolved = resolve_classifier_output(self.objective, labels)  # area fixed in __init__
        self.objective.classifier_output = resolved.classifier_output
        self.objective.fake_max_prob = resolved.fake_max_prob

    def _usable(self, x: torch.Tensor) -> bool:
        """False for a single image whose 1x1 map trainable BatchNorm cannot take (skipped)."""
        single = self._single
        if not (self.single_fails and len(x) == 1 and one_pixel_map(x, self.masker)):
            single["in_a_row"] = 0
            return True
        if getattr(self.loader, "batch_size", None) == 1:
            raise single_image_error(x, "the DataLoader's batch_size is 1")
        if not single["warned"]:
            single["warned"] = True
            warnings.warn(
                f"loader: skipped a batch of 1 image of size {tuple(x.shape[-2:])}: the "
                "masker's encoder trains BatchNorm layers, which cannot normalise a single "
                "1x1 feature map. Further such batches are skipped without a warning, and "
                f"{MAX_SINGLES_IN_A_ROW} in a row raise an error. Hint: "
                "DataLoader(..., drop_last=True) avoids the short last batch.",
                UserWarning,
                stacklevel=_USER + 1,
            )
        single["in_a_row"] += 1
        if single["in_a_row"] >= MAX_SINGLES_IN_A_ROW:
            raise single_image_error(x, f"{single['in_a_row']} batches in a row had 1 image")
        return False

    def _step(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, i: int, bar: tqdm):
        """One optimiser step on a batch (skipped when the loss or gradient is non-finite)."""
        state, config, opt = self.state, self.config, self.parts.optimizer
        factor = _lr_factor(config.lr_schedule, state.step, self.total)
        for group in opt.param_groups:
            group["lr"] = group["base_lr"] * factor
        with autocast(self.device, self.use_amp), single_value_batch_norm(x):
            terms, real = step_terms(
                model,
                self.classifier,
                x,
                y,
                self.masker.config.num_classes,
                self._step_objective(),
                self.parts.generator,
                classifier_dtype=self.classifier_dtype,
            )
        opt.zero_grad(set_to_none=True)
        state.batch_in_epoch = i + 1
        if not torch.isfinite(terms.total):
            return self._skip_nonfinite("loss")
        if not self._backward(terms.total):
            return self._skip_nonfinite("gradient")
        state.nonfinite = 0
        self.parts.scaler.step(opt)
        self.parts.scaler.update()
        state.step += 1
        means = terms.means(real)
        for k, v in means.items():
            state.epoch_sums[k] = state.epoch_sums.get(k, 0.0) + v
            state.epoch_counts[k] = state.epoch_counts.get(k, 0) + 1
        state.epoch_count += 1
        self.recent.append(means)
        bar.update(1)
        bar.set_postfix({k: f"{v:.3f}" for k, v in means.items()}, refresh=False)
        if config.checkpoint_every and state.step % config.checkpoint_every == 0:
            self._save(self.epoch_rng)

    def _step_objective(self) -> ObjectiveConfig:
        """The objective of this step: the area weight ramps up over ``area_warmup``."""
        warmup, total = self.config.area_warmup, self.total
        if not (warmup > 0 and total):
            return self.objective
        ramp = min(1.0, (self.state.step + 1) / (warmup * total))
        return replace(self.objective, area_weight=self.objective.area_weight * ramp)

    def _backward(self, loss: torch.Tensor) -> bool:
        """Gradients of ``loss``, clipped; False when they are non-finite (step skipped)."""
        scaler, opt, clip = self.parts.scaler, self.parts.optimizer, self.config.grad_clip
        scaler.scale(loss).backward()
        if scaler.is_enabled():
            # fp16 loss scaling: the scaler itself skips steps with Inf gradients.
            if clip is not None:
                scaler.unscale_(opt)
                torch.nn.utils.clip_grad_norm_(self.params, clip)
            return True
        norm = torch.nn.utils.clip_grad_norm_(self.params, clip if clip is not None else math.inf)
        if not torch.isfinite(norm):
            opt.zero_grad(set_to_none=True)
            return False
        return True

    def _skip_nonfinite(self, what: str) -> None:
        state, patience = self.state, self.config.nonfinite_patience
        state.nonfinite += 1
        warnings.warn(
            f"non-finite {what} at step {state.step}; step skipped "
            f"({state.nonfinite}/{patience} in a row).",
            RuntimeWarning,
            stacklevel=_USER + 2,
        )
        if state.nonfinite >= patience:
            raise TrainingError(
                f"the {what} was non-finite (NaN or Inf) for {state.nonfinite} steps in a row "
                f"(nonfinite_patience={patience}); the masker keeps its weights "
                f"from step {state.step}. Hint: check that the classifier returns finite logits "
                "for masked images, lower lr, or set grad_clip."
            )

    def _ran_dry(self, epoch: int, first_epoch: int) -> None:
        """An epoch without batches: an error in the first, a warning later (a used iterator)."""
        if epoch == first_epoch:
            raise InputError(
                f"the training loader yielded no batches in epoch {epoch}. Hint: check the "
                "dataset.",
                argument="loader",
            )
        config = self.config
        asked = f"max_steps={config.max_steps}" if config.max_steps else f"epochs={self.epochs}"
        warnings.warn(
            f"loader: the training loader yielded no batches in epoch {epoch}, so training "
            f"stopped after {self.state.step} steps, before {asked}; the history holds the "
            f"{len(self.state.history)} epoch(s) trained. A generator or iterator can be "
            "consumed only once. Hint: pass a re-iterable loader (a list or a DataLoader) for "
            "several epochs.",
            UserWarning,
            stacklevel=_USER + 1,
        )

    def _end_epoch(self, epoch: int, val_loader: Iterable | None) -> None:
        """The epoch's record (with validation terms) in the history, then a checkpoint."""
        state = self.state
        self.epoch_rng = None
        if state.epoch_count:
            record: dict[str, float] = {"epoch": epoch, "steps": state.step}
            counts, steps = state.epoch_counts, state.epoch_count
            record.update({k: v / counts.get(k, steps) for k, v in state.epoch_sums.items()})
            if val_loader is not None:
                record.update(
                    evaluate_terms(
                        self.masker,
                        self.classifier,
                        val_loader,
                        self.objective,
                        self.device,
                        self.config.seed,
                        name="val_loader",
                    )
                )
                self.masker.train()
            state.history.append(record)
        state.epoch = epoch + 1
        state.batch_in_epoch, state.epoch_sums, state.epoch_count = 0, {}, 0
        state.epoch_counts = {}
        self._save(capture_epoch_rng(self.loader))

    def _save(self, epoch_states: dict[str, Any] | None) -> None:
        """A training checkpoint of the current step (rank 0, with a ``checkpoint_dir``)."""
        if self.config.checkpoint_dir is None or self.rank != 0 or epoch_states is None:
            return
        extra = self.save_extra() if self.save_extra else {}
        root = Path(self.config.checkpoint_dir)
        save_training_checkpoint(root, self.parts, self.state, epoch_states, self.config, extra)


def _check_devices(classifier: nn.Module, device: torch.device) -> torch.device:
    """The classifier's device (restored after the fit); the meta device cannot train."""
    param_device = next(
        itertools.chain(classifier.parameters(), classifier.buffers()), torch.empty(0)
    ).device
    if param_device.type == "meta" or device.type == "meta":
        raise InputError(
            "cannot train on the meta device (shapes only, no data); the classifier "
            f"is on {param_device} and training was asked on {device}. Hint: load the "
            "classifier's weights (e.g. model.to_empty(device='cpu') and load_state_dict) first.",
            argument="device",
        )
    return param_device


def _warn_unknown_length(config: FitConfig) -> None:
    """Without a run length the cosine schedule and the area warm-up cannot run: say so."""
    lost = []
    if config.lr_schedule == "cosine":
        lost.append("lr_schedule='cosine' runs as 'constant'")
    if config.area_warmup > 0:
        lost.append(f"area_warmup={config.area_warmup} is off (full area weight from step 1)")
    if lost:
        warnings.warn(
            "loader: it has no length and max_steps is None, so the length of the run is "
            f"unknown and {' and '.join(lost)}. Hint: pass max_steps=<number of steps> "
            "(or a loader with a length); area_warmup=0 turns the warm-up off explicitly.",
            UserWarning,
            stacklevel=_USER,
        )


def _param_groups(masker: nn.Module, config: FitConfig) -> list[dict[str, Any]]:
    """Trainable parameters; the class embeddings get ``lr * embedding_lr_scale``."""
    embedding = {id(m.embedding.weight) for m in masker.modules() if isinstance(m, FeatureFilter)}
    embeddings, rest = [], []
    for param in masker.parameters():
        if param.requires_grad:
            (embeddings if id(param) in embedding else rest).append(param)
    groups = [{"params": rest, "lr": config.lr, "base_lr": config.lr}]
    if embeddings:
        lr = config.lr * config.embedding_lr_scale
        groups.append({"params": embeddings, "lr": lr, "base_lr": lr})
    return groups


def _lr_factor(schedule: str, step: int, total: int | None) -> float:
    """The learning rate's factor at ``step``: 1, or the cosine decay to 0 over ``total``."""
    if schedule == "cosine" and total:
        return 0.5 * (1 + math.cos(math.pi * min(step, total) / total))
    return 1.0


def _batches(loader: Iterable, skip: int) -> Iterator[tuple[int, Any]]:
    """``enumerate(loader)`` without its first ``skip`` batches (a resumed epoch's)."""
    for i, batch in enumerate(loader):
        if i >= skip:
            yield i, batch
