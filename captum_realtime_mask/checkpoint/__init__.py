"""Checkpoints on disk: the safe file format, and the folder of step checkpoints a fit writes."""

from captum_realtime_mask.checkpoint.folder import (
    check_checkpoint_dir,
    clean_checkpoint_dir,
    latest_checkpoint,
    prune_checkpoints,
    step_dirs,
    step_name,
)
from captum_realtime_mask.checkpoint.format import (
    CONFIG_NAME,
    FORMAT_VERSION,
    atomic_write,
    atomic_write_bytes,
    file_in_the_way,
    previous_version,
    read_checkpoint,
    target_kind,
    target_path,
    write_checkpoint,
)

__all__ = [
    "CONFIG_NAME",
    "FORMAT_VERSION",
    "atomic_write",
    "atomic_write_bytes",
    "check_checkpoint_dir",
    "clean_checkpoint_dir",
    "file_in_the_way",
    "latest_checkpoint",
    "previous_version",
    "prune_checkpoints",
    "read_checkpoint",
    "step_dirs",
    "step_name",
    "target_kind",
    "target_path",
    "write_checkpoint",
]
