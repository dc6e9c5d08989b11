"""Checkpoints on disk: the safe file format, and the folder of step checkpoints a fit writes."""

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
    "file_in_the_way",
    "previous_version",
    "read_checkpoint",
    "target_kind",
    "target_path",
    "write_checkpoint",
]
