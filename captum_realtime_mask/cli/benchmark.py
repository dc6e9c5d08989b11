"""The ``demo`` and ``benchmark`` commands: the cluttered Fashion-MNIST benchmark."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from captum_realtime_mask.cli.paths import check_folder_path
from captum_realtime_mask.cli.usage import CLIError

__all__ = ["cmd_benchmark", "cmd_demo"]


def cmd_demo(args: argparse.Namespace) -> int:
    """Run the quick benchmark (the README's main job)."""
    from captum_realtime_mask.benchmark.runner import BenchmarkConfig, run_benchmark

    check_folder_path(args.output, "--output")
    config = BenchmarkConfig.for_mode("quick", output=args.output, cache_dir=args.cache_dir)
    run_benchmark(config, log=print)
    print(f"wrote {Path(args.output) / 'results.md'} and figure.png")
    return 0


def cmd_benchmark(args: argparse.Namespace) -> int:
    """Run a benchmark suite in quick or full mode."""
    from captum_realtime_mask.benchmark.blackbox import BLACKBOX_PRESETS
    from captum_realtime_mask.benchmark.runner import BenchmarkConfig, run_benchmark

    prefix = "" if args.suite == "single" else f"{args.suite}-"
    overrides: dict[str, Any] = {
        "output": args.output or f"runs/{prefix}{args.mode}",
        "cache_dir": args.cache_dir,
        "jobs": args.jobs,
    }
    check_folder_path(overrides["output"], "--output")
    if args.blackboxes:
        unknown = [b for b in args.blackboxes if b not in BLACKBOX_PRESETS]
        if unknown:
            raise CLIError(
                f"--blackboxes: unknown {unknown}; choose from {list(BLACKBOX_PRESETS)}."
            )
        overrides["blackboxes"] = tuple(args.blackboxes)
    config = BenchmarkConfig.for_mode(args.mode, args.suite, **overrides)
    run_benchmark(config, log=print)
    print(f"wrote {Path(config.output) / 'results.md'} and figure.png")
    return 0
