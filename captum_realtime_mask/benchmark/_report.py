"""The benchmark's report: ``results.md`` from the results dictionary, and ``figure.png``."""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

import torch

from captum_realtime_mask.benchmark._faithfulness import FAITHFULNESS_STEPS, ROAD_PERCENTILES
from captum_realtime_mask.benchmark._scoring import THROUGHPUT_BUDGET_S, THROUGHPUT_CALLS
from captum_realtime_mask.benchmark.config import trained_objective
from captum_realtime_mask.datasets.config import ClutteredConfig

__all__ = ["markdown", "save_figure"]


def markdown(results: dict[str, Any]) -> str:
    """``results.md``: every black box's table of rows, from :func:`run_benchmark`'s results.

    Args:
        results: The results dictionary (as saved in ``results.json``).

    Returns:
        The Markdown text.
    """
    lines = [
        "# Cluttered Fashion-MNIST localisation benchmark",
        "",
        f"Mode: `{results['config']['mode']}`; {results['config']['n_test']} test images "
        f"({results['dataset']['image_size']} px); run time {results['elapsed_s'] / 60:.1f} min "
        f"on {results['machine']['threads']} CPU threads.",
        "Localisation error: threshold, tightest box, hit when IoU > 0.5 with the item's box. "
        "Saliency metric: log(max(a, 0.05)) - log(p) on the box's crop (lower is better). "
        "Thresholds of non-mask methods were chosen on "
        f"{_threshold_images(results['config'])} validation images. "
        "An empty map has no pixel at or above its threshold; its box is the whole image. "
        f"Deletion and insertion: {FAITHFULNESS_STEPS} steps of blurred pixels in the map's "
        "order, area under the class's softmax probability (lower and higher are better); "
        "ins - del their difference; ROAD: pytorch-grad-cam's (LeRF - MoRF) / 2 at "
        f"percentiles {list(ROAD_PERCENTILES)}; all three on the first "
        f"{results['config'].get('faithfulness_images') or results['config']['n_test']} test "
        "images. "
        "The second and third error columns split the test images into those the black box "
        "classifies correctly and the others. Images/s: the median of at most "
        f"{THROUGHPUT_CALLS} timed calls on the same {results['config']['throughput_batch']} "
        f"test images (none started after {THROUGHPUT_BUDGET_S:.0f} s), in the black box's "
        "own process.",
        *_subset_note(results),
        "",
    ]
    for name, bb in results["blackboxes"].items():
        lines += _blackbox_section(name, bb, results["config"])
    return "\n".join(lines) + "\n"


def save_figure(
    x: torch.Tensor, boxes: torch.Tensor, maps: dict[str, torch.Tensor], path: Path, n: int = 6
) -> None:
    """Save ``figure.png``: the first ``n`` test images with their item boxes, and each map.

    Args:
        x: Test images ``(N, 3, S, S)`` in ``[0, 1]``.
        boxes: Their item boxes ``(N, 4)``.
        maps: Each method's maps of the first images, by row name.
        path: The PNG file (written through a temporary file).
        n: Images (figure rows) to show.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(maps)
    n = min([n, len(x)] + [len(m) for m in maps.values()])
    fig, axes = plt.subplots(
        n, len(names) + 1, figsize=(1.6 * (len(names) + 1), 1.6 * n), squeeze=False
    )
    for i in range(n):
        axes[i, 0].imshow(x[i].permute(1, 2, 0).numpy())
        x1, y1, x2, y2 = boxes[i].tolist()
        axes[i, 0].add_patch(
            plt.Rectangle(
                (x1 - 0.5, y1 - 0.5), x2 - x1 + 1, y2 - y1 + 1, fill=False, color="lime", lw=1
            )
        )
        for j, name in enumerate(names, start=1):
            m = maps[name][i, 0].float()
            m = (m - m.min()) / (m.max() - m.min()).clamp_min(1e-8)
            axes[i, j].imshow(m.numpy(), cmap="inferno", vmin=0, vmax=1)
    for j, name in enumerate(["input (item box)"] + names):
        # Column widths are 1.6 inches: wrap long names (refinement rows) rather than overlap.
        axes[0, j].set_title(textwrap.fill(name, width=24), fontsize=6)
    for ax in axes.flat:
        ax.set_axis_off()
    fig.tight_layout()
    tmp = path.with_suffix(".tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    tmp.replace(path)


def _blackbox_section(name: str, bb: dict[str, Any], config: dict[str, Any]) -> list[str]:
    """One black box's heading, table of rows, first-images table and absent-class lines."""
    lines = [
        f"## Black box: {name} ({bb['arch']}), "
        f"test accuracy {_fmt(bb['test_accuracy'], '.3f')}"
        f"{_accuracy_images(bb, config['n_test'])}",
        "",
        *_objective_note(bb, config["objective"]),
        "| method | loc. error (%) | loc. error, correctly classified (%) "
        "| loc. error, misclassified (%) | empty maps (%) "
        "| saliency metric | box area | deletion | insertion | ins - del | ROAD "
        "| threshold | images/s |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in bb["rows"]:
        lines.append(
            f"| {r['method']} | {_fmt(r['localisation_error'], '.1f')} | "
            f"{_fmt(r.get('localisation_error_correct'), '.1f')} | "
            f"{_fmt(r.get('localisation_error_misclassified'), '.1f')} | "
            f"{_fmt(_percent(r.get('empty_maps')), '.1f')} | "
            f"{_fmt(r['saliency_metric'], '.3f')} | {_fmt(r['box_area'], '.3f')} | "
            f"{faithfulness_cells(r)} | "
            f"{_fmt(r['threshold'], '.2f')} | {_fmt(r['images_per_s'], '.1f')} |"
        )
    lines += _first_images_table(bb["rows"])
    for r in bb["rows"]:
        if "absent_to_true_area_ratio" in r:
            lines.append(
                f"\n{r['method']}: mean mask {r['mask_mean']:.3f} for the true class, "
                f"{r['absent_class_mask_mean']:.3f} for an absent class "
                f"(ratio {r['absent_to_true_area_ratio']:.2f})."
            )
    lines.append("")
    return lines


def faithfulness_cells(row: dict[str, Any]) -> str:
    """A row's deletion, insertion, insertion-minus-deletion and ROAD cells ("–" if absent)."""
    keys = ("deletion_auc", "insertion_auc", "insertion_minus_deletion", "road_combined")
    return " | ".join(_fmt(row.get(k), ".3f") for k in keys)


def _fmt(value: Any, spec: str) -> str:
    return "–" if value is None else format(value, spec)


def _percent(fraction: float | None) -> float | None:
    return None if fraction is None else 100.0 * fraction


def _threshold_images(config: dict[str, Any]) -> int:
    """Validation images that chose the thresholds (``threshold_images`` is at most ``n_val``)."""
    return config.get("threshold_images") or config["n_val"]


def _accuracy_images(bb: dict[str, Any], n_test: int) -> str:
    """Where the black box's accuracies were measured: its training run and this benchmark."""
    n = bb.get("test_accuracy_images")
    text = f" (on {n:,} test composites, when it was trained)" if n else ""
    share = bb.get("test_correct_share")
    if share is not None:
        text += f"; {share:.3f} on this benchmark's {n_test:,} test images"
    return text


def _subset_note(results: dict[str, Any]) -> list[str]:
    """Sentences naming the rows scored on fewer test images (per-image optimisation), if any."""
    n_test = results["config"]["n_test"]
    names: dict[int, list[str]] = {}
    for bb in results["blackboxes"].values():
        for r in bb["rows"]:
            if r["n_test"] < n_test and r["method"] not in names.get(r["n_test"], []):
                names.setdefault(r["n_test"], []).append(r["method"])
    return [
        "These rows optimise every image, on the objective of the black box's maskers, and are "
        f"scored on the first {n} of the test images: " + ", ".join(rows) + "."
        for n, rows in sorted(names.items())
    ]


def _first_images_table(rows: list[dict[str, Any]]) -> list[str]:
    """Every row on the first images, where rows that optimise every image were scored."""
    counts = {r["first_images"] for r in rows if "first_images" in r}
    if len(counts) != 1:
        return []
    n = counts.pop()
    lines = [
        "",
        f"On the first {n} test images, the images of the rows that optimise every image:",
        "",
        "| method | loc. error (%) | saliency metric |",
        "|---|---:|---:|",
    ]
    for r in rows:
        if r["n_test"] == n:
            error, sal = r["localisation_error"], r["saliency_metric"]
        elif r.get("first_images") == n:
            error, sal = r["first_localisation_error"], r["first_saliency_metric"]
        else:
            continue
        lines.append(f"| {r['method']} | {_fmt(error, '.1f')} | {_fmt(sal, '.3f')} |")
    return lines


def _objective_note(bb: dict[str, Any], run_objective: dict[str, Any]) -> list[str]:
    """The sentence on a black box whose maskers' objective differs from the run's, if any."""
    base = trained_objective(run_objective, ClutteredConfig()).to_dict()
    own = bb.get("masker_objective") or base
    changed = {k: v for k, v in own.items() if base.get(k) != v}
    if not changed:
        return []
    items = ", ".join(f"`{k}={v!r}`" for k, v in sorted(changed.items()))
    return [f"This black box's maskers use the run's objective with {items}.", ""]
