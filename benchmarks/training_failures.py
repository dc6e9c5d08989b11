r"""The default recipe beside the three usual failures, for the docs' training page.

Not a test: a script that trains four frozen-encoder maskers on a ResNet black box
(cluttered Fashion-MNIST at 64 px with the full benchmark's splits and seed, the ``resnet``
preset trained for ``--blackbox-epochs``, 8 by default against the benchmark's 16; from the
cache or trained there) with plain
``RealTimeMaskAttribution(model).fit(loader, ...)`` calls:

* ``default``: no options (the library's recipe);
* ``too large``: ``ObjectiveConfig(area_weight=0.5)``, an area term too weak for the preserve
  term, so the mask keeps much of the background;
* ``empty``: ``ObjectiveConfig(area_weight=60)`` with ``area_warmup=0``, the area term winning
  before the masker has found the items;
* ``class-blind``: ``ObjectiveConfig(fake_prob=0.05)`` with ``embedding_lr_scale=1``, too few
  fake selectors and a slow class embedding, so the mask ignores the class.

Every masker sees the same batches (batch 32, shuffled from seed 0) for the same number of
steps. Each is scored on the full mode's validation and test images: localisation error
(mask thresholded at 0.5, tightest box, hit when IoU > 0.5 with the item's box, as the
benchmark), the mean mask for the true class and for one random absent class per image (the
benchmark's draw), their ratio, the share of empty masks, the warnings fit() raised, and the
training time. A figure shows three test images with each masker's mask for the true class
and for an absent class.

Examples:
    python benchmarks/training_failures.py --cache-dir /tmp/failures_cache
    python benchmarks/training_failures.py --steps 2 --output runs/failures_smoke
"""

from __future__ import annotations

import argparse
import json
import platform
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader

#: name -> (ObjectiveConfig overrides, fit() options): the default and the three failures.
RECIPES: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {
    "default": ({}, {}),
    "too large": ({"area_weight": 0.5}, {}),
    "empty": ({"area_weight": 60.0}, {"area_warmup": 0.0}),
    "class-blind": ({"fake_prob": 0.05}, {"embedding_lr_scale": 1.0}),
}

#: Test images drawn in the figure.
FIGURE_IMAGES = (0, 1, 2)


def _log(line: str) -> None:
    print(f"{time.strftime('%H:%M:%S')} {line}", flush=True)


def load_world(cache: Path, blackbox_epochs: int) -> dict[str, Any]:
    """The full mode's data and a ResNet black box (trained into ``cache`` if missing)."""
    from captum_realtime_mask.benchmark.blackbox import train_blackbox
    from captum_realtime_mask.benchmark.config import BenchmarkConfig
    from captum_realtime_mask.datasets.cluttered import ClutteredFashionMNIST
    from captum_realtime_mask.datasets.config import ClutteredConfig

    cfg = BenchmarkConfig.for_mode("full")
    data = ClutteredConfig(n_train=cfg.n_train, n_val=cfg.n_val, n_test=cfg.n_test, seed=cfg.seed)
    model = train_blackbox(
        "resnet", data, epochs=blackbox_epochs, seed=cfg.seed, cache_dir=cache, log=_log
    ).eval()
    splits = {
        name: ClutteredFashionMNIST(name, data, cache_dir=cache)
        for name in ("train", "val", "test")
    }
    return {"cfg": cfg, "model": model, **splits}


def fit_recipe(world: dict[str, Any], name: str, steps: int, batch: int) -> dict[str, Any]:
    """Train one recipe's masker; its object, the warnings fit() raised and the seconds."""
    from captum_realtime_mask import ObjectiveConfig, RealTimeMaskAttribution

    objective, options = RECIPES[name]
    attr = RealTimeMaskAttribution(world["model"], objective=ObjectiveConfig(**objective))
    g = torch.Generator().manual_seed(0)
    loader = DataLoader(world["train"], batch_size=batch, shuffle=True, generator=g)
    start = time.perf_counter()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        attr.fit(loader, epochs=None, max_steps=steps, progress=False, **options)
    seconds = time.perf_counter() - start
    notes = [str(w.message) for w in caught if str(w.message).startswith("fit: the masks")]
    return {"attr": attr, "warnings": notes, "fit_s": seconds, "images_seen": steps * batch}


def score(attr: Any, split: Any, seed: int, batch: int) -> dict[str, Any]:
    """Localisation error, true/absent mask areas and empty masks of a masker on a split."""
    from captum_realtime_mask.benchmark._scoring import masker_scores

    s = masker_scores(attr, split.float_images(), split.labels, split.boxes, seed, batch)
    shown = list(FIGURE_IMAGES)
    return {
        "localisation_error": s["localisation_error"],
        "empty_masks": 100.0 * s["empty_masks"],
        "true_area": s["true_class_mask_mean"],
        "absent_area": s["absent_class_mask_mean"],
        "absent_to_true_ratio": s["absent_to_true_area_ratio"],
        "masks": tuple(s[key][shown] for key in ("masks", "absent_masks", "absent_targets")),
    }


def figure(world: dict[str, Any], scored: dict[str, dict[str, Any]], path: Path) -> None:
    """Rows: recipes; columns: each figure image's mask for its class and for an absent one."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from captum_realtime_mask.datasets import FASHION_MNIST_CLASSES
    from captum_realtime_mask.visualization import overlay_mask

    test = world["test"]
    x = test.float_images(list(FIGURE_IMAGES))
    y = test.labels[list(FIGURE_IMAGES)]
    cols = 2 * len(FIGURE_IMAGES)
    fig, axes = plt.subplots(len(scored), cols, figsize=(1.6 * cols, 1.75 * len(scored)))
    for r, (name, res) in enumerate(scored.items()):
        true, absent, wrong = res["test"]["masks"]
        for k in range(len(FIGURE_IMAGES)):
            for j, (mask, cls) in enumerate(((true[k], y[k]), (absent[k], wrong[k]))):
                ax = axes[r, 2 * k + j]
                ax.imshow(overlay_mask(x[k], mask[0]))
                ax.set_xticks([])
                ax.set_yticks([])
                tag = "" if j == 0 else "absent: "
                ax.set_title(f"{tag}{FASHION_MNIST_CLASSES[int(cls)]}", fontsize=7)
                if 2 * k + j == 0:
                    ax.set_ylabel(name, fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def markdown(results: dict[str, Any]) -> str:
    """The results table."""
    acc = results["blackbox_test_accuracy"]
    lines = [
        "# The default recipe and the three usual failures",
        "",
        f"Single-object benchmark world, ResNet black box (test accuracy {acc:.3f}); "
        f"{results['steps']} steps of batch {results['batch']} per masker on "
        f"{results['threads']} CPU thread(s). Localisation error: mask >= 0.5, tightest box, "
        "IoU > 0.5. Areas: mean mask.",
        "",
        "| recipe | overrides | val loc. error (%) | test loc. error (%) | test empty (%) | "
        "test true area | test absent area | absent / true | fit s | s per 10k images | warning |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for name, r in results["recipes"].items():
        v, t = r["val"], r["test"]
        options = {**r["objective"], **r["fit"]}
        overrides = ", ".join(f"{k}={w}" for k, w in options.items()) or "none"
        warn = "; ".join(w.split(":")[1].split("(")[0].strip() for w in r["warnings"]) or "none"
        cells = [
            name,
            overrides,
            f"{v['localisation_error']:.1f}",
            f"{t['localisation_error']:.1f}",
            f"{t['empty_masks']:.1f}",
            f"{t['true_area']:.3f}",
            f"{t['absent_area']:.3f}",
            f"{t['absent_to_true_ratio']:.2f}",
            f"{r['fit_s']:.0f}",
            f"{r['s_per_10k_images']:.0f}",
            warn,
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Train, score, draw and write ``results.json``, ``results.md`` and ``figure.png``."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--cache-dir", default=None, help="benchmark cache (default: the library's)"
    )
    parser.add_argument("--output", default="results/training_failures")
    parser.add_argument("--steps", type=int, default=600, help="optimiser steps per masker")
    parser.add_argument("--blackbox-epochs", type=int, default=8)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    from captum_realtime_mask.datasets.cache import default_cache_dir

    cache = Path(args.cache_dir) if args.cache_dir else default_cache_dir()
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    world = load_world(cache, args.blackbox_epochs)
    scored: dict[str, dict[str, Any]] = {}
    for name in RECIPES:
        _log(f"fitting {name!r}")
        fit = fit_recipe(world, name, args.steps, args.batch)
        attr = fit.pop("attr")
        seed = world["cfg"].seed
        scored[name] = {
            "objective": RECIPES[name][0],
            "fit": RECIPES[name][1],
            **fit,
            "s_per_10k_images": fit["fit_s"] * 1e4 / fit["images_seen"],
            "history": attr.history,
            "val": score(attr, world["val"], seed, 64),
            "test": score(attr, world["test"], seed, 64),
        }
        _log(f"{name}: test {scored[name]['test']['localisation_error']:.1f}%")
    figure(world, scored, out / "figure.png")
    for r in scored.values():
        for split in ("val", "test"):
            r[split].pop("masks")
    results = {
        "blackbox_test_accuracy": float(world["model"].info.get("test_accuracy", float("nan"))),
        "steps": args.steps,
        "batch": args.batch,
        "threads": args.threads,
        "machine": platform.processor() or platform.machine(),
        "torch": torch.__version__,
        "recipes": scored,
    }
    (out / "results.json").write_text(json.dumps(results, indent=2, default=float) + "\n")
    (out / "results.md").write_text(markdown(results))
    print(markdown(results))
    return results


if __name__ == "__main__":
    np.set_printoptions(precision=3)
    main()
