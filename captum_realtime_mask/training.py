"""The fit loop: fake selectors, evidence removal, one batched classifier call, checkpoints.

:func:`fit_masker` trains a :class:`~captum_realtime_mask.masker.MaskingModel` against a frozen
classifier. It is what :meth:`RealTimeMaskAttribution.fit` runs; use it directly only to drive
training yourself.
"""

from __future__ import annotations

import contextlib
import itertools
import math
import numbers
import os
import random
import re
import shutil
import warnings
from collections.abc import Callable, Iterable, Iterator
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from captum_realtime_mask._captum_compat import check_logits
from captum_realtime_mask._checks import describe
from captum_realtime_mask._devices import check_device
from captum_realtime_mask._model_state import floating_dtype, frozen_model, weights_in_format
from captum_realtime_mask.checkpoint import (
    CONFIG_NAME,
    file_in_the_way,
    previous_version,
    read_checkpoint,
    write_checkpoint,
)
from captum_realtime_mask.errors import CheckpointError, InputError, TrainingError
from captum_realtime_mask.masker.blocks import FeatureFilter
from captum_realtime_mask.masker.model import MaskingModel
from captum_realtime_mask.objective import (
    LossTerms,
    ObjectiveConfig,
    alternative_images,
    destroy_alternative,
    objective_loss,
    remove_evidence,
)

__all__ = ["FitConfig", "fit_masker", "unpack_batch"]

TERMS = ("loss", "tv", "area", "preserve", "destroy", "gate")


@dataclass
class FitConfig:
    """Options of :func:`fit_masker` (all have working defaults).

    Every option is checked on construction and a wrong one raises :class:`InputError` naming
    it: counts must be ints (a bool is not a count), rates and weights real numbers (NumPy
    scalars are converted to Python ones).

    Attributes:
        epochs: Passes over the loader. None with ``max_steps`` None means 1.
        max_steps: Stop after this many optimiser steps (across epochs).
        lr: Adam learning rate.
        weight_decay: Adam weight decay.
        lr_schedule: ``"constant"`` or ``"cosine"`` (decays to 0 over the run; needs a loader
            with a length or ``max_steps``, else it runs constant with a warning).
        grad_clip: Clip the gradient norm to this value (None: no clipping).
        amp: Mixed precision on CUDA (bf16 where supported, else fp16 with loss scaling).
            Ignored on CPU.
        seed: Seed of the training randomness (fake selectors, alternative images); an int.
        progress: Show a tqdm progress bar with the loss terms (rank 0 only).
        checkpoint_dir: Write training checkpoints here, one folder per checkpoint named
            after its step (``step-000000123``); a str or ``os.PathLike``, stored as a str. It
            must not be a file; this is checked before the first step.
        checkpoint_every: Steps between checkpoints (also one at the end of every epoch).
        keep_last: Number of step checkpoints kept (at least 1).
        area_warmup: Fraction of the run (of ``max_steps``, or of the loader's length times
            ``epochs``) over which the area weight ramps linearly from 0 to its value. Not in
            the paper: without it the area term can win before the masker has found the
            object, and the masker collapses to an empty mask. 0 turns it off. Without a
            loader length or ``max_steps`` the run's length is unknown and it is off (with a
            warning).
        nonfinite_patience: Consecutive non-finite losses or gradients tolerated (each step
            skipped with a warning) before training stops with :class:`TrainingError`.
        embedding_lr_scale: The class embeddings of the feature filters learn at ``lr`` times
            this. Not in the paper. The gate logit is a dot product scaled by
            ``1/sqrt(channels)``, so at ``lr`` it moves slowly and a short fit leaves absent
            and present classes with similar gates (the masks then ignore the class).
        channels_last: Train in channels-last (NHWC) memory format: the batches, the masker's
            4-D weights and the classifier's are stored channels-last during the fit, and
            both models get their own memory format back afterwards (the classifier exactly
            as it was). It changes only floating-point rounding. On 2 CPU threads a step of
            a ResNet-18 masker at 64 px took 17% less time (see the docs' performance page);
            on GPUs it is the usual companion of ``amp``.
    """

    epochs: int | None = None
    max_steps: int | None = None
    lr: float = 1e-3
    weight_decay: float = 0.0
    lr_schedule: str = "constant"
    grad_clip: float | None = None
    amp: bool = True
    seed: int = 0
    progress: bool = True
    checkpoint_dir: str | None = None
    checkpoint_every: int | None = None
    keep_last: int = 3
    area_warmup: float = 0.2
    nonfinite_patience: int = 10
    embedding_lr_scale: float = 10.0
    channels_last: bool = False
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name in ("epochs", "max_steps", "checkpoint_every"):
            value = getattr(self, name)
            if value is not None:
                setattr(self, name, _positive_int(name, value, "a positive int or None"))
        for name in ("keep_last", "nonfinite_patience"):
            setattr(self, name, _positive_int(name, getattr(self, name), "a positive int"))
        if isinstance(self.seed, bool) or not isinstance(self.seed, numbers.Integral):
            raise InputError(
                "expected an int (the seed of the training randomness), got "
                f"{describe(self.seed)}. Hint: pass e.g. seed=0, or leave it out to use the "
                "seed given to RealTimeMaskAttribution.",
                argument="seed",
            )
        self.seed = int(self.seed)
        self.lr = _real("lr", self.lr, "1e-3")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise InputError(f"expected a positive learning rate, got {self.lr!r}.", argument="lr")
        if self.grad_clip is not None:
            self.grad_clip = _real("grad_clip", self.grad_clip, "1.0")
            if not self.grad_clip > 0:
                raise InputError(
                    f"expected a positive max gradient norm or None, got {self.grad_clip!r}.",
                    argument="grad_clip",
                )
        self.embedding_lr_scale = _real("embedding_lr_scale", self.embedding_lr_scale, "10.0")
        if not (self.embedding_lr_scale > 0 and math.isfinite(self.embedding_lr_scale)):
            raise InputError(
                f"expected a positive factor, got {self.embedding_lr_scale!r}.",
                argument="embedding_lr_scale",
            )
        self.weight_decay = _real("weight_decay", self.weight_decay, "1e-4")
        if not (self.weight_decay >= 0 and math.isfinite(self.weight_decay)):
            raise InputError(f"expected >= 0, got {self.weight_decay!r}.", argument="weight_decay")
        self.area_warmup = _real("area_warmup", self.area_warmup, "0.2")
        if not 0 <= self.area_warmup <= 1:
            raise InputError(
                f"expected a fraction of the run in [0, 1], got {self.area_warmup!r}.",
                argument="area_warmup",
            )
        for name in ("amp", "progress", "channels_last"):
            if not isinstance(getattr(self, name), bool):
                raise InputError(
                    f"expected True or False, got {getattr(self, name)!r}.", argument=name
                )
        if not isinstance(self.lr_schedule, str) or self.lr_schedule not in ("constant", "cosine"):
            raise InputError(
                f"expected 'constant' or 'cosine', got {self.lr_schedule!r}.",
                argument="lr_schedule",
            )
        if self.checkpoint_dir is not None:
            path = self.checkpoint_dir
            if not isinstance(path, str | os.PathLike) or not isinstance(os.fspath(path), str):
                raise InputError(
                    "expected a folder path (a str or os.PathLike) or None, got "
                    f"{describe(path)}. Hint: pass e.g. checkpoint_dir='runs/ckpt'.",
                    argument="checkpoint_dir",
                )
            self.checkpoint_dir = os.fspath(path)  # stored as JSON in the checkpoints
        if not isinstance(self.extra, dict):
            raise InputError(f"expected a dict, got {describe(self.extra)}.", argument="extra")


def _positive_int(name: str, value: Any, expected: str) -> int:
    """``value`` as an int >= 1; bools and other types raise :class:`InputError`."""
    if isinstance(value, bool):
        raise InputError(
            f"expected {expected}, got the bool {value!r}. Hint: pass a number, "
            f"e.g. {name}=1 (a bool is not accepted as a count).",
            argument=name,
        )
    if not isinstance(value, numbers.Integral) or value < 1:
        raise InputError(f"expected {expected}, got {value!r}.", argument=name)
    return int(value)


def _real(name: str, value: Any, example: str) -> float:
    """``value`` as a float; bools, strings and other types raise :class:`InputError`."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise InputError(
            f"expected a number, got {describe(value)}. Hint: pass a float, e.g. {name}={example}.",
            argument=name,
        )
    return float(value)


def unpack_batch(batch: Any, name: str = "loader") -> tuple[torch.Tensor, torch.Tensor]:
    """Images and labels from a batch ``(images, labels, ...)`` or a dict with those keys.

    Args:
        batch: One batch of a loader.
        name: The loader's argument name, for error messages.

    Raises:
        InputError: The batch has no images and labels.
    """
    if isinstance(batch, dict):
        for ik, lk in (("images", "labels"), ("image", "label"), ("inputs", "targets")):
            if ik in batch and lk in batch:
                return batch[ik], batch[lk]
    elif isinstance(batch, (list, tuple)) and len(batch) >= 2:
        return batch[0], batch[1]
    raise InputError(
        "each batch must be (images, labels[, ...]) or a dict with 'images' and "
        f"'labels'; got {type(batch).__name__}.",
        argument=name,
    )


def _check_batch(
    x: Any, y: Any, num_classes: int, in_chans: int, stride: int, name: str = "loader"
) -> None:
    if not isinstance(x, torch.Tensor) or x.dim() != 4:
        shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        hint = ""
        if isinstance(x, torch.Tensor) and x.dim() == 3:
            hint = (
                " That looks like a single image: the loader must yield batches. Hint: wrap a "
                "Dataset in torch.utils.data.DataLoader(dataset, batch_size=32)."
            )
        raise InputError(
            f"images must be a 4-D tensor (N, C, H, W); got {shape}.{hint}", argument=name
        )
    if not x.is_floating_point():
        raise InputError(
            f"images must be a floating-point tensor; got dtype {x.dtype}. Hint: "
            "convert and normalise them as the classifier expects, e.g. x.float() / 255.",
            argument=name,
        )
    if x.shape[0] == 0 or x.shape[-2] == 0 or x.shape[-1] == 0:
        raise InputError(f"got an empty image batch of shape {tuple(x.shape)}.", argument=name)
    if x.shape[1] != in_chans:
        raise InputError(
            f"images have {x.shape[1]} channels but the encoder takes {in_chans}.", argument=name
        )
    if x.shape[-2] % stride or x.shape[-1] % stride:
        raise InputError(
            f"image size {tuple(x.shape[-2:])} is not divisible by the encoder's "
            f"stride {stride}. Hint: resize or pad the images to a multiple of {stride}.",
            argument=name,
        )
    if not isinstance(y, torch.Tensor) or y.dim() != 1 or len(y) != len(x):
        raise InputError(
            f"labels must be a 1-D tensor of length {len(x)} (class indices); got "
            f"{tuple(y.shape) if isinstance(y, torch.Tensor) else type(y).__name__}.",
            argument=name,
        )
    if y.dtype.is_floating_point or y.dtype.is_complex or y.dtype == torch.bool:
        raise InputError(
            f"labels must be integer class indices; got dtype {y.dtype}. Hint: labels.long().",
            argument=name,
        )
    if int(y.min()) < 0 or int(y.max()) >= num_classes:
        raise InputError(
            f"labels must be integer classes in [0, {num_classes}) (num_classes="
            f"{num_classes}); got range [{y.min().item()}, {y.max().item()}].",
            argument=name,
        )


def _check_finite(x: torch.Tensor, name: str = "loader") -> None:
    """Images with NaN or Inf would only show up later as a non-finite loss."""
    finite = torch.isfinite(x)
    if not finite.all():
        raise InputError(
            f"images must be finite; got {int((~finite).sum())} NaN or Inf values in "
            f"a batch of shape {tuple(x.shape)}. Hint: check the dataset's preprocessing.",
            argument=name,
        )


def _check_loader(loader: Any, name: str) -> None:
    """Reject what cannot be a loader of batches before anything trains."""
    from torch.utils.data import Dataset, IterableDataset

    wrap = "Hint: wrap it, e.g. torch.utils.data.DataLoader(dataset, batch_size=32)."
    if loader is None:
        raise InputError(
            "expected an iterable of (images, labels) batches, e.g. a "
            "torch.utils.data.DataLoader or a list of (images, labels) tuples; got None.",
            argument=name,
        )
    if isinstance(loader, Dataset) and not isinstance(loader, IterableDataset):
        raise InputError(
            f"expected batches, got the dataset {type(loader).__name__}, which holds "
            f"single samples. {wrap}",
            argument=name,
        )
    if isinstance(loader, str | bytes | os.PathLike):
        raise InputError(
            "expected an iterable of (images, labels) batches, got the path "
            f"{loader!r}. Hint: build a Dataset from it (e.g. torchvision.datasets."
            "ImageFolder) and pass torch.utils.data.DataLoader(dataset, batch_size=32).",
            argument=name,
        )
    if isinstance(loader, torch.Tensor):
        raise InputError(
            "expected an iterable of (images, labels) batches, got a tensor of shape "
            f"{tuple(loader.shape)}. Hint: pass [(images, labels)] for a single batch.",
            argument=name,
        )
    if not (isinstance(loader, Iterable) or hasattr(loader, "__getitem__")):
        raise InputError(
            "expected an iterable of (images, labels) batches, got "
            f"{type(loader).__name__}. Hint: pass a torch.utils.data.DataLoader or a list of "
            "(images, labels) tuples.",
            argument=name,
        )


def _check_checkpoint_dir(path: str) -> None:
    """``checkpoint_dir`` must be a folder or creatable as one, before any step is trained."""
    target = Path(path)
    blocking = file_in_the_way(target)
    if blocking == target:
        raise InputError(
            f"{path!r} exists but is a file, not a folder. Hint: pass a folder "
            "path (it is created if missing), or move the file away.",
            argument="checkpoint_dir",
        )
    if blocking is not None:
        raise InputError(
            f"{path!r} cannot be created because {str(blocking)!r} is a "
            "file, not a folder. Hint: pass a path under an existing folder.",
            argument="checkpoint_dir",
        )


def _check_trainable_tensors(masker: nn.Module, classifier: nn.Module) -> None:
    """Tensors made inside ``torch.inference_mode()`` cannot take part in training."""
    problems = (
        (
            classifier,
            "forward_func: the classifier's weights were created inside "
            "torch.inference_mode(), so no gradient can flow through it to the masker. "
            "Hint: create or load the classifier outside torch.inference_mode() (fit() "
            "itself may run inside it).",
        ),
        (
            masker,
            "masker: its weights were created inside torch.inference_mode() (the "
            "RealTimeMaskAttribution was built there), and inference tensors cannot be "
            "trained. Hint: build the RealTimeMaskAttribution outside "
            "torch.inference_mode(); fit() itself may then run inside it.",
        ),
    )
    for module, message in problems:
        if any(t.is_inference() for t in itertools.chain(module.parameters(), module.buffers())):
            raise InputError(message)


def _training_dtypes(
    masker: MaskingModel, classifier: nn.Module
) -> tuple[torch.dtype, torch.dtype | None]:
    """The masker's dtype (images are cast to it) and the classifier's (its inputs are).

    Raises:
        InputError: The masker's own weights mix dtypes (a custom encoder module of another
            precision than the decoder's).
    """
    own = masker.filter.embedding.weight.dtype
    classifier_dtype = floating_dtype(classifier)
    # The classifier's backbone as encoder (held outside the masker's module tree) gets the
    # images in its own dtype and returns its maps in the masker's (ClassifierBackbone).
    for pname, t in itertools.chain(masker.named_parameters(), masker.named_buffers()):
        if not t.is_floating_point() or t.dtype == own:
            continue
        raise InputError(
            f"the masker's weights mix dtypes ({pname} is {t.dtype}, the class "
            f"embedding {own}). Hint: convert the encoder module with .float() before building "
            "the RealTimeMaskAttribution.",
            argument="encoder",
        )
    return own, classifier_dtype


def _trainable_batchnorm(masker: MaskingModel) -> bool:
    """Whether the masker's encoder has BatchNorm layers that train (need 2+ values each)."""
    return any(
        isinstance(m, nn.modules.batchnorm._BatchNorm) and m.training
        for m in masker.encoder.modules()
    )


@dataclass
class _State:
    """What a checkpoint must hold to resume exactly."""

    step: int = 0
    epoch: int = 0
    batch_in_epoch: int = 0
    history: list[dict[str, float]] = field(default_factory=list)
    epoch_sums: dict[str, float] = field(default_factory=dict)
    epoch_count: int = 0
    nonfinite: int = 0


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
    state: dict[int, dict[str, Any]] = {}
    for name, value in tensors.items():
        if name.startswith("opt."):
            _, pid, key = name.split(".", 2)
            state.setdefault(int(pid), {})[key] = value
    for name, value in meta["scalars"].items():
        pid, key = name.split(".", 1)
        state.setdefault(int(pid), {})[key] = value
    opt.load_state_dict({"state": state, "param_groups": meta["param_groups"]})


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


#: FitConfig fields that change what a run learns (a resumed run warns when they differ).
RUN_SHAPING_OPTIONS = (
    "epochs",
    "max_steps",
    "lr",
    "weight_decay",
    "lr_schedule",
    "grad_clip",
    "seed",
    "area_warmup",
    "embedding_lr_scale",
)
_STEP = re.compile(r"step-\d+")
_STALE = re.compile(r"\.(step-\d+)\.(.+)")


def _step_dirs(root: Path) -> list[Path]:
    """The complete ``step-*`` checkpoints in ``root``, oldest first.

    A step whose folder was being replaced when the process died counts too: its previous
    version is parked in ``.step-<n>.old``, which :func:`read_checkpoint` reads.
    """
    steps = set()
    for p in root.glob("step-*"):
        if _STEP.fullmatch(p.name) and (p / CONFIG_NAME).is_file():
            steps.add(p)
    for p in root.glob(".step-*.old"):
        target = root / p.name[1:-4]
        if _STEP.fullmatch(target.name) and (previous_version(target) / CONFIG_NAME).is_file():
            steps.add(target)
    return sorted(steps)


def _clean_checkpoint_dir(root: Path) -> None:
    """Remove what interrupted saves and prunes left (hidden ``.step-*`` folders).

    A parked previous version whose replacement never arrived is moved back in place.
    """
    for p in sorted(root.glob(".step-*")):
        m = _STALE.fullmatch(p.name)
        if not m or not p.is_dir():
            continue
        target = root / m.group(1)
        parked = m.group(2) == "old" and (p / CONFIG_NAME).is_file()
        if parked and not (target / CONFIG_NAME).is_file():
            shutil.rmtree(target, ignore_errors=True)
            os.replace(p, target)
        else:
            shutil.rmtree(p, ignore_errors=True)


def _remove_checkpoint(path: Path) -> None:
    """Delete a checkpoint folder so that no half-deleted ``step-*`` folder can be seen."""
    trash = path.with_name(f".{path.name}.trash")
    shutil.rmtree(trash, ignore_errors=True)
    if path.exists():
        os.replace(path, trash)
    shutil.rmtree(trash, ignore_errors=True)
    shutil.rmtree(previous_version(path), ignore_errors=True)


def _latest_checkpoint(path: Path) -> Path:
    """``path`` itself if it is a checkpoint, else its newest ``step-*`` subdirectory."""
    if (path / CONFIG_NAME).is_file() or (previous_version(path) / CONFIG_NAME).is_file():
        return path
    steps = _step_dirs(path)
    if not steps:
        raise CheckpointError(
            f"resume_from: {str(path)!r} holds no checkpoint (no config.json and no step-* "
            "folders). Hint: pass the checkpoint_dir of the interrupted run."
        )
    return steps[-1]


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


def _epoch_rng(loader: Iterable) -> dict[str, Any]:
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


def _set_epoch_rng(loader: Iterable, states: dict[str, Any]) -> None:
    torch.set_rng_state(states["torch"])
    for g, state in zip(_loader_generators(loader), states["loader"]):
        g.set_state(state)
    if states.get("python") is not None:
        version, py_state, gauss = states["python"]
        random.setstate((version, tuple(py_state), gauss))
    if states.get("numpy") is not None:
        name, keys, *rest = states["numpy"]
        np.random.set_state((name, np.asarray(keys, dtype=np.uint32), *rest))


def _distributed() -> tuple[bool, int, int]:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return True, torch.distributed.get_rank(), torch.distributed.get_world_size()
    return False, 0, 1


def _shard_loader(loader: Iterable, seed: int) -> Iterable:
    """Give a DataLoader a DistributedSampler unless it already has a distributed one."""
    from torch.utils.data import DataLoader, DistributedSampler, RandomSampler

    if not isinstance(loader, DataLoader) or isinstance(loader.sampler, DistributedSampler):
        return loader
    if loader.batch_sampler is not None and not hasattr(loader.batch_sampler, "sampler"):
        return loader  # a custom batch sampler: the user shards it
    sampler = DistributedSampler(
        loader.dataset, shuffle=isinstance(loader.sampler, RandomSampler), seed=seed
    )
    return DataLoader(
        loader.dataset,
        batch_size=loader.batch_size,
        sampler=sampler,
        num_workers=loader.num_workers,
        collate_fn=loader.collate_fn,
        pin_memory=loader.pin_memory,
        drop_last=loader.drop_last,
        persistent_workers=loader.persistent_workers,
    )


def _lr_factor(schedule: str, step: int, total: int | None) -> float:
    if schedule == "cosine" and total:
        return 0.5 * (1 + math.cos(math.pi * min(step, total) / total))
    return 1.0


#: Device types whose classifier batches are padded to a few shapes (see ``_shape_bucket``).
_BUCKETED_DEVICES = frozenset({"cuda"})


def _shape_bucket(idx: torch.Tensor, real: torch.Tensor, multiple: int = 8) -> torch.Tensor:
    """``idx`` (the real selectors) padded with fake selectors up to a multiple of ``multiple``.

    The number of real selectors changes every step, so the classifier would see a new batch
    shape each time; with ``torch.backends.cudnn.benchmark`` on, every new shape is autotuned
    again (a 224-pixel step took 33 times its parts on an H100). Padding leaves a few shapes.
    The padded rows' logits are dropped, so they get no gradient and change no loss.
    """
    extra = (-len(idx)) % multiple
    if extra == 0:
        return idx
    return torch.cat([idx, (~real).nonzero().squeeze(1)[:extra]])


def _evidence_free_fakes(
    classifier: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    real: torch.Tensor,
    num_classes: int,
    objective: ObjectiveConfig,
    generator: torch.Generator,
    classifier_dtype: torch.dtype | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Fake selectors drawn from the classes the classifier finds absent from the clean image.

    A class is a candidate when it is not the label and its probability is below
    ``objective.fake_max_prob``; a sample without a candidate keeps its label (real). Only
    the fake samples go to the classifier; every row is drawn from, so the random stream does
    not depend on the probabilities.
    """
    fake = ~real
    candidates = torch.ones(len(x), num_classes, dtype=torch.bool, device=x.device)
    if fake.any():
        with torch.no_grad():
            logits = classifier(_as_dtype(x[fake], classifier_dtype))
        check_logits(logits, int(fake.sum()), num_classes)
        candidates[fake] = logits.float().softmax(1) < objective.fake_max_prob
    candidates.scatter_(1, y[:, None], False)
    has = candidates.any(1)
    # A row without a candidate stays real; any class will do for its (discarded) draw.
    weights = (candidates | ~has[:, None]).float()
    drawn = torch.multinomial(weights, 1, generator=generator).squeeze(1)
    real = real | ~has
    return real, torch.where(real, y, drawn)


def _step_terms(
    masker: nn.Module,
    classifier: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    num_classes: int,
    objective: ObjectiveConfig,
    generator: torch.Generator,
    classifier_dtype: torch.dtype | None = None,
) -> tuple[LossTerms, torch.Tensor]:
    """Forward pass of one training step: returns the loss terms and the real-selector flags.

    A share ``objective.fake_prob`` of the selectors is replaced by a random other class (with
    ``objective.fake_max_prob``, one the classifier finds absent). Only
    the real selectors' preserved and destroyed images go to the classifier, in one batched call.
    With ``classifier_dtype`` the classifier's inputs are cast to it (a classifier converted
    with ``model.double()`` beside a float32 masker); its logits are used in float32.
    """
    n = len(x)
    real = torch.rand(n, device=x.device, generator=generator) >= objective.fake_prob
    if num_classes > 1 and objective.fake_max_prob is not None:
        real, selector = _evidence_free_fakes(
            classifier, x, y, real, num_classes, objective, generator, classifier_dtype
        )
    elif num_classes > 1:
        shift = torch.randint(1, num_classes, (n,), device=x.device, generator=generator)
        selector = torch.where(real, y, (y + shift) % num_classes)
    else:
        real = torch.ones_like(real)
        selector = y
    out = masker(x, selector)
    mask = out.mask.to(x.dtype)
    idx = real.nonzero().squeeze(1)
    logits_p = logits_d = None
    if len(idx):
        used = _shape_bucket(idx, real) if x.device.type in _BUCKETED_DEVICES else idx
        xr, mr = x[used], mask[used]
        preserved = remove_evidence(xr, mr, alternative_images(xr, objective, generator))
        alt = destroy_alternative(xr, mr, alternative_images(xr, objective, generator), objective)
        destroyed = remove_evidence(xr, 1 - mr, alt)
        logits = classifier(_as_dtype(torch.cat([preserved, destroyed]), classifier_dtype))
        check_logits(logits, 2 * len(used), num_classes)
        logits = logits.float()
        lp, ld = (part[: len(idx)] for part in logits.chunk(2))
        k = logits.shape[1]
        logits_p = lp.new_zeros(n, k).index_copy(0, idx, lp)
        logits_d = ld.new_zeros(n, k).index_copy(0, idx, ld)
    terms = objective_loss(
        out.small_mask, logits_p, logits_d, selector, real, objective, out.gate_logit
    )
    return terms, real


def _as_dtype(x: torch.Tensor, dtype: torch.dtype | None) -> torch.Tensor:
    return x if dtype is None or x.dtype == dtype else x.to(dtype)


def _autocast(device: torch.device, enabled: bool):
    if enabled and device.type == "cuda":
        dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.autocast("cuda", dtype=dtype)
    return nullcontext()


def _batches(loader: Iterable, skip: int) -> Iterator[tuple[int, Any]]:
    for i, batch in enumerate(loader):
        if i >= skip:
            yield i, batch


def _prepare_batch(
    batch: Any,
    masker: MaskingModel,
    device: torch.device,
    dtype: torch.dtype,
    name: str,
    channels_last: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Check one batch and move it to ``device``, images cast to the masker's ``dtype``.

    Floating images of another precision (float64 from ``torch.from_numpy``, float16,
    bfloat16) are cast; integer images keep their error. Batches made inside
    ``torch.inference_mode()`` are copied into ordinary tensors that autograd can use.
    """
    x, y = unpack_batch(batch, name)
    _check_batch(
        x, y, masker.config.num_classes, masker.config.encoder.in_chans, masker.max_stride, name
    )
    x = x.to(device, dtype=dtype, non_blocking=True)
    y = y.to(device, non_blocking=True)
    if x.is_inference():
        x = x.clone()
    if y.is_inference():
        y = y.clone()
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    _check_finite(x, name)  # on the training device: cheap there
    return x, y


def evaluate_terms(
    masker: MaskingModel,
    classifier: nn.Module,
    loader: Iterable,
    objective: ObjectiveConfig,
    device: torch.device,
    seed: int = 0,
    name: str = "val_loader",
) -> dict[str, float]:
    """Mean loss terms over a loader, without training (a fixed seed makes runs comparable).

    Its batches are checked like training batches and cast to the masker's dtype.

    Args:
        masker: The masking model (evaluated in eval mode, its mode restored afterwards).
        classifier: The black box.
        loader: Iterable of ``(images, labels[, ...])`` batches.
        objective: Loss weights and evidence removal.
        device: Where the batches go (the masker and classifier must be there already).
        seed: Seed of the fake selectors and alternative images.
        name: The loader's argument name in error messages.

    Returns:
        ``{"val_<term>": mean}`` over the loader's images.

    Raises:
        InputError: A bad batch, or a loader that yields nothing.
    """
    _check_loader(loader, name)
    dtype, classifier_dtype = _training_dtypes(masker, classifier)
    generator = torch.Generator(device).manual_seed(seed)
    sums: dict[str, float] = {}
    count = 0
    was_training = masker.training
    masker.eval()
    try:
        with torch.no_grad():
            for batch in loader:
                x, y = _prepare_batch(batch, masker, device, dtype, name)
                terms, real = _step_terms(
                    masker,
                    classifier,
                    x,
                    y,
                    masker.config.num_classes,
                    objective,
                    generator,
                    classifier_dtype=classifier_dtype,
                )
                for k, v in terms.means(real).items():
                    sums[k] = sums.get(k, 0.0) + v * len(x)
                count += len(x)
    finally:
        masker.train(was_training)
    if count == 0:
        raise InputError("the validation loader yielded no batches.", argument=name)
    return {f"val_{k}": v / count for k, v in sums.items()}


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
    _check_loader(loader, "loader")
    if val_loader is not None:
        _check_loader(val_loader, "val_loader")
    if config.checkpoint_dir is not None:
        _check_checkpoint_dir(config.checkpoint_dir)
    _check_trainable_tensors(masker, classifier)
    # Training needs autograd whatever the caller's mode (no_grad, inference_mode).
    with torch.inference_mode(False), torch.enable_grad():
        return _fit(
            masker,
            classifier,
            loader,
            objective,
            config,
            device,
            val_loader,
            resume_from,
            save_extra,
        )


def _fit(
    masker: MaskingModel,
    classifier: nn.Module,
    loader: Iterable,
    objective: ObjectiveConfig,
    config: FitConfig,
    device: torch.device,
    val_loader: Iterable | None,
    resume_from: str | os.PathLike[str] | None,
    save_extra: Callable[[], dict[str, Any]] | None,
) -> list[dict[str, float]]:
    """The body of :func:`fit_masker`, run with gradients enabled."""
    distributed, rank, world = _distributed()
    if distributed:
        loader = _shard_loader(loader, config.seed)
    epochs = config.epochs or (None if config.max_steps else 1)
    try:
        per_epoch = len(loader)  # type: ignore[arg-type]
    except TypeError:
        per_epoch = None
    if per_epoch == 0:
        raise InputError(
            "the training loader is empty (len 0). Hint: check the dataset.", argument="loader"
        )
    total = config.max_steps or (per_epoch * epochs if per_epoch and epochs else None)
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
    num_classes = masker.config.num_classes
    dtype, classifier_dtype = _training_dtypes(masker, classifier)
    if total is None:
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
                stacklevel=4,
            )

    masker.to(device)
    groups = _param_groups(masker, config)
    params = [p for group in groups for p in group["params"]]
    opt = torch.optim.Adam(groups, lr=config.lr, weight_decay=config.weight_decay)
    use_amp = config.amp and device.type == "cuda"
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp and not torch.cuda.is_bf16_supported())
    generator = torch.Generator(device).manual_seed(config.seed + rank)
    state = _State()
    epoch_rng: dict[str, Any] | None = None
    if config.checkpoint_dir is not None and rank == 0 and Path(config.checkpoint_dir).is_dir():
        _clean_checkpoint_dir(Path(config.checkpoint_dir))

    if resume_from is not None:
        state, epoch_rng = _resume(
            Path(resume_from), masker, opt, scaler, generator, device, config
        )

    def save(tag: str, epoch_states: dict[str, Any]) -> None:
        if config.checkpoint_dir is None or rank != 0:
            return
        opt_tensors, opt_meta = _optimizer_tensors(opt)
        opt_tensors["rng.generator"] = generator.get_state()
        opt_tensors["rng.epoch_start"] = epoch_states["torch"]
        for j, loader_state in enumerate(epoch_states["loader"]):
            opt_tensors[f"rng.epoch_start.loader.{j}"] = loader_state
        meta = {
            **(save_extra() if save_extra else {}),
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
        root = Path(config.checkpoint_dir)
        write_checkpoint(root / tag, meta, {"masker": masker.state_dict(), "training": opt_tensors})
        steps = _step_dirs(root)
        for old in steps[: max(0, len(steps) - config.keep_last)]:
            _remove_checkpoint(old)

    def skip_nonfinite(what: str) -> None:
        state.nonfinite += 1
        warnings.warn(
            f"non-finite {what} at step {state.step}; step skipped "
            f"({state.nonfinite}/{config.nonfinite_patience} in a row).",
            RuntimeWarning,
            stacklevel=4,
        )
        if state.nonfinite >= config.nonfinite_patience:
            raise TrainingError(
                f"the {what} was non-finite (NaN or Inf) for {state.nonfinite} steps in a row "
                f"(nonfinite_patience={config.nonfinite_patience}); the masker keeps its weights "
                f"from step {state.step}. Hint: check that the classifier returns finite logits "
                "for masked images, lower lr, or set grad_clip."
            )

    bar = tqdm(
        total=total,
        initial=state.step,
        disable=not config.progress or rank != 0,
        desc="fit masker",
        dynamic_ncols=True,
    )
    first_epoch = state.epoch
    warned_single = False
    skipped_in_a_row = 0
    try:
        with contextlib.ExitStack() as stack:
            stack.enter_context(frozen_model(classifier))
            classifier.to(device)
            if config.channels_last:
                cl = torch.channels_last
                stack.enter_context(weights_in_format([classifier, masker], cl))
            train_step_model: nn.Module = masker
            if distributed:  # wrapped after the layout change: DDP's buckets follow the strides
                from torch.nn.parallel import DistributedDataParallel

                train_step_model = DistributedDataParallel(
                    masker, device_ids=[device.index] if device.type == "cuda" else None
                )
            masker.train()
            single_fails = _trainable_batchnorm(masker)
            epoch = state.epoch
            while (epochs is None or epoch < epochs) and (total is None or state.step < total):
                resuming = epoch_rng is not None
                if not resuming:
                    epoch_rng = _epoch_rng(loader)
                    state.batch_in_epoch, state.epoch_sums, state.epoch_count = 0, {}, 0
                else:
                    # Replay the interrupted epoch's order; its first batches are skipped.
                    _set_epoch_rng(loader, epoch_rng)
                sampler = getattr(loader, "sampler", None)
                if hasattr(sampler, "set_epoch"):
                    sampler.set_epoch(epoch)
                seen_batches = skipped_single = 0
                for i, batch in _batches(loader, state.batch_in_epoch if resuming else 0):
                    seen_batches += 1
                    x, y = _prepare_batch(
                        batch, masker, device, dtype, "loader", config.channels_last
                    )
                    if single_fails and len(x) == 1 and _one_pixel_map(x, masker):
                        if getattr(loader, "batch_size", None) == 1:
                            raise _single_image_error(x, "the DataLoader's batch_size is 1")
                        if not warned_single:
                            warned_single = True
                            warnings.warn(
                                f"loader: skipped a batch of 1 image of size "
                                f"{tuple(x.shape[-2:])}: the masker's encoder trains "
                                "BatchNorm layers, which cannot normalise a single 1x1 feature "
                                "map. Further such batches are skipped without a warning, and "
                                f"{_MAX_SINGLES_IN_A_ROW} in a row raise an error. "
                                "Hint: DataLoader(..., drop_last=True) avoids the short last "
                                "batch.",
                                UserWarning,
                                stacklevel=4,
                            )
                        skipped_single += 1
                        skipped_in_a_row += 1
                        if skipped_in_a_row >= _MAX_SINGLES_IN_A_ROW:
                            raise _single_image_error(
                                x, f"{skipped_in_a_row} batches in a row had 1 image"
                            )
                        state.batch_in_epoch = i + 1
                        continue
                    skipped_in_a_row = 0
                    factor = _lr_factor(config.lr_schedule, state.step, total)
                    for group in opt.param_groups:
                        group["lr"] = group["base_lr"] * factor
                    step_objective = objective
                    if config.area_warmup > 0 and total:
                        ramp = min(1.0, (state.step + 1) / (config.area_warmup * total))
                        step_objective = replace(
                            objective, area_weight=objective.area_weight * ramp
                        )
                    with _autocast(device, use_amp), _single_value_batch_norm(x):
                        terms, real = _step_terms(
                            train_step_model,
                            classifier,
                            x,
                            y,
                            num_classes,
                            step_objective,
                            generator,
                            classifier_dtype=classifier_dtype,
                        )
                    loss = terms.total
                    opt.zero_grad(set_to_none=True)
                    state.batch_in_epoch = i + 1
                    if not torch.isfinite(loss):
                        skip_nonfinite("loss")
                        continue
                    scaler.scale(loss).backward()
                    if scaler.is_enabled():
                        # fp16 loss scaling: the scaler itself skips steps with Inf gradients.
                        if config.grad_clip is not None:
                            scaler.unscale_(opt)
                            torch.nn.utils.clip_grad_norm_(params, config.grad_clip)
                    else:
                        max_norm = config.grad_clip if config.grad_clip is not None else math.inf
                        norm = torch.nn.utils.clip_grad_norm_(params, max_norm)
                        if not torch.isfinite(norm):
                            opt.zero_grad(set_to_none=True)
                            skip_nonfinite("gradient")
                            continue
                    state.nonfinite = 0
                    scaler.step(opt)
                    scaler.update()
                    state.step += 1
                    means = terms.means(real)
                    for k, v in means.items():
                        state.epoch_sums[k] = state.epoch_sums.get(k, 0.0) + v
                    state.epoch_count += 1
                    bar.update(1)
                    bar.set_postfix({k: f"{v:.3f}" for k, v in means.items()}, refresh=False)
                    if config.checkpoint_every and state.step % config.checkpoint_every == 0:
                        save(f"step-{state.step:09d}", epoch_rng)
                    if total is not None and state.step >= total:
                        break
                if not seen_batches and not resuming:
                    if epoch == first_epoch:
                        raise InputError(
                            f"the training loader yielded no batches in epoch {epoch}. "
                            "Hint: check the dataset.",
                            argument="loader",
                        )
                    asked = (
                        f"max_steps={config.max_steps}"
                        if config.max_steps
                        else f"epochs={config.epochs}"
                    )
                    warnings.warn(
                        f"loader: the training loader yielded no batches in epoch {epoch}, so "
                        f"training stopped after {state.step} steps, before {asked}; the "
                        f"history holds the {len(state.history)} epoch(s) trained. A generator "
                        "or iterator can be consumed only once. Hint: pass a re-iterable "
                        "loader (a list or a DataLoader) for several epochs.",
                        UserWarning,
                        stacklevel=4,
                    )
                    break
                if seen_batches and seen_batches == skipped_single:
                    raise _single_image_error(x, "every batch of the epoch had 1 image")
                epoch_rng = None
                if state.epoch_count:
                    record = {"epoch": epoch, "steps": state.step}
                    record.update({k: v / state.epoch_count for k, v in state.epoch_sums.items()})
                    if val_loader is not None:
                        record.update(
                            evaluate_terms(
                                masker,
                                classifier,
                                val_loader,
                                objective,
                                device,
                                config.seed,
                                name="val_loader",
                            )
                        )
                        masker.train()
                    state.history.append(record)
                epoch += 1
                state.epoch = epoch
                state.batch_in_epoch, state.epoch_sums, state.epoch_count = 0, {}, 0
                save(f"step-{state.step:09d}", _epoch_rng(loader))
    finally:
        bar.close()
        classifier.to(param_device)
        masker.eval()
    return state.history


#: Single-image batches skipped in a row (see ``_one_pixel_map``) before fit() gives up: an
#: endless stream of them would otherwise be skipped forever without training a step.
_MAX_SINGLES_IN_A_ROW = 100


def _one_pixel_map(x: torch.Tensor, masker: MaskingModel) -> bool:
    """Whether the encoder's deepest map is 1x1 for images like ``x``."""
    stride = masker.max_stride
    return x.shape[-2] // stride == 1 and x.shape[-1] // stride == 1


def _single_image_error(x: torch.Tensor, why: str) -> InputError:
    return InputError(
        f"{why}, but the masker's encoder trains BatchNorm layers, which need more "
        f"than one value per channel: a single image of size {tuple(x.shape[-2:])} gives them "
        "a 1x1 map. Hint: use batches of 2 or more images (DataLoader(..., batch_size=32, "
        "drop_last=True)), larger images, or a frozen encoder (pretrained=True or "
        "encoder='classifier').",
        argument="loader",
    )


@contextlib.contextmanager
def _single_value_batch_norm(x: torch.Tensor) -> Iterator[None]:
    """Turn BatchNorm's error on a one-value batch (a custom encoder) into an InputError."""
    try:
        yield
    except ValueError as exc:
        if "Expected more than 1 value per channel" not in str(exc):
            raise
        raise InputError(
            f"a batch of {len(x)} image(s) of size {tuple(x.shape[-2:])} gives a "
            f"BatchNorm layer of the masker a single value per channel ({exc}). Hint: use "
            "batches of 2 or more images (DataLoader(..., drop_last=True) drops a short last "
            "batch), or larger images.",
            argument="loader",
        ) from exc


def _resume(
    path: Path,
    masker: MaskingModel,
    opt: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler,
    generator: torch.Generator,
    device: torch.device,
    config: FitConfig,
) -> tuple[_State, dict[str, Any]]:
    """Load a training checkpoint into the masker, optimiser, scaler and generator.

    Warns when the options that shape the run (schedule, seed, length) differ from the
    interrupted run's: training then goes on, but not as the uninterrupted run would have.

    Returns:
        The loop state and the random states of the interrupted epoch's start.

    Raises:
        CheckpointError: Unreadable, tampered or incompatible checkpoints, with the folder.
    """
    ckpt = _latest_checkpoint(path)
    meta, tensors = read_checkpoint(ckpt, device="cpu")
    if "training" not in meta or "training" not in tensors:
        raise CheckpointError(f"resume_from: {ckpt} is a saved masker, not a training checkpoint.")
    try:
        training, train_tensors = meta["training"], tensors["training"]
        masker.load_state_dict(dict(tensors["masker"]), strict=True)
        masker.to(device)
        _load_optimizer(opt, train_tensors, training["optimizer"])
        if scaler.is_enabled() and training.get("scaler"):
            scaler.load_state_dict(training["scaler"])
        generator.set_state(train_tensors["rng.generator"])
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
        state = _State(**training["state"])
        saved = training.get("fit_config", {})
    except CheckpointError:
        raise
    except (KeyError, TypeError, ValueError, RuntimeError) as exc:
        raise CheckpointError(
            f"resume_from: {ckpt} does not fit this masker and training setup "
            f"({type(exc).__name__}: {exc}). Hint: resume with the same classifier, encoder "
            "and options as the interrupted run."
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
