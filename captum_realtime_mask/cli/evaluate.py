"""The ``evaluate`` command: localisation error and saliency metric, next to the centre box."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import torch

from captum_realtime_mask.cli import data
from captum_realtime_mask.cli.classifier import fill_from_record, load_classifier, read_record
from captum_realtime_mask.cli.maskers import load_masker, masker_num_classes
from captum_realtime_mask.cli.paths import check_output_file, existing
from captum_realtime_mask.cli.usage import CLIError

__all__ = ["cmd_evaluate"]


def cmd_evaluate(args: argparse.Namespace) -> int:
    """Score the masker and the centre box (``args.device`` is the checked device)."""
    from torch.utils.data import DataLoader

    masker = existing(args.masker, "--masker", folder=True)
    record = read_record(masker)
    if args.image_folder:
        record.pop("builtin", None)
    fill_from_record(args, record)
    data.check_data_options(args)
    if args.json:
        check_output_file(args.json, "--json")
    if args.builtin:
        dataset = data.builtin_split(args, "test")
    else:
        if not args.annotations:
            raise CLIError("--annotations: needed with --image-folder (a folder of XML boxes).")
        folder = data.image_folder(args.image_folder)
        xmls = data.xml_files(folder, args.annotations)
    classifier = load_classifier(args, masker_num_classes(masker))
    model = classifier.model.to(args.device)
    attr = load_masker(masker, model, args.device, classifier.image_size)
    if not args.builtin:  # the classifier decides the default size
        dataset = data.boxed_dataset(folder, xmls, classifier.image_size)
    kwargs = data.loader_kwargs(args, args.device)
    loader = DataLoader(dataset, shuffle=False, collate_fn=data.collate_boxes, **kwargs)
    results = _score(loader, model, attr, args.threshold, args.device)
    _print_results(results)
    if args.json:
        _write_json(results, args.json)
    return 0


def _score(loader, model, attr, threshold: float, device: torch.device) -> dict[str, Any]:
    """The results of the masker and of the centre box on every batch of ``loader``."""
    from tqdm.auto import tqdm

    from captum_realtime_mask.metrics import LocalisationEvaluator, SaliencyMetric, centre_box

    rows = {
        "realtime mask": (LocalisationEvaluator(threshold), SaliencyMetric(model, threshold)),
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
    return {
        "num_images": n,
        "classifier_accuracy": correct / max(n, 1),
        "threshold": threshold,
        "methods": {
            name: {
                "localisation_error": float(loc.compute()),
                "saliency_metric": float(sal.compute()),
                "empty_masks": int(loc.empty.sum()),
            }
            for name, (loc, sal) in rows.items()
        },
    }


def _print_results(results: dict[str, Any]) -> None:
    """The results as a table on stdout."""
    print(
        f"{results['num_images']} images, classifier accuracy {results['classifier_accuracy']:.3f}"
    )
    print(f"{'method':<16}{'loc. error':>12}{'saliency':>12}{'empty':>8}")
    for name, r in results["methods"].items():
        print(
            f"{name:<16}{r['localisation_error']:>12.3f}{r['saliency_metric']:>12.3f}"
            f"{r['empty_masks']:>8d}"
        )


def _write_json(results: dict[str, Any], file: str) -> None:
    """Write the results to the ``--json`` file."""
    path = Path(file).expanduser()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(results, indent=2) + "\n")
    except OSError as exc:
        raise CLIError(f"--json {path}: cannot write the results ({exc}).") from None
    print(f"wrote {file}")
