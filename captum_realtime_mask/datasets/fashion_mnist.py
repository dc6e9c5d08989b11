"""Locate and read the Fashion-MNIST IDX files (explicit root, environment, Debian, download)."""

from __future__ import annotations

import functools
import gzip
import os
import subprocess
import zlib
from pathlib import Path
from typing import Literal

import numpy as np

from captum_realtime_mask.datasets.cache import default_cache_dir

__all__ = [
    "DEBIAN_PACKAGE",
    "DEFAULT_DEBIAN_DIR",
    "FASHION_MNIST_CLASSES",
    "FASHION_MNIST_ENV",
    "FASHION_MNIST_FILES",
    "FashionMNISTNotFoundError",
    "find_fashion_mnist",
    "load_fashion_mnist",
    "read_idx",
]

#: Environment variable naming a folder that holds the four IDX files.
FASHION_MNIST_ENV = "CAPTUM_REALTIME_MASK_FASHION_MNIST"

#: Debian package that installs the IDX files (``apt-get install dataset-fashion-mnist``).
DEBIAN_PACKAGE = "dataset-fashion-mnist"

#: Where that package puts the files; used when ``dpkg`` cannot be asked.
DEFAULT_DEBIAN_DIR = Path("/usr/share/datasets/fashion-mnist")

#: The IDX file stems of each split, as (images, labels). A ``.gz`` suffix is optional.
FASHION_MNIST_FILES: dict[str, tuple[str, str]] = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}

#: Class names in label order.
FASHION_MNIST_CLASSES: tuple[str, ...] = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)

# IDX type codes (http://yann.lecun.com/exdb/mnist/, "THE IDX FILE FORMAT"); all big-endian.
_IDX_DTYPES = {
    0x08: np.dtype("u1"),
    0x09: np.dtype("i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
_GZIP_MAGIC = b"\x1f\x8b"


class FashionMNISTNotFoundError(FileNotFoundError):
    """No folder with the four Fashion-MNIST IDX files was found.

    A :class:`FileNotFoundError` (the data is missing, no argument is malformed), so
    ``except FileNotFoundError`` and ``except OSError`` catch it. The message lists every
    place that was searched and the four ways to provide the data.
    """


def read_idx(path: str | os.PathLike[str]) -> np.ndarray:
    """Read an IDX file (gzipped or not; detected from the content, not the name).

    Args:
        path: The file to read.

    Returns:
        An array with the file's shape and native-endian dtype (``uint8`` for Fashion-MNIST).

    Raises:
        ValueError: The content is not a well-formed IDX file (a damaged gzip file included).

    Example:
        >>> import tempfile, pathlib
        >>> p = pathlib.Path(tempfile.mkdtemp()) / "x-idx1-ubyte"
        >>> _ = p.write_bytes(bytes([0, 0, 8, 1, 0, 0, 0, 3, 7, 8, 9]))
        >>> read_idx(p)
        array([7, 8, 9], dtype=uint8)
    """
    path = Path(path)
    raw = path.read_bytes()
    if raw[:2] == _GZIP_MAGIC:
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as exc:  # truncated or damaged download
            raise ValueError(
                f"read_idx: {path} is a damaged gzip file ({exc}). Hint: delete it and "
                "fetch it again (or reinstall the package that provided it)."
            ) from exc
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_DTYPES:
        raise ValueError(
            f"read_idx: {path} is not an IDX file: expected the header 0x00 0x00 <type> <ndim> "
            f"with a type in {sorted(_IDX_DTYPES)}, got {raw[:4]!r}."
        )
    dtype, ndim = _IDX_DTYPES[raw[2]], raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise ValueError(f"read_idx: {path} is truncated inside its header of {header} bytes.")
    shape = tuple(int(d) for d in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    count = int(np.prod(shape, dtype=np.int64))
    if len(raw) - header != count * dtype.itemsize:
        raise ValueError(
            f"read_idx: {path} holds {len(raw) - header} data bytes, but its header "
            f"announces shape {shape} of {dtype} ({count * dtype.itemsize} bytes)."
        )
    data = np.frombuffer(raw, dtype=dtype, count=count, offset=header).reshape(shape)
    return data.astype(dtype.newbyteorder("="), copy=True)


def _split_files(folder: Path, split: str) -> tuple[Path, Path] | None:
    """The (images, labels) files of ``split`` in ``folder``, or None when one is missing."""
    found = []
    for stem in FASHION_MNIST_FILES[split]:
        for name in (stem + ".gz", stem):
            if (folder / name).is_file():
                found.append(folder / name)
                break
        else:
            return None
    return found[0], found[1]


def _holds_fashion_mnist(folder: Path) -> Path | None:
    """``folder`` itself, or its torchvision layout ``FashionMNIST/raw``, if it has all files."""
    for candidate in (folder, folder / "FashionMNIST" / "raw"):
        if all(_split_files(candidate, split) for split in FASHION_MNIST_FILES):
            return candidate
    return None


@functools.lru_cache(maxsize=1)
def _debian_dirs() -> tuple[Path, ...]:
    """Folders the Debian package installed IDX files into (``dpkg -L``), else its default."""
    dirs: list[Path] = []
    try:
        listing = subprocess.run(
            ["dpkg", "-L", DEBIAN_PACKAGE],
            capture_output=True,
            text=True,
            timeout=20,
            check=False,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        listing = ""
    for line in listing.splitlines():
        path = Path(line.strip())
        if path.name.startswith(FASHION_MNIST_FILES["train"][0]) and path.parent not in dirs:
            dirs.append(path.parent)
    if DEFAULT_DEBIAN_DIR not in dirs:
        dirs.append(DEFAULT_DEBIAN_DIR)
    return tuple(dirs)


def _default_download_root() -> Path:
    """Where :func:`find_fashion_mnist` downloads to when no root is given."""
    return default_cache_dir() / "fashion-mnist"


def _download(root: Path) -> Path:
    """Fetch the files with torchvision's downloader into ``root`` (needs a network)."""
    from torchvision.datasets import FashionMNIST

    for train in (True, False):
        FashionMNIST(str(root), train=train, download=True)
    return root / "FashionMNIST" / "raw"


def find_fashion_mnist(root: str | os.PathLike[str] | None = None, download: bool = False) -> Path:
    """Find a folder holding the four Fashion-MNIST IDX files.

    Places are tried in this order, and the first that holds all four files (gzipped or not,
    either directly or in torchvision's ``FashionMNIST/raw`` layout) wins:

    1. ``root``, when given;
    2. the folder named by the environment variable ``CAPTUM_REALTIME_MASK_FASHION_MNIST``;
    3. the folder where Debian's package ``dataset-fashion-mnist`` installed them (asked from
       ``dpkg -L dataset-fashion-mnist``; ``/usr/share/datasets/fashion-mnist`` as a fallback);
    4. with ``download=True`` only: torchvision's downloader, into ``root`` or else
       ``<cache dir>/fashion-mnist`` (needs a network).

    Args:
        root: A folder to look in first, and to download into.
        download: Whether to download when no folder holds the files.

    Returns:
        The folder that holds the files.

    Raises:
        FashionMNISTNotFoundError: No place holds the files (the message says how to fix it).

    Example:
        >>> folder = find_fashion_mnist()  # doctest: +SKIP
        >>> sorted(p.name for p in folder.glob("*idx1*"))  # doctest: +SKIP
        ['t10k-labels-idx1-ubyte.gz', 'train-labels-idx1-ubyte.gz']
    """
    tried: list[str] = []
    candidates: list[tuple[str, Path]] = []
    if root is not None:
        candidates.append(("root argument", Path(root).expanduser()))
    env = os.environ.get(FASHION_MNIST_ENV)
    if env:
        candidates.append((f"${FASHION_MNIST_ENV}", Path(env).expanduser()))
    else:
        tried.append(f"${FASHION_MNIST_ENV}: not set")
    candidates.extend((f"Debian package {DEBIAN_PACKAGE}", d) for d in _debian_dirs())
    for origin, folder in candidates:
        found = _holds_fashion_mnist(folder)
        if found is not None:
            return found
        tried.append(f"{origin}: {folder} (no complete set of IDX files)")
    if download:
        target = Path(root).expanduser() if root is not None else _default_download_root()
        found = _holds_fashion_mnist(_download(target))
        if found is not None:
            return found
        tried.append(f"download into {target}: finished, but the files are not there")
    else:
        tried.append("download: not attempted (download=False)")
    names = ", ".join(f"{s}[.gz]" for pair in FASHION_MNIST_FILES.values() for s in pair)
    raise FashionMNISTNotFoundError(
        "Fashion-MNIST not found. Searched:\n  - "
        + "\n  - ".join(tried)
        + f"\nThe four IDX files ({names}) can come from any one of:\n"
        "  1. an explicit folder: root=/path/to/folder;\n"
        f"  2. the environment variable {FASHION_MNIST_ENV}=/path/to/folder;\n"
        f"  3. Debian's package: apt-get install {DEBIAN_PACKAGE} "
        f"(installs them into {DEFAULT_DEBIAN_DIR});\n"
        "  4. torchvision's downloader, with download=True and a network connection."
    )


@functools.lru_cache(maxsize=4)
def _load_cached(folder: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    images_path, labels_path = _split_files(folder, split)  # type: ignore[misc]
    images, labels = read_idx(images_path), read_idx(labels_path)
    if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
        raise ValueError(
            f"load_fashion_mnist: {images_path} and {labels_path} do not pair up: images "
            f"{images.shape} (expected (N, 28, 28)), labels {labels.shape} (expected (N,))."
        )
    images.setflags(write=False)
    labels = labels.astype(np.int64)
    labels.setflags(write=False)
    return images, labels


def load_fashion_mnist(
    split: Literal["train", "test"],
    root: str | os.PathLike[str] | None = None,
    download: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """Load one of Fashion-MNIST's own splits as numpy arrays.

    Args:
        split: ``"train"`` (60,000 items) or ``"test"`` (10,000 items).
        root: Passed to :func:`find_fashion_mnist`.
        download: Passed to :func:`find_fashion_mnist`.

    Returns:
        ``(images, labels)``: read-only ``uint8`` images ``(N, 28, 28)`` (white item on black)
        and ``int64`` labels ``(N,)``; the arrays are shared between calls.

    Raises:
        ValueError: ``split`` is not ``"train"`` or ``"test"``.
        FashionMNISTNotFoundError: See :func:`find_fashion_mnist`.
    """
    if split not in FASHION_MNIST_FILES:
        raise ValueError(
            f"load_fashion_mnist: split must be one of {sorted(FASHION_MNIST_FILES)}, "
            f"got {split!r}."
        )
    folder = find_fashion_mnist(root, download=download)
    return _load_cached(folder.resolve(), split)
