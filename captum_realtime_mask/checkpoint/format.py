"""Safe checkpoint files: atomic writes, safetensors weights, JSON config with a format version.

A saved masker is a directory holding ``config.json`` and ``masker.safetensors``; a training
checkpoint adds ``training.safetensors`` (optimiser, schedule and RNG tensors) and keeps the
non-tensor training state in ``config.json``. Nothing is ever unpickled: tensors go through
safetensors and everything else through JSON. ``config.json`` records the SHA-256 of every
tensor file and of its own content, so a truncated or edited file fails to load with
:class:`CheckpointError`.

:func:`write_checkpoint` never deletes what it did not write: it writes only to a new path, an
empty folder, or a folder holding a checkpoint of this package (whose other files it keeps).
"""

from __future__ import annotations

import contextlib
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

from captum_realtime_mask._devices import check_device
from captum_realtime_mask.errors import CheckpointError, InputError

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
# What atomic_write leaves of one of the package's own files when the process is killed.
_OWN_TEMP = re.compile(r"\.(config\.json|[A-Za-z0-9_.-]+\.safetensors)\..+\.tmp")


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
    """Where :func:`write_checkpoint` parks the previous ``directory`` while replacing it.

    Relative paths are made absolute first, so ``"."`` and ``".."`` have a name to park under.
    """
    directory = Path(os.path.abspath(directory))
    if not directory.name:
        raise InputError(
            f"the filesystem root {str(directory)!r} cannot hold a checkpoint. "
            "Hint: pass a folder inside it, e.g. a new 'masker' folder.",
            argument="directory",
        )
    return directory.with_name(f".{directory.name}.old")


def _as_path(directory: Any) -> Path:
    """Check that ``directory`` is a non-empty ``str`` or ``os.PathLike`` path."""
    raw = os.fspath(directory) if isinstance(directory, str | os.PathLike) else None
    if not isinstance(raw, str):
        raise InputError(
            "expected a folder path (a str or os.PathLike such as pathlib.Path), "
            f"got {type(directory).__name__}. Hint: pass e.g. 'runs/masker'.",
            argument="directory",
        )
    if not raw:
        raise InputError(
            "expected a folder path, got an empty string. Hint: pass '.' for the "
            "current folder, or e.g. 'runs/masker'.",
            argument="directory",
        )
    return Path(raw)


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


def target_path(directory: Any) -> Path:
    """The absolute folder to write; a symbolic link is followed to the folder it names."""
    path = Path(os.path.abspath(_as_path(directory)))
    if path.is_symlink():
        try:
            path = path.resolve(strict=False)
        except (OSError, RuntimeError) as exc:  # a loop of links
            raise InputError(
                f"{str(path)!r} is a symbolic link that cannot be followed ({exc}). "
                "Hint: pass a new or empty folder.",
                argument="directory",
            ) from exc
    return path


def _package_config(directory: Path) -> dict[str, Any] | None:
    """The ``config.json`` in ``directory`` if it is one this package wrote (else None).

    It must be a JSON object with the markers :func:`write_checkpoint` adds (a
    ``format_version``, the ``files`` it hashed and the config's own hash), so that the
    ``config.json`` of another tool (a Hugging Face model folder, say) is never taken for one.
    """
    try:
        meta = json.loads((directory / CONFIG_NAME).read_text())
    except (OSError, ValueError):  # missing, unreadable, not UTF-8 or not JSON
        return None
    markers = isinstance(meta, dict) and "format_version" in meta and _DIGEST_KEY in meta
    return meta if markers and isinstance(meta.get("files"), dict) else None


def target_kind(directory: Path) -> tuple[str, dict[str, Any] | None]:
    """``("new" | "empty" | "checkpoint", old config)``; anything else raises InputError."""
    if not directory.exists():
        return "new", None
    if not directory.is_dir():
        raise InputError(
            f"expected a folder for the checkpoint, but {str(directory)!r} is a "
            "file (left as it is). Hint: pass the path of a new or empty folder.",
            argument="directory",
        )
    entries = sorted(p.name for p in directory.iterdir())
    if not entries:
        return "empty", None
    meta = _package_config(directory)
    if meta is not None:
        return "checkpoint", meta
    shown = ", ".join(entries[:5]) + (", ..." if len(entries) > 5 else "")
    raise InputError(
        "expected a new folder, an empty one or a checkpoint folder written by this "
        f"package, but {str(directory)!r} holds other files ({shown}) and no checkpoint "
        f"{CONFIG_NAME}; nothing was written. Hint: pass a new or empty folder, e.g. "
        f"{str(directory / 'masker')!r}.",
        argument="directory",
    )


def _write_files(
    folder: Path, config: dict[str, Any], tensors: dict[str, dict[str, torch.Tensor]]
) -> None:
    """Write the tensor files, then ``config.json`` with their hashes (each one atomically)."""
    hashes = {}
    for stem, named in tensors.items():
        file = folder / f"{stem}.safetensors"
        cpu = {k: v.detach().contiguous().cpu() for k, v in named.items()}
        atomic_write(file, lambda tmp, cpu=cpu: save_file(cpu, str(tmp)))
        hashes[file.name] = _sha256(file)
    meta = {**config, "format_version": FORMAT_VERSION, "files": hashes}
    meta[_DIGEST_KEY] = _config_digest(meta)
    atomic_write_bytes(folder / CONFIG_NAME, json.dumps(meta, indent=2).encode())


def _link_or_copy(src: str | os.PathLike[str], dst: str | os.PathLike[str]) -> None:
    """Hard-link ``src`` as ``dst`` (no data copied), or copy it where links are refused."""
    try:
        os.link(src, dst, follow_symlinks=False)
    except OSError:
        shutil.copy2(src, dst, follow_symlinks=False)


def _carry_over(source: Path, target: Path, own: set[str], created: list[Path]) -> None:
    """Put every entry of ``source`` except the package's own files into ``target``.

    Files are hard-linked (copied where the filesystem refuses links), so the originals stay
    in ``source`` until it is swapped out: an interruption loses none of them. Each entry made
    in ``target`` is appended to ``created``.
    """
    for entry in sorted(source.iterdir()):
        if entry.name in own or _OWN_TEMP.fullmatch(entry.name):
            continue
        dst = target / entry.name
        created.append(dst)
        if entry.is_symlink():
            os.symlink(os.readlink(entry), dst)
        elif entry.is_dir():
            shutil.copytree(entry, dst, symlinks=True, copy_function=_link_or_copy)
        else:
            _link_or_copy(entry, dst)


def _cwd_inside(directory: Path) -> str | None:
    """The working directory if it is ``directory`` or inside it (a swap would orphan it)."""
    try:
        cwd = os.getcwd()
    except OSError:
        return None
    real, here = directory.resolve(), Path(cwd)
    return cwd if here == real or real in here.parents else None


def write_checkpoint(
    directory: str | os.PathLike[str],
    config: dict[str, Any],
    tensors: dict[str, dict[str, torch.Tensor]],
) -> Path:
    """Write a checkpoint directory atomically, never deleting what it did not write.

    ``directory`` may be

    * a path that does not exist yet (created, with missing parents);
    * an empty folder: the files are written into it (the folder itself stays, so ``"."``
      works, as does a mount point);
    * a folder holding a checkpoint of this package (a saved masker or a training ``step-*``
      folder, recognised by its ``config.json`` with ``format_version``, ``files`` and
      ``config_sha256``): it is replaced by the new version, and every other file or folder a
      user put there (a README, say) is kept. The package's own files are ``config.json``
      and the ``*.safetensors`` files its old and new ``config.json`` list; only they change.

    Anything else (a file, a folder with other content such as the current directory of a
    project, another tool's model folder) raises :class:`InputError` and is left untouched, as
    does a ``.<name>.old`` beside it that is not a version parked by this package.
    Relative paths are made absolute first; a symbolic link is followed and the folder it
    points to is written (the link stays a link).

    A new or replacing version is first written into a fresh sibling directory
    (``.<name>.<random>``) and flushed to disk, which then replaces ``directory`` by rename, so
    an interrupted save leaves the previous checkpoint intact and a failed one leaves no
    temporary folder. Replacing an existing directory takes two renames (POSIX cannot swap
    folders atomically); if the process dies between them, the previous version waits in
    ``.<name>.old`` and :func:`read_checkpoint` reads it from there. Into an empty folder the
    tensor files are written first and ``config.json`` last, so no reader sees a partial
    checkpoint there either.

    Args:
        directory: Target directory (see above).
        config: JSON-serialisable metadata; ``format_version`` and file hashes are added.
        tensors: File stem -> flat dict of tensors, each saved as ``<stem>.safetensors``.

    Returns:
        The directory written (absolute; a link's target).

    Raises:
        InputError: ``directory`` is not a path, is a file, or is a folder that holds other
            files and no checkpoint of this package.
    """
    directory = target_path(directory)
    kind, meta = target_kind(directory)
    old = previous_version(directory)
    # The user's files come from the current version or, after a save that died between its
    # renames, from the parked one.
    parked = _package_config(old)
    if parked is None and (old.exists() or old.is_symlink()):
        raise InputError(
            f"{str(old)!r}, where a save parks the previous version of "
            f"{str(directory)!r}, exists and is not a checkpoint of this package; nothing was "
            "written. Hint: rename or move it, or pass another folder.",
            argument="directory",
        )
    source = directory if kind == "checkpoint" else old
    if kind != "checkpoint":
        meta = parked
    new_names = {f"{stem}.safetensors" for stem in tensors} | {CONFIG_NAME}
    own = new_names | {n for n in (meta or {}).get("files", {}) if _TENSOR_FILE.fullmatch(n)}
    try:
        directory.parent.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError) as exc:
        raise InputError(
            f"cannot create {str(directory)!r}: a part of its path is a file "
            f"({exc}). Hint: pass a folder whose parent folders are folders.",
            argument="directory",
        ) from exc

    carried = (source, own) if meta is not None else None
    if kind == "empty":
        _write_into_empty(directory, config, tensors, carried, new_names)
    else:
        _write_by_rename(directory, config, tensors, carried, replace=kind == "checkpoint")
    return directory


def _write_into_empty(
    directory: Path,
    config: dict[str, Any],
    tensors: dict[str, dict[str, torch.Tensor]],
    carried: tuple[Path, set[str]] | None,
    new_names: set[str],
) -> None:
    """Write into an empty folder, config last; on failure remove everything written."""
    created: list[Path] = []
    try:
        _write_files(directory, config, tensors)
        if carried is not None:
            _carry_over(carried[0], directory, carried[1], created)
        _fsync(directory)
    except BaseException:
        # The folder was empty: everything in it now is ours (or a link to a kept file).
        for path in [*(directory / name for name in new_names), *created]:
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)
        raise
    shutil.rmtree(previous_version(directory), ignore_errors=True)  # a stale parked version


def _write_by_rename(
    directory: Path,
    config: dict[str, Any],
    tensors: dict[str, dict[str, torch.Tensor]],
    carried: tuple[Path, set[str]] | None,
    replace: bool,
) -> None:
    """Write a staging sibling, then rename it over ``directory`` (parking the old version)."""
    old = previous_version(directory)
    staging = Path(tempfile.mkdtemp(prefix=f".{directory.name}.", dir=directory.parent))
    try:
        _write_files(staging, config, tensors)
        if carried is not None:
            _carry_over(carried[0], staging, carried[1], [])
        if replace:
            shutil.copymode(directory, staging)
        else:
            os.chmod(staging, 0o777 & ~_umask())  # mkdtemp's folders are private (0o700)
        _fsync(staging)
        cwd = _cwd_inside(directory) if replace else None
        if replace:
            # Park the current version; an older parked one is superseded by it.
            shutil.rmtree(old, ignore_errors=True)
            os.replace(directory, old)
        os.replace(staging, directory)
        _fsync(directory.parent)
        if cwd is not None:  # the process was inside the folder just swapped out
            with contextlib.suppress(OSError):
                os.chdir(cwd)
        shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def file_in_the_way(path: Path) -> Path | None:
    """The first existing part of ``path`` (itself, then its parents) when it is not a folder.

    None means ``path`` is a folder or can be created as one (``mkdir(parents=True)``).
    """
    for part in (path, *path.parents):
        if part.exists():
            return None if part.is_dir() else part
    return None


def read_checkpoint(
    directory: str | os.PathLike[str], device: str | torch.device = "cpu"
) -> tuple[dict[str, Any], dict[str, dict[str, torch.Tensor]]]:
    """Read and verify a checkpoint directory written by :func:`write_checkpoint`.

    Args:
        directory: The checkpoint directory.
        device: Where to put the tensors (checked before anything is read).

    Returns:
        ``(config, tensors)`` with ``tensors`` keyed by file stem.

    Raises:
        InputError: ``directory`` is not a path, or ``device`` is not a device available here
            that holds data (``"meta"`` does not).
        CheckpointError: The directory or a file is missing, a hash does not match, the
            config is not valid JSON, or the format version is not supported.
    """
    directory = _as_path(directory)
    device = check_device(device, allow_meta=False)
    if (
        not (directory / CONFIG_NAME).is_file()
        and Path(os.path.abspath(directory)).name
        and (previous_version(directory) / CONFIG_NAME).is_file()
    ):
        # A replacing save was interrupted between its two renames: the previous version is
        # complete and verified below like any other.
        directory = previous_version(directory)
    cfg_path = directory / CONFIG_NAME
    if directory.is_file():
        raise CheckpointError(
            f"{str(directory)!r} is a file; a checkpoint is a folder. Hint: pass "
            "the folder that holds it.",
            argument="directory",
        )
    if not cfg_path.is_file():
        raise CheckpointError(
            f"no {CONFIG_NAME} in {str(directory)!r}. Hint: pass the folder that "
            "RealTimeMaskAttribution.save() wrote, or a step-* folder (or the checkpoint_dir) "
            "that fit(checkpoint_dir=...) wrote.",
            argument="directory",
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
