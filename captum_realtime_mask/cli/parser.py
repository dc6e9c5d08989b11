"""The argument parser of ``captum-realtime-mask``: its subcommands, options and value types.

Option values are checked as they are parsed, with the package's own checks
(:func:`captum_realtime_mask._checks.argparse_type`): a value out of its range is an argparse
usage error (exit code 2, usage lines first), worded as the library words it.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable

from captum_realtime_mask import __version__
from captum_realtime_mask._checks import argparse_type, integer, real

__all__ = ["PROG", "build_parser"]

PROG = "captum-realtime-mask"

positive_int = argparse_type(int, integer, low=1)
non_negative_int = argparse_type(int, integer, low=0)
any_int = argparse_type(int, integer)
finite_float = argparse_type(float, real)
positive_float = argparse_type(float, real, low=0, low_open=True)
unit_float = argparse_type(float, real, low=0, high=1)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``captum-realtime-mask`` (for the docs and the tests).

    Returns:
        The parser; ``parse_args`` gives a namespace whose ``command`` names the subcommand.
    """
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Real-time learned saliency masks (Dabkowski & Gal, NIPS 2017) for Captum.",
    )
    parser.add_argument(
        "--version", action="version", version=f"%(prog)s {__version__}", help="print the version"
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, (summary, description, add_options) in _COMMANDS.items():
        add_options(sub.add_parser(name, help=summary, description=description))
    return parser


# ------------------------------------------------------------------------------- commands
def _demo_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--output", default="runs/demo", help="output folder (default runs/demo)")
    _add_cache(p)


def _benchmark_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--mode",
        choices=("quick", "full"),
        default="quick",
        help="quick: minutes, one black box (the main job); full: the docs' results, under an "
        "hour on 2 CPU cores (default quick)",
    )
    p.add_argument(
        "--suite",
        choices=("single", "scenes"),
        default="single",
        help="single: one item per cluttered image (the paper's protocol); scenes: one to three "
        "items per image, multi-label black boxes, every present class scored (default single)",
    )
    p.add_argument(
        "--output", default=None, help="output folder (default runs/<mode>, runs/scenes-<mode>)"
    )
    p.add_argument(
        "--blackboxes", nargs="+", help="black box presets (resnet, cspdarknet; default: mode's)"
    )
    p.add_argument(
        "--jobs",
        type=positive_int,
        default=2,
        help="black boxes evaluated at once, in separate processes (default 2)",
    )
    _add_cache(p)


def _train_options(p: argparse.ArgumentParser) -> None:
    _add_classifier(p)
    _add_data(p)
    g = p.add_argument_group("training")
    g.add_argument("--output", default="runs/masker", help="masker folder (default runs/masker)")
    g.add_argument(
        "--epochs",
        type=positive_int,
        help="passes over the data (default: enough for about 60,000 images)",
    )
    g.add_argument("--max-steps", type=positive_int, help="stop after this many optimiser steps")
    g.add_argument(
        "--lr", type=positive_float, default=1e-3, help="Adam learning rate (default 1e-3)"
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
    g.add_argument(
        "--preset",
        choices=("light", "fast", "paper"),
        default="light",
        help="masker decoder: light (widths from the encoder, bilinear upsampling; default), "
        "fast (light with channel reduction before each resize: cheaper on wide encoders) or "
        "paper (the paper's 768-channel decoder with transposed convolutions)",
    )
    g.add_argument("--checkpoint-dir", help="write training checkpoints here")
    g.add_argument(
        "--checkpoint-every",
        type=positive_int,
        help="steps between checkpoints (needs --checkpoint-dir)",
    )
    g.add_argument("--resume", action="store_true", help="resume from --checkpoint-dir")
    g.add_argument(
        "--seed",
        type=any_int,
        default=0,
        help="seed of the masker's initial weights and of the training's shuffling and random "
        "draws: the same seed and options train the same masker (default 0)",
    )
    g.add_argument("--no-progress", action="store_true", help="no progress bar")
    g.add_argument(
        "--channels-last",
        action="store_true",
        help="train in channels-last memory format (faster convolutions on most hardware)",
    )


def _explain_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("images", nargs="+", help="image files or folders of images")
    p.add_argument("--masker", required=True, help="folder written by `train` (or attr.save)")
    _add_classifier(p)
    p.add_argument(
        "--builtin",
        action="store_true",
        help="the classifier is a built-in black box (--blackbox) or uses the cluttered "
        "dataset's normalisation",
    )
    p.add_argument("--target", type=any_int, nargs="+", help="class per image, or one for all")
    p.add_argument(
        "--output", default="runs/explain", help="folder for the overlays (default runs/explain)"
    )
    p.add_argument(
        "--batch-size", type=positive_int, default=16, help="images per batch (default 16)"
    )
    _add_overlay(p)
    _add_cache(p)


def _video_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "input",
        metavar="INPUT",
        help="video file (anything ffmpeg reads: .mp4, .avi, .mkv, .mov, ...) or a camera "
        "index (0: the first camera) when no file of that name exists",
    )
    p.add_argument("--masker", required=True, help="folder written by `train` (or attr.save)")
    p.add_argument(
        "--output",
        required=True,
        help="overlay video to write: .mp4, .mkv, .mov or .avi (H.264, the input's frame rate "
        "and frame size)",
    )
    _add_classifier(p)
    p.add_argument(
        "--builtin",
        action="store_true",
        help="the classifier is a built-in black box (--blackbox) or uses the cluttered "
        "dataset's normalisation",
    )
    p.add_argument(
        "--target",
        type=any_int,
        help="class to explain in every frame (default: the class predicted in each frame)",
    )
    p.add_argument(
        "--batch-size",
        type=positive_int,
        help="frames explained at once (default 32 for a file; 1 for a camera, the lowest latency)",
    )
    p.add_argument(
        "--max-frames",
        type=positive_int,
        help="stop after this many frames (a camera otherwise runs until Ctrl-C)",
    )
    p.add_argument(
        "--threads",
        type=positive_int,
        help="CPU threads of torch (default on the CPU: one per core but one, which is left to "
        "ffmpeg's reader and writer; on a machine busy with other work 1 is often fastest)",
    )
    _add_overlay(p)
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    _add_cache(p)


def _evaluate_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--masker", required=True, help="folder written by `train` (or attr.save)")
    _add_classifier(p)
    _add_data(p, annotations=True)
    p.add_argument(
        "--threshold",
        type=unit_float,
        default=0.5,
        help="mask threshold in [0, 1] (default 0.5)",
    )
    p.add_argument("--json", help="also write the results to this JSON file")


_COMMANDS: dict[str, tuple[str, str, Callable[[argparse.ArgumentParser], None]]] = {
    "demo": (
        "the README's main job: the quick benchmark on cluttered Fashion-MNIST",
        "Train black boxes and maskers on cluttered Fashion-MNIST (quick mode), "
        "explain its test images, and write results.json, results.md and figure.png.",
        _demo_options,
    ),
    "benchmark": (
        "the cluttered Fashion-MNIST benchmark, quick or full",
        "Run the benchmark (the paper's tables at CPU scale) and write "
        "results.json, results.md and figure.png.",
        _benchmark_options,
    ),
    "train": (
        "train a masker for a classifier; writes a masker folder",
        "Train the masking model for a frozen classifier on an ImageFolder or on "
        "the built-in dataset, then save it (masker.safetensors + config.json).",
        _train_options,
    ),
    "explain": (
        "write PNG overlays of masks for images or folders",
        "Explain images with a trained masker: one PNG overlay per image, for "
        "--target or the predicted class.",
        _explain_options,
    ),
    "video": (
        "explain a video file or a camera frame by frame; writes an overlay video",
        "Explain every frame of a video file or a camera with a trained masker (for --target "
        "or the class predicted in the frame) and write the overlay video, at the input's "
        "frame rate and frame size; prints the frames per second reached. Needs the video "
        "extra: pip install 'captum-realtime-mask[video]'.",
        _video_options,
    ),
    "evaluate": (
        "localisation error and saliency metric on a dataset with boxes",
        "Score a trained masker with the paper's protocol: localisation error "
        "(threshold, tightest box, hit when IoU > 0.5) and the saliency metric, next to the "
        "centre-box baseline.",
        _evaluate_options,
    ),
}


# ------------------------------------------------------------------------------- option groups
def _add_overlay(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group(
        "overlay", "How a mask is drawn over its image: (1 - alpha) * image + alpha * colour."
    )
    g.add_argument(
        "--colormap",
        default="jet",
        help="colour map of the mask: jet (default) or gray, or any matplotlib colour map name "
        "such as inferno (needs matplotlib: the viz extra)",
    )
    g.add_argument(
        "--alpha",
        type=unit_float,
        default=0.5,
        help="weight of the coloured mask in [0, 1]; 0 shows the image alone (default 0.5)",
    )


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
        "inside the model. explain and evaluate take the options left out from the "
        "classifier.json that train wrote in the masker folder.",
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
        type=positive_int,
        help="number of classes (default: train: from the data; explain and evaluate: the "
        "number the masker was trained for)",
    )
    g.add_argument(
        "--pretrained",
        action="store_true",
        help="load the timm model's pretrained weights (downloads them; needs a network); "
        "--mean, --std and --image-size then default to the model's own data config",
    )
    g.add_argument(
        "--blackbox",
        default=None,
        help="with --builtin and no --model: benchmark black box preset to train or load from "
        "the cache (default: resnet)",
    )
    default = (
        "default: with --builtin the dataset's, with --pretrained the model's, else ImageNet's"
    )
    g.add_argument("--mean", type=finite_float, nargs=3, help=f"normalisation mean ({default})")
    g.add_argument("--std", type=positive_float, nargs=3, help=f"normalisation std ({default})")
    g.add_argument(
        "--no-normalize", action="store_true", help="feed [0, 1] images to the model unchanged"
    )
    g.add_argument(
        "--image-size",
        type=positive_int,
        help="side images are resized to (default 224; with --builtin the benchmark's 64, which "
        "train --builtin always uses; with --pretrained the model's input size)",
    )
    g.add_argument(
        "--device",
        help="cpu, cuda, cuda:1, ... (default: cuda when present); checked before any work",
    )


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
        "--batch-size", type=positive_int, default=32, help="images per batch (default 32)"
    )
    g.add_argument(
        "--num-workers",
        type=non_negative_int,
        default=None,
        help="DataLoader workers (default min(4, CPU count); pin_memory on CUDA and "
        "persistent workers are turned on automatically)",
    )
    g.add_argument("--n", type=positive_int, help="with --builtin: number of images of the split")
    _add_cache(p)
