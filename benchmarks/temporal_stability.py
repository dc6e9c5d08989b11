r"""Temporal stability: do the masks flicker when only the background of a video moves?

Not a test: a script that writes ``results.json`` and ``figure.png``. It builds clips of
cluttered Fashion-MNIST composites (:func:`~captum_realtime_mask.datasets.render_composites`,
the benchmark's own drawing) in which the item stays where it is, at the same size and tint,
while the background photograph is panned under it: each clip is one composite whose crop of
the photograph slides across 80% of the room the picture leaves. Every frame is explained for
the item's true class by

- the learned masker (one forward pass; its mask thresholded at 0.5), and
- Captum's ``LayerGradCam`` on the same classifier, at its last convolution (the benchmark's
  Grad-CAM; a 2 x 2 map at 64 px) and at the last convolution of ``layer3`` (stride 16),
  upsampled bilinearly, divided by each frame's maximum and thresholded at 0.5,

and the script reports, per method, the mean IoU between consecutive frames' thresholded
masks (1: the same pixels; two empty masks count 1), the mean absolute change of the maps
between consecutive frames (maps in ``[0, 1]``; also divided by the map's mean value, since a
small mask changes less in absolute terms than a large one), the mean IoU of the thresholded
mask with the item's visible pixels, the kept area and the share of frames whose thresholded
mask is empty. The mean absolute change of the frames themselves gives the input's change for
scale.

The classifier is the benchmark's ResNet black box trained on the quickstart tutorial's
"small" data (4000 composites; :func:`~captum_realtime_mask.benchmark.blackbox.train_blackbox`,
cached, so the quickstart and the video tutorial share it), and the masker is fitted as the
quickstart fits it (the classifier's frozen backbone, the benchmark's objective, 3 epochs,
cosine learning rate) and cached under ``<cache>/benchmarks/temporal_stability/``. A first run
trains both (measured on two CPU cores shared with other jobs: 5.4 minutes for the black box,
3.7 for the masker); later runs load them and take about 10 seconds. ``--quick`` uses the
tutorials' "tiny" sizes (a few training steps: its masks mean nothing) to check that the
script runs.

Examples:
    python benchmarks/temporal_stability.py --output results/temporal_stability
    python benchmarks/temporal_stability.py --quick --output /tmp/stability
"""

from __future__ import annotations

import argparse
import hashlib
import json
import platform
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from captum_realtime_mask import RealTimeMaskAttribution
from captum_realtime_mask.benchmark.blackbox import BLACKBOX_PRESETS, train_blackbox
from captum_realtime_mask.benchmark.methods import find_last_conv
from captum_realtime_mask.datasets import (
    FASHION_MNIST_CLASSES,
    ClutteredConfig,
    ClutteredFashionMNIST,
    default_cache_dir,
    load_fashion_mnist,
    render_composites,
)
from captum_realtime_mask.visualization import overlay_mask

#: Sizes of the two modes: the quickstart tutorial's "small" and "tiny".
SIZES: dict[str, dict[str, Any]] = {
    "small": {"n_train": 4000, "n_test": 200, "blackbox_steps": None, "epochs": 3, "steps": None},
    "tiny": {"n_train": 256, "n_test": 64, "blackbox_steps": 8, "epochs": 1, "steps": 8},
}
PAN = (0.1, 0.9)  # the crop's horizontal position over a clip (uniform 2 of the composite)
THRESHOLD = 0.5


def main(argv: list[str] | None = None) -> int:
    """Run the study; print the table and write ``results.json`` and ``figure.png``."""
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--output", default="results/temporal_stability", help="output folder")
    p.add_argument("--clips", type=int, default=16, help="clips (one test item each)")
    p.add_argument("--frames", type=int, default=48, help="frames per clip")
    p.add_argument("--quick", action="store_true", help="tiny models: checks that it runs")
    p.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    p.add_argument("--cache-dir", default=None, help="cache (default: the package's)")
    p.add_argument("--seed", type=int, default=0, help="seed of the clips' composites")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    start = time.perf_counter()
    sizes = SIZES["tiny" if args.quick else "small"]
    cache = Path(args.cache_dir).expanduser() if args.cache_dir else default_cache_dir()
    data = ClutteredConfig(n_train=sizes["n_train"], n_val=100, n_test=sizes["n_test"])

    t0 = time.perf_counter()
    model = train_blackbox(
        BLACKBOX_PRESETS["resnet"],
        dataset=data,
        max_steps=sizes["blackbox_steps"],
        cache_dir=cache,
        log=print,
    )
    attr = masker_for(model, data, sizes, cache)
    setup_seconds = time.perf_counter() - t0
    print(f"black box and masker ready in {setup_seconds:.0f} s")

    frames, item_masks, labels = make_clips(args.clips, args.frames, args.seed, data)
    methods = {
        "realtime mask": lambda x, t: attr.mask(x, target=t),
        **grad_cams(model),
    }
    maps: dict[str, list[torch.Tensor]] = {name: [] for name in methods}
    correct = 0
    t0 = time.perf_counter()
    for clip, label in zip(frames, labels):
        target = torch.full((len(clip),), int(label))
        with torch.no_grad():
            correct += int((model(clip).argmax(-1) == target).sum())
        for name, explain in methods.items():
            maps[name].append(explain(clip, target).detach()[:, 0].clamp(0, 1))
    explain_seconds = time.perf_counter() - t0

    rows = {name: scores(torch.stack(m), item_masks) for name, m in maps.items()}
    rows["(the frames)"] = frame_change(frames)
    report = {
        "setup": {
            "clips": args.clips,
            "frames_per_clip": args.frames,
            "image_size": data.image_size,
            "pan": list(PAN),
            "threshold": THRESHOLD,
            "mode": "quick" if args.quick else "small",
            "blackbox_test_accuracy": model.info.get("test_accuracy"),
            "clip_accuracy": correct / (args.clips * args.frames),
            "masker": attr_folder(model, sizes, cache).relative_to(cache).as_posix(),
            "threads": torch.get_num_threads(),
            "torch": torch.__version__,
            "python": platform.python_version(),
        },
        "methods": rows,
        "seconds": {
            "setup": round(setup_seconds, 1),
            "explain": round(explain_seconds, 1),
            "total": round(time.perf_counter() - start, 1),
        },
    }
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(report, indent=2) + "\n")
    draw(out / "figure.png", frames, maps, labels)
    print_table(report)
    print(f"wrote {out / 'results.json'} and {out / 'figure.png'}")
    return 0


# ------------------------------------------------------------------------ models
def attr_folder(model: nn.Module, sizes: dict[str, Any], cache: Path) -> Path:
    """Where the masker for ``model`` and these sizes is cached."""
    record = json.dumps({"blackbox": model.info, "sizes": sizes}, sort_keys=True, default=str)
    key = hashlib.sha256(record.encode()).hexdigest()[:16]
    return cache / "benchmarks" / "temporal_stability" / f"masker-{key}"


def masker_for(
    model: nn.Module, data: ClutteredConfig, sizes: dict[str, Any], cache: Path
) -> RealTimeMaskAttribution:
    """The quickstart's masker for ``model``: loaded from the cache, else fitted and saved."""
    folder = attr_folder(model, sizes, cache)
    if (folder / "config.json").is_file():
        print(f"masker: loaded from {folder}")
        return RealTimeMaskAttribution.load(folder, model)
    print(f"masker: fitting ({sizes['epochs']} epochs), then saving to {folder}")
    attr = RealTimeMaskAttribution(model)
    train = ClutteredFashionMNIST("train", data, cache_dir=cache, return_boxes=False)
    loader = torch.utils.data.DataLoader(
        train, batch_size=32, shuffle=True, generator=torch.Generator().manual_seed(0)
    )
    attr.fit(
        loader,
        epochs=sizes["epochs"],
        max_steps=sizes["steps"],
        progress=False,
    )
    attr.save(folder)
    return attr


def grad_cams(model: nn.Module) -> dict[str, Any]:
    """Captum's LayerGradCam at the last convolution and (if any) at ``layer3``'s last one."""
    from captum.attr import LayerAttribution, LayerGradCam

    layers = {"Grad-CAM (last conv)": find_last_conv(model)}
    network = getattr(model, "classifier", model)
    layer3 = getattr(network, "layer3", None)
    if isinstance(layer3, nn.Module):
        layers["Grad-CAM (layer3)"] = find_last_conv(layer3)

    def explainer(layer: nn.Module):
        cam = LayerGradCam(model, layer)

        def explain(x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
            a = cam.attribute(x, target=target, relu_attributions=True)
            a = LayerAttribution.interpolate(a, tuple(x.shape[-2:]), interpolate_mode="bilinear")
            peak = a.flatten(1).amax(1).clamp_min(1e-12).view(-1, 1, 1, 1)
            return a / peak  # each frame's map in [0, 1]

        return explain

    return {name: explainer(layer) for name, layer in layers.items()}


# ------------------------------------------------------------------------ clips
def make_clips(
    clips: int, frames: int, seed: int, data: ClutteredConfig
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Clips whose item stays put while the background is panned under it.

    Returns:
        Frames ``(clips, frames, 3, S, S)`` in [0, 1], the items' visible pixels
        ``(clips, frames, S, S)`` (the same in every frame of a clip) and the labels.
    """
    items, labels = load_fashion_mnist("test")
    rng = np.random.default_rng(seed)
    which = rng.choice(len(items), size=clips, replace=False)
    uniforms = rng.random((clips, 13))
    u = np.repeat(uniforms, frames, axis=0)
    u[:, 2] = np.tile(np.linspace(*PAN, frames), clips)  # only the crop's x position moves
    images, masks, _ = render_composites(np.repeat(items[which], frames, axis=0), u, data)
    size = data.image_size
    x = torch.from_numpy(images).float().div_(255).view(clips, frames, 3, size, size)
    m = torch.from_numpy(masks).view(clips, frames, size, size)
    assert bool((m == m[:, :1]).all()), "the items must not move"
    return x, m, torch.from_numpy(labels[which].astype(np.int64))


# ------------------------------------------------------------------------ scores
def iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """IoU of boolean masks ``(..., H, W)``; two empty masks have IoU 1."""
    inter = (a & b).flatten(-2).sum(-1).float()
    union = (a | b).flatten(-2).sum(-1).float()
    return torch.where(union > 0, inter / union.clamp_min(1), torch.ones_like(union))


def scores(maps: torch.Tensor, items: torch.Tensor) -> dict[str, float]:
    """The stability and localisation figures of ``maps`` ``(clips, frames, H, W)``."""
    kept = maps > THRESHOLD
    consecutive = iou(kept[:, 1:], kept[:, :-1])  # (clips, frames - 1)
    change = (maps[:, 1:] - maps[:, :-1]).abs().mean((-2, -1))
    per_clip = consecutive.mean(1)
    mean_map = float(maps.mean())
    return {
        "iou_consecutive": float(consecutive.mean()),
        "iou_consecutive_clip_std": float(per_clip.std()) if len(per_clip) > 1 else 0.0,
        "iou_consecutive_median_clip": float(per_clip.median()),
        "iou_consecutive_worst_clip": float(per_clip.min()),
        "mean_abs_change": float(change.mean()),
        "mean_map": mean_map,
        "relative_change": float(change.mean()) / mean_map if mean_map > 0 else 0.0,
        "iou_with_item": float(iou(kept, items).mean()),
        "area": float(kept.float().mean()),
        "empty_frames": float((~kept.flatten(-2).any(-1)).float().mean()),
    }


def frame_change(frames: torch.Tensor) -> dict[str, float]:
    """How much the input changes between consecutive frames (mean over pixels, channels)."""
    return {"mean_abs_change": float((frames[:, 1:] - frames[:, :-1]).abs().mean())}


def print_table(report: dict[str, Any]) -> None:
    """The results as a Markdown table on stdout."""
    setup = report["setup"]
    print(
        f"\n{setup['clips']} clips x {setup['frames_per_clip']} frames, {setup['image_size']} "
        f"px; classifier right on {setup['clip_accuracy']:.1%} of the frames"
    )
    print(
        "| method | IoU consecutive | median clip | worst clip | mean abs change "
        "| relative change | IoU with item | area | empty frames |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for name, row in report["methods"].items():
        if "iou_consecutive" not in row:
            print(f"| {name} | | | | {row['mean_abs_change']:.4f} | | | | |")
            continue
        print(
            f"| {name} | {row['iou_consecutive']:.3f} "
            f"| {row['iou_consecutive_median_clip']:.3f} | {row['iou_consecutive_worst_clip']:.3f} "
            f"| {row['mean_abs_change']:.4f} | {row['relative_change']:.3f} "
            f"| {row['iou_with_item']:.3f} | {row['area']:.3f} | {row['empty_frames']:.3f} |"
        )


# ------------------------------------------------------------------------ figure
def draw(
    path: Path, frames: torch.Tensor, maps: dict[str, list[torch.Tensor]], labels: torch.Tensor
) -> None:
    """Two clips (their frames and each method's overlays), and IoU against the frame index."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(maps)
    shown = np.linspace(0, frames.shape[1] - 1, 6).round().astype(int)
    clips = list(range(min(2, len(frames))))
    rows = len(clips) * (1 + len(names))
    fig = plt.figure(figsize=(10, 1.45 * rows + 2.4))
    grid = fig.add_gridspec(rows + 2, len(shown), height_ratios=[1] * rows + [0.25, 1.7])
    r = 0
    for c in clips:
        pictures = {"frame": (frames[c].permute(0, 2, 3, 1).numpy() * 255).astype(np.uint8)}
        for name in names:
            pictures[name] = overlay_mask(frames[c], maps[name][c], alpha=0.5)
        for title, images in pictures.items():
            for j, t in enumerate(shown):
                ax = fig.add_subplot(grid[r, j])
                ax.imshow(images[t])
                ax.set_xticks([])
                ax.set_yticks([])
                if j == 0:
                    label = FASHION_MNIST_CLASSES[int(labels[c])] if title == "frame" else ""
                    ax.set_ylabel(f"{title}\n{label}".strip(), fontsize=7)
                if r == 0:
                    ax.set_title(f"frame {t}", fontsize=8)
            r += 1
    ax = fig.add_subplot(grid[rows + 1, :])
    for name in names:
        kept = torch.stack(maps[name]) > THRESHOLD
        ax.plot(iou(kept[:, 1:], kept[:, :-1]).mean(0).numpy(), label=name)
    ax.set_xlabel("frame t")
    ax.set_ylabel("IoU(t, t+1), mean of clips")
    ax.set_ylim(0, 1.02)
    ax.legend(fontsize=7, loc="lower right")
    fig.savefig(path, dpi=60, bbox_inches="tight")
    plt.close(fig)


if __name__ == "__main__":
    sys.exit(main())
