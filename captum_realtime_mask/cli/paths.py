"""Paths the command line reads and writes, checked before any work is done.

Inputs must exist; outputs must be creatable (no file in the way of a folder, no folder where
a file is to be written). Nothing is created by a check: :func:`output_folder` creates.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from captum_realtime_mask.checkpoint import file_in_the_way
from captum_realtime_mask.cli.usage import CLIError

__all__ = [
    "IMAGE_SUFFIXES",
    "check_folder_path",
    "check_output_file",
    "existing",
    "image_paths",
    "output_folder",
]

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp"}


def existing(path: str | os.PathLike[str] | None, what: str, folder: bool = False) -> Path:
    """``path`` if it exists (and is a folder, with ``folder``).

    Args:
        path: The path given (None: the option is missing).
        what: The option that gave it, for the message.
        folder: A folder is needed, not a file.

    Raises:
        CLIError: The option is missing, or a file is given for a folder.
        FileNotFoundError: Nothing is there.
    """
    if path is None:
        raise CLIError(f"{what}: missing.")
    p = Path(path).expanduser()
    if folder and p.exists() and not p.is_dir():
        raise CLIError(f"{what}: expected a folder, but {p} is a file.")
    ok = p.is_dir() if folder else p.exists()
    if not ok:
        kind = "folder" if folder else "file"
        raise FileNotFoundError(f"{what}: no such {kind}: {p}")
    return p


def check_folder_path(path: str | os.PathLike[str], what: str) -> Path:
    """``path`` if it is a folder or can become one (nothing is created); else CLIError."""
    p = Path(path).expanduser()
    part = file_in_the_way(p)
    if part is not None:
        where = "" if part == p else f" (a part of its path, {part}, is a file)"
        raise CLIError(f"{what} {p}: expected a folder, but it is a file{where}.")
    return p


def output_folder(path: str | os.PathLike[str], what: str) -> Path:
    """Create the output folder ``path`` (with its parents); a file in the way is a CLIError."""
    p = check_folder_path(path, what)
    try:
        p.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise CLIError(f"{what} {p}: cannot create the folder ({exc}).") from None
    return p


def check_output_file(path: str | os.PathLike[str], what: str) -> Path:
    """A file path the command may write at its end; checked before any work is done."""
    p = Path(path).expanduser()
    if p.is_dir():
        raise CLIError(f"{what} {p}: expected a file name, but it is a folder.")
    part = file_in_the_way(p.parent)
    if part is not None:
        raise CLIError(f"{what} {p}: cannot be written, {part} is a file, not a folder.")
    return p


def image_paths(items: Sequence[str]) -> list[Path]:
    """The image files named or found (recursively) in folders; each file once, in order.

    Raises:
        CLIError: A folder holds no image.
        FileNotFoundError: An item does not exist.
    """
    paths: list[Path] = []
    for item in items:
        p = existing(item, "image")
        if p.is_dir():
            found = sorted(
                q for q in p.rglob("*") if q.suffix.lower() in IMAGE_SUFFIXES and q.is_file()
            )
            if not found:
                raise CLIError(f"{p}: no images ({', '.join(sorted(IMAGE_SUFFIXES))}) inside.")
            paths.extend(found)
        else:
            paths.append(p)
    seen: set[Path] = set()
    unique = []
    for p in paths:
        key = p.resolve()
        if key not in seen:
            seen.add(key)
            unique.append(p)
    return unique
