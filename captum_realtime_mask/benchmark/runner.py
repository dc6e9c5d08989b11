"""The cluttered Fashion-MNIST benchmark: the paper's tables 1-3 at CPU scale, in one run.

For each black box it trains (or loads from the cache) the classifier and two maskers, runs
every method on the same validation and test images, and scores them with the paper's
protocol: localisation error (threshold, tightest box, hit when IoU > 0.5 with the item's
box), the saliency metric, the mean box area, and throughput on the same batch.
:func:`run_benchmark` writes ``results.json``, ``results.md`` and ``figure.png``.

This module runs the jobs; the pieces it puts together live beside it:
:mod:`~captum_realtime_mask.benchmark.config` (:class:`BenchmarkConfig`),
:mod:`~captum_realtime_mask.benchmark.settings` (the maskers' settings, re-exported here),
``_maskers`` (training and caching the maskers), ``_scoring`` (one method's row) and
``_report`` (``results.md`` and ``figure.png``).
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

from captum_realtime_mask.benchmark import _report
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
from captum_realtime_mask.benchmark._scoring import Images, batched, method_row
from captum_realtime_mask.benchmark.config import (  # noqa: F401 (old path)
    BenchmarkConfig,
    Mode,
    trained_objective,
)
from captum_realtime_mask.benchmark.methods import Method, captum_methods, iterative_method
from captum_realtime_mask.benchmark.settings import (
    BENCHMARK_OBJECTIVE_BY_BLACKBOX,
    FROZEN_ENCODER,
    SCRATCH_ENCODER,
    SCRATCH_FIT,
)
from captum_realtime_mask.checkpoint import atomic_write_bytes
from captum_realtime_mask.datasets.cache import default_cache_dir
from captum_realtime_mask.datasets.cluttered import ClutteredFashionMNIST
from captum_realtime_mask.datasets.config import ClutteredConfig
from captum_realtime_mask.objective import ObjectiveConfig

__all__ = [
    "BENCHMARK_OBJECTIVE_BY_BLACKBOX",
    "FROZEN_ENCODER",
    "SCRATCH_ENCODER",
    "SCRATCH_FIT",
    "BenchmarkConfig",
    "run_benchmark",
]

Splits = dict[str, ClutteredFashionMNIST]


def run_benchmark(config: BenchmarkConfig, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Run the benchmark and write its report; returns the results dictionary.

    ``config.suite == "scenes"`` runs the scenes suite
    (:func:`~captum_realtime_mask.benchmark.scenes.run_scenes_benchmark`).

    With ``config.jobs > 1`` the black boxes are evaluated in parallel processes (spawned,
    each with its share of ``config.threads``); their log lines go to standard output.

    Args:
        config: What to run.
        log: Called with one line per step (the worker processes print theirs).

    Returns:
        The results, as written to ``results.json``: the configuration, the masker options,
        the dataset, the machine, and each black box's record with its rows.
    """
    if config.suite == "scenes":
        from captum_realtime_mask.benchmark.scenes import run_scenes_benchmark

        return run_scenes_benchmark(config, log)
    out = Path(config.output)
    out.mkdir(parents=True, exist_ok=True)
    cache = Path(config.cache_dir) if config.cache_dir else default_cache_dir()
    ObjectiveConfig(**config.objective)  # fail before any work on a bad override
    started = time.perf_counter()
    splits = load_splits(config, cache)  # renders the caches before any worker reads them
    outputs, machine = run_jobs(_blackbox_job, config, cache, log, splits)
    results: dict[str, Any] = {
        "config": asdict(config),
        "masker_fit": default_fit_record(),
        "scratch_masker_fit": dict(SCRATCH_FIT),
        "dataset": _data_config(config).to_dict(),
        "machine": machine,
        "blackboxes": {name: entry for name, entry, _ in outputs},
    }
    figure_maps = outputs[0][2]
    results["elapsed_s"] = time.perf_counter() - started
    test = splits["test"]
    atomic_write_bytes(out / "results.json", json.dumps(results, indent=2).encode())
    atomic_write_bytes(out / "results.md", _report.markdown(results).encode())
    _report.save_figure(test.float_images(), test.boxes.float(), figure_maps, out / "figure.png")
    log(
        f"wrote {out / 'results.md'}, {out / 'results.json'} and {out / 'figure.png'} "
        f"in {results['elapsed_s']:.0f} s"
    )
    return results


def _blackbox_job(
    config: BenchmarkConfig,
    bb_name: str,
    cache: Path,
    threads: int,
    log: Callable[[str], None] | None,
    splits: Splits | None = None,
) -> tuple[str, dict[str, Any], dict[str, torch.Tensor]]:
    """Train or load one black box and its maskers, and score every method on it.

    ``splits`` are the loaded datasets (None in a worker process: it loads them itself).
    Returns the black box's key, its record for ``results.json`` and its figure maps.
    """
    log = job_log(log)
    with job_threads(threads):
        data_cfg = _data_config(config)
        splits = splits or load_splits(config, cache)
        train, val, test = splits["train"], splits["val"], splits["test"]
        model = ready_blackbox(config, bb_name, cache, log)
        figure_maps: dict[str, torch.Tensor] = {}
        # This black box's objective, for its maskers' cache keys, training and refinement.
        cfg = replace(config, objective=config.objective_for(bb_name), objective_by_blackbox={})
        methods = _methods(model, bb_name, cfg, data_cfg, cache, train, val, log)
        rows, correct_share = _score_methods(
            model, bb_name, methods, cfg, _images(val), _images(test), log, figure_maps
        )
    entry = {
        **blackbox_record(config, bb_name, model),
        "channels_last": _is_channels_last(model),
        "test_correct_share": correct_share,
        "rows": rows,
    }
    return bb_name, entry, figure_maps


def _methods(
    model: nn.Module,
    bb_name: str,
    cfg: BenchmarkConfig,
    data_cfg: ClutteredConfig,
    cache: Path,
    train: ClutteredFashionMNIST,
    val: ClutteredFashionMNIST,
    log: Callable[[str], None],
) -> list[Method]:
    """Every row's method on one black box, its two maskers trained (or loaded) first.

    ``cfg`` carries this black box's objective.
    """
    methods = masker_methods(model, bb_name, cfg, data_cfg, cache, train, val, log)
    methods += captum_methods(model, data_cfg.image_size, ig_steps=cfg.ig_steps)
    # The iterative mask optimises the objective this black box's maskers are trained on, so
    # that the slow method and the learned one are compared on equal terms.
    objective = trained_objective(cfg.objective, data_cfg)
    methods.append(iterative_method(model, cfg.iterative_steps, objective))
    return methods + [
        Method("Centre box", None, "box", "centre"),
        Method("Max box", None, "box", "max"),
        Method("Ground-truth boxes", None, "box", "gt"),
    ]


def _score_methods(
    model: nn.Module,
    bb_name: str,
    methods: list[Method],
    cfg: BenchmarkConfig,
    val: Images,
    test: Images,
    log: Callable[[str], None],
    figure_maps: dict[str, torch.Tensor],
) -> tuple[list[dict[str, Any]], float]:
    """Rows of every method on one black box, and the share of test images it classifies right."""
    xt, yt, _ = test
    with torch.no_grad():
        correct = batched(lambda a, t: model(a).argmax(1) == t, xt, yt, cfg.batch_size)
    rows = []
    for method in methods:
        share_threads()
        row = method_row(model, method, cfg, val, test, correct, figure_maps)
        log(row_line(bb_name, method.name, row))
        rows.append(row)
    return rows, float(correct.float().mean())


# ---------------------------------------------------------------------------------------------
# The splits


def _data_config(config: BenchmarkConfig) -> ClutteredConfig:
    """The dataset of a benchmark run: the default composites at the run's sizes and seed."""
    return config.data_config()  # type: ignore[return-value]


def _images(split: ClutteredFashionMNIST) -> Images:
    """A split's float images, labels and float boxes."""
    return split.float_images(), split.labels, split.boxes.float()


def _is_channels_last(model: nn.Module) -> bool:
    """Whether every 4-D weight of ``model`` is stored in channels-last memory format."""
    weights = [p for p in model.parameters() if p.dim() == 4]
    cl = torch.channels_last
    return bool(weights) and all(p.is_contiguous(memory_format=cl) for p in weights)
