r"""Several classes per image: ``attribute_classes`` (one encoder pass) against K ``attribute()``.

Not a test: a script that prints a table (and writes JSON with ``--json``). For each
configuration (see ``speed.py``), batch size and K, it times K separate ``attribute(x,
target=c)`` calls (one whole masker pass each, the encoder included) against one
``attribute_classes(x, classes)`` call for the same K classes, in alternation (paired rounds, so
load from other processes hits both alike), and prints milliseconds per batch (medians), masks
per second (images x classes) and the median of the paired ratios t(separate) / t(one pass).

Examples:
    python benchmarks/multiclass.py --threads 2
    python benchmarks/multiclass.py --configs 64-light 224-light --batch-sizes 8 --ks 3 10
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import warnings

import torch
from speed import CONFIGS, _median_ratio, build, machine, paired_rounds


def bench(config_name: str, bs: int, k: int, args, device: torch.device) -> dict:
    """One row: K separate attribute() calls against one attribute_classes() call."""
    config = CONFIGS[config_name]
    _, attr = build(config, device)
    if args.channels_last:
        attr.optimize_for_inference(channels_last=True)
    g = torch.Generator().manual_seed(bs * 100 + k)
    x = torch.randn(bs, 3, config.size, config.size, generator=g).to(device)
    classes = torch.randperm(config.num_classes, generator=g)[:k].tolist()
    if k > config.num_classes:
        raise SystemExit(f"--ks: K={k} > the {config.num_classes} classes of {config_name}.")

    def separate():
        return [attr.attribute(x, target=c) for c in classes]

    def one_pass():
        return attr.attribute_classes(x, classes, max_classes_per_batch=args.max_classes_per_batch)

    with torch.no_grad():  # the same masks, within float rounding
        sep = torch.stack([m[:, 0] for m in separate()], 1)
        err = float((sep - one_pass()).abs().max())
    separate(), one_pass()  # warm-up
    times = paired_rounds(
        {"separate": separate, "one_pass": one_pass},
        device,
        args.budget,
        args.min_rounds,
        args.max_rounds,
    )
    t_sep, t_one = statistics.median(times["separate"]), statistics.median(times["one_pass"])
    row = {
        "config": config_name,
        "model": config.model,
        "size": config.size,
        "preset": config.preset,
        "channels_last": args.channels_last,
        "batch": bs,
        "k": k,
        "rounds": len(times["one_pass"]),
        "separate_ms": 1e3 * t_sep,
        "one_pass_ms": 1e3 * t_one,
        "separate_masks_s": bs * k / t_sep,
        "one_pass_masks_s": bs * k / t_one,
        "speedup": _median_ratio(times["separate"], times["one_pass"]),
        "max_abs_diff": err,
    }
    print(
        f"| {config_name} | {bs} | {k} | {row['separate_ms']:.1f} | {row['one_pass_ms']:.1f} | "
        f"{row['separate_masks_s']:.0f} | {row['one_pass_masks_s']:.0f} | "
        f"**{row['speedup']:.2f}x** | {err:.1e} | {row['rounds']} |",
        flush=True,
    )
    return row


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point."""
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--configs", nargs="+", default=["64-light"], choices=CONFIGS)
    p.add_argument("--batch-sizes", nargs="+", type=int, default=[1, 8])
    p.add_argument("--ks", nargs="+", type=int, default=[3, 10])
    p.add_argument("--max-classes-per-batch", type=int, default=32)
    p.add_argument("--channels-last", action="store_true")
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda when present)")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    p.add_argument("--budget", type=float, default=10.0, help="seconds of paired rounds per row")
    p.add_argument("--min-rounds", type=int, default=3)
    p.add_argument("--max-rounds", type=int, default=30)
    p.add_argument("--json", default=None, help="write all results to this JSON file")
    args = p.parse_args(argv)

    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if args.threads:
        torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore", category=UserWarning)  # untrained maskers: speed only
    info = machine()
    print("machine:", json.dumps(info))
    print(f"device {device}\n")
    print(
        "| config | batch | K | K x attribute() ms | attribute_classes ms | "
        "masks/s separate | masks/s one pass | speed-up | max abs diff | rounds |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    rows = [
        bench(name, bs, k, args, device)
        for name in args.configs
        for bs in args.batch_sizes
        for k in args.ks
    ]
    print("\nspeed-up: median over paired rounds of t(K x attribute()) / t(attribute_classes).")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"machine": info, "argv": sys.argv, "rows": rows}, f, indent=2)
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
