r"""Adebayo et al. (2018) sanity checks for the quick benchmark's methods and learned masker.

Not a test: a script that runs the two sanity checks of "Sanity Checks for Saliency Maps"
(Adebayo et al., NeurIPS 2018) on cluttered Fashion-MNIST:

1. **Model randomisation (cascading).** The quick benchmark's ResNet (``resnet10t``) has its
   weights re-initialised from the head down, cumulatively: the logits layer (``fc``), then
   ``layer4``, ``layer3``, ``layer2``, ``layer1`` and the stem (``conv1``, ``bn1``), each
   module by its own ``reset_parameters()`` under a fixed seed (batch norms also reset their
   running statistics). Captum's Saliency, IntegratedGradients, GuidedBackprop and
   LayerGradCam, run as the benchmark runs them (absolute values summed over channels;
   Grad-CAM's positive part upsampled bilinearly), explain the trained model and each
   randomised copy, and every randomised map is compared with the trained model's map of the
   same image.
2. **The learned masker's counterpart.** A masker is trained with the quick benchmark's
   frozen-encoder recipe (``FROZEN_ENCODER``, the benchmark's objective, fit() options, epochs
   and seed, through ``benchmark._maskers.fit_masker`` exactly as the runner calls it) on the
   fully randomised black box: its encoder is that randomised backbone. Its masks are
   compared with the real (cached) masker's masks.
3. **Data randomisation.** A black box with the quick benchmark's recipe (the ``resnet``
   preset at the quick mode's epochs and seed, fresh composites every epoch, the same crops
   and flips) is trained on shuffled labels: every epoch, the labels of that epoch's
   composites are permuted by a fixed-seed permutation, so they keep the class frequencies but
   say nothing about the images. Its masker is trained with the same recipe as in 2 (on the
   dataset's labels, as every benchmark masker). Reported: its test accuracy, the localisation
   error (the benchmark's protocol: masks thresholded at 0.5, other maps min-max normalised
   and thresholded at the value chosen on the validation split, tightest box, hit when
   IoU > 0.5) of each method on the real and on the shuffled-label model, and the similarity of
   the two models' maps.

Similarity of two maps of one image: Spearman's rank correlation (``scipy.stats.spearmanr``) of
the flattened maps as the benchmark's methods return them (every one is non-negative, so these
are the absolute maps), and SSIM (``skimage.metrics.structural_similarity``, data range 1) of
the two maps min-max normalised to ``[0, 1]``. The table gives the means over the images (a
map that is constant has no rank correlation; such images are counted and left out). Every
map explains the image's true class (the benchmark's target), the same class for both models.

The trained black box and its masker are loaded from the quick benchmark's cache (``--cache-dir``;
trained there when missing, several minutes); the randomised and shuffled-label models are
cached there too under their own names, so a second run only evaluates.

Examples:
    python benchmarks/sanity_checks.py --cache-dir /tmp/sanity_cache
    python benchmarks/sanity_checks.py --quick --output runs/sanity_quick
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import platform
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

Explain = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]

#: Captum's methods of the check, by the name of the benchmark's row.
GRADIENT_METHODS = {
    "Gradient (Saliency)": "Saliency",
    "Integrated gradients": "IntegratedGradients",
    "Guided backprop": "GuidedBackprop",
    "Grad-CAM": "LayerGradCam",
}

#: The learned masker's name in the tables.
MASKER = "RealTimeMask (frozen encoder)"


def _log(line: str) -> None:
    print(f"{time.strftime('%H:%M:%S')} {line}", flush=True)


# ---------------------------------------------------------------------------------------------
# Maps and their similarity


def gradient_methods(model: nn.Module, image_size: int, ig_steps: int) -> dict[str, Explain]:
    """Captum's four methods on ``model``, as the benchmark runs them, by Captum's class name."""
    from captum_realtime_mask.benchmark.methods import captum_methods

    out = {}
    for method in captum_methods(model, image_size, ig_steps=ig_steps):
        name = method.name.split(" (")[0] if method.name.startswith("Integrated") else method.name
        if name in GRADIENT_METHODS:
            out[GRADIENT_METHODS[name]] = method.explain
    return out


def compute_maps(explain: Explain, x: torch.Tensor, y: torch.Tensor, batch: int) -> torch.Tensor:
    """``(N, 1, H, W)`` maps of ``explain`` on batches of ``batch`` images."""
    parts = [explain(x[i : i + batch], y[i : i + batch]).detach() for i in range(0, len(x), batch)]
    return torch.cat(parts).float()


def _unit(a: np.ndarray) -> np.ndarray:
    lo, hi = float(a.min()), float(a.max())
    return (a - lo) / (hi - lo) if hi > lo else np.zeros_like(a)


def similarity(a: torch.Tensor, b: torch.Tensor) -> dict[str, Any]:
    """Per-image Spearman and SSIM of two batches of maps, and their means.

    Returns:
        ``spearman`` and ``ssim`` (means; Spearman over the images where neither map is
        constant), ``constant_maps`` (images left out of the Spearman mean) and the per-image
        values.
    """
    from scipy.stats import spearmanr
    from skimage.metrics import structural_similarity

    a = a.reshape(len(a), -1, *a.shape[-2:]).sum(1).double().numpy()
    b = b.reshape(len(b), -1, *b.shape[-2:]).sum(1).double().numpy()
    rho, ssim = [], []
    for u, v in zip(a, b):
        if np.ptp(u) == 0 or np.ptp(v) == 0:
            rho.append(float("nan"))
        else:
            rho.append(float(spearmanr(u.ravel(), v.ravel()).statistic))
        ssim.append(float(structural_similarity(_unit(u), _unit(v), data_range=1.0)))
    r = np.array(rho)
    return {
        "spearman": float(np.nanmean(r)) if np.isfinite(r).any() else float("nan"),
        "ssim": float(np.mean(ssim)),
        "constant_maps": int(np.isnan(r).sum()),
        "per_image": {"spearman": rho, "ssim": ssim},
    }


# ---------------------------------------------------------------------------------------------
# Cascading randomisation


def network(model: nn.Module) -> nn.Module:
    """The network inside a benchmark black box (``Normalize`` then the timm model)."""
    return getattr(model, "classifier", model)


def cascade_stages(model: nn.Module) -> list[tuple[str, list[str]]]:
    """The cascade of a timm ResNet, head first: (label, child module names) per step."""
    names = {n for n, _ in network(model).named_children()}
    stages = [("logits (fc)", ["fc"])]
    stages += [(f"+ {n}", [n]) for n in ("layer4", "layer3", "layer2", "layer1") if n in names]
    stages.append(("+ stem (conv1, bn1)", [n for n in ("conv1", "bn1") if n in names]))
    return stages


def randomise(model: nn.Module, children: list[str], seed: int) -> None:
    """Re-initialise every module under the named children of ``network(model)`` in place."""
    net = network(model)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for name in children:
            for module in getattr(net, name).modules():
                reset = getattr(module, "reset_parameters", None)
                if callable(reset):
                    reset()


def cascade(
    model: nn.Module, seed: int, stages: list[tuple[str, list[str]]] | None = None
) -> Iterator[tuple[str, nn.Module]]:
    """Copies of ``model`` randomised cumulatively from the head down: (label, copy) per step.

    Step ``k`` re-initialises its modules with the seed ``seed + k``.
    """
    current = copy.deepcopy(model).eval()
    for k, (label, children) in enumerate(stages or cascade_stages(model)):
        randomise(current, children, seed + k)
        yield label, copy.deepcopy(current).eval()


def model_randomisation(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    ig_steps: int,
    seed: int,
    batch: int = 32,
    log: Callable[[str], None] = _log,
) -> tuple[dict[str, Any], nn.Module]:
    """Part 1: every method's map similarity, trained vs. each cascade step.

    Returns:
        The results (``steps``, ``methods``, ``spearman`` and ``ssim`` by method then step,
        ``constant_maps``, ``accuracy`` of each step on the images) and the fully randomised
        model (the last step).
    """
    size = x.shape[-1]
    reference = {
        name: compute_maps(fn, x, y, batch)
        for name, fn in gradient_methods(model, size, ig_steps).items()
    }
    methods = list(reference)
    out: dict[str, Any] = {
        "steps": [],
        "methods": methods,
        "spearman": {m: {} for m in methods},
        "ssim": {m: {} for m in methods},
        "constant_maps": {m: {} for m in methods},
        "accuracy": {},
    }
    with torch.no_grad():
        out["accuracy"]["trained"] = float((model(x).argmax(1) == y).float().mean())
    randomised = model
    for label, randomised in cascade(model, seed):
        out["steps"].append(label)
        with torch.no_grad():
            out["accuracy"][label] = float((randomised(x).argmax(1) == y).float().mean())
        for name, fn in gradient_methods(randomised, size, ig_steps).items():
            s = similarity(reference[name], compute_maps(fn, x, y, batch))
            out["spearman"][name][label] = s["spearman"]
            out["ssim"][name][label] = s["ssim"]
            out["constant_maps"][name][label] = s["constant_maps"]
        log(
            f"cascade {label}: "
            + ", ".join(f"{m} rho {out['spearman'][m][label]:+.3f}" for m in methods)
        )
    return out, randomised


# ---------------------------------------------------------------------------------------------
# The benchmark's models


class _ShuffledLabels:
    """A training split whose labels are permuted (what ``_Run.epoch`` reads of it)."""

    def __init__(self, data: Any, labels: torch.Tensor) -> None:
        self.data, self.labels = data, labels

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def boxes(self) -> torch.Tensor:
        return self.data.boxes

    def float_images(self, index: Any = None) -> torch.Tensor:
        return self.data.float_images(index)


def train_shuffled_blackbox(
    data: Any,
    epochs: int,
    seed: int,
    label_seed: int,
    cache: Path,
    max_steps: int | None,
    log: Callable[[str], None],
) -> nn.Module:
    """The ``resnet`` preset trained as ``train_blackbox`` trains it, on shuffled labels.

    The loop is ``blackbox._train``'s (same model, optimiser, schedule, augmentation and
    fresh composites every epoch) with the labels of each epoch's composites permuted by a
    permutation drawn from ``label_seed`` and the epoch. Cached in ``cache/blackboxes``.
    """
    from captum_realtime_mask.benchmark import blackbox as bb
    from captum_realtime_mask.datasets.cluttered import ClutteredFashionMNIST

    config = replace(bb.BLACKBOX_PRESETS["resnet"], epochs=epochs, seed=seed)
    steps = "" if max_steps is None else f"-steps{max_steps}"
    tag = f"{config.arch}-shuffled-labels-seed{label_seed}-{bb.training_data_fields(data)['seed']}"
    path = cache / "blackboxes" / f"{tag}-n{data.n_train}-e{epochs}{steps}.safetensors"
    if path.is_file():
        log(f"loading the shuffled-label black box {path}")
        return bb.load_blackbox(path).eval()
    start = time.perf_counter()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        generator = torch.Generator().manual_seed(config.seed)
        train = ClutteredFashionMNIST("train", data, cache=False)
        test = ClutteredFashionMNIST("test", data, cache_dir=cache)
        val = ClutteredFashionMNIST("val", data, cache_dir=cache)
        model = bb._create(config, num_classes=10).to(memory_format=torch.channels_last)
        total = math.ceil(len(train) / config.batch_size) * config.epochs
        total = min(total, max_steps) if max_steps is not None else total
        run = bb._Run(model, config, bb.task_of(data), generator, torch.channels_last, total)
        history = []
        for epoch in range(config.epochs):
            if run.step >= total:
                break
            train.set_epoch(epoch)
            perm = torch.randperm(
                len(train), generator=torch.Generator().manual_seed(1000 * label_seed + epoch)
            )
            loss, acc = run.epoch(_ShuffledLabels(train, train.labels[perm]))
            val_acc = bb.evaluate_accuracy(model, val)
            history.append({"epoch": epoch, "train_loss": loss, "train_accuracy": acc,
                            "val_accuracy": val_acc, "steps": run.step})  # fmt: skip
            log(f"shuffled-label epoch {epoch + 1}: loss {loss:.3f}, shuffled-label acc {acc:.3f}")
    model = model.to(memory_format=torch.contiguous_format).eval()
    model.info = {
        "arch": config.arch,
        "num_classes": 10,
        "blackbox": config.to_dict(),  # what load_blackbox rebuilds the model from
        "shuffled_labels_seed": label_seed,
        "dataset": data.to_dict(),
        "max_steps": max_steps,
        "steps": run.step,
        "test_accuracy": bb.evaluate_accuracy(model, test),
        "train_seconds": time.perf_counter() - start,
        "history": history,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    bb.save_blackbox(model, path)
    log(f"shuffled-label black box: test accuracy {model.info['test_accuracy']}")
    return model


def shuffled_blackbox(bench: dict[str, Any], label_seed: int, cache: Path) -> nn.Module:
    """:func:`train_shuffled_blackbox` with the benchmark's data and budget, channels-last."""
    cfg = bench["cfg"]
    return train_shuffled_blackbox(
        bench["data"], cfg.blackbox_epochs, cfg.seed, label_seed, cache, cfg.blackbox_max_steps,
        _log,
    ).to(memory_format=torch.channels_last)  # fmt: skip


def load_benchmark(cache: Path, quick: bool) -> dict[str, Any]:
    """The quick benchmark's configuration, data, ResNet and frozen-encoder masker."""
    from captum_realtime_mask.benchmark._maskers import fit_masker, masker_key
    from captum_realtime_mask.benchmark.blackbox import train_blackbox
    from captum_realtime_mask.benchmark.config import BenchmarkConfig
    from captum_realtime_mask.benchmark.settings import FROZEN_ENCODER
    from captum_realtime_mask.datasets.cluttered import ClutteredFashionMNIST
    from captum_realtime_mask.datasets.config import ClutteredConfig

    cfg = BenchmarkConfig.for_mode("quick")
    data = ClutteredConfig(n_train=cfg.n_train, n_val=cfg.n_val, n_test=cfg.n_test, seed=cfg.seed)
    model = train_blackbox(
        "resnet", data, epochs=cfg.blackbox_epochs, seed=cfg.seed, cache_dir=cache, log=_log
    ).eval()
    model = model.to(memory_format=torch.channels_last)
    run = replace(cfg, objective=cfg.objective_for("resnet"), objective_by_blackbox={})
    epochs = cfg.masker_epochs_for("resnet")
    train = ClutteredFashionMNIST("train", data, cache_dir=cache)
    val = ClutteredFashionMNIST("val", data, cache_dir=cache)
    val_loader = DataLoader(val, batch_size=cfg.batch_size)
    key = masker_key(model, FROZEN_ENCODER, run, data, epochs, {})
    attr = fit_masker(
        model, FROZEN_ENCODER, train, val_loader, run, epochs, {}, cache / "maskers" /
        f"resnet-{key}", _log,
    )  # fmt: skip
    if quick:  # the smoke run's own trainings: two optimiser steps each
        run = replace(run, masker_max_steps=2, blackbox_max_steps=2)
    return {
        "cfg": run, "data": data, "model": model, "masker": attr, "train": train,
        "val": val, "val_loader": val_loader, "epochs": epochs,
        "test": ClutteredFashionMNIST("test", data, cache_dir=cache),
    }  # fmt: skip


def fit_counterpart(
    bench: dict[str, Any], model: nn.Module, tag: str, cache: Path, seed: int | None = None
) -> Any:
    """A frozen-encoder masker on ``model``, trained as the runner trains the benchmark's.

    ``seed`` (default: the benchmark's) seeds the masker's initialisation, its batches and its
    selectors; ``model.info`` is restored afterwards (the tag only names the cache folder).
    """
    from captum_realtime_mask.benchmark._maskers import fit_masker, masker_key
    from captum_realtime_mask.benchmark.settings import FROZEN_ENCODER

    info = model.info
    model.info = {**info, "blackbox": {**info["blackbox"], "sanity_check": tag}}
    cfg, data, epochs = bench["cfg"], bench["data"], bench["epochs"]
    cfg = cfg if seed is None else replace(cfg, seed=seed)
    key = masker_key(model, FROZEN_ENCODER, cfg, data, epochs, {})
    folder = cache / "maskers" / f"resnet-sanity-{tag}-{key}"
    try:
        return fit_masker(
            model, FROZEN_ENCODER, bench["train"], bench["val_loader"], cfg, epochs, {}, folder,
            _log,
        )  # fmt: skip
    finally:
        model.info = info


def seed_control(
    bench: dict[str, Any],
    models: dict[str, nn.Module],
    masks: dict[str, torch.Tensor],
    seed: int,
    x: torch.Tensor,
    y: torch.Tensor,
    cache: Path,
) -> dict[str, Any]:
    """Part 4: the masker comparisons of parts 2 and 3 again with a second masker seed.

    The maskers of parts 2 and 3 are built and trained from the benchmark's seed, like the
    real masker, so their decoders start from the same weights. Here each of the three black
    boxes (``models``: ``"real"``, ``"randomised"``, ``"shuffled labels"``) gets a masker of
    seed ``seed`` too, and every pair of maskers is compared: two maskers of the real model
    (how far a masker is from itself: the ceiling of the check), and the real model's
    maskers against each counterpart from the same and from the other seed.

    Args:
        bench: :func:`load_benchmark`'s record.
        models: The black boxes by name.
        masks: The benchmark-seed maskers' masks of ``x`` by the same names.
        seed: The second masker seed.
        x: The images of the correlations.
        y: Their classes (the masks' targets).
        cache: Where the maskers are cached.

    Returns:
        ``rows``: one per comparison (``a``, ``b``, ``spearman``, ``ssim``, ``constant_maps``)
        and ``train_seconds`` of the new maskers.
    """
    base = bench["cfg"].seed
    second, seconds = {}, {}
    for name, model in models.items():
        t0 = time.perf_counter()
        tag = "real-masker" if name == "real" else name.replace(" ", "-")
        attr = fit_counterpart(bench, model, f"{tag}-masker-seed{seed}", cache, seed=seed)
        seconds[name] = time.perf_counter() - t0
        second[name] = compute_maps(_mask(attr), x, y, 64)
    by_name = {(n, base): m for n, m in masks.items()} | {(n, seed): m for n, m in second.items()}
    pairs = [(("real", base), ("real", seed))]
    for other in (n for n in models if n != "real"):
        for a in (base, seed):
            pairs += [(("real", a), (other, b)) for b in (base, seed)]
    rows = []
    for a, b in pairs:
        sim = similarity(by_name[a], by_name[b])
        rows.append(
            {
                "a": f"{a[0]} (seed {a[1]})",
                "b": f"{b[0]} (seed {b[1]})",
                "same_seed": a[1] == b[1],
                **{k: sim[k] for k in ("spearman", "ssim", "constant_maps")},
            }
        )
        _log(f"seed control, {rows[-1]['a']} vs {rows[-1]['b']}: rho {sim['spearman']:+.3f}")
    return {"seed": seed, "benchmark_seed": base, "rows": rows, "train_seconds": seconds}


def localisation(
    maps: torch.Tensor, boxes: torch.Tensor, threshold: float, normalize: str
) -> float:
    """The benchmark's localisation error (%) of ``maps`` against one box per image."""
    from captum_realtime_mask.metrics import localisation_error

    error = localisation_error(maps, list(boxes.unsqueeze(1)), threshold, normalize=normalize)
    return 100.0 * float(error)


def _mask(attr: Any) -> Explain:
    return lambda a, t: attr.mask(a, target=t)


# ---------------------------------------------------------------------------------------------
# Report


def _fmt(v: Any) -> str:
    return "n/a" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:+.3f}"


def _fmt_accuracy(v: Any) -> str:
    return f"{v:.3f}" if isinstance(v, float) else str(v)


def _fmt_seconds(v: float) -> str:
    """Seconds, or a note that the model came from the cache (a load takes under a second)."""
    return f"{v:.0f} s" if v >= 1 else "none (loaded from the cache)"


def markdown(results: dict[str, Any]) -> str:
    """The results as Markdown tables."""
    p1, s = results.get("model_randomisation"), results["settings"]
    lines = [
        "# Sanity checks (Adebayo et al. 2018)",
        "",
        f"Quick benchmark's black box `{results['blackbox']}` (test accuracy "
        f"{_fmt_accuracy(results['blackbox_test_accuracy'])}); {s['n_images']} test images for the "
        f"correlations, {s['loc_images']} for the localisation errors; target = the true "
        f"class; IG {s['ig_steps']} steps; seed {s['seed']}. Spearman: the flattened maps as "
        "the methods return them (all non-negative: absolute gradients summed over channels, "
        "Grad-CAM's positive part, masks); SSIM: the maps min-max normalised to [0, 1]. "
        f"Run time {results['elapsed_s']:.0f} s"
        + (" (**--quick smoke run: tiny budgets, figures meaningless**)." if s["quick"] else "."),
        "",
    ]
    if p1:
        lines += [
            "## 1. Cascading model randomisation (head first, cumulative)",
            "",
            "Mean Spearman rank correlation / mean SSIM between the trained model's map and the "
            "randomised model's map (1 = unchanged).",
            "",
            "| method | " + " | ".join(p1["steps"]) + " |",
            "|---|" + "---|" * len(p1["steps"]),
        ]
        for m in p1["methods"]:
            cells = [f"{_fmt(p1['spearman'][m][k])} / {p1['ssim'][m][k]:.3f}" for k in p1["steps"]]
            lines.append(f"| {m} | " + " | ".join(cells) + " |")
        acc = p1["accuracy"]
        lines.append(
            "| *accuracy on the images* | "
            + " | ".join(f"{acc[k]:.2f}" for k in p1["steps"])
            + f" |  (trained: {acc['trained']:.2f})"
        )
        lines.append("")
    p2 = results.get("masker_randomisation")
    if p2:
        lines += [
            "## 2. The learned masker and its counterpart on the fully randomised black box",
            "",
            "| comparison | Spearman | SSIM | masks constant | mean mask (real / randomised) |",
            "|---|---|---|---|---|",
            f"| real masker vs masker trained on the randomised model | {_fmt(p2['spearman'])} | "
            f"{p2['ssim']:.3f} | {p2['constant_maps']} | {p2['mask_mean_real']:.3f} / "
            f"{p2['mask_mean_randomised']:.3f} |",
            "",
            f"Training of the counterpart: {_fmt_seconds(p2['train_seconds'])}."
            + (
                " For comparison, the gradient methods on the same fully randomised model (last "
                "column above): "
                + ", ".join(
                    f"{m} {_fmt(p1['spearman'][m][p1['steps'][-1]])}" for m in p1["methods"]
                )
                + "."
                if p1
                else ""
            ),
            "",
        ]
    p3 = results.get("data_randomisation")
    if p3:
        lines += [
            "## 3. Data randomisation (black box trained on shuffled labels)",
            "",
            f"Shuffled-label black box: test accuracy {p3['test_accuracy']:.3f} (chance 0.10; "
            f"final train accuracy on its shuffled labels {p3['train_accuracy']:.3f}); trained "
            f"in {p3['blackbox_train_seconds']:.0f} s, its masker in "
            f"{_fmt_seconds(p3['masker_train_seconds'])}.",
            "",
            "| method | loc. error, real model (%) | loc. error, shuffled labels (%) | "
            "threshold (real / shuffled) | Spearman real vs shuffled | SSIM |",
            "|---|---|---|---|---|---|",
        ]
        for m, row in p3["methods"].items():
            lines.append(
                f"| {m} | {row['loc_error_real']:.1f} | {row['loc_error_shuffled']:.1f} | "
                f"{row['threshold_real']:g} / {row['threshold_shuffled']:g} | "
                f"{_fmt(row['spearman'])} | {row['ssim']:.3f} |"
            )
        lines.append("")
    p4 = results.get("seed_control")
    if p4:
        lines += [
            "## 4. The maskers' seed",
            "",
            "The maskers of parts 2 and 3 start from the benchmark's seed "
            f"({p4['benchmark_seed']}), like the real masker, so their decoders share their "
            f"initial weights. Each black box here also gets a masker of seed {p4['seed']} "
            "(same recipe and budget): two maskers of the real model show how close a masker "
            "comes to itself; the other rows compare the real model's maskers with each "
            "counterpart, from the same seed and from the "
            "other one.",
            "",
            "| masker | compared with | same seed | Spearman | SSIM |",
            "|---|---|---|---|---|",
        ]
        for row in p4["rows"]:
            lines.append(
                f"| {row['a']} | {row['b']} | {'yes' if row['same_seed'] else 'no'} | "
                f"{_fmt(row['spearman'])} | {row['ssim']:.3f} |"
            )
        lines += [
            "",
            "Training of the seed's maskers: "
            + ", ".join(f"{k} {_fmt_seconds(v)}" for k, v in p4["train_seconds"].items())
            + ".",
            "",
        ]
    lines += [
        "Time by part (s): " + ", ".join(f"{k} {v:.0f}" for k, v in results["timings_s"].items()),
        "",
    ]
    return "\n".join(lines)


def write_results(results: dict[str, Any], out: Path) -> str:
    """Write ``results.json`` and ``results.md`` in ``out``; returns the Markdown."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    text = markdown(results)
    (out / "results.md").write_text(text + "\n")
    return text


# ---------------------------------------------------------------------------------------------
# Main


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run the checks; returns the results written to ``results.json``."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output", default=None, help="default: results/sanity_checks")
    parser.add_argument("--cache-dir", default=None, help="package cache (default: its own)")
    parser.add_argument("--n-images", type=int, default=64, help="images of the correlations")
    parser.add_argument("--loc-images", type=int, default=200, help="images of part 3's errors")
    parser.add_argument("--ig-steps", type=int, default=50, help="IG steps (the benchmark's)")
    parser.add_argument("--seed", type=int, default=0, help="re-initialisation seed")
    parser.add_argument("--label-seed", type=int, default=0, help="label permutation seed")
    parser.add_argument("--parts", type=int, nargs="+", default=[1, 2, 3, 4])
    parser.add_argument("--control-seed", type=int, default=1, help="part 4's masker seed")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--quick", action="store_true", help="smoke run: 4 images, 2 steps")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.quick:
        args.n_images, args.loc_images, args.ig_steps = 4, 8, 4
    default = "runs/sanity_checks_quick" if args.quick else "results/sanity_checks"
    out = Path(args.output or default)
    from captum_realtime_mask.benchmark._scoring import _best_threshold
    from captum_realtime_mask.datasets.cache import default_cache_dir

    started = time.perf_counter()
    timings: dict[str, float] = {}
    cache = Path(args.cache_dir) if args.cache_dir else default_cache_dir()
    bench = load_benchmark(cache, args.quick)
    timings["loading"] = time.perf_counter() - started
    model, attr, cfg = bench["model"], bench["masker"], bench["cfg"]
    test = bench["test"]
    xt_all = test.float_images()[: args.loc_images].contiguous(memory_format=torch.channels_last)
    yt_all, bt_all = test.labels[: args.loc_images], test.boxes[: args.loc_images].float()
    x, y = xt_all[: args.n_images], yt_all[: args.n_images]
    results: dict[str, Any] = {
        "blackbox": model.info.get("arch"),
        "blackbox_test_accuracy": model.info.get("test_accuracy"),
        "settings": {
            "quick": args.quick,
            "n_images": len(x),
            "loc_images": len(xt_all),
            "ig_steps": args.ig_steps,
            "seed": args.seed,
            "label_seed": args.label_seed,
            "target": "true class",
            "cascade": [label for label, _ in cascade_stages(model)],
            "spearman_on": "flattened maps as returned (non-negative)",
            "ssim_on": "maps min-max normalised to [0, 1], data_range 1",
            "masker_epochs": bench["epochs"],
            "masker_max_steps": cfg.masker_max_steps,
            "blackbox_epochs": cfg.blackbox_epochs,
            "blackbox_max_steps": cfg.blackbox_max_steps,
            "objective": cfg.objective,
        },
    }
    t0 = time.perf_counter()
    if 1 in args.parts:
        p1, randomised = model_randomisation(model, x, y, args.ig_steps, args.seed)
        results["model_randomisation"] = p1
        timings["1 model randomisation"] = time.perf_counter() - t0
    else:
        *_, (_, randomised) = cascade(model, args.seed)
    real_masks = compute_maps(_mask(attr), xt_all, yt_all, 64)
    # The counterparts' cache tags, and their masks of x once a part has computed them.
    tags = {
        "randomised": f"randomised-seed{args.seed}",
        "shuffled labels": f"shuffled-labels-seed{args.label_seed}",
    }
    counterpart_masks: dict[str, torch.Tensor] = {}
    shuffled = None

    if 2 in args.parts:
        t0 = time.perf_counter()
        rand_attr = fit_counterpart(bench, randomised, tags["randomised"], cache)
        trained_s = time.perf_counter() - t0
        rand_masks = compute_maps(_mask(rand_attr), x, y, 64)
        counterpart_masks["randomised"] = rand_masks
        s = similarity(real_masks[: len(x)], rand_masks)
        results["masker_randomisation"] = {
            **{k: s[k] for k in ("spearman", "ssim", "constant_maps")},
            "mask_mean_real": float(real_masks[: len(x)].mean()),
            "mask_mean_randomised": float(rand_masks.mean()),
            "train_seconds": trained_s,
            "per_image": s["per_image"],
        }
        timings["2 masker on the randomised model"] = time.perf_counter() - t0
        _log(f"masker vs randomised counterpart: rho {s['spearman']:+.3f}, ssim {s['ssim']:.3f}")

    if 3 in args.parts:
        t0 = time.perf_counter()
        shuffled = shuffled_blackbox(bench, args.label_seed, cache)
        bb_s = time.perf_counter() - t0
        t1 = time.perf_counter()
        shuf_attr = fit_counterpart(bench, shuffled, tags["shuffled labels"], cache)
        masker_s = time.perf_counter() - t1
        val = bench["val"]
        xv, yv, bv = val.float_images(), val.labels, val.boxes.float()
        rows: dict[str, Any] = {}
        real_fns = gradient_methods(model, x.shape[-1], args.ig_steps)
        shuf_fns = gradient_methods(shuffled, x.shape[-1], args.ig_steps)
        pairs = {MASKER: (_mask(attr), _mask(shuf_attr), "mask")}
        for name in ("Saliency", "GuidedBackprop", "LayerGradCam"):
            pairs[name] = (real_fns[name], shuf_fns[name], "map")
        for name, (real_fn, shuf_fn, kind) in pairs.items():
            row: dict[str, Any] = {}
            maps = {}
            for who, fn in (("real", real_fn), ("shuffled", shuf_fn)):
                maps[who] = real_masks if name == MASKER and who == "real" else None
                if maps[who] is None:
                    maps[who] = compute_maps(fn, xt_all, yt_all, 50)
                if kind == "mask":
                    threshold, normalize = 0.5, "none"
                else:
                    threshold = _best_threshold(xv, yv, bv, compute_maps(fn, xv, yv, 50))
                    normalize = "minmax"
                row[f"threshold_{who}"] = threshold
                row[f"loc_error_{who}"] = localisation(maps[who], bt_all, threshold, normalize)
            if name == MASKER:
                counterpart_masks["shuffled labels"] = maps["shuffled"][: len(x)]
            s = similarity(maps["real"][: len(x)], maps["shuffled"][: len(x)])
            row.update({k: s[k] for k in ("spearman", "ssim", "constant_maps")})
            rows[name] = row
            _log(f"shuffled labels, {name}: {row}")
        history = shuffled.info.get("history") or [{}]
        results["data_randomisation"] = {
            "test_accuracy": shuffled.info.get("test_accuracy"),
            "train_accuracy": history[-1].get("train_accuracy", float("nan")),
            "history": history,
            "blackbox_train_seconds": shuffled.info.get("train_seconds", bb_s),
            "masker_train_seconds": masker_s,
            "methods": rows,
        }
        timings["3 data randomisation"] = time.perf_counter() - t0

    if 4 in args.parts:
        t0 = time.perf_counter()
        if shuffled is None:
            shuffled = shuffled_blackbox(bench, args.label_seed, cache)
        models = {"real": model, "randomised": randomised, "shuffled labels": shuffled}
        masks = {"real": real_masks[: len(x)]}
        for name, tag in tags.items():  # the masks parts 2 and 3 did not compute
            masks[name] = counterpart_masks.get(name)
            if masks[name] is None:
                counterpart = fit_counterpart(bench, models[name], tag, cache)
                masks[name] = compute_maps(_mask(counterpart), x, y, 64)
        results["seed_control"] = seed_control(bench, models, masks, args.control_seed, x, y, cache)
        timings["4 masker seed"] = time.perf_counter() - t0

    results["timings_s"] = timings
    results["machine"] = {
        "platform": platform.platform(),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
    }
    results["elapsed_s"] = time.perf_counter() - started
    text = write_results(results, out)
    print(text)
    _log(f"wrote {out / 'results.md'} and {out / 'results.json'}")
    return results


if __name__ == "__main__":
    main()
