"""What the built-in datasets share: a split drawn per epoch, cached as one ``.npz`` file.

:class:`CachedSplit` is the base of :class:`~captum_realtime_mask.datasets.ClutteredFashionMNIST`
and :class:`~captum_realtime_mask.datasets.FashionMNISTScenes`: it switches epochs, reads and
writes the cache file (atomically; an unwritable folder or an unreadable file only warns), picks
the Fashion-MNIST items a split may use and checks indices. A subclass says how a split is
built (``_build``), what its cache file records (``_meta``), what shapes its arrays must have
(``_check_arrays``) and how it keeps them (``_adopt``).
"""

from __future__ import annotations

import functools
import json
import operator
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from captum_realtime_mask._checks import integer
from captum_realtime_mask.checkpoint import atomic_write
from captum_realtime_mask.datasets.cache import CACHE_ENV, default_cache_dir
from captum_realtime_mask.datasets.config import SPLITS
from captum_realtime_mask.datasets.fashion_mnist import load_fashion_mnist

__all__ = ["CachedSplit", "split_dataloaders", "write_npz"]


class CachedSplit(Dataset):
    """A split of a built-in dataset, drawn per epoch and cached (see the module docstring).

    Subclasses set ``config`` (with ``size_of``, ``cache_key`` and ``val_items``), ``split``,
    ``root``, ``download``, ``cache``, ``cache_dir`` and ``epoch = -1`` before calling
    :meth:`set_epoch`, and the class attributes below.
    """

    #: The cache file's name starts with this.
    _CACHE_PREFIX = ""
    #: What one item is called in messages ("images", "scenes").
    _WHAT = "images"

    config: Any
    split: str
    epoch: int

    @property
    def cache_path(self) -> Path:
        """Where this split and epoch are (or would be) cached."""
        folder = self.cache_dir if self.cache_dir is not None else default_cache_dir()
        key = self.config.cache_key(self.split, self.epoch)
        return folder / "datasets" / f"{self._CACHE_PREFIX}-{self.split}-e{self.epoch}-{key}.npz"

    def set_epoch(self, epoch: int) -> None:
        """Switch to draw ``epoch`` of the split (rebuilds or loads it).

        Args:
            epoch: A non-negative integer; each gives an independent draw of the split.

        Raises:
            InputError: ``epoch`` is not a non-negative integer.
        """
        epoch = integer(epoch, "epoch", 0)
        if epoch == self.epoch:
            return
        self.epoch = epoch
        arrays = self._load_cache() if self.cache else None
        if arrays is None:
            arrays = self._build()
            if self.cache:
                self._write_cache(arrays)
        self._adopt(arrays)

    # -- what a subclass provides ---------------------------------------------------------------

    def _build(self) -> dict[str, np.ndarray]:
        raise NotImplementedError

    def _meta(self) -> dict:
        raise NotImplementedError

    def _check_arrays(self, arrays: dict[str, np.ndarray]) -> None:
        """Raise ValueError unless the cached arrays have this split's shapes."""
        raise NotImplementedError

    def _adopt(self, arrays: dict[str, np.ndarray]) -> None:
        raise NotImplementedError

    # -- shared ---------------------------------------------------------------------------------

    def _pool(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Item images, labels and the Fashion-MNIST indices available to this split."""
        source = "test" if self.split == "test" else "train"
        images, labels = load_fashion_mnist(source, root=self.root, download=self.download)
        index = np.arange(len(images))
        if self.split == "train":
            index = index[: len(images) - self.config.val_items]
        elif self.split == "val":
            index = index[len(images) - self.config.val_items :]
        return images, labels, index

    def _split_fields(self, meta: dict) -> dict:
        """``meta`` without the other splits' sizes, which do not change this split's items."""
        config = dict(meta.get("config", {}))
        for other in SPLITS:
            if other != self.split:
                config.pop(f"n_{other}", None)
        return {**meta, "config": config}

    def _write_cache(self, arrays: dict[str, np.ndarray]) -> None:
        """Store the arrays in the cache; a folder that cannot be written only warns."""
        path = self.cache_path
        try:
            atomic_write(path, functools.partial(write_npz, arrays=arrays))
        except OSError as exc:  # read-only or full disk, a folder in the way: keep going
            warnings.warn(
                f"{type(self).__name__}: could not write the cache file {path} ({exc}); the "
                f"{self._WHAT} are kept in memory only. Hint: point cache_dir= or ${CACHE_ENV} "
                "at a writable folder, or pass cache=False.",
                RuntimeWarning,
                stacklevel=3,
            )

    def _load_cache(self) -> dict[str, np.ndarray] | None:
        path = self.cache_path
        if not path.is_file():
            return None
        try:
            # Our own handle, closed even when np.load fails on a truncated file.
            with open(path, "rb") as handle, np.load(handle, allow_pickle=False) as data:
                arrays = {key: data[key] for key in data.files}
            meta = json.loads(str(arrays["meta"]))
            wanted = json.loads(json.dumps(self._meta(), sort_keys=True))
            if self._split_fields(meta) != self._split_fields(wanted):
                raise ValueError("its parameters differ from the requested ones")
            self._check_arrays(arrays)
            return arrays
        except Exception as exc:  # unreadable, truncated or foreign file: rebuild it
            warnings.warn(
                f"{type(self).__name__}: ignoring the cache file {path} ({exc}); rebuilding it.",
                RuntimeWarning,
                stacklevel=3,
            )
            return None

    def _check_index(self, index: object) -> int:
        """``index`` as a non-negative int (negative ones count from the end, as for lists)."""
        try:
            if isinstance(index, bool):
                raise TypeError
            i = operator.index(index)  # type: ignore[arg-type]
        except TypeError:
            raise TypeError(
                f"{type(self).__name__} index must be an integer, got "
                f"{type(index).__name__}. Hint: for several {self._WHAT} use "
                "float_images(indices), a DataLoader or torch.utils.data.Subset."
            ) from None
        n = len(self)
        if not -n <= i < n:
            raise IndexError(
                f"{type(self).__name__} index {i} is out of range for {n} {self._WHAT} "
                f"(valid: {-n} to {n - 1})."
            )
        return i + n if i < 0 else i


def write_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """Write ``arrays`` to ``path`` as an uncompressed ``.npz`` (for ``atomic_write``)."""
    with open(path, "wb") as handle:
        np.savez(handle, **arrays)


def split_dataloaders(
    dataset_cls: type[CachedSplit],
    config: Any,
    splits: Sequence[str],
    batch_size: int,
    num_workers: int,
    generator: torch.Generator | None,
    collate_fn: Callable[[list[Any]], Any] | None = None,
    **dataset_options: Any,
) -> dict[str, DataLoader]:
    """A DataLoader per split of ``dataset_cls``; only ``"train"`` is shuffled.

    The training loader shuffles with ``generator`` (a new one seeded with ``config.seed``
    when None); ``dataset_options`` go to every split's dataset.
    """
    if generator is None:
        generator = torch.Generator().manual_seed(config.seed)
    loaders = {}
    for split in splits:
        loaders[split] = DataLoader(
            dataset_cls(split, config, **dataset_options),
            batch_size=batch_size,
            shuffle=split == "train",
            num_workers=num_workers,
            generator=generator if split == "train" else None,
            collate_fn=collate_fn,
        )
    return loaders
