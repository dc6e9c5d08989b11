r"""Cross-check of deletion and insertion against code written elsewhere: ROAD and Quantus.

Not a test: a script that scores several attribution methods on cluttered Fashion-MNIST with

* this package's deletion and insertion AUCs (:mod:`captum_realtime_mask.metrics.faithfulness`),
  each with the blur and the constant (0, black) removal;
* ROAD, most and least relevant first and combined, as pytorch-grad-cam implements it
  (:func:`captum_realtime_mask.metrics.external.road_scores`): noisy linear imputation, which
  is slow on the CPU, so it runs on the first ``--road-images`` images only;
* Quantus, when installed: pixel flipping with a 0 baseline (the same protocol as our constant
  deletion, written independently; its steps of ``C * H * W / steps`` values can split a
  pixel's channels at a step boundary) and faithfulness correlation (on the ROAD subset).

and prints (and writes as ``results.json`` and ``results.md`` in ``--output``) each method's
mean score under every metric, the methods' ranking under each metric, and the Spearman rank
correlation between the rankings of every pair of metrics, on the images all of them saw.

The classifier and the learned masker are the quick benchmark's ResNet and its frozen-encoder
masker (``captum-realtime-mask benchmark --mode quick`` trains the same ones): they are loaded from
the package's cache (or ``--cache-dir``) when there, and trained otherwise (several minutes on
two CPU threads). Every method explains the classifier's predicted class. The methods: the
masker's mask, Captum's Saliency, Integrated gradients, Guided backprop and LayerGradCam (as the
benchmark runs them: absolute values summed over channels, Grad-CAM upsampled), and two random
controls: uniform noise per pixel, and the same noise blurred (sigma 8 px at 64 px), which only
a removal that favours smooth maps should rank above the per-pixel noise.

Examples:
    python benchmarks/faithfulness_crosscheck.py --output runs/faithfulness
    python benchmarks/faithfulness_crosscheck.py --n-images 100 --road-images 40 --steps 12
"""

from __future__ import annotations

import argparse
import json
import platform
import time
import warnings
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

from captum_realtime_mask.benchmark._maskers import fit_masker, masker_key
from captum_realtime_mask.benchmark.blackbox import train_blackbox
from captum_realtime_mask.benchmark.config import BenchmarkConfig
from captum_realtime_mask.benchmark.methods import captum_methods
from captum_realtime_mask.benchmark.settings import FROZEN_ENCODER
from captum_realtime_mask.datasets.cache import default_cache_dir
from captum_realtime_mask.datasets.cluttered import ClutteredFashionMNIST
from captum_realtime_mask.datasets.config import ClutteredConfig
from captum_realtime_mask.metrics import deletion_insertion_details, removal_images
from captum_realtime_mask.metrics.external import quantus_scores, road_scores

#: Orientation of every metric: True when a higher score means a more faithful map.
HIGHER_IS_BETTER = {
    "deletion (blur)": False,
    "deletion (constant 0)": False,
    "insertion (blur)": True,
    "insertion (constant 0)": True,
    "Quantus pixel flipping (0)": False,
    "ROAD MoRF": False,
    "ROAD LeRF": True,
    "ROAD combined": True,
    "Quantus faithfulness correlation": True,
}


class _ChannelsLast(nn.Module):
    """The classifier fed channels-last batches (twice as fast on CPU for this ResNet).

    pytorch-grad-cam and Quantus build contiguous batches; the black box's weights are
    channels-last, as in the benchmark.
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits of ``x`` in channels-last memory format."""
        return self.model(x.contiguous(memory_format=torch.channels_last))


def _log(line: str) -> None:
    print(f"{time.strftime('%H:%M:%S')} {line}", flush=True)


def _load_models(cache: Path) -> tuple[nn.Module, Any, ClutteredConfig]:
    """The quick benchmark's ResNet and its frozen-encoder masker (loaded, or trained)."""
    cfg = BenchmarkConfig.for_mode("quick")
    data = ClutteredConfig(
        n_train=cfg.n_train, n_val=cfg.n_val, n_test=cfg.n_test, seed=cfg.seed
    )  # the quick benchmark's dataset (benchmark.runner._data_config)
    model = train_blackbox(
        "resnet", data, epochs=cfg.blackbox_epochs, seed=cfg.seed, cache_dir=cache, log=_log
    ).eval()
    model = model.to(memory_format=torch.channels_last)
    run = replace(cfg, objective=cfg.objective_for("resnet"), objective_by_blackbox={})
    epochs = cfg.masker_epochs_for("resnet")
    key = masker_key(model, FROZEN_ENCODER, run, data, epochs, {})
    folder = cache / "maskers" / f"resnet-{key}"
    train = ClutteredFashionMNIST("train", data, cache_dir=cache)
    val = DataLoader(ClutteredFashionMNIST("val", data, cache_dir=cache), batch_size=64)
    attr = fit_masker(model, FROZEN_ENCODER, train, val, run, epochs, {}, folder, _log)
    return model, attr, data


def _maps(
    model: nn.Module, attr: Any, x: torch.Tensor, t: torch.Tensor, ig_steps: int, seed: int
) -> dict[str, torch.Tensor]:
    """Every method's ``(N, 1, H, W)`` map of the images ``x`` for the classes ``t``."""
    wanted = {
        "Gradient (Saliency)": "Saliency",
        f"Integrated gradients ({ig_steps} steps)": f"Integrated gradients ({ig_steps} steps)",
        "Guided backprop": "Guided backprop",
        "Grad-CAM": "LayerGradCam",
    }
    methods = {"RealTimeMask (frozen encoder)": lambda a, b: attr.mask(a, target=b)}
    for method in captum_methods(model, x.shape[-1], ig_steps=ig_steps):
        if method.name in wanted:
            methods[wanted[method.name]] = method.explain
    maps: dict[str, torch.Tensor] = {}
    for name, explain in methods.items():
        t0 = time.perf_counter()
        parts = [explain(x[i : i + 50], t[i : i + 50]).detach() for i in range(0, len(x), 50)]
        maps[name] = torch.cat(parts).float()
        _log(f"map {name}: {time.perf_counter() - t0:.1f} s")
    g = torch.Generator().manual_seed(seed)
    noise = torch.rand(x.shape[0], 1, *x.shape[-2:], generator=g)
    maps["Random (per pixel)"] = noise
    maps["Random (smoothed, sigma 8 px)"] = removal_images(noise, "blur", blur_sigma=28.0)
    return maps


def _trapezoid(curves: np.ndarray, fractions: np.ndarray) -> np.ndarray:
    """Trapezoid area under each row of ``curves`` over ``fractions``."""
    return ((curves[:, 1:] + curves[:, :-1]) / 2 * np.diff(fractions)).sum(axis=1)


def _ranks(values: np.ndarray) -> np.ndarray:
    """Ranks from 1, ties averaged."""
    order = np.argsort(values, kind="stable")
    ranks = np.empty(len(values))
    ranks[order] = np.arange(1, len(values) + 1)
    for v in np.unique(values):
        tied = values == v
        ranks[tied] = ranks[tied].mean()
    return ranks


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman's rank correlation of two score vectors (NaN when one is constant)."""
    ra, rb = _ranks(np.asarray(a, float)), _ranks(np.asarray(b, float))
    if ra.std() == 0 or rb.std() == 0:
        return float("nan")
    return float(np.corrcoef(ra, rb)[0, 1])


def _summaries(
    scores: dict[str, dict[str, np.ndarray]], images: slice, methods: list[str]
) -> dict[str, Any]:
    """Means, standard errors, ranks (1 = most faithful) and Spearman agreement on ``images``."""
    metrics = [m for m in HIGHER_IS_BETTER if m in scores]
    means, errors, ranks = {}, {}, {}
    for metric in metrics:
        per_method = [scores[metric][method][images] for method in methods]
        mean = np.array([v.mean() for v in per_method])
        means[metric] = dict(zip(methods, mean.tolist()))
        errors[metric] = {
            m: float(v.std(ddof=1) / np.sqrt(len(v))) if len(v) > 1 else float("nan")
            for m, v in zip(methods, per_method)
        }
        oriented = mean if HIGHER_IS_BETTER[metric] else -mean
        ranks[metric] = dict(zip(methods, (len(methods) + 1 - _ranks(oriented)).tolist()))
    agreement = {
        a: {
            b: spearman(
                np.array([ranks[a][m] for m in methods]), np.array([ranks[b][m] for m in methods])
            )
            for b in metrics
        }
        for a in metrics
    }
    return {
        "metrics": metrics,
        "methods": methods,
        "mean": means,
        "standard_error": errors,
        "rank": ranks,
        "spearman": agreement,
    }


def _markdown(results: dict[str, Any]) -> str:
    lines = [
        "# Faithfulness cross-check",
        "",
        f"Classifier: {results['classifier']}; {results['n_images']} test images (its accuracy "
        f"on them {results['accuracy_on_images']:.2f}), target = the predicted class; "
        f"{results['steps']} steps; ROAD and faithfulness correlation on the first "
        f"{results['road_images']} images (ROAD percentiles {results['road_percentiles']}). "
        f"Run time {results['elapsed_s']:.0f} s.",
        "",
    ]
    short = {
        m: m.replace("Quantus ", "Q. ").replace(" correlation", " corr.") for m in HIGHER_IS_BETTER
    }
    for key, title in (("all", "All images"), ("road_subset", "ROAD subset")):
        summary = results["summaries"][key]
        metrics, methods = summary["metrics"], summary["methods"]
        n = results["n_images"] if key == "all" else results["road_images"]
        arrows = {m: "↑" if HIGHER_IS_BETTER[m] else "↓" for m in metrics}
        lines += [
            f"## {title} ({n} images): mean score (rank, 1 = most faithful)",
            "",
            "| method | " + " | ".join(f"{short[m]} {arrows[m]}" for m in metrics) + " |",
            "|---|" + "---|" * len(metrics),
        ]
        for method in methods:
            cells = [
                f"{summary['mean'][m][method]:.3f} ({summary['rank'][m][method]:g})"
                for m in metrics
            ]
            lines.append(f"| {method} | " + " | ".join(cells) + " |")
        errors = [float(np.median(list(summary["standard_error"][m].values()))) for m in metrics]
        lines.append("| *median standard error* | " + " | ".join(f"{e:.3f}" for e in errors) + " |")
        lines.append("")
    for key, title in (
        ("road_subset", "all methods"),
        ("road_subset_without_controls", "without the two random controls"),
    ):
        summary = results["summaries"][key]
        metrics = summary["metrics"]
        lines += [
            f"Spearman correlation of the method rankings on the ROAD subset, {title}:",
            "",
            "| | " + " | ".join(short[m] for m in metrics) + " |",
            "|---|" + "---|" * len(metrics),
        ]
        for a in metrics:
            cells = [f"{summary['spearman'][a][b]:+.2f}" for b in metrics]
            lines.append(f"| {short[a]} | " + " | ".join(cells) + " |")
        lines.append("")
    check = results.get("pixel_flipping_vs_deletion")
    if check:
        lines += [
            "Quantus pixel flipping (0) against our constant deletion without its step-0 point, "
            f"per (image, method): Spearman {check['spearman']:.4f} over {check['pairs']} pairs, "
            f"max |AUC difference| {check['max_abs_auc_difference']:.4f}. By method (tied pixels: "
            "1 - distinct map values / pixels; Quantus orders tied values as NumPy's argsort "
            "does over the C x H x W values, we take whole pixels in raster order):",
            "",
            "| method | max abs diff | mean abs diff | tied pixels |",
            "|---|---|---|---|",
        ]
        for method, row in check["by_method"].items():
            lines.append(
                f"| {method} | {row['max_abs_auc_difference']:.4f} | "
                f"{row['mean_abs_auc_difference']:.4f} | {row['tied_pixels']:.3f} |"
            )
        lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run the cross-check; returns the results written to ``results.json``."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output", default="runs/faithfulness", help="folder for the results")
    parser.add_argument("--cache-dir", default=None, help="package cache (default: its own)")
    parser.add_argument("--n-images", type=int, default=100, help="test images scored")
    parser.add_argument(
        "--steps", type=int, default=12, help="deletion/insertion steps (a multiple of 3)"
    )
    parser.add_argument("--road-images", type=int, default=40, help="images given to ROAD")
    parser.add_argument("--road-percentiles", type=int, nargs="+", default=[20, 50, 80])
    parser.add_argument("--fc-runs", type=int, default=20, help="faithfulness-correlation runs")
    parser.add_argument("--ig-steps", type=int, default=16, help="integrated-gradients steps")
    parser.add_argument("--batch", type=int, default=512, help="perturbed images per call")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None, help="torch threads")
    parser.add_argument("--no-quantus", action="store_true", help="skip Quantus")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    started = time.perf_counter()
    cache = Path(args.cache_dir) if args.cache_dir else default_cache_dir()
    model, attr, data = _load_models(cache)
    test = ClutteredFashionMNIST("test", data, cache_dir=cache)
    x = test.float_images()[: args.n_images].contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        predicted = model(x).argmax(1)
    accuracy = float((predicted == test.labels[: args.n_images]).float().mean())
    _log(f"{len(x)} test images, classifier accuracy on them {accuracy:.3f}")
    maps = _maps(model, attr, x, predicted, args.ig_steps, args.seed)
    methods = list(maps)
    timings: dict[str, float] = {}
    scores: dict[str, dict[str, np.ndarray]] = {m: {} for m in HIGHER_IS_BETTER}
    constant_deletion: dict[str, Any] = {}  # curves, for the comparison with Quantus

    for mode in ("deletion", "insertion"):
        for removal, label in (("blur", "blur"), ("constant", "constant 0")):
            t0 = time.perf_counter()
            for method in methods:
                result = deletion_insertion_details(
                    model,
                    x,
                    maps[method],
                    predicted,
                    mode,
                    args.steps,
                    removal,
                    max_examples_per_batch=args.batch,
                )
                scores[f"{mode} ({label})"][method] = result.auc.numpy()
                if (mode, removal) == ("deletion", "constant"):
                    constant_deletion[method] = result
            timings[f"{mode} ({label})"] = time.perf_counter() - t0
            _log(f"{mode} ({label}): {timings[f'{mode} ({label})']:.1f} s")

    fast = _ChannelsLast(model).eval()
    road = slice(0, min(args.road_images, len(x)))
    xr, tr = x[road].contiguous(), predicted[road]
    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # grad-cam's numpy 2 warnings
        for method in methods:
            r = road_scores(fast, xr, maps[method][road], tr, args.road_percentiles, seed=args.seed)
            scores["ROAD MoRF"][method] = r.morf.numpy()
            scores["ROAD LeRF"][method] = r.lerf.numpy()
            scores["ROAD combined"][method] = r.combined.numpy()
            _log(f"ROAD {method}: morf {r.morf.mean():.3f}, lerf {r.lerf.mean():.3f}")
    timings["ROAD"] = time.perf_counter() - t0

    quantus_version = None
    check = None
    if not args.no_quantus:
        try:
            import quantus

            quantus_version = quantus.__version__
        except ImportError as exc:
            _log(f"Quantus not available ({exc}); skipped")
    c, h, w = x.shape[1:]
    if quantus_version is not None and (h * w) % (c * h * w // args.steps):
        _log(f"Quantus skipped: its step of C * H * W / {args.steps} values must divide H * W")
        quantus_version = None
    if quantus_version is not None:
        pixel_flipping = quantus.PixelFlipping(
            features_in_step=c * h * w // args.steps,
            perturb_baseline=0.0,
            normalise=False,
            disable_warnings=True,
        )
        correlation = quantus.FaithfulnessCorrelation(
            nr_runs=args.fc_runs,
            subset_size=c * h * w // args.steps,
            perturb_baseline=0.0,
            normalise=False,
            return_aggregate=False,
            disable_warnings=True,
        )
        t0 = time.perf_counter()
        xc = x.contiguous()
        diffs, ours, theirs = [], [], []
        for method in methods:
            # Quantus 0.6's own AUC calls np.trapz, removed in NumPy 2.4: integrate here, over
            # the fraction removed after each step (its curve has no step-0 point).
            curves = np.asarray(
                quantus_scores(pixel_flipping, fast, xc, maps[method], predicted, batch_size=512)
            )
            fractions = np.arange(1, curves.shape[1] + 1) / curves.shape[1]
            auc = _trapezoid(curves, fractions)
            scores["Quantus pixel flipping (0)"][method] = auc
            # Ours over the same steps, without the step-0 point.
            mine = constant_deletion[method]
            mine = _trapezoid(mine.curves[:, 1:].numpy(), mine.fractions[1:].numpy())
            diffs.append(np.abs(mine - auc))
            ours.append(mine)
            theirs.append(auc)
        flat = {m: maps[m].flatten(1) for m in methods}
        check = {
            "max_abs_auc_difference": float(np.concatenate(diffs).max()),
            "spearman": spearman(np.concatenate(ours), np.concatenate(theirs)),
            "pairs": int(sum(len(d) for d in diffs)),
            "by_method": {
                m: {
                    "max_abs_auc_difference": float(d.max()),
                    "mean_abs_auc_difference": float(d.mean()),
                    # 1 - distinct map values / pixels, the mean over the images
                    "tied_pixels": float(
                        np.mean([1 - len(torch.unique(row)) / len(row) for row in flat[m]])
                    ),
                }
                for m, d in zip(methods, diffs)
            },
        }
        timings["Quantus pixel flipping (0)"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        np.random.seed(args.seed)  # Quantus draws its random subsets from NumPy's global RNG
        for method in methods:
            scores["Quantus faithfulness correlation"][method] = np.asarray(
                quantus_scores(correlation, fast, xr, maps[method][road], tr, batch_size=512),
                dtype=float,
            )
        timings["Quantus faithfulness correlation"] = time.perf_counter() - t0
        _log(f"Quantus: {timings}")
    scores = {k: v for k, v in scores.items() if v}

    full = {k: v for k, v in scores.items() if len(next(iter(v.values()))) == len(x)}
    results: dict[str, Any] = {
        "classifier": (
            f"{model.info.get('arch')} (quick benchmark, test accuracy "
            f"{model.info.get('test_accuracy')})"
        ),
        "accuracy_on_images": accuracy,
        "n_images": len(x),
        "road_images": road.stop,
        "road_percentiles": args.road_percentiles,
        "steps": args.steps,
        "ig_steps": args.ig_steps,
        "seed": args.seed,
        "quantus": quantus_version,
        "methods": methods,
        "higher_is_better": {k: HIGHER_IS_BETTER[k] for k in scores},
        "summaries": {
            "all": _summaries(full, slice(None), methods),
            "road_subset": _summaries(scores, road, methods),
            "road_subset_without_controls": _summaries(
                scores, road, [m for m in methods if not m.startswith("Random")]
            ),
        },
        "pixel_flipping_vs_deletion": check,
        "per_image": {k: {m: v.tolist() for m, v in d.items()} for k, d in scores.items()},
        "timings_s": timings,
        "machine": {
            "platform": platform.platform(),
            "threads": torch.get_num_threads(),
            "torch": torch.__version__,
        },
    }
    results["elapsed_s"] = time.perf_counter() - started
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(results, indent=2))
    text = _markdown(results)
    (out / "results.md").write_text(text + "\n")
    print(text)
    _log(f"wrote {out / 'results.md'} and {out / 'results.json'}")
    return results


if __name__ == "__main__":
    main()
