r"""The default frozen-encoder masker against Captum's Saliency on every benchmark black box.

Not a test: a script that prints a table (and writes ``results.json`` / ``results.md``). For
each benchmark black box architecture (``BLACKBOX_PRESETS``: the ResNet and the CSPDarknet) at
each suite's image size (64 px single objects, 96 px scenes) it builds the black box as the
benchmark evaluates it (``Normalize`` + the timm network, channels-last, eval mode) and the
masker a plain ``RealTimeMaskAttribution(model)`` would train for those images (the frozen
classifier encoder with the stride-2 map the first fit() derives below 128 px; the masker's
weights are left untrained, which does not change its speed). It then times, on one batch of
``--batch`` images with one target per image:

* ``attribute()``: the Captum-shaped call (input checks, the mask repeated over channels);
* ``mask()``: what the benchmark's rows time;
* Captum's ``Saliency(model).attribute(x, target=t)``, the gradient the issue compares with;

in paired rounds (the three calls in turn, so load from other processes hits all alike); the
figures are medians over rounds, and the ratios are per-round ratios' medians. One torch
thread by default, as each black box's job in the benchmark runs.

Examples:
    python benchmarks/versus_saliency.py
    python benchmarks/versus_saliency.py --rounds 3 --output runs/versus_saliency
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
import warnings
from pathlib import Path
from typing import Any

import torch

#: (black-box key, image size, suite) of every benchmark black box.
CASES = (("resnet", 64, "single"), ("cspdarknet", 64, "single"))
CASES += (("resnet", 96, "scenes"), ("cspdarknet", 96, "scenes"))


def build(key: str, size: int) -> tuple[torch.nn.Module, Any]:
    """The black box (untrained, as the benchmark evaluates it) and its default masker."""
    from captum_realtime_mask import EncoderSpec, RealTimeMaskAttribution
    from captum_realtime_mask.benchmark.blackbox import BLACKBOX_PRESETS, _create
    from captum_realtime_mask.masker.resolve import derived_min_reduction

    torch.manual_seed(0)
    model = _create(BLACKBOX_PRESETS[key]).eval().to(memory_format=torch.channels_last)
    # What encoder="classifier" becomes at the first fit() on images of this size.
    spec = EncoderSpec(kind="classifier", min_reduction=derived_min_reduction(size, size))
    return model, RealTimeMaskAttribution(model, num_classes=10, encoder=spec)


def time_case(key: str, size: int, batch: int, rounds: int) -> dict[str, Any]:
    """Images/s of the three calls and their per-round ratios."""
    from captum.attr import Saliency

    model, attr = build(key, size)
    g = torch.Generator().manual_seed(1)
    x = torch.rand(batch, 3, size, size, generator=g).contiguous(memory_format=torch.channels_last)
    t = torch.randint(0, 10, (batch,), generator=g)
    saliency = Saliency(model)
    calls = {
        "attribute": lambda: attr.attribute(x, target=t),
        "mask": lambda: attr.mask(x, target=t),
        "saliency": lambda: saliency.attribute(x, target=t),
    }
    with warnings.catch_warnings():
        # Saliency: "Input Tensor 0 did not already require gradients"; the masker: untrained.
        warnings.simplefilter("ignore")
        for fn in calls.values():  # warm-up
            fn()
        seconds: dict[str, list[float]] = {name: [] for name in calls}
        for _ in range(rounds):
            for name, fn in calls.items():
                start = time.perf_counter()
                fn()
                seconds[name].append(time.perf_counter() - start)
    per_s = {name: batch / statistics.median(s) for name, s in seconds.items()}
    sal = seconds["saliency"]
    return {
        "blackbox": key,
        "image_size": size,
        "mask_stride": attr.masker.mask_stride,
        "images_per_s": per_s,
        "attribute_vs_saliency": statistics.median(
            s / a for s, a in zip(sal, seconds["attribute"])
        ),
        "mask_vs_saliency": statistics.median(s / m for s, m in zip(sal, seconds["mask"])),
    }


def markdown(results: dict[str, Any]) -> str:
    """The results table."""
    lines = [
        "# The default masker against Captum's Saliency",
        "",
        f"Batch {results['batch']}, {results['threads']} torch thread(s), median of "
        f"{results['rounds']} paired rounds; {results['machine']}, torch {results['torch']}.",
        "Ratios above 1: the masker is faster.",
        "",
        "| black box | suite | px | mask stride | attribute() img/s | mask() img/s | "
        "Saliency img/s | attribute / Saliency | mask / Saliency |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results["cases"]:
        ips = r["images_per_s"]
        lines.append(
            f"| {r['blackbox']} | {r['suite']} | {r['image_size']} | {r['mask_stride']} | "
            f"{ips['attribute']:.0f} | {ips['mask']:.0f} | {ips['saliency']:.0f} | "
            f"**{r['attribute_vs_saliency']:.2f}** | {r['mask_vs_saliency']:.2f} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Time every case; print and write the results."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batch", type=int, default=32, help="the benchmark's throughput batch")
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--output", default="results/versus_saliency")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    cases = []
    for key, size, suite in CASES:
        cases.append({**time_case(key, size, args.batch, args.rounds), "suite": suite})
        print(f"{key} {size} px: attribute/Saliency {cases[-1]['attribute_vs_saliency']:.2f}")
    results = {
        "batch": args.batch,
        "rounds": args.rounds,
        "threads": args.threads,
        "machine": platform.processor() or platform.machine(),
        "torch": torch.__version__,
        "cases": cases,
    }
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    (out / "results.md").write_text(markdown(results))
    print(markdown(results))
    return results


if __name__ == "__main__":
    main()
