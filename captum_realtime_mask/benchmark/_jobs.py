"""The benchmark's black-box jobs in worker processes, the threads shared among those running.

Each suite evaluates its black boxes one after the other in this process, or ``jobs`` at a
time in spawned processes; a worker takes an equal share of all threads among the jobs still
running (:func:`share_threads`, called between methods), so a job left alone speeds up once
the others are done.
"""

from __future__ import annotations

import platform
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from torch import nn

from captum_realtime_mask.benchmark.blackbox import train_blackbox
from captum_realtime_mask.benchmark.tasks import task_of

__all__ = [
    "blackbox_record",
    "job_done",
    "job_log",
    "job_threads",
    "load_splits",
    "ready_blackbox",
    "row_line",
    "run_in_processes",
    "run_jobs",
    "share_threads",
]

#: In a worker process: the shared count of black-box jobs still running, and all threads.
_JOBS_ALIVE: Any = None
_ALL_THREADS = 1


def run_jobs(
    job: Callable[..., Any],
    config: Any,
    cache: Path,
    log: Callable[[str], None],
    splits: dict[str, Any],
) -> tuple[list[Any], dict[str, Any]]:
    """Every black box's ``job``, in this process or ``config.jobs`` processes at once.

    Args:
        job: ``job(config, name, cache, threads, log, splits)``; in a worker process ``log``
            and ``splits`` are None (it prints its lines and loads its own splits).
        config: The run's :class:`~captum_realtime_mask.benchmark.config.BenchmarkConfig`.
        cache: The cache folder.
        log: Called with one line per step in this process.
        splits: The loaded splits, for the jobs run in this process.

    Returns:
        The jobs' outputs in ``config.blackboxes`` order, and the machine's record (platform,
        threads, processes, threads per process, torch version).
    """
    threads = config.threads or torch.get_num_threads()
    jobs = max(1, min(config.jobs, len(config.blackboxes), threads))
    if jobs > 1:
        per_job = max(1, threads // jobs)
        log(
            f"evaluating {len(config.blackboxes)} black boxes in {jobs} processes "
            f"({per_job} threads each)"
        )
        args = (config, cache)
        outputs = run_in_processes(job, config.blackboxes, args, jobs, threads, per_job)
    else:
        per_job = threads
        outputs = [job(config, name, cache, threads, log, splits) for name in config.blackboxes]
    machine = {
        "platform": platform.platform(),
        "threads": threads,
        "processes": jobs,
        "threads_per_process": per_job,
        "torch": torch.__version__,
    }
    return outputs, machine


def run_in_processes(
    job: Callable[..., Any],
    names: tuple[str, ...],
    args: tuple[Any, ...],
    jobs: int,
    threads: int,
    per_job: int,
) -> list[Any]:
    """``job(*args[:1], name, *args[1:], per_job, None)`` for every name, ``jobs`` at a time.

    Args:
        job: A picklable function ``job(config, name, cache, threads, log)``.
        names: The black boxes, one job each, results in this order.
        args: ``(config, cache)``.
        jobs: Processes at once.
        threads: Torch threads in all.
        per_job: Threads of each job at its start.
    """
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    config, cache = args
    context = multiprocessing.get_context("spawn")
    alive = context.Value("i", jobs)
    with ProcessPoolExecutor(
        jobs, mp_context=context, initializer=_init_worker, initargs=(alive, threads)
    ) as pool:
        futures = [pool.submit(job, config, name, cache, per_job, None) for name in names]
        return [f.result() for f in futures]


def _init_worker(alive: Any, threads: int) -> None:
    """Initialise a worker process with the shared job count and the run's threads."""
    global _JOBS_ALIVE, _ALL_THREADS
    _JOBS_ALIVE, _ALL_THREADS = alive, threads


def share_threads() -> None:
    """In a worker, take an equal share of all threads among the jobs still running."""
    if _JOBS_ALIVE is not None:
        torch.set_num_threads(max(1, _ALL_THREADS // max(1, _JOBS_ALIVE.value)))


def job_done() -> None:
    """In a worker, count this job out of those still running."""
    if _JOBS_ALIVE is not None:
        with _JOBS_ALIVE.get_lock():
            _JOBS_ALIVE.value -= 1


# ---------------------------------------------------------------------------------------------
# What every suite's job does first


def job_log(log: Callable[[str], None] | None) -> Callable[[str], None]:
    """``log``, or in a worker process (None) a printer of time-stamped lines."""
    if log is not None:
        return log

    def printed(line: str) -> None:
        print(f"{time.strftime('%H:%M:%S')} {line}", flush=True)

    return printed


@contextmanager
def job_threads(threads: int) -> Iterator[None]:
    """Run a job on ``threads`` torch threads; count it done and restore the threads after."""
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        job_done()
        torch.set_num_threads(previous)


def load_splits(config: Any, cache: Path, **options: Any) -> dict[str, Any]:
    """The train, val and test splits of the run's dataset, rendered and cached on first use.

    ``options`` go to the split class (e.g. ``return_boxes=False`` for scenes).
    """
    data = config.data_config()
    kind = task_of(data).split_class
    return {n: kind(n, data, cache_dir=cache, **options) for n in ("train", "val", "test")}


def ready_blackbox(config: Any, bb_name: str, cache: Path, log: Callable[[str], None]) -> nn.Module:
    """One black box of the run, trained on its dataset or loaded from the cache, in eval mode.

    Channels-last when ``config.channels_last`` (its maskers' frozen encoder and the
    baselines then use that format too).
    """
    t0 = time.perf_counter()
    data = config.data_config()
    model = train_blackbox(
        bb_name,
        data,
        epochs=config.blackbox_epochs,
        seed=config.seed,
        cache_dir=cache,
        max_steps=config.blackbox_max_steps,
        log=log,
    ).eval()
    if config.channels_last:
        model = model.to(memory_format=torch.channels_last)
    metric = task_of(data).metric
    log(
        f"[{bb_name}] black box ready ({time.perf_counter() - t0:.0f} s); "
        f"test {metric} {model.info.get(f'test_{metric}')}"
    )
    return model


def row_line(bb_name: str, method: str, row: dict[str, Any]) -> str:
    """The log line of one scored row: its float scores, three decimals each."""
    scores = ", ".join(f"{k}={v:.3f}" for k, v in row.items() if isinstance(v, float))
    return f"[{bb_name}] {method}: {scores}"


def blackbox_record(config: Any, bb_name: str, model: nn.Module) -> dict[str, Any]:
    """What both suites record of a black box: its architecture, score, training and maskers.

    The score is the task's (``test_accuracy`` or ``test_map``, and the number of test images
    it was measured on when the model was trained).
    """
    from captum_realtime_mask.benchmark.config import trained_objective

    data = config.data_config()
    metric, info = task_of(data).metric, model.info
    return {
        "arch": info.get("blackbox", {}).get("arch", bb_name),
        f"test_{metric}": info.get(f"test_{metric}"),
        f"test_{metric}_images": (info.get("dataset") or {}).get("n_test"),
        "blackbox_train_seconds": info.get("train_seconds"),
        "masker_epochs": {
            "frozen": config.masker_epochs_for(bb_name),
            "scratch": config.masker_epochs_for(bb_name, scratch=True),
        },
        "masker_objective": trained_objective(config.objective_for(bb_name), data).to_dict(),
    }
