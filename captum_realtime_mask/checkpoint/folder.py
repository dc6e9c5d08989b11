"""The folder of step checkpoints a fit writes: naming, listing, pruning, cleaning up.

A ``checkpoint_dir`` holds one checkpoint folder per saved step, ``step-000000123``, each
written by :func:`~captum_realtime_mask.checkpoint.write_checkpoint`. Hidden ``.step-*``
folders are what an interrupted save or prune left behind; :func:`clean_checkpoint_dir`
tidies them when the next fit starts.
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

from captum_realtime_mask.checkpoint.format import CONFIG_NAME, file_in_the_way, previous_version
from captum_realtime_mask.errors import CheckpointError, InputError

__all__ = [
    "check_checkpoint_dir",
    "clean_checkpoint_dir",
    "latest_checkpoint",
    "prune_checkpoints",
    "step_dirs",
    "step_name",
]

_STEP = re.compile(r"step-\d+")
_STALE = re.compile(r"\.(step-\d+)\.(.+)")


def step_name(step: int) -> str:
    """The folder name of the checkpoint taken after ``step`` optimiser steps.

    Example:
        >>> step_name(123)
        'step-000000123'
    """
    return f"step-{step:09d}"


def check_checkpoint_dir(path: str) -> None:
    """``checkpoint_dir`` must be a folder or creatable as one, before any step is trained."""
    target = Path(path)
    blocking = file_in_the_way(target)
    if blocking == target:
        raise InputError(
            f"{path!r} exists but is a file, not a folder. Hint: pass a folder "
            "path (it is created if missing), or move the file away.",
            argument="checkpoint_dir",
        )
    if blocking is not None:
        raise InputError(
            f"{path!r} cannot be created because {str(blocking)!r} is a "
            "file, not a folder. Hint: pass a path under an existing folder.",
            argument="checkpoint_dir",
        )


def step_dirs(root: Path) -> list[Path]:
    """The complete ``step-*`` checkpoints in ``root``, oldest first.

    A step whose folder was being replaced when the process died counts too: its previous
    version is parked in ``.step-<n>.old``, which
    :func:`~captum_realtime_mask.checkpoint.read_checkpoint` reads.
    """
    steps = set()
    for p in root.glob("step-*"):
        if _STEP.fullmatch(p.name) and (p / CONFIG_NAME).is_file():
            steps.add(p)
    for p in root.glob(".step-*.old"):
        target = root / p.name[1:-4]
        if _STEP.fullmatch(target.name) and (previous_version(target) / CONFIG_NAME).is_file():
            steps.add(target)
    return sorted(steps)


def latest_checkpoint(path: Path) -> Path:
    """``path`` itself if it is a checkpoint, else its newest ``step-*`` subdirectory.

    Raises:
        CheckpointError: ``path`` is neither a checkpoint nor a folder of step checkpoints.
    """
    if (path / CONFIG_NAME).is_file() or (previous_version(path) / CONFIG_NAME).is_file():
        return path
    steps = step_dirs(path)
    if not steps:
        raise CheckpointError(
            f"{str(path)!r} holds no checkpoint (no config.json and no step-* "
            "folders). Hint: pass the checkpoint_dir of the interrupted run.",
            argument="resume_from",
        )
    return steps[-1]


def prune_checkpoints(root: Path, keep_last: int) -> None:
    """Delete all but the newest ``keep_last`` step checkpoints of ``root``."""
    steps = step_dirs(root)
    for old in steps[: max(0, len(steps) - keep_last)]:
        _remove_checkpoint(old)


def clean_checkpoint_dir(root: Path) -> None:
    """Remove what interrupted saves and prunes left (hidden ``.step-*`` folders).

    A parked previous version whose replacement never arrived is moved back in place.
    """
    for p in sorted(root.glob(".step-*")):
        m = _STALE.fullmatch(p.name)
        if not m or not p.is_dir():
            continue
        target = root / m.group(1)
        parked = m.group(2) == "old" and (p / CONFIG_NAME).is_file()
        if parked and not (target / CONFIG_NAME).is_file():
            shutil.rmtree(target, ignore_errors=True)
            os.replace(p, target)
        else:
            shutil.rmtree(p, ignore_errors=True)


def _remove_checkpoint(path: Path) -> None:
    """Delete a checkpoint folder so that no half-deleted ``step-*`` folder can be seen."""
    trash = path.with_name(f".{path.name}.trash")
    shutil.rmtree(trash, ignore_errors=True)
    if path.exists():
        os.replace(path, trash)
    shutil.rmtree(trash, ignore_errors=True)
    shutil.rmtree(previous_version(path), ignore_errors=True)
