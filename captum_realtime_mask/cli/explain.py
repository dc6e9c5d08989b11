"""The ``explain`` command: one PNG overlay of the mask per image.

Each overlay is drawn at the size the classifier is fed (``--image-size``), with
:func:`~captum_realtime_mask.visualization.overlay_mask` (``--colormap``, ``--alpha``); the
class, its probability and the mask's area are printed, one line per image.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

import torch

from captum_realtime_mask.cli.classifier import fill_from_record, load_classifier, read_record
from captum_realtime_mask.cli.data import image_transform, read_rgb
from captum_realtime_mask.cli.maskers import load_masker, masker_num_classes
from captum_realtime_mask.cli.overlay import check_colormap, overlay_names, save_overlay
from captum_realtime_mask.cli.paths import (
    check_folder_path,
    existing,
    image_paths,
    output_folder,
)
from captum_realtime_mask.cli.usage import CLIError

__all__ = ["cmd_explain"]


def cmd_explain(args: argparse.Namespace) -> int:
    """Write one overlay PNG per image (``args.device`` is the checked :class:`torch.device`)."""
    masker = existing(args.masker, "--masker", folder=True)
    fill_from_record(args, read_record(masker))
    paths = image_paths(args.images)
    if args.target and len(args.target) not in (1, len(paths)):
        raise CLIError(
            f"--target: expected one class or one per image ({len(paths)}), got {len(args.target)}."
        )
    check_folder_path(args.output, "--output")
    check_colormap(args.colormap)
    classifier = load_classifier(args, masker_num_classes(masker))
    model = classifier.model.to(args.device)
    attr = load_masker(masker, model, args.device, classifier.image_size)
    if args.target and not all(0 <= k < attr.num_classes for k in args.target):
        raise CLIError(f"--target: classes must be in [0, {attr.num_classes - 1}].")
    out = output_folder(args.output, "--output")
    _write_overlays(args, paths, model, attr, classifier.image_size, out)
    return 0


def _write_overlays(
    args: argparse.Namespace,
    paths: Sequence[Path],
    model: torch.nn.Module,
    attr,
    size: int,
    out: Path,
) -> None:
    """Explain ``paths`` in batches; write and report one overlay per image."""
    from tqdm.auto import tqdm

    device = args.device
    names = overlay_names(paths)
    transform = image_transform(size)
    for start in tqdm(range(0, len(paths), args.batch_size), desc="explain", unit="batch"):
        batch = paths[start : start + args.batch_size]
        x = torch.stack([transform(read_rgb(str(p))) for p in batch]).to(device)
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
            dest = out / names[start + i]
            save_overlay(x[i], masks[i], dest, colormap=args.colormap, alpha=args.alpha)
            area = float(masks[i].mean())
            print(f"{p} -> {dest} (class {k}, p {float(probs[i, k]):.3f}, mask area {area:.3f})")
