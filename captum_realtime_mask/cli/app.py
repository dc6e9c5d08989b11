"""``main``: parse the options, check what every command shares, run the command.

Before a command starts, the options every command shares are checked: ``--cache-dir`` must
be a folder or able to become one, and ``--device`` must name a device present on this
machine (``cuda`` without a GPU, ``cuda:7`` on a machine with fewer GPUs, or a name torch does
not know is a one-line error, not a traceback half-way through the work).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

import torch

from captum_realtime_mask._devices import check_device
from captum_realtime_mask.cli.benchmark import cmd_benchmark, cmd_demo
from captum_realtime_mask.cli.evaluate import cmd_evaluate
from captum_realtime_mask.cli.explain import cmd_explain
from captum_realtime_mask.cli.parser import PROG, build_parser
from captum_realtime_mask.cli.paths import check_folder_path
from captum_realtime_mask.cli.train import cmd_train
from captum_realtime_mask.cli.usage import CLIError, one_line, options_named
from captum_realtime_mask.cli.video import cmd_video
from captum_realtime_mask.errors import CheckpointError, InputError, TrainingError

__all__ = ["COMMANDS", "checked_device", "main"]

COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "demo": cmd_demo,
    "benchmark": cmd_benchmark,
    "train": cmd_train,
    "explain": cmd_explain,
    "video": cmd_video,
    "evaluate": cmd_evaluate,
}

#: What a user error ends with: one line on stderr and exit code 2.
USER_ERRORS = (CLIError, InputError, CheckpointError, TrainingError, FileNotFoundError)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line.

    Args:
        argv: The arguments (default ``sys.argv[1:]``).

    Returns:
        The exit code: 0 on success, 2 for an error the user can fix (one line on stderr),
        130 when interrupted. Usage errors, ``--help`` and ``--version`` exit from argparse.
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        if args.cache_dir is not None:
            check_folder_path(args.cache_dir, "--cache-dir")
        if hasattr(args, "device"):
            args.device = checked_device(args.device)
        return COMMANDS[args.command](args)
    except USER_ERRORS as exc:
        print(f"{PROG} {args.command}: error: {one_line(exc)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


def checked_device(name: str | None) -> torch.device:
    """``--device`` as a device present here; None: CUDA when present, else the CPU.

    Raises:
        CLIError: Not a device torch knows, or one this machine does not have.
    """
    if name is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    with options_named(device="--device"):
        return check_device(name, allow_meta=False)
