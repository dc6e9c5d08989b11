"""``MaskerConfig(skip_filters=True)`` against the default decoder on one item per image.

Not a test: the check behind keeping the skip filters an option. It trains the default
recipe (``RealTimeMaskAttribution(model).fit(loader, max_steps=600)``, batch 32) on the
single-object world of ``benchmarks/training_failures.py`` (its ResNet black box and splits,
loaded from or trained into ``--cache-dir``), once with the default decoder and once with a
class filter on each skip map, and prints the validation and test localisation error and
absent / true area of each (``training_failures.score``).

Example (about 3 minutes per arm on one CPU thread)::

    python benchmarks/skip_filters_single_object.py --cache-dir /tmp/failures_cache --seed 0
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader

sys.path.insert(0, str(Path(__file__).parent))
import training_failures  # noqa: E402


def run(world: dict, skip_filters: bool, seed: int, steps: int) -> dict:
    """Train one arm and score it on the validation and test splits."""
    from captum_realtime_mask import RealTimeMaskAttribution
    from captum_realtime_mask.masker.resolve import derived_min_reduction

    attr = RealTimeMaskAttribution(world["model"], seed=seed)
    if skip_filters:  # the default masker (with the grid fit() derives at 64 px), filtered
        cfg = attr.masker.config
        encoder = dataclasses.replace(cfg.encoder, min_reduction=derived_min_reduction(64, 64))
        cfg = dataclasses.replace(cfg, encoder=encoder, skip_filters=True)
        attr = RealTimeMaskAttribution(world["model"], masker_config=cfg, seed=seed)
    g = torch.Generator().manual_seed(seed)
    loader = DataLoader(world["train"], batch_size=32, shuffle=True, generator=g)
    t0 = time.perf_counter()
    attr.fit(loader, epochs=None, max_steps=steps, progress=False)
    row = {"skip_filters": skip_filters, "seed": seed, "fit_s": time.perf_counter() - t0}
    for split in ("val", "test"):
        scores = training_failures.score(attr, world[split], 0, 64)
        scores.pop("masks")
        row[split] = scores
    return row


def main() -> None:
    """Both arms for one seed; one JSON line each."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache-dir", type=Path, default=Path("/tmp/failures_cache"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--steps", type=int, default=600)
    args = parser.parse_args()
    torch.set_num_threads(1)
    world = training_failures.load_world(args.cache_dir, 8)
    for skip_filters in (False, True):
        print(json.dumps(run(world, skip_filters, args.seed, args.steps)), flush=True)


if __name__ == "__main__":
    main()
