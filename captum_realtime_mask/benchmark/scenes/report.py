"""The scenes suite's report: ``results.md`` from the results dictionary, and ``figure.png``."""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

import torch

from captum_realtime_mask.benchmark._faithfulness import FAITHFULNESS_STEPS, ROAD_PERCENTILES
from captum_realtime_mask.benchmark._report import _fmt, faithfulness_cells
from captum_realtime_mask.benchmark._scoring import THROUGHPUT_BUDGET_S, THROUGHPUT_CALLS
from captum_realtime_mask.benchmark.scenes.requests import Requests, SceneImages
from captum_realtime_mask.datasets.fashion_mnist import FASHION_MNIST_CLASSES

__all__ = ["markdown", "save_figure"]


def markdown(results: dict[str, Any]) -> str:
    """``results.md``: every black box's table of rows, from the suite's results.

    Args:
        results: The results dictionary (as saved in ``results.json``).

    Returns:
        The Markdown text.
    """
    cfg, data = results["config"], results["dataset"]
    lines = [
        "# Scenes of several objects: per-object localisation and class selectivity",
        "",
        f"Mode: `{cfg['mode']}`; {cfg['n_test']} test scenes of {data['min_items']} to "
        f"{data['max_items']} Fashion-MNIST items of distinct classes ({data['image_size']} px); "
        f"run time {results['elapsed_s'] / 60:.1f} min on {results['machine']['threads']} CPU "
        "threads. Every method is asked for a map of every class present in a scene and of one "
        "absent class, the same pairs for all.",
        "Loc. error: per object (present class), threshold, tightest box, hit when IoU > 0.5 "
        "with one of that class's boxes. Pointing: the map's maximum within 15 px at 224 "
        f"(scaled: {15 * data['image_size'] / 224:.2f} px) of the class's box, mean of the "
        "per-class accuracies. Selectivity: share of pairs, in scenes of several classes, whose "
        "map's mean inside the class's box beats its mean inside every other object's box. "
        "Absent/present: the mean map value for absent classes over that for present ones. "
        f"Deletion and insertion: {FAITHFULNESS_STEPS} steps, blurred pixels, area under the "
        "class's sigmoid probability, on the present classes of the first "
        f"{cfg.get('faithfulness_images') or cfg['n_test']} scenes; ins - del is their "
        f"difference (higher is better). ROAD: pytorch-grad-cam's (LeRF - MoRF) / 2 at "
        f"percentiles {list(ROAD_PERCENTILES)} (higher is better). Masks and the centre box are "
        "thresholded at 0.5, other maps min-max normalised and thresholded at the value chosen "
        f"on {cfg.get('threshold_images') or cfg['n_val']} validation scenes. Images/s: the "
        f"median of at most {THROUGHPUT_CALLS} timed calls on {cfg['throughput_batch']} "
        f"(image, class) pairs (none started after {THROUGHPUT_BUDGET_S:.0f} s).",
        "",
    ]
    for name, bb in results["blackboxes"].items():
        lines += _section(name, bb, cfg["n_test"])
    return "\n".join(lines) + "\n"


def _section(name: str, bb: dict[str, Any], n_test: int) -> list[str]:
    lines = [
        f"## Black box: {name} ({bb['arch']}), test mAP {_fmt(bb.get('test_map'), '.3f')} "
        f"(on {bb.get('test_map_images') or n_test:,} test scenes, when it was trained)",
        "",
        "| method | scenes | loc. error (%) | one item | several items | pointing | selectivity "
        "| absent / present | deletion | insertion | ins - del | ROAD | images/s | threshold |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in bb["rows"]:
        lines.append(
            f"| {r['method']} | {r['n_test']} | {_fmt(r['localisation_error'], '.1f')} | "
            f"{_fmt(r.get('localisation_error_one_item'), '.1f')} | "
            f"{_fmt(r.get('localisation_error_several_items'), '.1f')} | "
            f"{_fmt(r['pointing_accuracy'], '.3f')} | {_fmt(r['selectivity'], '.3f')} | "
            f"{_fmt(r['absent_to_present_area_ratio'], '.3f')} | {faithfulness_cells(r)} | "
            f"{_fmt(r['images_per_s'], '.1f')} | "
            f"{_fmt(r['threshold'], '.2f')} |"
        )
    lines += _subset_tables(bb["rows"])
    return lines + [""]


def _subset_tables(rows: list[dict[str, Any]]) -> list[str]:
    """Every row on the first scenes, where the slower rows were scored (same scenes)."""
    sizes = sorted({int(n) for r in rows for n in r.get("on_first", {})})
    lines: list[str] = []
    for n in sizes:
        lines += [
            "",
            f"On the first {n} test scenes (the scenes of the rows scored on {n}):",
            "",
            "| method | loc. error (%) | pointing | selectivity |",
            "|---|---:|---:|---:|",
        ]
        for r in rows:
            s = r if r["n_test"] == n else r.get("on_first", {}).get(str(n))
            if s is not None:
                lines.append(
                    f"| {r['method']} | {_fmt(s['localisation_error'], '.1f')} | "
                    f"{_fmt(s['pointing_accuracy'], '.3f')} | {_fmt(s['selectivity'], '.3f')} |"
                )
    return lines


def save_figure(
    test: SceneImages, requests: Requests, maps: dict[str, torch.Tensor], path: Path
) -> None:
    """Save ``figure.png``: each requested (scene, class) pair as a row, each method a column.

    Args:
        test: The test scenes.
        requests: The figure's pairs (two present classes and one absent class per scene).
        maps: Each method's maps of those pairs ``(P, 1, H, W)``, by row name.
        path: The PNG file (written through a temporary file).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(maps)
    rows = len(requests.image)
    fig, axes = plt.subplots(
        rows, len(names) + 1, figsize=(1.3 * (len(names) + 1), 1.3 * rows), squeeze=False
    )
    for p in range(rows):
        i, c = int(requests.image[p]), int(requests.target[p])
        ax = axes[p, 0]
        ax.imshow(test.images[i].permute(1, 2, 0).numpy())
        for box, k in zip(test.boxes[i].tolist(), test.classes[i].tolist(), strict=True):
            x1, y1, x2, y2 = box
            colour = "lime" if k == c else "white"
            ax.add_patch(
                plt.Rectangle(
                    (x1 - 0.5, y1 - 0.5), x2 - x1 + 1, y2 - y1 + 1, fill=False, color=colour, lw=0.8
                )
            )
        state = "present" if bool(requests.present[p]) else "ABSENT"
        ax.set_ylabel(f"{FASHION_MNIST_CLASSES[c]}\n({state})", fontsize=6)
        for j, name in enumerate(names, start=1):
            m = maps[name][p, 0].float()
            m = (m - m.min()) / (m.max() - m.min()).clamp_min(1e-8) if m.max() > 1 else m
            axes[p, j].imshow(m.numpy(), cmap="inferno", vmin=0, vmax=1)
    for j, name in enumerate(["scene (requested class in green)"] + names):
        axes[0, j].set_title(textwrap.fill(name, width=20), fontsize=5)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    fig.tight_layout()
    tmp = path.with_suffix(".tmp.png")
    fig.savefig(tmp, dpi=100)
    plt.close(fig)
    tmp.replace(path)
