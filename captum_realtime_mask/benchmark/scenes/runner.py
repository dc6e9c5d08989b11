"""The scenes suite: every method on scenes of one to three objects, with multi-label black boxes.

For each black box it trains (or loads from the cache) a multi-label classifier on
:class:`~captum_realtime_mask.datasets.FashionMNISTScenes` and the two maskers of the
single-object suite (same encoders, objective and fit() options; fit() reads the multi-hot
labels and trains them with a sigmoid objective and fake selectors drawn among the classes
absent from each image), then scores every method on the same requested pairs (every
present class of a test scene, and one absent class): the learned masks, Captum's methods,
pytorch-grad-cam's GradCAM++ and ScoreCAM, the iterative mask and a centre-box baseline.
:func:`run_scenes_benchmark` writes ``results.json``, ``results.md`` and ``figure.png``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from captum_realtime_mask.benchmark._jobs import (
    blackbox_record,
    job_log,
    job_threads,
    load_splits,
    ready_blackbox,
    row_line,
    run_jobs,
    share_threads,
)
from captum_realtime_mask.benchmark._maskers import default_fit_record, masker_methods
from captum_realtime_mask.benchmark.config import BenchmarkConfig, trained_objective
from captum_realtime_mask.benchmark.methods import (
    Method,
    cam_library_methods,
    captum_methods,
    iterative_method,
)
from captum_realtime_mask.benchmark.scenes import report
from captum_realtime_mask.benchmark.scenes.requests import (
    Requests,
    SceneImages,
    scene_images,
    scene_requests,
)
from captum_realtime_mask.benchmark.scenes.scoring import scene_row
from captum_realtime_mask.benchmark.settings import SCRATCH_FIT
from captum_realtime_mask.checkpoint import atomic_write_bytes
from captum_realtime_mask.datasets.cache import default_cache_dir
from captum_realtime_mask.datasets.scenes import FashionMNISTScenes, SceneConfig
from captum_realtime_mask.errors import InputError
from captum_realtime_mask.metrics import centre_box
from captum_realtime_mask.objective import ObjectiveConfig

__all__ = ["FIGURE_SCENES", "run_scenes_benchmark", "scene_data_config"]

Splits = dict[str, FashionMNISTScenes]

#: Scenes of several items shown in the figure, each for two present classes and one absent.
FIGURE_SCENES = 4


def run_scenes_benchmark(
    config: BenchmarkConfig, log: Callable[[str], None] = print
) -> dict[str, Any]:
    """Run the scenes suite and write its report; returns the results dictionary.

    Args:
        config: What to run (``config.suite == "scenes"``; see
            :meth:`BenchmarkConfig.for_mode`).
        log: Called with one line per step (worker processes print theirs).

    Returns:
        The results, as written to ``results.json``.

    Raises:
        InputError: ``config.suite`` is not ``"scenes"``, or an objective override is bad.
    """
    if config.suite != "scenes":
        raise InputError(
            f"is {config.suite!r}; run_scenes_benchmark runs the scenes suite (use "
            "run_benchmark for the single-object one).",
            argument="BenchmarkConfig.suite",
        )
    out = Path(config.output)
    out.mkdir(parents=True, exist_ok=True)
    cache = Path(config.cache_dir) if config.cache_dir else default_cache_dir()
    ObjectiveConfig(**config.objective)  # fail before any work on a bad override
    started = time.perf_counter()
    splits = _load_splits(config, cache)  # renders the caches before any worker reads them
    outputs, machine = run_jobs(_scene_job, config, cache, log, splits)
    results: dict[str, Any] = {
        "suite": "scenes",
        "config": asdict(config),
        "masker_fit": default_fit_record(),
        "scratch_masker_fit": dict(SCRATCH_FIT),
        "dataset": scene_data_config(config).to_dict(),
        "machine": machine,
        "blackboxes": {name: entry for name, entry, _ in outputs},
    }
    results["elapsed_s"] = time.perf_counter() - started
    test = scene_images(splits["test"])
    figure = _figure_requests(test, config)
    atomic_write_bytes(out / "results.json", json.dumps(results, indent=2).encode())
    atomic_write_bytes(out / "results.md", report.markdown(results).encode())
    report.save_figure(test, figure, outputs[0][2], out / "figure.png")
    log(f"wrote {out / 'results.md'}, results.json and figure.png in {results['elapsed_s']:.0f} s")
    return results


def scene_data_config(config: BenchmarkConfig) -> SceneConfig:
    """The scenes of a run: the default :class:`SceneConfig` at the run's sizes and seed."""
    return config.data_config()  # type: ignore[return-value]


def _load_splits(config: BenchmarkConfig, cache: Path) -> Splits:
    """The train, val and test scenes as ``(image, label)`` items, cached on the first call."""
    return load_splits(config, cache, return_boxes=False)


def _scene_job(
    config: BenchmarkConfig,
    bb_name: str,
    cache: Path,
    threads: int,
    log: Callable[[str], None] | None,
    splits: Splits | None = None,
) -> tuple[str, dict[str, Any], dict[str, torch.Tensor]]:
    """Train or load one black box and its maskers, and score every method on it.

    Returns the black box's key, its record for ``results.json`` and its figure maps.
    """
    log = job_log(log)
    with job_threads(threads):
        splits = splits or _load_splits(config, cache)
        model = ready_blackbox(config, bb_name, cache, log)
        cfg = replace(config, objective=config.objective_for(bb_name), objective_by_blackbox={})
        methods = _methods(model, bb_name, cfg, cache, splits, log)
        val, test = scene_images(splits["val"]), scene_images(splits["test"])
        figure = _figure_requests(test, cfg)
        figure_maps: dict[str, torch.Tensor] = {}
        rows = []
        for method in methods:
            share_threads()
            rows.append(scene_row(model, method, cfg, val, test, figure_maps, figure))
            log(row_line(bb_name, method.name, rows[-1]))
    entry = {
        **blackbox_record(config, bb_name, model),
        "val_map": model.info.get("val_map"),
        "blackbox_epochs": (model.info.get("blackbox") or {}).get("epochs"),
        "rows": rows,
    }
    return bb_name, entry, figure_maps


def _methods(
    model: nn.Module,
    bb_name: str,
    cfg: BenchmarkConfig,
    cache: Path,
    splits: Splits,
    log: Callable[[str], None],
) -> list[Method]:
    """Every row's method on one black box, its two maskers trained (or loaded) first."""
    data_cfg = scene_data_config(cfg)
    methods = masker_methods(
        model, bb_name, cfg, data_cfg, cache, splits["train"], splits["val"], log
    )
    for method in captum_methods(model, data_cfg.image_size, ig_steps=cfg.ig_steps):
        methods.append(replace(method, costly=method.name == "Occlusion"))
    methods += cam_library_methods(model)
    objective = trained_objective(cfg.objective, data_cfg)
    methods.append(iterative_method(model, cfg.iterative_steps, objective))
    return methods + [Method("Centre box", _centre_box_maps, kind="mask")]


def _centre_box_maps(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """The same centre box for every image and class, as a 0/1 map (the class-blind baseline)."""
    x1, y1, x2, y2 = centre_box(x.shape[-2], x.shape[-1]).tolist()
    maps = x.new_zeros(len(x), 1, *x.shape[-2:])
    maps[..., int(y1) : int(y2) + 1, int(x1) : int(x2) + 1] = 1.0
    return maps


def _figure_requests(test: SceneImages, cfg: BenchmarkConfig) -> Requests:
    """The figure's pairs: the first scenes of several items (within every method's subset).

    Each is shown for its first two classes and the absent class the suite requested of it.
    """
    pool = min(
        len(test.images), cfg.iterative_images or len(test.images), cfg.costly_images or 10**9
    )
    req = scene_requests(test.first(pool), cfg.seed)
    several = [i for i in range(pool) if len(test.classes[i]) > 1][:FIGURE_SCENES]
    keep = torch.zeros_like(req.present)
    for i in several:
        mine = (req.image == i).nonzero()[:, 0]
        keep[mine[:2]] = True
        keep[mine[~req.present[mine]]] = True
    return req.where(keep)
