"""Tests of the scenes suite: multi-label black boxes, requested pairs, peers, scoring, runner.

The end-to-end run (``slow``) needs Debian's Fashion-MNIST; the others test one module each:
``benchmark.tasks`` (losses, mAP, crop boxes), ``benchmark.scenes.requests``, the
pytorch-grad-cam rows of ``benchmark.methods``, ``benchmark.config``'s scenes presets and the
CLI's ``--suite``.
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader

from captum_realtime_mask.benchmark.config import BenchmarkConfig
from captum_realtime_mask.benchmark.scenes.requests import SceneImages, scene_requests
from captum_realtime_mask.benchmark.scenes.scoring import request_maps
from captum_realtime_mask.benchmark.tasks import (
    MULTI_LABEL,
    SINGLE_LABEL,
    evaluate_map,
    scene_union_boxes,
    task_of,
)
from captum_realtime_mask.datasets import ClutteredConfig
from captum_realtime_mask.datasets.scenes import SceneConfig
from captum_realtime_mask.errors import InputError
from captum_realtime_mask.training import default_epochs
from tests.test_benchmark import needs_fashion_mnist


def _scenes(classes: list[list[int]], size: int = 16) -> SceneImages:
    n = len(classes)
    boxes = [torch.tensor([[0.0, 0.0, 3.0, 3.0]] * len(c)) for c in classes]
    labels = torch.zeros(n, 10)
    for i, c in enumerate(classes):
        labels[i, c] = 1.0
    images = torch.rand(n, 3, size, size)
    return SceneImages(images, labels, boxes, [torch.tensor(c) for c in classes])


# -- tasks -------------------------------------------------------------------------------------


def test_task_follows_the_dataset_configuration():
    assert task_of(SceneConfig(n_train=1)) is MULTI_LABEL
    assert task_of(ClutteredConfig(n_train=1)) is SINGLE_LABEL
    with pytest.raises(InputError, match="dataset: must be a ClutteredConfig or a SceneConfig"):
        task_of({"n_train": 1})


def test_multi_label_loss_sums_binary_cross_entropy_over_classes():
    logits = torch.tensor([[0.0, 2.0], [-1.0, 1.0]])
    labels = torch.tensor([[1.0, 0.0], [0.0, 1.0]])

    def bce(z: float, y: float) -> float:
        p = 1.0 / (1.0 + math.exp(-z))
        return -(y * math.log(p) + (1 - y) * math.log(1 - p))

    by_hand = (bce(0, 1) + bce(2, 0) + bce(-1, 0) + bce(1, 1)) / 2  # summed over classes
    assert MULTI_LABEL.loss(logits, labels, 0.0).item() == pytest.approx(by_hand, rel=1e-6)
    smoothed = (bce(0, 0.9) + bce(2, 0.1) + bce(-1, 0.1) + bce(1, 0.9)) / 2
    assert MULTI_LABEL.loss(logits, labels, 0.2).item() == pytest.approx(smoothed, rel=1e-6)
    # Exact-match hits: image 0 decides class 1 wrong (logit 2 > 0), image 1 is right.
    assert MULTI_LABEL.hits(logits, labels) == 1.0


def test_union_boxes_cover_every_item_and_skip_padding():
    boxes = torch.tensor(
        [[[2, 3, 10, 12], [8, 1, 20, 9], [-1, -1, -1, -1]], [[5, 5, 6, 7], [-1] * 4, [-1] * 4]]
    )
    assert scene_union_boxes(boxes).tolist() == [[2, 1, 20, 12], [5, 5, 6, 7]]


class _Replay(nn.Module):
    """Returns given logits for the images in the order they are asked (a stand-in model)."""

    def __init__(self, logits: torch.Tensor) -> None:
        super().__init__()
        self.logits, self.seen = logits, 0
        self.weight = nn.Parameter(torch.zeros(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.logits[self.seen : self.seen + len(x)]
        self.seen += len(x)
        return out


class _Split:
    def __init__(self, labels: torch.Tensor) -> None:
        self.labels = labels

    def __len__(self) -> int:
        return len(self.labels)

    def float_images(self, index: slice) -> torch.Tensor:
        return torch.zeros(len(self.labels[index]), 3, 4, 4)


def test_map_is_one_for_perfect_scores_and_drops_for_a_swapped_pair():
    labels = torch.tensor([[1, 0, 0], [0, 1, 0], [0, 0, 1], [1, 1, 0]]).float()
    perfect = labels * 4 - 2
    assert evaluate_map(_Replay(perfect), _Split(labels), batch_size=3) == pytest.approx(1.0)
    worse = perfect.clone()
    worse[[0, 1], 0] = worse[[1, 0], 0]  # class 0 scores [-2, 2, -2, 2], positives 0 and 3
    # Class 0 by hand: at score 2 one of two kept is positive (precision 1/2, recall 1/2), at
    # -2 two of four (precision 1/2, recall 1): AP 0.5; classes 1 and 2 stay perfect.
    score = evaluate_map(_Replay(worse), _Split(labels), batch_size=3)
    assert score == pytest.approx((0.5 + 1.0 + 1.0) / 3)


# -- requests ----------------------------------------------------------------------------------


def test_requests_ask_every_present_class_and_one_absent_class_per_scene():
    data = _scenes([[3], [1, 5], [0, 2, 9]])
    req = scene_requests(data, seed=0)
    assert req.image.tolist() == [0, 0, 1, 1, 1, 2, 2, 2, 2]
    assert req.target[req.present].tolist() == [3, 1, 5, 0, 2, 9]
    absent = req.target[~req.present].tolist()
    assert [a not in c for a, c in zip(absent, ([3], [1, 5], [0, 2, 9]), strict=True)] == [True] * 3
    assert req.slots == 4  # three items at most, and the absent class
    assert scene_requests(data, seed=0).target.tolist() == req.target.tolist()  # seeded
    others = {tuple(scene_requests(data, seed=s).target.tolist()) for s in range(8)}
    assert len(others) > 1  # the absent class is drawn
    without = scene_requests(data, seed=0, absent=False)
    assert bool(without.present.all()) and without.slots == 3


def test_layout_puts_each_map_at_its_scene_and_slot():
    data = _scenes([[3], [1, 5]], size=4)
    req = scene_requests(data, seed=0)
    maps = torch.arange(len(req.image)).float().view(-1, 1, 1, 1).expand(-1, 1, 4, 4)
    grid, target = req.layout(maps)
    assert grid.shape == (2, 3, 4, 4)
    assert grid[:, :, 0, 0].tolist() == [[0.0, 1.0, 0.0], [2.0, 3.0, 4.0]]
    assert target[0].tolist()[:2] == [3, int(req.target[1])] and target[0, 2] == -1
    first = req.where(req.image < 1)
    assert first.image.tolist() == [0, 0] and first.scenes == 2


def test_request_maps_give_each_pair_its_own_scene_and_class():
    data = _scenes([[3], [1, 5], [0, 2, 9]], size=4)
    req = scene_requests(data, seed=0)
    seen: list[int] = []

    def explain(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        seen.append(len(x))
        return x[:, :1] * 0 + t.float().view(-1, 1, 1, 1)

    maps = request_maps(explain, data.images, req, batch_size=4)
    assert maps.shape == (len(req.image), 1, 4, 4)
    assert maps[:, 0, 0, 0].tolist() == req.target.float().tolist()
    assert seen == [4, 4, 1]  # nine pairs in batches of four
    first = request_maps(lambda x, t: x[:, :1], data.images, req, batch_size=64)
    assert torch.equal(first, data.images[req.image][:, :1])  # each pair's own scene


# -- pytorch-grad-cam rows ---------------------------------------------------------------------


def test_feature_layer_is_the_last_timm_stage():
    import timm

    from captum_realtime_mask.benchmark.methods import feature_layer

    net = timm.create_model("resnet10t", pretrained=False, num_classes=3)
    assert feature_layer(net) is net.layer4
    plain = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Conv2d(4, 5, 3), nn.Flatten())
    assert feature_layer(plain) is plain[1]  # no feature_info: the last convolution


def test_cam_library_rows_return_one_normalised_map_per_pair():
    pytest.importorskip("pytorch_grad_cam")
    import timm

    from captum_realtime_mask.benchmark.methods import cam_library_methods

    torch.manual_seed(0)
    net = timm.create_model("resnet10t", pretrained=False, num_classes=3).eval()
    x, t = torch.rand(2, 3, 32, 32), torch.tensor([0, 2])
    rows = cam_library_methods(net, score_cam_batch=32)
    assert [r.name.split()[0] for r in rows] == ["GradCAM++", "ScoreCAM"]
    assert [r.costly for r in rows] == [False, True]
    for row in rows:
        maps = row.explain(x, t)
        assert maps.shape == (2, 1, 32, 32) and maps.dtype == torch.float32
        assert float(maps.min()) >= 0.0 and float(maps.max()) <= 1.0 + 1e-6
    assert all(p.grad is None for p in net.parameters())  # the peer leaves no gradients


# -- configuration and CLI ---------------------------------------------------------------------


def test_scenes_presets_and_a_bad_suite():
    full = BenchmarkConfig.for_mode("full", "scenes")
    assert full.suite == "scenes" and full.blackboxes == ("resnet", "cspdarknet")
    assert full.costly_images < full.n_test and full.faithfulness_images < full.n_test
    # 6 epochs for the frozen-encoder masker (2 and 4 were too few: docs, scenes benchmark
    # page), what fit() derives for 10,000 training scenes.
    epochs = full.masker_epochs_for("resnet"), full.masker_epochs_for("resnet", scratch=True)
    assert epochs == (6, 2)
    assert default_epochs(DataLoader(range(full.n_train))) == 6
    assert BenchmarkConfig.for_mode("quick", "scenes").blackboxes == ("resnet",)
    assert BenchmarkConfig.for_mode("full").suite == "single"
    with pytest.raises(InputError, match="suite"):
        BenchmarkConfig.for_mode("full", "videos")
    with pytest.raises(InputError, match="BenchmarkConfig.faithfulness_images"):
        BenchmarkConfig(faithfulness_images=0)


def test_cli_passes_the_suite(monkeypatch, tmp_path):
    from captum_realtime_mask.benchmark import runner
    from captum_realtime_mask.cli import main

    seen = {}
    monkeypatch.setattr(runner, "run_benchmark", lambda cfg, log: seen.setdefault("cfg", cfg))
    main(["benchmark", "--suite", "scenes", "--output", str(tmp_path / "o")])
    assert seen["cfg"].suite == "scenes" and seen["cfg"].mode == "quick"


# -- end to end --------------------------------------------------------------------------------


@pytest.mark.slow
@needs_fashion_mnist
def test_scenes_suite_scores_every_method_on_the_same_pairs(tmp_path):
    from captum_realtime_mask.benchmark.runner import run_benchmark

    cfg = BenchmarkConfig.for_mode(
        "quick",
        "scenes",
        output=str(tmp_path / "out"),
        cache_dir=str(tmp_path / "cache"),
        n_train=64,
        n_val=4,
        n_test=6,
        blackbox_epochs=1,
        blackbox_max_steps=2,
        masker_max_steps=2,
        iterative_images=3,
        iterative_steps=2,
        costly_images=2,
        faithfulness_images=2,
        ig_steps=2,
        throughput_batch=4,
        batch_size=16,
        jobs=1,
    )
    results = run_benchmark(cfg, log=lambda _: None)
    bb = results["blackboxes"]["resnet"]
    assert 0.0 <= bb["test_map"] <= 1.0 and results["suite"] == "scenes"
    assert bb["masker_objective"]["classifier_output"] == "sigmoid"
    rows = {r["method"].split(" (")[0]: r for r in bb["rows"]}
    for name in ("RealTimeMask", "Gradient", "Grad-CAM", "Occlusion", "GradCAM++", "ScoreCAM"):
        assert name in rows, name
    assert rows["Iterative mask"]["n_test"] == 3 and rows["ScoreCAM"]["n_test"] == 2
    assert rows["Occlusion"]["threshold_images"] == 2  # costly rows choose on fewer scenes
    assert rows["Gradient"]["threshold_images"] == 4
    full = rows["Gradient"]
    assert full["n_test"] == 6 and set(full["on_first"]) == {"2", "3"}
    centre = rows["Centre box"]
    assert centre["absent_to_present_area_ratio"] == pytest.approx(1.0)  # class-blind
    # The same map for every class: in a scene, one class at most beats all the others.
    assert centre["selectivity"] <= 0.5
    for r in bb["rows"]:
        assert 0.0 <= r["localisation_error"] <= 100.0 and 0.0 <= r["selectivity"] <= 1.0
        assert 0.0 <= r["deletion_auc"] <= 1.0 and r["images_per_s"] > 0
    assert (tmp_path / "out" / "figure.png").stat().st_size > 0
    text = (tmp_path / "out" / "results.md").read_text()
    assert "| ScoreCAM (pytorch-grad-cam) | 2 |" in text and "On the first 3 test scenes" in text
