"""The classifier to explain, built from the options or from what ``train`` recorded.

A classifier takes RGB images in ``[0, 1]``: a timm model (``--model``) is wrapped with its
normalisation, a benchmark black box carries its own. ``train`` writes the options it used to
``classifier.json`` beside the masker, so ``explain`` and ``evaluate`` rebuild the same
classifier, normalised and fed at the same size, from the masker folder alone.

Normalisation (``--mean``/``--std``, each on its own) and the image size default, in order:
with ``--builtin`` to the cluttered dataset's (64 px); with ``--pretrained`` to the timm
model's own data config (:func:`timm.data.resolve_model_data_config`: the mean, std and input
size its weights were trained with); else to ImageNet's, at 224 px.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from captum_realtime_mask.cli.paths import existing
from captum_realtime_mask.cli.usage import CLIError
from captum_realtime_mask.errors import CheckpointError

__all__ = [
    "BUILTIN_IMAGE_SIZE",
    "CLASSIFIER_RECORD",
    "DEFAULT_IMAGE_SIZE",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "Classifier",
    "classifier_record",
    "fill_from_record",
    "load_classifier",
    "read_record",
]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
DEFAULT_IMAGE_SIZE = 224
BUILTIN_IMAGE_SIZE = 64
CLASSIFIER_RECORD = "classifier.json"


@dataclass(frozen=True)
class Classifier:
    """A classifier of ``[0, 1]`` RGB images, and the size its images are resized to.

    Attributes:
        model: The classifier in eval mode (a timm model's normalisation inside it).
        image_size: The side images are resized to.
        mean: The normalisation mean the CLI put inside ``model``; None for none (a black
            box normalises on its own; ``--no-normalize`` feeds images unchanged).
        std: The normalisation std, as ``mean``.
    """

    model: nn.Module
    image_size: int
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None


def load_classifier(args: argparse.Namespace, num_classes: int | None = None) -> Classifier:
    """The classifier described by the command-line options, taking images in ``[0, 1]``.

    Args:
        args: The parsed options (``--model``, ``--checkpoint``, ``--pretrained``, ...).
        num_classes: The class count to build ``--model`` with when ``--num-classes`` is not
            given (train: the data's; explain and evaluate: the masker's).

    Raises:
        CLIError: Options that describe no classifier, or a model timm cannot build.
        CheckpointError: Weights that cannot be read or do not fit the model.
        FileNotFoundError: A missing ``--checkpoint``.
    """
    if args.model is None:
        return Classifier(_black_box(args), image_size(args, None))
    network = _timm_network(args, args.num_classes or num_classes)
    config = _data_config(args, network)
    size = image_size(args, config)
    if args.no_normalize:
        return Classifier(network.eval(), size)
    from captum_realtime_mask.benchmark.blackbox import BlackBox

    mean, std = normalisation(args, config)
    return Classifier(BlackBox(network, mean, std).eval(), size, mean, std)


def normalisation(
    args: argparse.Namespace, data_config: dict[str, Any] | None
) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """``--mean`` and ``--std``, each defaulting by the rule of this module's docstring.

    Args:
        args: The parsed options.
        data_config: The timm model's data config with ``--pretrained``, else None.
    """
    if getattr(args, "builtin", False):
        from captum_realtime_mask.datasets import CLUTTERED_MEAN, CLUTTERED_STD

        default_mean, default_std = CLUTTERED_MEAN, CLUTTERED_STD
    elif data_config is not None:
        default_mean, default_std = data_config["mean"], data_config["std"]
    else:
        default_mean, default_std = IMAGENET_MEAN, IMAGENET_STD
    mean = args.mean if args.mean else default_mean
    std = args.std if args.std else default_std
    return tuple(float(m) for m in mean), tuple(float(s) for s in std)


def image_size(args: argparse.Namespace, data_config: dict[str, Any] | None) -> int:
    """``--image-size``, defaulting by the rule of this module's docstring.

    A timm data config whose input size is not square leaves the default at 224 px.
    """
    if args.image_size:
        return int(args.image_size)
    if getattr(args, "builtin", False):
        return BUILTIN_IMAGE_SIZE
    if data_config is not None:
        height, width = data_config["input_size"][-2:]
        if height == width:
            return int(height)
    return DEFAULT_IMAGE_SIZE


def _data_config(args: argparse.Namespace, network: nn.Module) -> dict[str, Any] | None:
    """The timm model's own data config when its pretrained weights are used, else None."""
    if not args.pretrained:
        return None
    import timm

    return timm.data.resolve_model_data_config(network)


def _black_box(args: argparse.Namespace) -> nn.Module:
    """A black box saved by ``train_blackbox`` (``--checkpoint``) or a built-in preset."""
    from captum_realtime_mask.benchmark.blackbox import load_blackbox, train_blackbox

    if args.checkpoint is not None:
        ckpt = existing(args.checkpoint, "--checkpoint")
        if not ckpt.with_suffix(".json").is_file():
            raise CLIError(
                f"--checkpoint {ckpt}: give the timm architecture with --model NAME (only "
                "black boxes saved by train_blackbox carry their own record)."
            )
        return load_blackbox(ckpt)
    if getattr(args, "builtin", False):
        preset = args.blackbox or "resnet"
        print(f"black box: {preset} (trained once, then loaded from the cache)")
        return train_blackbox(preset, cache_dir=args.cache_dir, log=print)
    raise CLIError("classifier: pass --model NAME --checkpoint FILE (or --builtin).")


def _timm_network(args: argparse.Namespace, num_classes: int | None) -> nn.Module:
    """The bare timm ``--model``, with ``--checkpoint``'s or its pretrained weights."""
    import timm

    if num_classes is None:
        raise CLIError(f"--num-classes: needed to build --model {args.model} (its outputs).")
    try:
        model = timm.create_model(args.model, pretrained=args.pretrained, num_classes=num_classes)
    except RuntimeError as exc:
        raise CLIError(f"--model {args.model}: {exc}") from None
    if args.checkpoint is not None:
        state = _load_state(existing(args.checkpoint, "--checkpoint"))
        try:
            model.load_state_dict(state, strict=True)
        except RuntimeError as exc:
            first = str(exc).strip().splitlines()
            detail = "; ".join(_shorten(line.strip()) for line in first[:3])
            raise CheckpointError(
                f"--checkpoint {args.checkpoint} does not fit --model {args.model} with "
                f"{num_classes} classes: {detail}"
            ) from None
    elif not args.pretrained:
        raise CLIError("--checkpoint: give the classifier's weights (or --pretrained).")
    return model


def _load_state(path: Path) -> dict[str, torch.Tensor]:
    """A state dict from ``.safetensors`` or a torch file (``weights_only=True``)."""
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except Exception as exc:
            raise CheckpointError(
                f"--checkpoint {path}: not a readable safetensors file ({exc})."
            ) from None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise CheckpointError(
            f"--checkpoint {path}: not a torch state dict loadable with weights_only=True ({exc})."
        ) from None
    for key in ("state_dict", "model", "model_state_dict"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict):
        raise CheckpointError(f"--checkpoint {path}: expected a state dict, got {type(state)}.")
    return {k.removeprefix("module."): v for k, v in state.items()}


def _shorten(text: str, limit: int = 240) -> str:
    """``text`` cut to about ``limit`` characters (a state dict's key lists are long)."""
    return text if len(text) <= limit else text[:limit].rstrip(", ") + " ..."


# ------------------------------------------------------------------------------- the record
def classifier_record(
    args: argparse.Namespace, classifier: Classifier, num_classes: int
) -> dict[str, Any]:
    """What ``train`` writes to ``classifier.json``: the options and the defaults it used.

    The normalisation and the image size are the ones the masker was trained with (defaults
    resolved), so ``explain`` and ``evaluate`` use them too.
    """
    return {
        "model": args.model,
        "checkpoint": str(Path(args.checkpoint).resolve()) if args.checkpoint else None,
        "num_classes": num_classes,
        "pretrained": bool(args.pretrained),
        "builtin": bool(args.builtin),
        "blackbox": (args.blackbox or "resnet") if args.builtin and args.model is None else None,
        "mean": list(classifier.mean) if classifier.mean else None,
        "std": list(classifier.std) if classifier.std else None,
        "no_normalize": bool(args.no_normalize),
        "image_size": classifier.image_size,
    }


def read_record(masker: Path | None) -> dict[str, Any]:
    """The ``classifier.json`` that ``train`` wrote in the masker folder (``{}`` if none)."""
    if masker is None:
        return {}
    path = masker / CLASSIFIER_RECORD
    if path.is_file():
        return json.loads(path.read_text())
    return {}


def fill_from_record(args: argparse.Namespace, record: dict[str, Any]) -> None:
    """Classifier options that ``train`` recorded beside the masker fill unset arguments."""
    for key in ("model", "checkpoint", "num_classes", "mean", "std", "image_size", "blackbox"):
        if getattr(args, key, None) is None and record.get(key) is not None:
            setattr(args, key, record[key])
    if record.get("builtin") and not getattr(args, "image_folder", None):
        args.builtin = True
    if record.get("no_normalize"):
        args.no_normalize = True
    if record.get("pretrained") and not args.checkpoint:
        args.pretrained = True
