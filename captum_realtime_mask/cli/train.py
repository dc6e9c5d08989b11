"""The ``train`` command: train a masker for a classifier and save it with its record."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from captum_realtime_mask.cli import data
from captum_realtime_mask.cli.classifier import (
    BUILTIN_IMAGE_SIZE,
    CLASSIFIER_RECORD,
    classifier_record,
    load_classifier,
)
from captum_realtime_mask.cli.maskers import (
    check_encoder_name,
    check_image_size,
    check_masker_output,
)
from captum_realtime_mask.cli.usage import CLIError

__all__ = ["cmd_train"]

#: The number of classes of the built-in benchmark.
BUILTIN_CLASSES = 10


def cmd_train(args: argparse.Namespace) -> int:
    """Train a masker and save it (``args.device`` is the checked :class:`torch.device`)."""
    from torch.utils.data import DataLoader

    from captum_realtime_mask.attribution import RealTimeMaskAttribution

    _check_options(args)
    if args.builtin:
        dataset, num_classes = data.builtin_split(args, "train"), BUILTIN_CLASSES
    else:
        dataset = data.image_folder(args.image_folder)
        num_classes = len(dataset.classes)
    num_classes = args.num_classes or num_classes
    classifier = load_classifier(args, num_classes)
    if not args.builtin:  # the classifier decides the default size
        dataset.transform = data.image_transform(classifier.image_size)
    kwargs = data.loader_kwargs(args, args.device)
    loader = DataLoader(dataset, shuffle=True, drop_last=False, **kwargs)
    attr = RealTimeMaskAttribution(
        classifier.model,
        num_classes=num_classes,
        encoder=args.encoder,
        pretrained=args.pretrained_encoder,
        preset=args.preset,
        seed=args.seed,
    )
    check_image_size(attr.masker.max_stride, classifier.image_size)
    attr.fit(
        loader,
        epochs=args.epochs,
        max_steps=args.max_steps,
        lr=args.lr,
        device=args.device,
        resume_from=args.checkpoint_dir if args.resume else None,
        **_fit_options(args),
    )
    attr.save(args.output)
    record = classifier_record(args, classifier, num_classes)
    (Path(args.output) / CLASSIFIER_RECORD).write_text(json.dumps(record, indent=2) + "\n")
    last = attr.history[-1] if attr.history else {}
    terms = ", ".join(f"{k} {v:.4g}" for k, v in last.items() if isinstance(v, float))
    print(f"saved the masker to {args.output}" + (f" ({terms})" if terms else ""))
    return 0


def _check_options(args: argparse.Namespace) -> None:
    """Refuse options that do not go together, before any data or classifier is loaded."""
    if args.builtin and args.image_size not in (None, BUILTIN_IMAGE_SIZE):
        raise CLIError(
            f"--image-size: the built-in benchmark's images are {BUILTIN_IMAGE_SIZE} px, got "
            f"{args.image_size}; leave --image-size out with --builtin."
        )
    if args.builtin and args.num_classes not in (None, BUILTIN_CLASSES):
        raise CLIError(
            f"--num-classes: the built-in benchmark has {BUILTIN_CLASSES} classes, got "
            f"{args.num_classes}; leave --num-classes out with --builtin."
        )
    data.check_data_options(args)
    if args.resume and not args.checkpoint_dir:
        raise CLIError("--resume: needs --checkpoint-dir.")
    if args.checkpoint_every and not args.checkpoint_dir:
        raise CLIError("--checkpoint-every: needs --checkpoint-dir (where to write them).")
    check_encoder_name(args.encoder)
    check_masker_output(args.output)


def _fit_options(args: argparse.Namespace) -> dict[str, Any]:
    """The options of :meth:`fit` beyond its arguments."""
    options: dict[str, Any] = {
        "progress": not args.no_progress,
        "seed": args.seed,
        "channels_last": args.channels_last,
    }
    if args.checkpoint_dir:
        options["checkpoint_dir"] = args.checkpoint_dir
    if args.checkpoint_every:
        options["checkpoint_every"] = args.checkpoint_every
    return options
