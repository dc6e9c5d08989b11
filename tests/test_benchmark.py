"""Tests of the benchmark: its configuration, settings, scoring, report and runner.

The end-to-end run (``slow``) needs Debian's Fashion-MNIST; the others test one module each:
``config`` (BenchmarkConfig), ``settings``, ``_scoring`` (a method's row), ``_maskers`` (the
maskers' training batches), ``_report`` (results.md) and ``runner`` (its worker processes).
"""

from __future__ import annotations

import json

import pytest
import torch

from captum_realtime_mask.datasets import find_fashion_mnist


def _have_fashion_mnist() -> bool:
    try:
        find_fashion_mnist()
    except FileNotFoundError:
        return False
    return True


needs_fashion_mnist = pytest.mark.skipif(
    not _have_fashion_mnist(), reason="apt-get install dataset-fashion-mnist"
)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """One end-to-end run on a tiny configuration: (config, results, output folder, cache)."""
    from captum_realtime_mask.benchmark.runner import BenchmarkConfig, run_benchmark

    folder = tmp_path_factory.mktemp("benchmark")
    cfg = BenchmarkConfig.for_mode(
        "quick",
        output=str(folder / "out"),
        cache_dir=str(folder / "cache"),
        n_train=128,
        n_val=16,
        threshold_images=12,  # more than n_test: thresholds still use 12 validation images
        n_test=8,
        blackbox_max_steps=2,
        masker_max_steps=2,
        iterative_images=4,
        iterative_steps=3,
        refine_steps=(0, 2),
        ig_steps=4,
        throughput_batch=4,
        batch_size=16,
        blackboxes=("resnet", "cspdarknet"),
        masker_epochs_by_blackbox={"cspdarknet": 2},
        objective_by_blackbox={"cspdarknet": {"destroy_power": 1.0}},
        jobs=2,  # one spawned process per black box
        threads=2,
    )
    results = run_benchmark(cfg, log=lambda _: None)
    return cfg, results, folder / "out", folder / "cache"


@pytest.mark.slow
@needs_fashion_mnist
def test_runner_records_each_blackbox_and_its_maskers(tiny_run):
    from captum_realtime_mask.benchmark._maskers import default_fit_record
    from captum_realtime_mask.benchmark.runner import SCRATCH_FIT

    cfg, results, out, cache = tiny_run
    assert list(results["blackboxes"]) == ["resnet", "cspdarknet"]
    assert results["machine"]["processes"] == 2
    assert results["masker_fit"] == default_fit_record() and results["config"]["channels_last"]
    assert results["masker_fit"]["lr_schedule"] == "cosine"
    assert results["blackboxes"]["cspdarknet"]["arch"] == "cs3darknet_s"
    epochs = [bb["masker_epochs"] for bb in results["blackboxes"].values()]
    assert epochs == [{"frozen": 3, "scratch": 3}, {"frozen": 2, "scratch": 2}]
    assert results["scratch_masker_fit"] == SCRATCH_FIT
    # Each black box's maskers were trained, and are saved, with its own objective.
    powers = {b: bb["masker_objective"]["destroy_power"] for b, bb in results["blackboxes"].items()}
    assert powers == {"resnet": 0.3, "cspdarknet": 1.0}
    saved_configs = sorted((cache / "maskers").glob("*/config.json"))
    assert len(saved_configs) == 4  # two rows per black box
    for path in saved_configs:
        saved_power = json.loads(path.read_text())["objective"]["destroy_power"]
        assert saved_power == powers[path.parent.name.split("-")[0]], path
    assert all(bb["channels_last"] for bb in results["blackboxes"].values())
    # The iterative mask and the refinement optimise the objective of the black box's maskers.
    for bb in results["blackboxes"].values():
        optimising = [r for r in bb["rows"] if r["n_test"] < cfg.n_test]
        assert len(optimising) == 2 and optimising[-1]["method"].startswith("Iterative mask")
        assert all(r["objective"] == bb["masker_objective"] for r in optimising)


@pytest.mark.slow
@needs_fashion_mnist
def test_runner_scores_every_method(tiny_run):
    cfg, results, _, _ = tiny_run
    rows = results["blackboxes"]["resnet"]["rows"]
    names = [r["method"] for r in rows]
    for expected in (
        "RealTimeMask (frozen",
        "RealTimeMask (encoder trained",
        "Gradient",
        "Guided",
        "Integrated",
        "Input x",
        "Grad-CAM",
        "Occlusion",
        "Iterative",
        "Centre box",
        "Max box",
        "Ground-truth",
    ):
        assert any(n.startswith(expected) for n in names), expected
    assert any("refinement" in n for n in names)
    refined = next(r for r in rows if "refinement" in r["method"])
    assert refined["n_test"] == 4  # per-image optimisation runs on the smaller subset
    for r in rows:
        assert r["saliency_metric"] == r["saliency_metric"]  # not NaN
        if r["method"] != "Ground-truth boxes":
            assert 0.0 <= r["localisation_error"] <= 100.0
        if r["images_per_s"] is not None:
            assert r["images_per_s"] > 0 and 1 <= r["throughput_calls"] <= 5
    chosen = [r.get("threshold_images") for r in rows if r["kind"] != "box"]
    assert chosen.count(12) == 6 and chosen.count(None) == len(chosen) - 6  # Captum's six maps
    max_row = next(r for r in rows if r["method"] == "Max box")
    assert max_row["box_area"] == 1.0
    # The other rows are also scored on the per-image rows' images, for a fair comparison.
    assert max_row["first_images"] == 4 and max_row["first_localisation_error"] == 100.0
    gt_row = next(r for r in rows if r["method"] == "Ground-truth boxes")
    assert gt_row["first_localisation_error"] is None
    assert gt_row["first_saliency_metric"] == gt_row["first_saliency_metric"]  # not NaN
    assert all("first_images" not in r for r in rows if r["n_test"] == 4)
    # The whole image never overlaps an item by IoU > 0.5, on any subset of the images.
    assert max_row["localisation_error_correct"] in (None, 100.0)
    assert max_row["localisation_error_misclassified"] in (None, 100.0)
    split = ("localisation_error_correct", "localisation_error_misclassified")
    assert all(gt_row[k] is None for k in ("localisation_error", *split))  # nothing to localise
    # The correctly classified and the misclassified images split the whole test set.
    share = results["blackboxes"]["resnet"]["test_correct_share"]
    assert 0.0 <= share <= 1.0
    for r in rows:
        if r["localisation_error"] is None or r["n_test"] != cfg.n_test:
            continue
        parts = [(share, r["localisation_error_correct"])]
        parts.append((1.0 - share, r["localisation_error_misclassified"]))
        mixed = sum(w * e for w, e in parts if e is not None)
        assert abs(mixed - r["localisation_error"]) < 1e-6, r["method"]


@pytest.mark.slow
@needs_fashion_mnist
def test_runner_writes_the_report(tiny_run):
    _, results, out, _ = tiny_run
    saved = json.loads((out / "results.json").read_text())
    rows = results["blackboxes"]["resnet"]["rows"]
    assert saved["blackboxes"]["resnet"]["rows"][0]["method"] == rows[0]["method"]
    table = (out / "results.md").read_text()
    assert table.count("On the first 4 test images") == 2  # one table per black box
    assert "| Occlusion |" in table
    assert "| loc. error, misclassified (%) |" in table
    subset = [line for line in table.splitlines() if "scored on the first 4 of" in line]
    assert len(subset) == 1
    assert "Iterative mask" in subset[0] and "+ 2 refinement steps" in subset[0]
    assert "Occlusion" not in subset[0]
    # Only CSPDarknet's maskers differ from the run's objective, and the report says how.
    assert table.count("maskers use the run's objective with") == 1
    csp_part = table.split("## Black box: cspdarknet")[1]
    assert "maskers use the run's objective with `destroy_power=1.0`" in csp_part
    assert "chosen on 12 validation images" in table
    heading = table.split("## Black box: resnet")[1].splitlines()[0]
    share = results["blackboxes"]["resnet"]["test_correct_share"]
    assert "(on " in heading  # where the black box's own accuracy was measured
    assert f"{share:.3f} on this benchmark's 8 test images" in heading
    assert (out / "figure.png").stat().st_size > 1000


def test_throughput_is_the_median_call_within_a_time_budget(monkeypatch):
    from captum_realtime_mask.benchmark import _scoring

    durations = iter([0.0, 1.0, 0.5, 0.3, 2.0, 0.2])  # warm-up call, then the timed ones
    clock = [0.0]

    def fn(x, y):
        clock[0] += next(durations)

    monkeypatch.setattr(_scoring.time, "perf_counter", lambda: clock[0])
    x = torch.zeros(10, 1)
    ips, calls = _scoring.throughput(fn, x, x)
    assert calls == 4  # 1.0 + 0.5 + 0.3 + 2.0 > 3 s: no fifth call
    assert ips == pytest.approx(10 / 0.75)  # median of 1.0, 0.5, 0.3, 2.0
    durations = iter([0.0] + [0.1] * 5 + [9.0])
    assert _scoring.throughput(fn, x, x)[1] == 5  # fast: stops at the call cap


def test_each_method_row_starts_from_the_seed_whatever_ran_before(monkeypatch):
    from captum_realtime_mask.benchmark import _scoring
    from captum_realtime_mask.benchmark.config import BenchmarkConfig
    from captum_realtime_mask.benchmark.methods import Method

    def one_untimed_call(fn, x, y):  # timings differ between calls; the draws must not
        fn(x, y)
        return 1.0, 1

    monkeypatch.setattr(_scoring, "throughput", one_untimed_call)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 8 * 8, 3))
    images = torch.rand(6, 3, 8, 8)
    boxes = torch.tensor([[1.0, 1.0, 5.0, 5.0]]).expand(6, 4)
    split = (images, torch.arange(6) % 3, boxes)
    drawn = Method("random", lambda x, t: torch.rand(len(x), 1, 8, 8), kind="mask")
    cfg = BenchmarkConfig.for_mode("quick", seed=3)
    correct = torch.ones(6, dtype=torch.bool)

    def row_after(draws: int) -> tuple[dict, torch.Tensor]:
        torch.rand(draws)  # what earlier methods would have drawn
        before = torch.random.get_rng_state()
        maps: dict[str, torch.Tensor] = {}
        row = _scoring.method_row(model, drawn, cfg, split, split, correct, maps)
        assert torch.equal(torch.random.get_rng_state(), before)  # the global stream is restored
        row.pop("seconds")
        return row, maps["random"]

    first, first_maps = row_after(1)
    second, second_maps = row_after(1000)
    assert first == second
    assert torch.equal(first_maps, second_maps)
    torch.manual_seed(3)
    assert torch.equal(first_maps, torch.rand(6, 1, 8, 8))  # the draws start at the seed


def test_each_masker_shuffles_its_own_batches_from_the_seed(monkeypatch, tmp_path):
    from torch.utils.data import TensorDataset

    from captum_realtime_mask.benchmark import _maskers
    from captum_realtime_mask.benchmark.config import BenchmarkConfig

    seen: list[list[int]] = []

    class RecordingAttribution:  # stands in for training: records the batch order it gets
        def __init__(self, *args, **kwargs):
            pass

        def fit(self, loader, **kwargs):
            seen.append([int(i) for _, labels in loader for i in labels])

        def save(self, folder):
            pass

    monkeypatch.setattr(_maskers, "RealTimeMaskAttribution", RecordingAttribution)
    train = TensorDataset(torch.zeros(40, 1), torch.arange(40))
    cfg = BenchmarkConfig.for_mode("quick", batch_size=8, seed=5)
    for row in ("frozen", "scratch"):  # row (b) trained right after row (a), in one run
        _maskers.fit_masker(None, None, train, None, cfg, 1, {}, tmp_path / row, print)
    assert seen[0] == seen[1]
    assert seen[0] != list(range(40)) and sorted(seen[0]) == list(range(40))
    other = BenchmarkConfig.for_mode("quick", batch_size=8, seed=6)
    _maskers.fit_masker(None, None, train, None, other, 1, {}, tmp_path / "other", print)
    assert seen[2] != seen[0]  # the order follows the seed


def test_error_on_a_subset_counts_only_its_images():
    from captum_realtime_mask.benchmark._scoring import error_on as _error_on

    hits = torch.tensor([True, False, True, False, False])
    assert _error_on(hits, torch.tensor([True, True, False, False, False])) == 50.0
    assert _error_on(hits, torch.tensor([True, False, True, False, False])) == 0.0
    assert _error_on(hits, torch.zeros(5, dtype=torch.bool)) is None


def test_masker_scores_by_hand():
    from captum_realtime_mask.benchmark._scoring import absent_classes, masker_scores

    class SquareMasker:  # class 0: the item's square; any other class: one corner pixel
        num_classes = 3

        def mask(self, x, target):
            m = torch.zeros(len(x), 1, 8, 8)
            for i, t in enumerate(target.tolist()):
                if t == 0:
                    m[i, :, 2:6, 2:6] = 1.0
                else:
                    m[i, :, 0, 0] = 1.0
            return m

    x = torch.zeros(4, 1, 8, 8)
    y = torch.tensor([0, 0, 1, 2])
    boxes = torch.tensor([[2, 2, 6, 6]]).expand(4, 4)
    s = masker_scores(SquareMasker(), x, y, boxes, seed=0, bs=3)
    assert s["localisation_error"] == 50.0  # the two class-0 squares hit; the corners miss
    assert s["empty_masks"] == 0.0 and s["images"] == 4
    assert s["true_class_mask_mean"] == pytest.approx((16 + 16 + 1 + 1) / (4 * 64))
    wrong = absent_classes(y, 3, 0)
    assert torch.equal(s["absent_targets"], wrong)
    absent = sum(16 if t == 0 else 1 for t in wrong.tolist()) / (4 * 64)
    assert s["absent_class_mask_mean"] == pytest.approx(absent)
    assert s["absent_to_true_area_ratio"] == pytest.approx(absent / s["true_class_mask_mean"])
    assert s["masks"].shape == s["absent_masks"].shape == (4, 1, 8, 8)


def test_report_names_subset_rows_and_objective_overrides_only_when_present():
    import copy

    from captum_realtime_mask.benchmark._report import markdown as _markdown

    def row(method, n_test):
        return {
            "method": method,
            "n_test": n_test,
            "localisation_error": 10.0,
            "saliency_metric": -1.0,
            "box_area": 0.2,
            "threshold": 0.5,
            "images_per_s": 1.0,
        }

    bb = {"arch": "resnet10t", "test_accuracy": 0.9, "rows": [row("A", 10), row("B", 10)]}
    results = {
        "config": {
            "mode": "quick",
            "n_test": 10,
            "n_val": 5,
            "throughput_batch": 4,
            "objective": {},
        },
        "dataset": {"image_size": 64},
        "machine": {"threads": 2},
        "elapsed_s": 60.0,
        "blackboxes": {"resnet": bb},
    }
    plain = _markdown(results)
    assert "scored on the first" not in plain and "maskers use" not in plain
    changed = copy.deepcopy(results)
    changed["blackboxes"]["resnet"]["rows"][1]["n_test"] = 3
    changed["blackboxes"]["resnet"]["masker_objective"] = {"tv_weight": 1.0}
    text = _markdown(changed)
    assert "scored on the first 3 of the test images: B." in text
    assert "On the first" not in text  # no other row was scored on those images
    changed["blackboxes"]["resnet"]["rows"][0].update(
        first_images=3, first_localisation_error=20.0, first_saliency_metric=-2.0
    )
    table = _markdown(changed).split("On the first 3 test images")[1]
    assert "| A | 20.0 | -2.000 |" in table and "| B | 10.0 | -1.000 |" in table
    assert "maskers use the run's objective with `tv_weight=1.0`." in text


def test_workers_share_threads_among_the_jobs_still_running(monkeypatch):
    import multiprocessing

    from captum_realtime_mask.benchmark import _jobs

    before = torch.get_num_threads()
    alive = multiprocessing.get_context("spawn").Value("i", 2)
    monkeypatch.setattr(_jobs, "_JOBS_ALIVE", None)
    monkeypatch.setattr(_jobs, "_ALL_THREADS", 1)
    try:
        _jobs.share_threads()  # in-process runs: no worker state, threads untouched
        assert torch.get_num_threads() == before
        _jobs._init_worker(alive, 4)
        _jobs.share_threads()
        assert torch.get_num_threads() == 2
        _jobs.job_done()
        assert alive.value == 1
        _jobs.share_threads()
        assert torch.get_num_threads() == 4
    finally:
        torch.set_num_threads(before)


@pytest.mark.parametrize(
    ("overrides", "match"),
    [
        ({"threshold_images": 0}, "threshold_images: expected a positive int or None, got int 0"),
        ({"threshold_images": 600}, "threshold_images: 600 is more than n_val=500"),
        ({"n_test": -1}, "n_test: expected a positive int, got int -1"),
        ({"n_test": 2.0}, "n_test: expected a positive int, got float 2.0"),
        ({"jobs": 0}, "jobs: expected a positive int, got int 0"),
        ({"batch_size": True}, "batch_size: expected a positive int, got bool True"),
        ({"iterative_images": -1}, "iterative_images: expected an int >= 0, got int -1"),
        ({"seed": "0"}, "seed: expected an int, got str '0'"),
        ({"refine_steps": (0, -2)}, "refine_steps: expected an int >= 0, got int -2"),
        ({"refine_steps": 10}, "refine_steps: expected a sequence of ints >= 0, got int 10"),
        ({"blackboxes": ("vgg",)}, "blackboxes: expected one of 'resnet' or 'cspdarknet', got str"),
        ({"blackboxes": ()}, r"blackboxes: expected a non-empty tuple of BLACKBOX_PRESETS keys"),
        ({"output": 3}, r"output: expected a path \(a str or os.PathLike\), got int 3"),
        (
            {"objective": {"destroy_wieght": 1.0}},
            r"objective: .*'destroy_wieght'",  # the wording is ObjectiveConfig's
        ),
        ({"objective": [1]}, "objective: expected a dict of ObjectiveConfig fields, got a list"),
        ({"n_tset": 5}, r"for_mode: unknown options \['n_tset'\]"),
        ({"channels_last": "yes"}, "channels_last: expected True or False, got str 'yes'"),
        ({"masker_epochs_by_blackbox": {"vgg": 2}}, "masker_epochs_by_blackbox: 'vgg' is not a"),
        (
            {"masker_epochs_by_blackbox": {"resnet": 0}},
            r"masker_epochs_by_blackbox\['resnet'\]: expected a positive int, got int 0",
        ),
        ({"masker_epochs_by_blackbox": 4}, "masker_epochs_by_blackbox: expected a dict of"),
        ({"scratch_masker_epochs": 0}, "scratch_masker_epochs: expected a positive int or None"),
        ({"objective_by_blackbox": {"vgg": {}}}, "objective_by_blackbox: 'vgg' is not a key of"),
        (
            {"objective_by_blackbox": {"resnet": {"destroy_powr": 1}}},
            r"objective_by_blackbox\['resnet'\]: .*'destroy_powr'",
        ),
        (
            {"objective_by_blackbox": {"resnet": 1.0}},
            r"objective_by_blackbox\['resnet'\]: expected a dict of ObjectiveConfig fields",
        ),
        ({"objective_by_blackbox": 3}, "objective_by_blackbox: expected a dict of black-box keys"),
    ],
)
def test_benchmark_config_names_bad_options(overrides, match):
    from captum_realtime_mask.benchmark.runner import BenchmarkConfig
    from captum_realtime_mask.errors import InputError

    with pytest.raises(InputError, match=f"^BenchmarkConfig.{match}"):
        BenchmarkConfig.for_mode("full", **overrides)
    cfg = BenchmarkConfig.for_mode("full", threshold_images=100)
    assert cfg.threshold_images == 100 and cfg.n_val == 500
    assert cfg.masker_epochs_for("resnet") == 4 and cfg.masker_epochs_for("cspdarknet") == 3
    assert cfg.masker_epochs_for("cspdarknet", scratch=True) == 4
    assert cfg.objective_for("cspdarknet") == {}  # the library's default objective
    assert cfg.objective_for("resnet") == {"destroy_power": 1.0}
    assert cfg.iterative_images == 64 and cfg.refine_steps == (0, 10, 50)
    # The preset's per-black-box dict is copied: editing one config leaves the next intact.
    cfg.objective_by_blackbox["resnet"]["destroy_power"] = 0.5
    assert BenchmarkConfig.for_mode("full").objective_for("resnet")["destroy_power"] == 1.0
    cfg = BenchmarkConfig.for_mode("full", objective_by_blackbox={"cspdarknet": {"tv_weight": 1}})
    assert cfg.objective_for("cspdarknet") == {"tv_weight": 1}
    assert cfg.objective_for("resnet") == {}


def test_benchmark_config_names_a_bad_mode():
    from captum_realtime_mask.benchmark.config import BenchmarkConfig
    from captum_realtime_mask.errors import InputError

    expected = "expected one of 'quick' or 'full', got str 'fast'"
    with pytest.raises(InputError, match=f"^BenchmarkConfig.mode: {expected}"):
        BenchmarkConfig(mode="fast")
    with pytest.raises(InputError, match=f"^mode: {expected}"):
        BenchmarkConfig.for_mode("fast")


def test_benchmark_config_stores_plain_python_values():
    import numpy as np

    from captum_realtime_mask.benchmark.config import BenchmarkConfig

    epochs = {"resnet": np.int64(4)}
    cfg = BenchmarkConfig.for_mode(
        "quick",
        n_test=np.int64(8),
        refine_steps=[0, np.int32(2)],
        blackboxes=["resnet"],
        masker_epochs_by_blackbox=epochs,
        channels_last=np.bool_(False),
    )
    assert type(cfg.n_test) is int and cfg.refine_steps == (0, 2) and cfg.blackboxes == ("resnet",)
    assert type(cfg.masker_epochs_by_blackbox["resnet"]) is int and cfg.channels_last is False
    assert type(epochs["resnet"]) is np.int64  # the caller's dict is not changed


def test_quick_mode_settings_are_unchanged():
    """The quick mode's figures follow from these values; changing one changes them."""
    from dataclasses import asdict

    from captum_realtime_mask import FitConfig, ObjectiveConfig
    from captum_realtime_mask.benchmark import runner
    from captum_realtime_mask.datasets import ClutteredConfig, SceneConfig
    from captum_realtime_mask.masker.encoders import EncoderSpec
    from captum_realtime_mask.masker.resolve import derived_min_reduction
    from captum_realtime_mask.objective import default_area_weight

    # The maskers train with the library's defaults: these are the values behind the figures.
    objective = ObjectiveConfig()
    chosen = {"tv_weight": None, "fake_prob": 0.5, "fake_max_prob": "auto"}
    assert {k: getattr(objective, k) for k in chosen} == chosen
    # "auto" is 0.05 for the single-object suite's class indices, None for multi-hot scenes;
    # the TV weight is 5 on the single-object suite's 32-cell masks, 7.5 on the scenes' 48.
    single = runner.trained_objective({}, ClutteredConfig())
    scenes = runner.trained_objective({}, SceneConfig())
    assert (single.fake_max_prob, single.tv_weight) == (0.05, 5.0)
    assert (scenes.fake_max_prob, scenes.tv_weight) == (None, 7.5)
    assert objective.area_weight is None and default_area_weight(10) == 10.0  # 10 classes
    assert (objective.destroy_weight, objective.destroy_fill) == (5.0, "inpaint")
    assert FitConfig().lr_schedule == "cosine"
    # The frozen encoder spelled out is what encoder="classifier" derives at 64 and 96 px.
    assert derived_min_reduction(64, 64) == derived_min_reduction(96, 96) == 2
    settings = {
        "BENCHMARK_OBJECTIVE_BY_BLACKBOX": {"resnet": {"destroy_power": 1.0}},
        "SCRATCH_FIT": {"channels_last": True, "area_warmup": 0.5},
        "FROZEN_ENCODER": EncoderSpec(kind="classifier", min_reduction=2),
        "SCRATCH_ENCODER": EncoderSpec(kind="small_cnn", width=16, min_reduction=2),
    }
    assert {name: getattr(runner, name) for name in settings} == settings
    assert asdict(runner.BenchmarkConfig.for_mode("quick")) == {
        "mode": "quick",
        "suite": "single",
        "output": "runs/demo",
        "cache_dir": None,
        "blackboxes": ("resnet",),
        "n_train": 4000,
        "n_val": 100,
        "threshold_images": None,
        "n_test": 200,
        "blackbox_epochs": 6,
        "blackbox_max_steps": None,
        "masker_epochs": 3,
        "masker_epochs_by_blackbox": {},
        "scratch_masker_epochs": None,
        "masker_max_steps": None,
        "iterative_images": 32,
        "iterative_steps": 100,
        "refine_steps": (0, 10),
        "ig_steps": 50,
        "batch_size": 64,
        "throughput_batch": 32,
        "seed": 0,
        "objective": {},  # no overrides: the library defaults
        "objective_by_blackbox": {},
        "jobs": 2,
        "threads": None,
        "channels_last": True,
        "faithfulness_images": 32,
        "costly_images": None,
        "extra": {},
    }


def test_runner_keeps_its_public_names():
    from captum_realtime_mask.benchmark import config, runner, settings

    assert runner.BenchmarkConfig is config.BenchmarkConfig
    for name in settings.__all__:
        assert getattr(runner, name) is getattr(settings, name), name
    assert set(runner.__all__) >= {"BenchmarkConfig", "run_benchmark", *settings.__all__}
