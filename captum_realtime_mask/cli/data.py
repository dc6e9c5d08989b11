"""The images the commands read: ImageFolders, XML boxes, the built-in benchmark, loaders."""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

import torch

from captum_realtime_mask.cli.paths import existing
from captum_realtime_mask.cli.usage import CLIError

__all__ = [
    "boxed_dataset",
    "builtin_split",
    "check_data_options",
    "collate_boxes",
    "image_folder",
    "image_transform",
    "loader_kwargs",
    "read_rgb",
    "xml_files",
]


def check_data_options(args: argparse.Namespace) -> None:
    """``--n`` sizes the built-in splits only."""
    if args.n is not None and not args.builtin:
        raise CLIError("--n: only with --builtin (an ImageFolder is used whole).")


def loader_kwargs(args: argparse.Namespace, device: torch.device) -> dict[str, Any]:
    """DataLoader options: ``--batch-size``, ``--num-workers`` and their defaults."""
    workers = args.num_workers
    if workers is None:
        workers = min(4, os.cpu_count() or 1)
    return {
        "batch_size": args.batch_size,
        "num_workers": workers,
        "pin_memory": device.type == "cuda",
        "persistent_workers": workers > 0,
    }


def image_transform(size: int):
    """Resize to ``size`` x ``size`` and make a ``[0, 1]`` tensor."""
    from torchvision import transforms

    return transforms.Compose([transforms.Resize((size, size)), transforms.ToTensor()])


def read_rgb(path: str):
    """An image file as an RGB PIL image; an unreadable file is a CLIError naming it."""
    from PIL import Image

    try:
        with Image.open(path) as image:
            return image.convert("RGB")
    except OSError as exc:  # PIL's UnidentifiedImageError and truncated files included
        raise CLIError(f"cannot read the image {path}: {exc}") from None


def image_folder(root: str):
    """The ``--image-folder`` ImageFolder, its folders and classes checked, without a transform.

    The classifier decides the image size, so the transform is set once it is built:
    ``dataset.transform = image_transform(size)``.
    """
    from torchvision.datasets import ImageFolder

    folder = existing(root, "--image-folder", folder=True)
    try:
        return ImageFolder(str(folder), loader=read_rgb)
    except (FileNotFoundError, RuntimeError) as exc:
        raise CLIError(f"--image-folder {folder}: {exc}") from None


def xml_files(folder, annotations: str) -> list[Path]:
    """The ``--annotations`` XML file of every image of ``folder``, checked to exist."""
    ann = existing(annotations, "--annotations", folder=True)
    files = []
    for path, _ in folder.samples:
        xml = ann / (Path(path).stem + ".xml")
        if not xml.is_file():
            raise FileNotFoundError(f"--annotations: no {xml.name} for image {path}")
        files.append(xml)
    return files


def boxed_dataset(folder, xmls: list[Path], size: int) -> torch.utils.data.Dataset:
    """``(image, label, boxes)`` items: ``folder``'s images at ``size`` and their XML boxes."""
    from captum_realtime_mask.metrics import parse_voc_xml

    folder.transform = image_transform(size)
    boxes = [parse_voc_xml(xml, size=size).boxes for xml in xmls]

    class _Boxed(torch.utils.data.Dataset):
        def __len__(self) -> int:
            return len(boxes)

        def __getitem__(self, i: int):
            image, label = folder[i]
            return image, label, boxes[i]

    return _Boxed()


def collate_boxes(batch):
    """Stack images and labels; keep each image's ``(K, 4)`` boxes in a list."""
    xs, ys, boxes = zip(*batch, strict=True)
    return torch.stack(xs), torch.tensor(ys), [torch.as_tensor(b).view(-1, 4) for b in boxes]


def builtin_split(args: argparse.Namespace, split: str):
    """A split of the built-in cluttered Fashion-MNIST (``--n`` images; boxes off train)."""
    from captum_realtime_mask.datasets import ClutteredConfig, ClutteredFashionMNIST

    sizes = {"train": "n_train", "test": "n_test", "val": "n_val"}
    config = ClutteredConfig(**({sizes[split]: args.n} if args.n else {}))
    return ClutteredFashionMNIST(
        split, config, cache_dir=args.cache_dir, return_boxes=split != "train"
    )
