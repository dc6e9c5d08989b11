"""The sanity-check script (benchmarks/sanity_checks.py) on a tiny timm ResNet: the cascade
randomises the weights it says it does, a randomised model's maps stop matching, and the
results it writes have the documented structure."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest
import torch
from test_benchmark import needs_fashion_mnist


def _load_script():
    name = "_captum_realtime_mask_sanity_checks"
    if name not in sys.modules:
        path = Path(__file__).resolve().parents[1] / "benchmarks" / "sanity_checks.py"
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


def _results(**parts):
    """A results record of a tiny smoke run holding ``parts``, as the script writes it."""
    return {
        "blackbox": "test_resnet",
        "blackbox_test_accuracy": None,
        "settings": {"quick": True, "n_images": 3, "loc_images": 3, "ig_steps": 2, "seed": 0},
        **parts,
        "timings_s": {"a part": 1.0},
        "elapsed_s": 1.0,
    }


@pytest.fixture(scope="module")
def tiny():
    import timm

    torch.manual_seed(0)
    model = timm.create_model("test_resnet", pretrained=False, num_classes=5).eval()
    g = torch.Generator().manual_seed(1)
    x = torch.rand(3, 3, 32, 32, generator=g)
    y = torch.tensor([0, 1, 2])
    return model, x, y


def test_similarity_is_one_for_identical_maps_and_lower_otherwise():
    sc = _load_script()
    a = torch.rand(2, 1, 16, 16, generator=torch.Generator().manual_seed(0))
    same = sc.similarity(a, a.clone())
    assert same["spearman"] == pytest.approx(1.0)
    assert same["ssim"] == pytest.approx(1.0)
    other = sc.similarity(a, torch.rand(2, 1, 16, 16))
    assert other["spearman"] < 0.5 and other["ssim"] < 0.5
    flat = sc.similarity(a, torch.zeros_like(a))
    assert flat["constant_maps"] == 2 and flat["spearman"] != flat["spearman"]  # NaN


def test_cascade_resets_head_first_and_leaves_the_model_alone(tiny):
    sc = _load_script()
    model, _, _ = tiny
    before = {k: v.clone() for k, v in model.state_dict().items()}
    steps = list(sc.cascade(model, seed=0))
    assert [label for label, _ in steps] == [label for label, _ in sc.cascade_stages(model)]
    assert steps[0][0] == "logits (fc)" and steps[-1][0].startswith("+ stem")
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), f"the trained model's {k} changed"
    first, last = steps[0][1].state_dict(), steps[-1][1].state_dict()
    assert not torch.equal(first["fc.weight"], before["fc.weight"])
    assert torch.equal(first["layer1.0.conv1.weight"], before["layer1.0.conv1.weight"])
    for name in ("fc.weight", "layer4.0.conv1.weight", "layer1.0.conv1.weight"):
        assert not torch.equal(last[name], before[name]), f"{name} was not re-initialised"
    # Cumulative: a later step keeps the earlier steps' re-initialised weights.
    assert torch.equal(steps[1][1].state_dict()["fc.weight"], first["fc.weight"])


def test_model_randomisation_results_and_files(tiny, tmp_path):
    sc = _load_script()
    model, x, y = tiny
    p1, randomised = sc.model_randomisation(model, x, y, ig_steps=2, seed=0, log=lambda _: None)
    assert set(p1["methods"]) == set(sc.GRADIENT_METHODS.values())
    assert p1["steps"] == [label for label, _ in sc.cascade_stages(model)]
    for key in ("spearman", "ssim", "constant_maps"):
        assert set(p1[key]) == set(p1["methods"])
        for method in p1["methods"]:
            assert list(p1[key][method]) == p1["steps"]
    last = p1["steps"][-1]
    for method in ("Saliency", "GuidedBackprop", "IntegratedGradients"):
        assert -1.0 <= p1["spearman"][method][last] < 0.99, method
        assert p1["ssim"][method][last] < 0.99, method
    assert not torch.equal(randomised.state_dict()["fc.weight"], model.state_dict()["fc.weight"])

    results = _results(model_randomisation=p1)
    text = sc.write_results(results, tmp_path)
    loaded = json.loads((tmp_path / "results.json").read_text())
    assert loaded["model_randomisation"]["spearman"]["Saliency"][last] == pytest.approx(
        p1["spearman"]["Saliency"][last]
    )
    assert "## 1. Cascading model randomisation" in text
    assert (tmp_path / "results.md").read_text().startswith("# Sanity checks")


def test_seed_control_compares_every_pair_and_reports_them(monkeypatch, tmp_path):
    sc = _load_script()
    calls = []

    class FakeMasker:
        def __init__(self, scale):
            self.scale = scale

        def mask(self, x, target):
            return (x.mean(1, keepdim=True) * self.scale).clamp(0, 1)

    def fake_fit(bench, model, tag, cache, seed=None):
        calls.append((tag, seed))
        # the real model's second masker makes the same maps; the others' are noise
        if tag.startswith("real-masker"):
            return FakeMasker(1.0)
        return type("Noise", (), {"mask": lambda self, x, target: torch.rand_like(x[:, :1])})()

    monkeypatch.setattr(sc, "fit_counterpart", fake_fit)
    x = torch.rand(3, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    y = torch.tensor([0, 1, 2])
    real = FakeMasker(1.0).mask(x, y)
    masks = {"real": real, "randomised": torch.rand_like(real), "shuffled labels": real * 0.5}
    models = {name: None for name in masks}
    out = sc.seed_control({"cfg": type("C", (), {"seed": 0})()}, models, masks, 1, x, y, tmp_path)
    assert [seed for _, seed in calls] == [1, 1, 1]
    pairs = [(r["a"], r["b"]) for r in out["rows"]]
    assert pairs[0] == ("real (seed 0)", "real (seed 1)") and len(pairs) == 9
    assert out["rows"][0]["spearman"] == pytest.approx(1.0)
    by_pair = {(r["a"], r["b"]): r for r in out["rows"]}
    # the shuffled model's benchmark-seed masks are the real ones halved: same ranks
    assert by_pair[("real (seed 0)", "shuffled labels (seed 0)")]["spearman"] == pytest.approx(1.0)
    assert by_pair[("real (seed 0)", "shuffled labels (seed 1)")]["spearman"] < 0.5
    assert by_pair[("real (seed 1)", "randomised (seed 1)")]["same_seed"]
    text = sc.markdown(_results(seed_control=out))
    assert "## 4. The maskers' seed" in text
    assert "| real (seed 0) | real (seed 1) | no | +1.000 |" in text


@needs_fashion_mnist
def test_the_shuffled_label_black_box_trains_and_is_cached(tmp_path):
    from captum_realtime_mask.datasets import ClutteredConfig

    sc = _load_script()
    data = ClutteredConfig(n_train=8, n_val=4, n_test=4)
    lines = []
    model = sc.train_shuffled_blackbox(data, 1, 0, 0, tmp_path, 1, lines.append)
    assert model.info["steps"] == 1 and model.info["history"][0]["steps"] == 1
    assert model.info["shuffled_labels_seed"] == 0
    saved = list((tmp_path / "blackboxes").glob("*shuffled-labels*.safetensors"))
    assert len(saved) == 1
    again = sc.train_shuffled_blackbox(data, 1, 0, 0, tmp_path, 1, lines.append)
    assert "loading the shuffled-label black box" in lines[-1]
    for name, value in model.state_dict().items():
        assert torch.equal(value, again.state_dict()[name]), name
