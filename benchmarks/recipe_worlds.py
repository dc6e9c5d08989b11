"""Masker-training recipes on 128 px worlds they were not tuned on (ViT and ResNet black boxes).

Issue #32 asks for one default masker-training recipe that holds up on worlds it was not tuned
on. This script builds such worlds and compares two recipes (or encoder strides) on each, two
seeds each. ``--world vit`` (the default) is the world described first below;
``--world resnet128`` is the second one (see "The resnet128 world" at the end).

World
    Cluttered Fashion-MNIST (:class:`~captum_realtime_mask.datasets.ClutteredConfig`) at
    ``image_size=128`` (the benchmark's is 64): one Fashion-MNIST item, tinted, resized and
    pasted at a random place on a crop of a real photograph; the item's box is the tightest
    box around its visible pixels. Splits of ``N_TRAIN`` / ``N_VAL`` / ``N_TEST`` images,
    rendered with the benchmark's own split helper
    (:func:`~captum_realtime_mask.benchmark._jobs.load_splits`'s split class) and cached in
    ``--cache-dir``.

Black box
    A timm ViT (``vit_tiny_patch16_224`` at ``img_size=128``, ``BLACKBOX_DEPTH`` blocks, patch
    16, so an 8x8 token map) trained from scratch with
    :func:`~captum_realtime_mask.benchmark.blackbox.train_blackbox` (AdamW, one-cycle
    schedule, the benchmark's box-aware crops and flips, fresh composites every epoch), on
    one CPU thread, cached in ``--cache-dir``.

Maskers
    :class:`~captum_realtime_mask.RealTimeMaskAttribution` with the frozen classifier encoder
    (``EncoderSpec(kind="classifier")``, ``min_reduction`` at its default), trained for the
    same ``MASKER_STEPS`` steps of ``MASKER_BATCH`` images with one of two recipes:

    * ``new default``: the benchmark's recipe (``BENCHMARK_OBJECTIVE``: area weight 10, TV
      weight 5, fake selectors on half the samples among classes under 5%, destroy weight 5,
      inpainted destroyed region; cosine learning-rate schedule);
    * ``old default``: ``ObjectiveConfig()`` with no arguments and a constant learning rate.

    Seeds 0 and 1 of each; each masker shuffles its own batches from its seed.

Protocol (scored on the validation and the test split)
    * localisation error (%): ``attr.mask(x, target=true label)`` thresholded at 0.5, the
      tightest box around it, a hit when its IoU with the item's box exceeds 0.5
      (:func:`~captum_realtime_mask.metrics.localisation_details`, as the benchmark);
    * absent-class area ratio: the mean mask for one random wrong class per image
      (``(label + U{1..9}) mod 10``, generator seeded with 0) over the mean mask for the true
      class (the benchmark's ``_absent_class_area``);
    * empty-mask fraction: images whose thresholded mask is empty (no box, a miss);
    * images/s of ``attr.mask`` and of ``captum.attr.Saliency`` on the same black box, one
      batch of ``THROUGHPUT_BATCH`` test images in the same process, median of 5 calls after a
      warm-up.

Run (about an hour on one CPU thread: ~30 min black box, ~26 min for the four maskers)::

    OMP_NUM_THREADS=1 python benchmarks/recipe_worlds.py \
        --cache-dir /tmp/recipe_worlds_cache --out results/recipe_worlds

It writes ``results.json`` and ``results.md`` to ``--out``; the black box and the maskers are
cached in ``--cache-dir`` so a rerun only scores.

The resnet128 world
    Same world (the same cached splits), but the benchmark's ResNet preset black box
    (:data:`~captum_realtime_mask.benchmark.blackbox.BLACKBOX_PRESETS` ``["resnet"]``,
    ResNet-10-T at half width, output stride 16, so an 8x8 final map at 128 px) trained for
    ``RESNET_EPOCHS`` epochs. It asks whether the encoder stride the library derives from the
    image size (:func:`~captum_realtime_mask.masker.resolve.derived_min_reduction`: stride 4
    from 128 px) is as good as the stride 2 chosen at 64 px. The maskers use the library's
    default objective and fit options, the frozen classifier encoder and
    ``RESNET_MASKER_STEPS`` steps of ``MASKER_BATCH`` images (``--masker-steps`` to change):

    * ``stride 4 (the first rule)``: ``encoder=EncoderSpec(kind="classifier",
      min_reduction=4)``, what ``fit()`` derived at 128 px under the first stride rule;
    * ``stride 2 (the 64-px choice)``: ``encoder=EncoderSpec(kind="classifier",
      min_reduction=2)``;
    * ``default``: no options at all (stride 2 below 224 px, and the TV weight derived from the
      64-cell mask grid, 10);
    * ``default, fakes on 70%``: the same with ``ObjectiveConfig(fake_prob=0.7)``, fake
      selectors on 70% of the samples instead of half (the knob ``fit()``'s class-blind
      warning names), against the absent-class area.

    The first two pass ``tv_weight=5``, the fixed default they were run with before the TV
    weight was derived from the mask grid.

    The scores are the ViT world's; each row also records the masker's ``min_reduction``, mask
    stride and (derived) area and TV weights after the fit. Run (about 55 minutes on one CPU
    thread)::

        OMP_NUM_THREADS=1 python benchmarks/recipe_worlds.py --world resnet128 \
            --cache-dir /tmp/recipe_worlds_cache --out results/recipe_worlds_resnet128
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import platform
import re
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader

from captum_realtime_mask import RealTimeMaskAttribution
from captum_realtime_mask.benchmark._scoring import masker_scores
from captum_realtime_mask.benchmark.blackbox import (
    BLACKBOX_PRESETS,
    BlackBoxConfig,
    train_blackbox,
)
from captum_realtime_mask.benchmark.tasks import task_of
from captum_realtime_mask.datasets import ClutteredConfig
from captum_realtime_mask.masker.encoders import EncoderSpec
from captum_realtime_mask.objective import ObjectiveConfig

N_TRAIN, N_VAL, N_TEST = 10000, 500, 1000
IMAGE_SIZE = 128
BLACKBOX_DEPTH = 4
BLACKBOX_EPOCHS = 12
MASKER_STEPS = 400
MASKER_BATCH = 32
SCORE_BATCH = 32
THROUGHPUT_BATCH = 32
THROUGHPUT_CALLS = 5
SEEDS = (0, 1)
RESNET_EPOCHS = 9
RESNET_MASKER_STEPS = 400

DATASET = ClutteredConfig(image_size=IMAGE_SIZE, n_train=N_TRAIN, n_val=N_VAL, n_test=N_TEST)

BLACKBOX = BlackBoxConfig(
    arch="vit_tiny_patch16_224",
    model_kwargs={"img_size": IMAGE_SIZE, "depth": BLACKBOX_DEPTH},
    epochs=BLACKBOX_EPOCHS,
    batch_size=64,
    optimizer="adamw",
    lr=1e-3,
    weight_decay=0.05,
    channels_last=False,
)

#: name -> (ObjectiveConfig overrides, fit() options), the ViT world's two recipes
RECIPES: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {
    "new default": (
        {
            "area_weight": 10.0,
            "tv_weight": 5.0,
            "fake_prob": 0.5,
            "fake_max_prob": 0.05,
            "destroy_fill": "inpaint",
        },
        {"lr_schedule": "cosine"},
    ),
    "old default": (
        {
            "area_weight": 3.0,
            "tv_weight": 20.0,
            "fake_prob": 0.3,
            "fake_max_prob": None,
            "destroy_fill": "alternative",
        },
        {"lr_schedule": "constant"},
    ),
}


#: The TV weight of the resnet128 world's first two arms: the fixed default they trained with.
_TV5: dict[str, Any] = {"tv_weight": 5.0}


@dataclass(frozen=True)
class Arm:
    """One kind of masker: its ``encoder`` argument, objective overrides and fit options.

    ``encoder=None`` passes no ``encoder`` (the library's default string, ``"classifier"``);
    ``objective=None`` passes no ``ObjectiveConfig`` (the library's default objective).
    """

    encoder: EncoderSpec | None
    objective: dict[str, Any] | None
    fit: dict[str, Any] = field(default_factory=dict)

    def record(self) -> dict[str, Any]:
        """A JSON-ready description."""
        return {
            "encoder": "classifier (the default string)"
            if self.encoder is None
            else self.encoder.to_dict(),
            "objective_overrides": self.objective,
            "objective": ObjectiveConfig(**(self.objective or {})).to_dict(),
            "fit": self.fit,
        }


@dataclass(frozen=True)
class World:
    """A black box and the maskers compared on it (the dataset is ``DATASET`` for both)."""

    name: str
    title: str
    blackbox: BlackBoxConfig
    masker_steps: int
    masker_prefix: str
    arms: dict[str, Arm]
    out: Path
    #: Record the masker's min_reduction and mask stride in the rows and the table.
    grid_columns: bool = False


WORLDS: dict[str, World] = {
    "vit": World(
        name="vit",
        title="Masker recipes on a 128 px world with a ViT black box (issue #32)",
        blackbox=BLACKBOX,
        masker_steps=MASKER_STEPS,
        masker_prefix=f"vit{BLACKBOX_DEPTH}",
        arms={
            name: Arm(EncoderSpec(kind="classifier"), objective, fit)
            for name, (objective, fit) in RECIPES.items()
        },
        out=Path("results/recipe_worlds"),
    ),
    "resnet128": World(
        name="resnet128",
        title="Derived encoder stride vs the 64-px stride 2 on a 128 px world with the ResNet "
        "black box (issue #32)",
        blackbox=BLACKBOX_PRESETS["resnet"],
        masker_steps=RESNET_MASKER_STEPS,
        masker_prefix="resnet128",
        arms={
            # What fit() derived at 128 px under the first rule (stride 4 from 128 px), spelled
            # out: the same masker (built from the same seed), whatever the rule is now.
            # Both with the TV weight 5 they trained with when it was a fixed default.
            "stride 4 (the first rule)": Arm(EncoderSpec(kind="classifier", min_reduction=4), _TV5),
            "stride 2 (the 64-px choice)": Arm(
                EncoderSpec(kind="classifier", min_reduction=2), _TV5
            ),
            # No options at all: what a user gets now (stride 2 below 224 px, and the TV
            # weight derived from the 64-cell mask grid: 10).
            "default": Arm(None, None),
            # The default with fake selectors on 70% of the samples instead of half: the knob
            # fit()'s class-blind warning names, tried against the absent-class area here.
            "default, fakes on 70%": Arm(None, {"fake_prob": 0.7}),
        },
        out=Path("results/recipe_worlds_resnet128"),
        grid_columns=True,
    ),
}


def log(line: str) -> None:
    """Print a time-stamped line."""
    print(f"{time.strftime('%H:%M:%S')} {line}", flush=True)


def load_splits(cache: Path) -> dict[str, Any]:
    """The train, val and test splits, via the benchmark's split class (cached in ``cache``)."""
    kind = task_of(DATASET).split_class
    return {n: kind(n, DATASET, cache_dir=cache) for n in ("train", "val", "test")}


def ready_blackbox(world: World, cache: Path) -> torch.nn.Module:
    """The world's black box, trained on one thread or loaded from the cache."""
    epochs = RESNET_EPOCHS if world.name == "resnet128" else None
    return train_blackbox(
        world.blackbox, DATASET, epochs=epochs, cache_dir=cache, num_threads=1, log=log
    ).eval()


def masker_folder(world: World, cache: Path, recipe: str, seed: int) -> Path:
    """Cache folder of one masker."""
    tag = re.sub(r"[^a-z0-9]+", "-", recipe.lower()).strip("-")
    name = f"{world.masker_prefix}-{tag}-s{seed}-{world.masker_steps}x{MASKER_BATCH}"
    return cache / "maskers" / name


def fit_masker(
    world: World, model: torch.nn.Module, train: Any, recipe: str, seed: int, cache: Path
) -> tuple[RealTimeMaskAttribution, float | None]:
    """One masker of ``recipe`` and ``seed``: loaded from the cache or trained and saved."""
    folder = masker_folder(world, cache, recipe, seed)
    timing = folder / "train_seconds.json"
    if (folder / "config.json").is_file() and timing.is_file():
        log(f"loading the cached masker {folder}")
        seconds = json.loads(timing.read_text())["train_seconds"]
        return RealTimeMaskAttribution.load(folder, model), seconds
    arm = world.arms[recipe]
    options: dict[str, Any] = {}
    if arm.encoder is not None:
        options["encoder"] = arm.encoder
    if arm.objective is not None:
        options["objective"] = ObjectiveConfig(**arm.objective)
    attr = RealTimeMaskAttribution(model, num_classes=10, seed=seed, **options)
    g = torch.Generator().manual_seed(seed)
    loader = DataLoader(train, batch_size=MASKER_BATCH, shuffle=True, generator=g)
    steps = world.masker_steps
    epochs = -(-steps // len(loader))
    t0 = time.perf_counter()
    attr.fit(loader, epochs=epochs, max_steps=steps, progress=False, **arm.fit)
    seconds = time.perf_counter() - t0
    attr.save(folder)
    timing.write_text(json.dumps({"train_seconds": seconds}))
    return attr, seconds


def score_split(attr: RealTimeMaskAttribution, split: Any) -> dict[str, float]:
    """Localisation error, absent-class area ratio and empty-mask share on one split."""
    scores = masker_scores(attr, split.float_images(), split.labels, split.boxes, 0, SCORE_BATCH)
    return {key: value for key, value in scores.items() if not torch.is_tensor(value)}


def images_per_s(fn: Any, x: torch.Tensor, y: torch.Tensor) -> float:
    """Images per second of ``fn(x, y)``: median of ``THROUGHPUT_CALLS`` calls after a warm-up."""
    fn(x[:2], y[:2])
    times = []
    for _ in range(THROUGHPUT_CALLS):
        start = time.perf_counter()
        fn(x, y)
        times.append(time.perf_counter() - start)
    return len(x) / statistics.median(times)


def saliency_fn(model: torch.nn.Module) -> Any:
    """Captum's Saliency (absolute input gradients) on ``model``."""
    from captum.attr import Saliency

    sal = Saliency(model)
    return lambda x, y: sal.attribute(x, target=y).detach()


def blackbox_line(world: World, bb: dict[str, Any]) -> str:
    """The Markdown line that describes the world's black box and its accuracy."""
    if world.name == "vit":
        what = f"`{bb['arch']}` with {bb['depth']} blocks at img_size {IMAGE_SIZE}"
    else:
        what = (
            f"`{bb['arch']}` (the benchmark's `resnet` preset: half width, output stride 16, "
            f"so an {IMAGE_SIZE // 16}x{IMAGE_SIZE // 16} final map)"
        )
    return (
        f"Black box: {what}, trained from scratch for {bb['epochs']} epochs ({bb['steps']} "
        f"steps, {bb['train_seconds']:.0f} s): val accuracy {bb['val_accuracy']:.3f}, "
        f"test accuracy {bb['test_accuracy']:.3f}."
    )


def markdown(world: World, results: dict[str, Any]) -> str:
    """The results table and the run's record, in Markdown."""
    bb, sizes = results["blackbox"], results["sizes"]
    maskers = (
        f"Maskers: frozen classifier encoder, {sizes['masker_steps']} steps of "
        f"{sizes['masker_batch']} images each, seeds {sizes.get('seeds', list(SEEDS))}."
    )
    if world.grid_columns:
        maskers += (
            " Library default objective and fit options (no lr_schedule); the stride arms pass "
            "only an encoder and the TV weight 5 they were run with, `default` passes nothing."
        )
    grid_head, grid_rule = (
        ("min_reduction | mask stride | TV weight | ", "---|---|---|")
        if world.grid_columns
        else ("", "")
    )
    lines = [
        f"# {world.title}",
        "",
        f"World: cluttered Fashion-MNIST at {IMAGE_SIZE} px; splits {sizes['n_train']} train / "
        f"{sizes['n_val']} val / {sizes['n_test']} test.",
        blackbox_line(world, bb),
        maskers,
        "",
        f"| recipe | seed | {grid_head}val loc. err. (%) | test loc. err. (%) | val absent/true "
        "area | test absent/true area | val empty (%) | test empty (%) | train s | mask img/s |",
        f"|---|---|{grid_rule}---|---|---|---|---|---|---|---|",
    ]
    for row in results["rows"]:
        v, t = row["val"], row["test"]
        tv = row.get("tv_weight", 5.0)  # rows from before the weight was derived trained with 5
        grid = (
            f"{row['min_reduction']} | {row['mask_stride']} | {tv:g} | "
            if world.grid_columns
            else ""
        )
        lines.append(
            f"| {row['recipe']} | {row['seed']} | {grid}{v['localisation_error']:.1f} "
            f"| {t['localisation_error']:.1f} | {v['absent_to_true_area_ratio']:.3f} "
            f"| {t['absent_to_true_area_ratio']:.3f} | {100 * v['empty_masks']:.1f} "
            f"| {100 * t['empty_masks']:.1f} | {row['train_seconds']:.0f} "
            f"| {row['mask_images_per_s']:.0f} |"
        )
    lines += [
        "",
        f"Captum Saliency on the same black box: {results['saliency_images_per_s']:.0f} images/s "
        f"(batch {THROUGHPUT_BATCH}, median of {THROUGHPUT_CALLS} calls, same process, "
        f"{results['machine']['threads']} thread).",
        "",
        "Localisation error: mask > 0.5, tightest box, hit when IoU > 0.5 with the item's box. "
        "Absent/true area: mean mask for one random wrong class per image over the mean mask "
        "for the true class. Empty: thresholded mask empty.",
        "",
        f"Elapsed: {results['elapsed_s']:.0f} s in all.",
        "",
    ]
    return "\n".join(lines)


def main() -> None:
    """Parse the arguments, run everything, write the report."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--world", choices=sorted(WORLDS), default="vit")
    parser.add_argument("--cache-dir", type=Path, default=Path("/tmp/recipe_worlds_cache"))
    parser.add_argument(
        "--out", type=Path, default=None, help="default: the world's results/ folder"
    )
    parser.add_argument(
        "--blackbox-only", action="store_true", help="train (or load) the black box and stop"
    )
    parser.add_argument("--arms", nargs="+", default=None, help="default: the world's first two")
    parser.add_argument("--seeds", nargs="+", type=int, default=list(SEEDS))
    parser.add_argument("--masker-steps", type=int, default=None, help="default: the world's")
    args = parser.parse_args()
    world = WORLDS[args.world]
    if args.masker_steps is not None:
        world = dataclasses.replace(world, masker_steps=args.masker_steps)
    arms = args.arms or list(world.arms)[:2]
    out = args.out if args.out is not None else world.out
    torch.set_num_threads(1)
    started = time.perf_counter()
    cache = args.cache_dir
    model = ready_blackbox(world, cache)
    info = model.info
    log(f"black box: val {info['val_accuracy']:.3f}, test {info['test_accuracy']:.3f}")
    if args.blackbox_only:
        return
    splits = load_splits(cache)
    rows = []
    for recipe in arms:
        for seed in args.seeds:
            attr, seconds = fit_masker(world, model, splits["train"], recipe, seed, cache)
            row: dict[str, Any] = {"recipe": recipe, "seed": seed, "train_seconds": seconds}
            if world.grid_columns:
                row["min_reduction"] = attr.masker.config.encoder.min_reduction
                row["mask_stride"] = attr.masker.mask_stride
                row["area_weight"] = attr.objective.area_weight
                row["tv_weight"] = attr.objective.tv_weight
            for name in ("val", "test"):
                t0 = time.perf_counter()
                row[name] = score_split(attr, splits[name])
                row[name]["score_seconds"] = time.perf_counter() - t0
            test = splits["test"]
            xb, yb = test.float_images()[:THROUGHPUT_BATCH], test.labels[:THROUGHPUT_BATCH]
            row["mask_images_per_s"] = images_per_s(
                lambda a, t, attr=attr: attr.mask(a, target=t), xb, yb
            )
            log(f"{recipe} seed {seed}: {json.dumps(row)}")
            rows.append(row)
    test = splits["test"]
    xb, yb = test.float_images()[:THROUGHPUT_BATCH], test.labels[:THROUGHPUT_BATCH]
    saliency_ips = images_per_s(saliency_fn(model), xb, yb)
    if world.name == "vit":
        recipes: dict[str, Any] = {
            "recipes": {
                name: {"objective": ObjectiveConfig(**obj).to_dict(), "fit": fit}
                for name, (obj, fit) in RECIPES.items()
            },
            "encoder": EncoderSpec(kind="classifier").to_dict(),
        }
        head: dict[str, Any] = {}
    else:
        recipes = {"recipes": {name: arm.record() for name, arm in world.arms.items()}}
        head = {"world": world.name}
    results = {
        **head,
        "issue": 32,
        "dataset": DATASET.to_dict(),
        "sizes": {
            "n_train": N_TRAIN,
            "n_val": N_VAL,
            "n_test": N_TEST,
            "masker_steps": world.masker_steps,
            "masker_batch": MASKER_BATCH,
            "seeds": list(args.seeds),
            "blackbox_epochs": info["blackbox"]["epochs"],
            "blackbox_batch": info["blackbox"]["batch_size"],
        },
        "blackbox": {
            "arch": info["arch"],
            "depth": BLACKBOX_DEPTH if world.name == "vit" else None,
            "config": info["blackbox"],
            "epochs": info["blackbox"]["epochs"],
            "steps": info.get("steps"),
            "val_accuracy": info.get("val_accuracy"),
            "test_accuracy": info.get("test_accuracy"),
            "train_seconds": info.get("train_seconds"),
            "history": info.get("history"),
        },
        **recipes,
        "rows": rows,
        "saliency_images_per_s": saliency_ips,
        "machine": {
            "platform": platform.platform(),
            "threads": torch.get_num_threads(),
            "torch": torch.__version__,
        },
        "elapsed_s": time.perf_counter() - started,
    }
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(results, indent=2, default=str) + "\n")
    (out / "results.md").write_text(markdown(world, results))
    log(f"wrote {out / 'results.json'} and {out / 'results.md'}")


if __name__ == "__main__":
    main()
