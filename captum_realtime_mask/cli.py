"""The ``captum-realtime-mask`` command line: demo, benchmark, train, explain and evaluate.

Every subcommand has ``--help``. Errors the user can fix (a missing file, a wrong shape, a
broken checkpoint) end with exit code 2 and a one-line message on stderr, without a traceback;
an option value out of its range is an argparse usage error (exit code 2, usage lines first).

Examples:
    .. code-block:: bash

        captum-realtime-mask demo --output runs/demo
        captum-realtime-mask train --builtin --blackbox resnet --epochs 2 --output runs/masker
        captum-realtime-mask explain --masker runs/masker --builtin --blackbox resnet photo.png
        captum-realtime-mask evaluate --masker runs/masker --builtin --blackbox resnet --json m.json
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from captum_realtime_mask.errors import CheckpointError, InputError, TrainingError

__all__ = ["build_parser", "main"]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp"}
CLASSIFIER_RECORD = "classifier.json"


class CLIError(Exception):
    """A user error of the command line: printed as one line, exit code 2."""


# ------------------------------------------------------------------------------- value types
def _int_at_least(low: int):
    """An argparse type: an ``int`` >= ``low`` (sizes, counts and steps; workers from 0)."""
    expected = "a positive integer" if low == 1 else f"an integer >= {low}"

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"expected {expected}, got {value}")
        return value

    return parse


_positive_int = _int_at_least(1)
_non_negative_int = _int_at_least(0)


def _finite_float(text: str) -> float:
    """A finite ``float`` (argparse type): no nan or inf."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
    return value


def _positive_float(text: str) -> float:
    """A finite ``float`` > 0 (argparse type): learning rate, normalisation std."""
    value = _finite_float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a number > 0, got {text!r}")
    return value


def _unit_float(text: str) -> float:
    """A ``float`` in ``[0, 1]`` (argparse type): a threshold on mask values."""
    value = _finite_float(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(
            f"expected a number in [0, 1] (masks take values in [0, 1]), got {text!r}"
        )
    return value


# ------------------------------------------------------------------------------- arguments
def _add_cache(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--cache-dir",
        default=None,
        help="cache for datasets, black boxes and maskers (default: the package's cache, "
        "or $CAPTUM_REALTIME_MASK_CACHE)",
    )


def _add_classifier(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group(
        "classifier",
        "The classifier to explain: a timm model name and its weights, or (with --builtin) a "
        "benchmark black box. Images are fed to it in [0, 1] and normalised with --mean/--std "
        "inside the model.",
    )
    g.add_argument("--model", help="timm model name, e.g. resnet50 (created with timm)")
    g.add_argument(
        "--checkpoint",
        help="classifier weights: .safetensors or a torch state dict (loaded with "
        "weights_only=True); a black box saved by train_blackbox (its .json beside it) needs "
        "no --model",
    )
    g.add_argument(
        "--num-classes",
        type=_positive_int,
        help="number of classes (default: train: from the data; explain and evaluate: the "
        "number the masker was trained for)",
    )
    g.add_argument(
        "--pretrained",
        action="store_true",
        help="load the timm model's pretrained weights (downloads them; needs a network)",
    )
    g.add_argument(
        "--blackbox",
        default=None,
        help="with --builtin and no --model: benchmark black box preset to train or load from "
        "the cache (default: resnet)",
    )
    g.add_argument(
        "--mean", type=_finite_float, nargs=3, help="normalisation mean (default: ImageNet's)"
    )
    g.add_argument(
        "--std", type=_positive_float, nargs=3, help="normalisation std (default: ImageNet's)"
    )
    g.add_argument(
        "--no-normalize", action="store_true", help="feed [0, 1] images to the model unchanged"
    )
    g.add_argument(
        "--image-size",
        type=_positive_int,
        help="side images are resized to (default 224; with --builtin the benchmark's 64, which "
        "train --builtin always uses)",
    )
    g.add_argument("--device", help="cpu, cuda, cuda:1, ... (default: cuda when present)")


def _add_data(p: argparse.ArgumentParser, annotations: bool = False) -> None:
    g = p.add_argument_group("data")
    src = g.add_mutually_exclusive_group(required=True)
    src.add_argument(
        "--image-folder",
        help="torchvision ImageFolder root: one sub-folder of images per class",
    )
    src.add_argument(
        "--builtin", action="store_true", help="the built-in cluttered Fashion-MNIST benchmark"
    )
    if annotations:
        g.add_argument(
            "--annotations",
            help="folder of PASCAL VOC / ILSVRC XML files named like the images "
            "(<stem>.xml), for --image-folder",
        )
    g.add_argument(
        "--batch-size", type=_positive_int, default=32, help="images per batch (default 32)"
    )
    g.add_argument(
        "--num-workers",
        type=_non_negative_int,
        default=None,
        help="DataLoader workers (default min(4, CPU count); pin_memory on CUDA and "
        "persistent workers are turned on automatically)",
    )
    g.add_argument("--n", type=_positive_int, help="with --builtin: number of images of the split")
    _add_cache(p)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``captum-realtime-mask`` (for docs and tests)."""
    parser = argparse.ArgumentParser(
        prog="captum-realtime-mask",
        description="Real-time learned saliency masks (Dabkowski & Gal, NIPS 2017) for Captum.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = sub.add_parser(
        "demo",
        help="the README's main job: the quick benchmark on cluttered Fashion-MNIST",
        description="Train black boxes and maskers on cluttered Fashion-MNIST (quick mode), "
        "explain its test images, and write results.json, results.md and figure.png.",
    )
    p.add_argument("--output", default="runs/demo", help="output folder (default runs/demo)")
    _add_cache(p)

    p = sub.add_parser(
        "benchmark",
        help="the cluttered Fashion-MNIST benchmark, quick or full",
        description="Run the benchmark (the paper's tables at CPU scale) and write "
        "results.json, results.md and figure.png.",
    )
    p.add_argument(
        "--mode",
        choices=("quick", "full"),
        default="quick",
        help="quick: minutes, one black box (the main job); full: the docs' results, under an "
        "hour on 2 CPU cores (default quick)",
    )
    p.add_argument("--output", default=None, help="output folder (default runs/<mode>)")
    p.add_argument(
        "--blackboxes", nargs="+", help="black box presets (resnet, cspdarknet; default: mode's)"
    )
    p.add_argument(
        "--jobs",
        type=_positive_int,
        default=2,
        help="black boxes evaluated at once, in separate processes (default 2)",
    )
    _add_cache(p)

    p = sub.add_parser(
        "train",
        help="train a masker for a classifier; writes a masker folder",
        description="Train the masking model for a frozen classifier on an ImageFolder or on "
        "the built-in dataset, then save it (masker.safetensors + config.json).",
    )
    _add_classifier(p)
    _add_data(p)
    g = p.add_argument_group("training")
    g.add_argument("--output", default="runs/masker", help="masker folder (default runs/masker)")
    g.add_argument("--epochs", type=_positive_int, help="passes over the data (default 1)")
    g.add_argument("--max-steps", type=_positive_int, help="stop after this many optimiser steps")
    g.add_argument(
        "--lr", type=_positive_float, default=1e-3, help="Adam learning rate (default 1e-3)"
    )
    g.add_argument(
        "--encoder",
        default="classifier",
        help="'classifier' (its own frozen backbone; default), a timm name such as resnet50, "
        "'torchvision:resnet50' or 'small_cnn'",
    )
    g.add_argument(
        "--pretrained-encoder",
        action="store_true",
        help="load ImageNet weights for a named --encoder (needs a network)",
    )
    g.add_argument("--preset", choices=("light", "fast", "paper"), default="light")
    g.add_argument("--checkpoint-dir", help="write training checkpoints here")
    g.add_argument(
        "--checkpoint-every",
        type=_positive_int,
        help="steps between checkpoints (needs --checkpoint-dir)",
    )
    g.add_argument("--resume", action="store_true", help="resume from --checkpoint-dir")
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--no-progress", action="store_true", help="no progress bar")
    g.add_argument(
        "--channels-last",
        action="store_true",
        help="train in channels-last memory format (faster convolutions on most hardware)",
    )

    p = sub.add_parser(
        "explain",
        help="write PNG overlays of masks for images or folders",
        description="Explain images with a trained masker: one PNG overlay per image, for "
        "--target or the predicted class.",
    )
    p.add_argument("images", nargs="+", help="image files or folders of images")
    p.add_argument("--masker", required=True, help="folder written by `train` (or attr.save)")
    _add_classifier(p)
    p.add_argument(
        "--builtin",
        action="store_true",
        help="the classifier is a built-in black box (--blackbox) or uses the cluttered "
        "dataset's normalisation",
    )
    p.add_argument("--target", type=int, nargs="+", help="class per image, or one for all")
    p.add_argument(
        "--output", default="runs/explain", help="folder for the overlays (default runs/explain)"
    )
    p.add_argument(
        "--batch-size", type=_positive_int, default=16, help="images per batch (default 16)"
    )
    _add_cache(p)

    p = sub.add_parser(
        "evaluate",
        help="localisation error and saliency metric on a dataset with boxes",
        description="Score a trained masker with the paper's protocol: localisation error "
        "(threshold, tightest box, hit when IoU > 0.5) and the saliency metric, next to the "
        "centre-box baseline.",
    )
    p.add_argument("--masker", required=True, help="folder written by `train` (or attr.save)")
    _add_classifier(p)
    _add_data(p, annotations=True)
    p.add_argument(
        "--threshold",
        type=_unit_float,
        default=0.5,
        help="mask threshold in [0, 1] (default 0.5)",
    )
    p.add_argument("--json", help="also write the results to this JSON file")
    return parser


# ------------------------------------------------------------------------------- helpers
def _device(name: str | None) -> torch.device:
    if name:
        try:
            return torch.device(name)
        except RuntimeError:
            raise CLIError(
                f"--device: {name!r} is not a device; pass cpu, cuda, cuda:1, mps, ..."
            ) from None
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _existing(path: str | None, what: str, folder: bool = False) -> Path:
    if path is None:
        raise CLIError(f"{what}: missing.")
    p = Path(path).expanduser()
    if folder and p.exists() and not p.is_dir():
        raise CLIError(f"{what}: expected a folder, but {p} is a file.")
    ok = p.is_dir() if folder else p.exists()
    if not ok:
        kind = "folder" if folder else "file"
        raise FileNotFoundError(f"{what}: no such {kind}: {p}")
    return p


def _check_folder_path(path: str | os.PathLike[str], what: str) -> Path:
    """``path`` if it is a folder or can become one (nothing is created); else CLIError."""
    from captum_realtime_mask.checkpoint import file_in_the_way

    p = Path(path).expanduser()
    part = file_in_the_way(p)
    if part is not None:
        where = "" if part == p else f" (a part of its path, {part}, is a file)"
        raise CLIError(f"{what} {p}: expected a folder, but it is a file{where}.")
    return p


def _output_folder(path: str, what: str) -> Path:
    """Create the output folder ``path`` (with its parents); a file in the way is a CLIError."""
    p = _check_folder_path(path, what)
    try:
        p.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise CLIError(f"{what} {p}: cannot create the folder ({exc}).") from None
    return p


def _check_output_file(path: str, what: str) -> Path:
    """A file path the command may write at its end; checked before any work is done."""
    from captum_realtime_mask.checkpoint import file_in_the_way

    p = Path(path).expanduser()
    if p.is_dir():
        raise CLIError(f"{what} {p}: expected a file name, but it is a folder.")
    part = file_in_the_way(p.parent)
    if part is not None:
        raise CLIError(f"{what} {p}: cannot be written, {part} is a file, not a folder.")
    return p


def _check_masker_output(path: str) -> None:
    """Refuse, before training, a --output that :meth:`save` would refuse after it."""
    from captum_realtime_mask.checkpoint import target_kind, target_path

    try:
        target_kind(target_path(path))
    except InputError as exc:
        message = str(exc).removeprefix("directory: ")
        raise CLIError(f"--output {path}: {message}") from None


def _masker_num_classes(masker: Path) -> int | None:
    """The number of classes of the classifier a saved masker was trained for (else None)."""
    from captum_realtime_mask.checkpoint import CONFIG_NAME
    from captum_realtime_mask.masker.resolve import saved_num_classes

    try:
        config = json.loads((masker / CONFIG_NAME).read_text())
    except (OSError, ValueError):
        return None

    value = saved_num_classes(config) if isinstance(config, dict) else None
    return value if value is not None and value > 0 else None


def _read_record(masker: Path | None) -> dict[str, Any]:
    if masker is None:
        return {}
    path = masker / CLASSIFIER_RECORD
    if path.is_file():
        return json.loads(path.read_text())
    return {}


def _fill_from_record(args: argparse.Namespace, record: dict[str, Any]) -> None:
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


def _load_state(path: Path) -> dict[str, torch.Tensor]:
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


def _normalisation(args: argparse.Namespace) -> tuple[tuple[float, ...], tuple[float, ...]]:
    if getattr(args, "builtin", False):
        from captum_realtime_mask.datasets import CLUTTERED_MEAN, CLUTTERED_STD

        default_mean, default_std = CLUTTERED_MEAN, CLUTTERED_STD
    else:
        default_mean, default_std = IMAGENET_MEAN, IMAGENET_STD
    mean = tuple(args.mean) if args.mean else default_mean
    std = tuple(args.std) if args.std else default_std
    return mean, std


def load_classifier(args: argparse.Namespace, num_classes: int | None = None) -> nn.Module:
    """The classifier described by the command-line options, taking images in ``[0, 1]``."""
    from captum_realtime_mask.benchmark.blackbox import BlackBox, load_blackbox, train_blackbox

    num_classes = args.num_classes or num_classes
    if args.model is None:
        if args.checkpoint is not None:
            ckpt = _existing(args.checkpoint, "--checkpoint")
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
    import timm

    if num_classes is None:
        raise CLIError(f"--num-classes: needed to build --model {args.model} (its outputs).")
    try:
        model = timm.create_model(args.model, pretrained=args.pretrained, num_classes=num_classes)
    except RuntimeError as exc:
        raise CLIError(f"--model {args.model}: {exc}") from None
    if args.checkpoint is not None:
        state = _load_state(_existing(args.checkpoint, "--checkpoint"))
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
    if args.no_normalize:
        return model.eval()
    mean, std = _normalisation(args)
    return BlackBox(model, mean, std).eval()


def _shorten(text: str, limit: int = 240) -> str:
    """``text`` cut to about ``limit`` characters (a state dict's key lists are long)."""
    return text if len(text) <= limit else text[:limit].rstrip(", ") + " ..."


def _loader_kwargs(args: argparse.Namespace, device: torch.device) -> dict[str, Any]:
    workers = args.num_workers
    if workers is None:
        workers = min(4, os.cpu_count() or 1)
    return {
        "batch_size": args.batch_size,
        "num_workers": workers,
        "pin_memory": device.type == "cuda",
        "persistent_workers": workers > 0,
    }


def _image_transform(size: int):
    from torchvision import transforms

    return transforms.Compose([transforms.Resize((size, size)), transforms.ToTensor()])


def _read_rgb(path: str):
    """An image file as an RGB PIL image; an unreadable file is a CLIError naming it."""
    from PIL import Image

    try:
        with Image.open(path) as image:
            return image.convert("RGB")
    except OSError as exc:  # PIL's UnidentifiedImageError and truncated files included
        raise CLIError(f"cannot read the image {path}: {exc}") from None


def _image_folder(root: str, size: int):
    from torchvision.datasets import ImageFolder

    folder = _existing(root, "--image-folder", folder=True)
    try:
        return ImageFolder(str(folder), transform=_image_transform(size), loader=_read_rgb)
    except (FileNotFoundError, RuntimeError) as exc:
        raise CLIError(f"--image-folder {folder}: {exc}") from None


def _builtin_split(args: argparse.Namespace, split: str):
    from captum_realtime_mask.datasets import ClutteredConfig, ClutteredFashionMNIST

    sizes = {"train": "n_train", "test": "n_test", "val": "n_val"}
    config = ClutteredConfig(**({sizes[split]: args.n} if args.n else {}))
    return ClutteredFashionMNIST(
        split, config, cache_dir=args.cache_dir, return_boxes=split != "train"
    )


def _record(args: argparse.Namespace, num_classes: int) -> dict[str, Any]:
    return {
        "model": args.model,
        "checkpoint": str(Path(args.checkpoint).resolve()) if args.checkpoint else None,
        "num_classes": num_classes,
        "pretrained": bool(args.pretrained),
        "builtin": bool(args.builtin),
        "blackbox": (args.blackbox or "resnet") if args.builtin and args.model is None else None,
        "mean": list(args.mean) if args.mean else None,
        "std": list(args.std) if args.std else None,
        "no_normalize": bool(args.no_normalize),
        "image_size": args.image_size,
    }


# ------------------------------------------------------------------------------- commands
def cmd_demo(args: argparse.Namespace) -> int:
    """Run the quick benchmark (the README's main job)."""
    from captum_realtime_mask.benchmark.runner import BenchmarkConfig, run_benchmark

    _check_folder_path(args.output, "--output")
    config = BenchmarkConfig.for_mode("quick", output=args.output, cache_dir=args.cache_dir)
    run_benchmark(config, log=print)
    print(f"wrote {Path(args.output) / 'results.md'} and figure.png")
    return 0


def cmd_benchmark(args: argparse.Namespace) -> int:
    """Run the benchmark in quick or full mode."""
    from captum_realtime_mask.benchmark.blackbox import BLACKBOX_PRESETS
    from captum_realtime_mask.benchmark.runner import BenchmarkConfig, run_benchmark

    overrides: dict[str, Any] = {
        "output": args.output or f"runs/{args.mode}",
        "cache_dir": args.cache_dir,
        "jobs": args.jobs,
    }
    if args.jobs < 1:
        raise CLIError(f"--jobs: expected a positive number of processes, got {args.jobs}.")
    _check_folder_path(overrides["output"], "--output")
    if args.blackboxes:
        unknown = [b for b in args.blackboxes if b not in BLACKBOX_PRESETS]
        if unknown:
            raise CLIError(
                f"--blackboxes: unknown {unknown}; choose from {list(BLACKBOX_PRESETS)}."
            )
        overrides["blackboxes"] = tuple(args.blackboxes)
    config = BenchmarkConfig.for_mode(args.mode, **overrides)
    run_benchmark(config, log=print)
    print(f"wrote {Path(config.output) / 'results.md'} and figure.png")
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    """Train a masker and save it."""
    from torch.utils.data import DataLoader

    from captum_realtime_mask.attribution import RealTimeMaskAttribution

    device = _device(args.device)
    if args.builtin and args.image_size not in (None, 64):
        raise CLIError(
            f"--image-size: the built-in benchmark's images are 64 px, got {args.image_size}; "
            "leave --image-size out with --builtin."
        )
    if args.builtin and args.num_classes not in (None, 10):
        raise CLIError(
            f"--num-classes: the built-in benchmark has 10 classes, got {args.num_classes}; "
            "leave --num-classes out with --builtin."
        )
    _check_data_options(args)
    if args.resume and not args.checkpoint_dir:
        raise CLIError("--resume: needs --checkpoint-dir.")
    if args.checkpoint_every and not args.checkpoint_dir:
        raise CLIError("--checkpoint-every: needs --checkpoint-dir (where to write them).")
    _check_encoder_name(args.encoder)
    _check_masker_output(args.output)
    if args.builtin:
        dataset = _builtin_split(args, "train")
        num_classes = 10
    else:
        dataset = _image_folder(args.image_folder, args.image_size or 224)
        num_classes = len(dataset.classes)
    model = load_classifier(args, num_classes)
    loader = DataLoader(dataset, shuffle=True, drop_last=False, **_loader_kwargs(args, device))
    attr = RealTimeMaskAttribution(
        model,
        num_classes=args.num_classes or num_classes,
        encoder=args.encoder,
        pretrained=args.pretrained_encoder,
        preset=args.preset,
        seed=args.seed,
    )
    _check_image_size(attr.masker.max_stride, 64 if args.builtin else args.image_size or 224)
    options: dict[str, Any] = {
        "progress": not args.no_progress,
        "seed": args.seed,
        "channels_last": args.channels_last,
    }
    if args.checkpoint_dir:
        options["checkpoint_dir"] = args.checkpoint_dir
    if args.checkpoint_every:
        options["checkpoint_every"] = args.checkpoint_every
    attr.fit(
        loader,
        epochs=args.epochs,
        max_steps=args.max_steps,
        lr=args.lr,
        device=device,
        resume_from=args.checkpoint_dir if args.resume else None,
        **options,
    )
    attr.save(args.output)
    record = _record(args, args.num_classes or num_classes)
    (Path(args.output) / CLASSIFIER_RECORD).write_text(json.dumps(record, indent=2) + "\n")
    last = attr.history[-1] if attr.history else {}
    terms = ", ".join(f"{k} {v:.4g}" for k, v in last.items() if isinstance(v, float))
    print(f"saved the masker to {args.output}" + (f" ({terms})" if terms else ""))
    return 0


def _check_data_options(args: argparse.Namespace) -> None:
    if args.n is not None and not args.builtin:
        raise CLIError("--n: only with --builtin (an ImageFolder is used whole).")


def _check_encoder_name(encoder: str) -> None:
    """Refuse an unknown timm or ``torchvision:<name>`` encoder before any data is loaded."""
    from captum_realtime_mask.masker.resolve import resolve_encoder

    try:
        resolve_encoder(encoder, pretrained=False)
    except InputError as exc:
        raise CLIError(f"--encoder {encoder}: {str(exc).removeprefix('encoder: ')}") from None


def _load_attr(args: argparse.Namespace, model: nn.Module, device: torch.device, size: int):
    from captum_realtime_mask.attribution import RealTimeMaskAttribution

    masker = _existing(args.masker, "--masker", folder=True)
    try:
        attr = RealTimeMaskAttribution.load(masker, model.to(device), device=device)
    except (CheckpointError, InputError) as exc:
        message = str(exc)
        if message.startswith("directory: "):
            raise type(exc)(f"--masker {masker}: {message.removeprefix('directory: ')}") from None
        raise
    _check_image_size(attr.masker.max_stride, size)
    return attr


def _check_image_size(stride: int, size: int) -> None:
    """The masker needs sides divisible by its encoder's largest stride."""
    if size % stride:
        raise CLIError(
            f"--image-size: must be divisible by the encoder's stride {stride}, got {size}."
        )


def _image_paths(items: Sequence[str]) -> list[Path]:
    """The image files named or found (recursively) in folders; each file once, in order."""
    paths: list[Path] = []
    for item in items:
        p = _existing(item, "image")
        if p.is_dir():
            found = sorted(
                q for q in p.rglob("*") if q.suffix.lower() in IMAGE_SUFFIXES and q.is_file()
            )
            if not found:
                raise CLIError(f"{p}: no images ({', '.join(sorted(IMAGE_SUFFIXES))}) inside.")
            paths.extend(found)
        else:
            paths.append(p)
    seen: set[Path] = set()
    unique = []
    for p in paths:
        key = p.resolve()
        if key not in seen:
            seen.add(key)
            unique.append(p)
    return unique


def _overlay_names(paths: Sequence[Path]) -> list[str]:
    """One overlay file name per image, ``<stem>_overlay.png``, never the same for two images.

    Images that share a stem (``a/x.png`` and ``b/x.png``, or ``x.png`` and ``x.jpg``) get
    ``<stem>-2_overlay.png``, ``<stem>-3_overlay.png``, ... after the first, in order.
    """
    names = [f"{p.stem}_overlay.png" for p in paths]
    taken = set(names)
    seen: set[str] = set()
    out = []
    for p, name in zip(paths, names):
        if name in seen:
            k = 2
            while f"{p.stem}-{k}_overlay.png" in taken:
                k += 1
            name = f"{p.stem}-{k}_overlay.png"
            taken.add(name)
        seen.add(name)
        out.append(name)
    return out


def _overlay(image: torch.Tensor, mask: torch.Tensor, title: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from captum.attr import visualization as viz

    img = image.permute(1, 2, 0).cpu().numpy()
    heat = mask.permute(1, 2, 0).cpu().float().numpy()
    if float(heat.max()) > 0:
        fig, _ = viz.visualize_image_attr(
            heat,
            img,
            method="blended_heat_map",
            sign="positive",
            show_colorbar=True,
            title=title,
            use_pyplot=False,
        )
    else:  # an all-zero map: Captum refuses to normalise it
        fig, ax = plt.subplots()
        ax.imshow(img)
        ax.set_title(title + " (empty mask)")
        ax.axis("off")
    fig.savefig(path, bbox_inches="tight")
    plt.close(fig)


def cmd_explain(args: argparse.Namespace) -> int:
    """Write one overlay PNG per image."""
    masker = _existing(args.masker, "--masker", folder=True)
    _fill_from_record(args, _read_record(masker))
    device = _device(args.device)
    paths = _image_paths(args.images)
    names = _overlay_names(paths)
    if args.target and len(args.target) not in (1, len(paths)):
        raise CLIError(
            f"--target: expected one class or one per image ({len(paths)}), got {len(args.target)}."
        )
    _check_folder_path(args.output, "--output")
    model = load_classifier(args, _masker_num_classes(masker)).to(device)
    size = args.image_size or (64 if args.builtin else 224)
    attr = _load_attr(args, model, device, size)
    if args.target and not all(0 <= k < attr.num_classes for k in args.target):
        raise CLIError(f"--target: classes must be in [0, {attr.num_classes - 1}].")
    transform = _image_transform(size)
    out = _output_folder(args.output, "--output")
    from tqdm.auto import tqdm

    for start in tqdm(range(0, len(paths), args.batch_size), desc="explain", unit="batch"):
        batch = paths[start : start + args.batch_size]
        x = torch.stack([transform(_read_rgb(str(p))) for p in batch]).to(device)
        with torch.no_grad():
            probs = model(x).softmax(-1)
        if args.target:
            tgt = args.target * len(batch) if len(args.target) == 1 else args.target[start:]
            target = torch.tensor(tgt[: len(batch)], device=device)
        else:
            target = probs.argmax(-1)
        masks = attr.mask(x, target=target)
        for i, p in enumerate(batch):
            k = int(target[i])
            title = f"{p.name}: class {k} (p={float(probs[i, k]):.2f})"
            dest = out / names[start + i]
            _overlay(x[i], masks[i], title, dest)
            area = float(masks[i].mean())
            print(f"{p} -> {dest} (class {k}, p {float(probs[i, k]):.3f}, mask area {area:.3f})")
    return 0


def _xml_dataset(args: argparse.Namespace, size: int):
    from captum_realtime_mask.metrics import parse_voc_xml

    folder = _image_folder(args.image_folder, size)
    ann = _existing(args.annotations, "--annotations", folder=True)
    items = []
    for path, label in folder.samples:
        xml = ann / (Path(path).stem + ".xml")
        if not xml.is_file():
            raise FileNotFoundError(f"--annotations: no {xml.name} for image {path}")
        items.append((path, label, parse_voc_xml(xml, size=size).boxes))

    class _Boxed(torch.utils.data.Dataset):
        def __len__(self) -> int:
            return len(items)

        def __getitem__(self, i: int):
            image, label = folder[i]
            return image, label, items[i][2]

    return _Boxed()


def _collate(batch):
    xs, ys, boxes = zip(*batch, strict=True)
    return torch.stack(xs), torch.tensor(ys), [torch.as_tensor(b).view(-1, 4) for b in boxes]


def cmd_evaluate(args: argparse.Namespace) -> int:
    """Localisation error and saliency metric of the masker and of the centre box."""
    from torch.utils.data import DataLoader
    from tqdm.auto import tqdm

    from captum_realtime_mask.metrics import LocalisationEvaluator, SaliencyMetric, centre_box

    masker = _existing(args.masker, "--masker", folder=True)
    record = _read_record(masker)
    if args.image_folder:
        record.pop("builtin", None)
    _fill_from_record(args, record)
    device = _device(args.device)
    _check_data_options(args)
    if args.json:
        _check_output_file(args.json, "--json")
    if args.builtin:
        dataset = _builtin_split(args, "test")
    else:
        if not args.annotations:
            raise CLIError("--annotations: needed with --image-folder (a folder of XML boxes).")
        dataset = _xml_dataset(args, args.image_size or 224)
    model = load_classifier(args, _masker_num_classes(masker)).to(device)
    attr = _load_attr(args, model, device, args.image_size or (64 if args.builtin else 224))
    kwargs = _loader_kwargs(args, device)
    loader = DataLoader(dataset, shuffle=False, collate_fn=_collate, **kwargs)
    rows = {
        "realtime mask": (
            LocalisationEvaluator(args.threshold),
            SaliencyMetric(model, args.threshold),
        ),
        "centre box": (LocalisationEvaluator(), SaliencyMetric(model)),
    }
    correct = 0
    for x, y, boxes in tqdm(loader, desc="evaluate", unit="batch"):
        x, y = x.to(device), y.to(device)
        with torch.no_grad():
            correct += int((model(x).argmax(-1) == y).sum())
        mask = attr.mask(x, target=y)
        loc, sal = rows["realtime mask"]
        loc.update(mask, boxes)
        sal.update(x, mask, target=y)
        cb = centre_box(x.shape[-2], x.shape[-1], device=device)
        loc, sal = rows["centre box"]
        loc.update(None, boxes, boxes=cb)
        sal.update(x, None, target=y, boxes=cb)
    n = rows["realtime mask"][0].num_examples
    results = {
        "num_images": n,
        "classifier_accuracy": correct / max(n, 1),
        "threshold": args.threshold,
        "methods": {
            name: {
                "localisation_error": float(loc.compute()),
                "saliency_metric": float(sal.compute()),
                "empty_masks": int(loc.empty.sum()),
            }
            for name, (loc, sal) in rows.items()
        },
    }
    print(f"{n} images, classifier accuracy {results['classifier_accuracy']:.3f}")
    print(f"{'method':<16}{'loc. error':>12}{'saliency':>12}{'empty':>8}")
    for name, r in results["methods"].items():
        print(
            f"{name:<16}{r['localisation_error']:>12.3f}{r['saliency_metric']:>12.3f}"
            f"{r['empty_masks']:>8d}"
        )
    if args.json:
        path = Path(args.json).expanduser()
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(results, indent=2) + "\n")
        except OSError as exc:
            raise CLIError(f"--json {path}: cannot write the results ({exc}).") from None
        print(f"wrote {args.json}")
    return 0


def _one_line(exc: BaseException, limit: int = 1200) -> str:
    """The message of ``exc`` on one line, of about ``limit`` characters at most.

    An error raised in a DataLoader worker comes back with the worker's traceback in its
    message; only its last line, the original message, is kept. A longer message (a state
    dict's key lists, say) keeps its start and its end, where the hint is.
    """
    text = str(exc)
    if "Original Traceback" in text:
        last = text.strip().splitlines()[-1]
        text = last.split(": ", 1)[1] if ": " in last else last
    text = " ".join(text.split()) or type(exc).__name__
    if len(text) > limit:
        head, tail = text[: limit * 2 // 3], text[-(limit // 3) :]
        text = f"{head} ... ({len(text) - len(head) - len(tail)} characters left out) ... {tail}"
    return text


COMMANDS = {
    "demo": cmd_demo,
    "benchmark": cmd_benchmark,
    "train": cmd_train,
    "explain": cmd_explain,
    "evaluate": cmd_evaluate,
}


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit code (0 success, 2 user error)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        if args.cache_dir is not None:
            _check_folder_path(args.cache_dir, "--cache-dir")
        return COMMANDS[args.command](args)
    except (CLIError, InputError, CheckpointError, TrainingError, FileNotFoundError) as exc:
        message = _one_line(exc)
        print(f"captum-realtime-mask {args.command}: error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
