"""Safe checkpoint files: atomic writes, safetensors weights, JSON config with a format version.

A saved masker is a directory holding ``config.json`` and ``masker.safetensors``; a training
checkpoint adds ``training.safetensors`` (optimiser, schedule and RNG tensors) and keeps the
non-tensor training state in ``config.json``. Nothing is ever unpickled: tensors go through
safetensors and everything else through JSON. ``config.json`` records the SHA-256 of every
tensor file and of its own content, so a truncated or edited file fails to load with
:class:`CheckpointError`.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from captum_realtime_mask.errors import CheckpointError

__all__ = [
    "FORMAT_VERSION",
    "atomic_write",
    "atomic_write_bytes",
    "previous_version",
    "read_checkpoint",
    "write_checkpoint",
]

FORMAT_VERSION = 1
CONFIG_NAME = "config.json"
_DIGEST_KEY = "config_sha256"
_TENSOR_FILE = re.compile(r"[A-Za-z0-9_.-]+\.safetensors")


def _fsync(path: Path) -> None:
    """Flush a file or a directory entry to disk (best effort: not every OS opens folders)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _config_digest(config: dict[str, Any]) -> str:
    """SHA-256 of the config's canonical JSON (sorted keys), without the digest itself."""
    body = {k: v for k, v in config.items() if k != _DIGEST_KEY}
    canonical = json.dumps(json.loads(json.dumps(body)), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def previous_version(directory: str | os.PathLike[str]) -> Path:
    """Where :func:`write_checkpoint` parks the previous ``directory`` while replacing it."""
    directory = Path(directory)
    return directory.with_name(f".{directory.name}.old")


def _umask() -> int:
    """The process's file-creation mask (read by setting and restoring it)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def atomic_write(path: str | os.PathLike[str], write: Callable[[Path], None]) -> Path:
    """Create ``path`` by ``write(temporary_path)`` in the same folder, then an atomic rename.

    A reader sees either the old file or the whole new one, never a partial write; if
    ``write`` raises, the temporary file is removed and ``path`` is untouched. The new file
    gets the usual permissions (``0o666`` less the umask), not ``mkstemp``'s ``0o600``.

    Args:
        path: The file to create or replace.
        write: Writes the content to the path it is given.

    Returns:
        ``path`` as a :class:`~pathlib.Path`.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(Path(tmp))
        _fsync(Path(tmp))
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically (see :func:`atomic_write`)."""
    return atomic_write(path, lambda tmp: tmp.write_bytes(data))


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def write_checkpoint(
    directory: str | os.PathLike[str],
    config: dict[str, Any],
    tensors: dict[str, dict[str, torch.Tensor]],
) -> Path:
    """Write a checkpoint directory atomically.

    The files are first written into a fresh sibling directory (``.<name>.<random>``) and
    flushed to disk, which then replaces ``directory`` by rename, so an interrupted save leaves
    the previous checkpoint intact. Replacing an existing directory takes two renames (POSIX
    cannot swap folders atomically); if the process dies between them, the previous version
    waits in ``.<name>.old`` and :func:`read_checkpoint` reads it from there.

    Args:
        directory: Target directory (created; replaced if it exists).
        config: JSON-serialisable metadata; ``format_version`` and file hashes are added.
        tensors: File stem -> flat dict of tensors, each saved as ``<stem>.safetensors``.

    Returns:
        The directory path.
    """
    directory = Path(directory)
    directory.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{directory.name}.", dir=directory.parent))
    old = previous_version(directory)
    try:
        hashes = {}
        for stem, named in tensors.items():
            file = staging / f"{stem}.safetensors"
            save_file({k: v.detach().contiguous().cpu() for k, v in named.items()}, str(file))
            _fsync(file)
            hashes[file.name] = _sha256(file)
        meta = {**config, "format_version": FORMAT_VERSION, "files": hashes}
        meta[_DIGEST_KEY] = _config_digest(meta)
        atomic_write_bytes(staging / CONFIG_NAME, json.dumps(meta, indent=2).encode())
        _fsync(staging)
        if (directory / CONFIG_NAME).is_file() or not old.exists():
            # Park the current version (if any); keep an older parked one only while the
            # current directory is not a complete checkpoint.
            shutil.rmtree(old, ignore_errors=True)
            if directory.exists():
                os.replace(directory, old)
        elif directory.exists():
            shutil.rmtree(directory)
        os.replace(staging, directory)
        _fsync(directory.parent)
        shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return directory


def read_checkpoint(
    directory: str | os.PathLike[str], device: str | torch.device = "cpu"
) -> tuple[dict[str, Any], dict[str, dict[str, torch.Tensor]]]:
    """Read and verify a checkpoint directory written by :func:`write_checkpoint`.

    Args:
        directory: The checkpoint directory.
        device: Where to put the tensors.

    Returns:
        ``(config, tensors)`` with ``tensors`` keyed by file stem.

    Raises:
        CheckpointError: The directory or a file is missing, a hash does not match, the
            config is not valid JSON, or the format version is not supported.
    """
    directory = Path(directory)
    if (
        not (directory / CONFIG_NAME).is_file()
        and (previous_version(directory) / CONFIG_NAME).is_file()
    ):
        # A replacing save was interrupted between its two renames: the previous version is
        # complete and verified below like any other.
        directory = previous_version(directory)
    cfg_path = directory / CONFIG_NAME
    if not cfg_path.is_file():
        raise CheckpointError(
            f"path: no {CONFIG_NAME} in {str(directory)!r}. Hint: pass the directory that "
            "RealTimeMaskAttribution.save() or fit(checkpoint_dir=...) wrote."
        )
    try:
        config = json.loads(cfg_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CheckpointError(
            f"{cfg_path} is not valid JSON (truncated or edited?): {exc}"
        ) from exc
    if not isinstance(config, dict):
        raise CheckpointError(
            f"{cfg_path}: expected a JSON object, got {type(config).__name__} (edited?)."
        )
    version = config.get("format_version")
    if version != FORMAT_VERSION:
        raise CheckpointError(
            f"{cfg_path}: format_version {version!r} is not supported by this release "
            f"(expects {FORMAT_VERSION}). Hint: load it with the release that wrote it."
        )
    if config.get(_DIGEST_KEY) != _config_digest(config):
        raise CheckpointError(
            f"{cfg_path} does not match the hash recorded in it ({_DIGEST_KEY}): the file was "
            "truncated or modified after saving."
        )
    files = config.get("files")
    if not isinstance(files, dict) or not all(
        isinstance(n, str) and _TENSOR_FILE.fullmatch(n) and isinstance(h, str)
        for n, h in files.items()
    ):
        raise CheckpointError(
            f"{cfg_path}: 'files' must map plain '<name>.safetensors' file names to hashes."
        )
    tensors = {}
    for name, expected in files.items():
        file = directory / name
        if not file.is_file():
            raise CheckpointError(f"{file} is missing from the checkpoint.")
        if _sha256(file) != expected:
            raise CheckpointError(
                f"{file} does not match the hash recorded in {CONFIG_NAME}: the file is "
                "truncated or was modified after saving."
            )
        try:
            tensors[file.name.removesuffix(".safetensors")] = load_file(
                str(file), device=str(device)
            )
        except (SafetensorError, OSError) as exc:
            raise CheckpointError(f"{file} cannot be read: {exc}") from exc
    return config, tensors
