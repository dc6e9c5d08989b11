"""Training under ``torchrun``: the process group's rank and size, and a sharded loader."""

from __future__ import annotations

from collections.abc import Iterable

import torch

__all__ = ["distributed", "shard_loader"]


def distributed() -> tuple[bool, int, int]:
    """``(initialised, rank, world size)`` of the default process group; ``(False, 0, 1)``."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return True, torch.distributed.get_rank(), torch.distributed.get_world_size()
    return False, 0, 1


def shard_loader(loader: Iterable, seed: int) -> Iterable:
    """Give a DataLoader a DistributedSampler unless it already has a distributed one.

    The rebuilt loader keeps every other option of the user's: batch size, workers and their
    ``worker_init_fn``, ``multiprocessing_context``, ``prefetch_factor``,
    ``persistent_workers`` and ``timeout``, the ``generator`` its worker seeds come from,
    ``collate_fn``, ``pin_memory`` (and its device), ``drop_last`` and ``in_order``. A loader
    with a custom batch sampler, or one that is not a DataLoader, is returned as it is: the
    user shards it.
    """
    from torch.utils.data import DataLoader, DistributedSampler, RandomSampler

    if not isinstance(loader, DataLoader) or isinstance(loader.sampler, DistributedSampler):
        return loader
    if loader.batch_sampler is not None and not hasattr(loader.batch_sampler, "sampler"):
        return loader  # a custom batch sampler: the user shards it
    sampler = DistributedSampler(
        loader.dataset, shuffle=isinstance(loader.sampler, RandomSampler), seed=seed
    )
    options = {
        name: getattr(loader, name)
        for name in ("pin_memory_device", "in_order")
        if hasattr(loader, name)  # newer DataLoader options
    }
    return DataLoader(
        loader.dataset,
        batch_size=loader.batch_size,
        sampler=sampler,
        num_workers=loader.num_workers,
        collate_fn=loader.collate_fn,
        pin_memory=loader.pin_memory,
        drop_last=loader.drop_last,
        timeout=loader.timeout,
        worker_init_fn=loader.worker_init_fn,
        multiprocessing_context=loader.multiprocessing_context,
        generator=loader.generator,
        prefetch_factor=loader.prefetch_factor,
        persistent_workers=loader.persistent_workers,
        **options,
    )
