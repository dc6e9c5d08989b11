"""fit() with the inputs users actually pass: dtypes, grad modes, short batches, bad options."""

from __future__ import annotations

import math
import re
import warnings

import numpy as np
import pytest
import timm
import torch
from torch.utils.data import DataLoader, TensorDataset

from captum_realtime_mask import (
    FitConfig,
    InputError,
    ObjectiveConfig,
    RealTimeMaskAttribution,
    training,
)
from captum_realtime_mask._model_state import snapshot_model
from captum_realtime_mask.training import trainer

SIZE = 32  # test_resnet's deepest map is 1x1 at 32 px
FIT = {"progress": False}


pytestmark = pytest.mark.usefixtures("one_thread")


def classifier(num_classes: int = 5) -> torch.nn.Module:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return timm.create_model("test_resnet", pretrained=False, num_classes=num_classes).eval()


def batch(n: int = 4, size: int = SIZE, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 3, size, size, generator=g), torch.randint(0, 5, (n,), generator=g)


def weights(attr: RealTimeMaskAttribution) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in attr.masker.state_dict().items()}


def same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def user_warnings(record) -> list[str]:
    return [str(w.message) for w in record if issubclass(w.category, UserWarning)]


# ------------------------------------------------------------------------------------ dtypes
@pytest.mark.parametrize("dtype", [torch.float64, torch.float16, torch.bfloat16])
def test_floating_images_of_any_precision_are_cast_to_the_masker_dtype(dtype):
    x, y = batch()
    reference = RealTimeMaskAttribution(classifier()).fit([(x, y)], max_steps=2, **FIT)
    attr = RealTimeMaskAttribution(classifier())
    attr.fit([(x.to(dtype), y)], max_steps=2, val_loader=[(x.to(dtype), y)], **FIT)
    assert attr.masker.filter.embedding.weight.dtype == torch.float32
    assert all(math.isfinite(v) for v in attr.history[-1].values())
    if dtype == torch.float64:  # float32 -> float64 -> float32 is exact: the same run
        assert attr.history[-1]["loss"] == reference.history[-1]["loss"]


def test_integer_images_keep_their_error():
    x, y = batch()
    with pytest.raises(InputError, match=r"loader: images must be a floating.*uint8.*float\(\)"):
        RealTimeMaskAttribution(classifier()).fit([((x * 255).byte(), y)], epochs=1, **FIT)


@pytest.mark.parametrize("dtype", [torch.float64, torch.bfloat16])
def test_a_converted_classifier_that_is_the_encoder_trains(dtype):
    model = classifier().to(dtype)
    before = snapshot_model(model, tensors=True)
    attr = RealTimeMaskAttribution(model)
    masker_before = weights(attr)
    x, y = batch()
    attr.fit([(x.to(dtype), y)], max_steps=2, **FIT)
    assert math.isfinite(attr.history[-1]["loss"])
    assert not same(masker_before, weights(attr))
    assert before.differences(snapshot_model(model, tensors=True)) == []
    assert next(model.parameters()).dtype == dtype
    assert attr.attribute(x.to(dtype), target=y).dtype == dtype


@pytest.mark.parametrize("dtype", [torch.float64, torch.bfloat16])
def test_a_converted_classifier_beside_an_own_encoder_trains_in_its_dtype(dtype):
    model = classifier().to(dtype)
    before = snapshot_model(model, tensors=True)
    attr = RealTimeMaskAttribution(model, encoder="small_cnn")
    x, y = batch()
    attr.fit([(x.to(dtype), y)], max_steps=2, **FIT)
    assert math.isfinite(attr.history[-1]["loss"])
    assert before.differences(snapshot_model(model, tensors=True)) == []
    assert attr.attribute(x.to(dtype)).dtype == dtype


# --------------------------------------------------------------------------------- grad modes
def test_fit_inside_no_grad_trains_and_leaves_the_model_alone():
    model = classifier().train()
    before = snapshot_model(model, tensors=True)
    attr = RealTimeMaskAttribution(model)
    masker_before = weights(attr)
    x, y = batch()
    with torch.no_grad():
        attr.fit([(x, y)], max_steps=2, val_loader=[(x, y)], **FIT)
        assert not torch.is_grad_enabled()  # the caller's mode is back
    assert not same(masker_before, weights(attr))
    assert before.differences(snapshot_model(model, tensors=True)) == []


def test_fit_inside_inference_mode_trains_on_batches_made_there():
    model = classifier()
    before = snapshot_model(model, tensors=True)
    attr = RealTimeMaskAttribution(model)
    masker_before = weights(attr)
    with torch.inference_mode():
        x, y = batch()
        attr.fit([(x, y)], max_steps=2, val_loader=[(x, y)], **FIT)
        assert torch.is_inference_mode_enabled()
        assert attr.attribute(x, target=y).shape == x.shape
    assert not same(masker_before, weights(attr))
    assert not any(p.is_inference() for p in attr.masker.parameters())
    assert before.differences(snapshot_model(model, tensors=True)) == []


def test_a_masker_or_classifier_created_in_inference_mode_is_refused():
    x, y = batch()
    model = classifier()
    before = snapshot_model(model, tensors=True)
    with torch.inference_mode():
        attr = RealTimeMaskAttribution(model)
        with pytest.raises(InputError, match=r"masker: .*inference_mode.*outside"):
            attr.fit([(x, y)], max_steps=1, **FIT)
        frozen = classifier()
    assert before.differences(snapshot_model(model, tensors=True)) == []
    with pytest.raises(InputError, match=r"forward_func: .*inference_mode"):
        RealTimeMaskAttribution(frozen, encoder="small_cnn").fit([(x, y)], max_steps=1, **FIT)


# ----------------------------------------------------------------------- single-image batches
def test_a_last_batch_of_one_image_is_skipped_once_with_a_warning():
    x, y = batch(9)
    loader = DataLoader(TensorDataset(x, y), batch_size=4)  # 4, 4, 1
    attr = RealTimeMaskAttribution(classifier(), encoder="test_resnet", pretrained=False)
    with pytest.warns(UserWarning, match=r"skipped a batch of 1 image.*drop_last=True") as rec:
        attr.fit(loader, epochs=2, **FIT)
    assert len([m for m in user_warnings(rec) if "batch of 1 image" in m]) == 1
    assert [h["steps"] for h in attr.history] == [2, 4]


def test_single_image_batches_only_raise_before_any_step():
    x, y = batch(3)
    attr = RealTimeMaskAttribution(classifier(), encoder="test_resnet", pretrained=False)
    masker_before = weights(attr)
    singles = [(x[i : i + 1], y[i : i + 1]) for i in range(3)]
    with (
        pytest.warns(UserWarning, match="skipped"),
        pytest.raises(InputError, match=r"every batch of the epoch had 1 image.*batch_size"),
    ):
        attr.fit(singles, epochs=1, **FIT)
    with pytest.raises(InputError, match=r"batch_size is 1.*drop_last"):
        attr.fit(DataLoader(TensorDataset(x, y), batch_size=1), epochs=1, **FIT)
    assert same(masker_before, weights(attr)) and attr.history == []


def test_an_endless_stream_of_single_images_raises_instead_of_skipping_forever():
    x, y = batch(2)

    def singles():  # no length, no end: the guard is the only way out
        while True:
            yield x[:1], y[:1]

    attr = RealTimeMaskAttribution(classifier(), encoder="test_resnet", pretrained=False)
    masker_before = weights(attr)
    with (
        warnings.catch_warnings(),
        pytest.raises(InputError, match=r"100 batches in a row had 1 image.*batch_size"),
    ):
        warnings.simplefilter("ignore")
        attr.fit(singles(), max_steps=5, **FIT)
    assert same(masker_before, weights(attr)) and attr.history == []


def test_single_images_are_kept_where_batch_norm_can_handle_them():
    x, y = batch(2, size=64)  # a 2x2 deepest map: BatchNorm has 4 values per channel
    attr = RealTimeMaskAttribution(classifier(), encoder="test_resnet", pretrained=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        attr.fit([(x[:1], y[:1]), (x[1:], y[1:])], epochs=1, **FIT)
    assert attr.history[-1]["steps"] == 2
    # A frozen encoder (the classifier's) has no BatchNorm in training mode.
    x, y = batch(2)
    frozen = RealTimeMaskAttribution(classifier()).fit([(x[:1], y[:1])], epochs=1, **FIT)
    assert frozen.history[-1]["steps"] == 1


# ------------------------------------------------------------------------- validation batches
@pytest.mark.parametrize(
    "val_batch, expected",
    [
        (lambda x, y: (x, y + 5), r"labels must be integer classes in \[0, 5\)"),
        (lambda x, y: (torch.rand(4, 3, 48, 48), y), "not divisible by the encoder's stride"),
        (lambda x, y: (x * float("nan"), y), "must be finite"),
        (lambda x, y: ((x * 255).byte(), y), "floating-point"),
        (lambda x, y: (x[0], y), "single image"),
    ],
    ids=["labels", "size", "nan", "uint8", "unbatched"],
)
def test_validation_batches_are_checked_like_training_batches(val_batch, expected):
    x, y = batch()
    attr = RealTimeMaskAttribution(classifier())
    with pytest.raises(InputError, match="val_loader: ") as err:
        attr.fit([(x, y)], max_steps=1, val_loader=[val_batch(x, y)], **FIT)
    assert re.search(expected, str(err.value)), str(err.value)
    assert attr.history == []


# ---------------------------------------------------------------------- one-shot iterators
def test_a_generator_shorter_than_max_steps_stops_with_a_warning_and_keeps_history():
    x, y = batch()
    attr = RealTimeMaskAttribution(classifier())
    masker_before = weights(attr)
    with pytest.warns(UserWarning, match=r"no batches in epoch 1.*stopped after 2 steps"):
        attr.fit(((x, y) for _ in range(2)), max_steps=5, area_warmup=0, **FIT)
    assert [(h["epoch"], h["steps"]) for h in attr.history] == [(0, 2)]
    assert not same(masker_before, weights(attr))
    with pytest.warns(UserWarning, match="consumed only once"):
        attr.fit(iter([(x, y)]), epochs=3, area_warmup=0, **FIT)
    assert [(h["epoch"], h["steps"]) for h in attr.history] == [(0, 2), (1, 3)]


def test_a_loader_that_yields_nothing_at_first_still_raises():
    attr = RealTimeMaskAttribution(classifier())
    with pytest.raises(InputError, match="no batches in epoch 0"):
        attr.fit(iter([]), max_steps=3, area_warmup=0, **FIT)
    assert attr.history == []


# ------------------------------------------------------------------------- silent fallbacks
def test_options_that_need_the_run_length_warn_once_without_it():
    x, y = batch()
    attr = RealTimeMaskAttribution(classifier())
    with pytest.warns(UserWarning) as record:
        attr.fit(((x, y) for _ in range(2)), lr_schedule="cosine", **FIT)
    messages = [m for m in user_warnings(record) if "no length" in m]
    assert len(messages) == 1
    assert "lr_schedule='cosine'" in messages[0] and "area_warmup=0.2" in messages[0]
    assert "max_steps=" in messages[0]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        attr.fit(((x, y) for _ in range(2)), max_steps=2, lr_schedule="cosine", **FIT)
        attr.fit(((x, y) for _ in range(2)), area_warmup=0, **FIT)  # nothing is lost


# ----------------------------------------------------------------- checkpoint_dir and device
def test_a_checkpoint_dir_that_is_a_file_is_refused_before_training(tmp_path):
    x, y = batch()
    attr = RealTimeMaskAttribution(classifier())
    masker_before = weights(attr)
    blocker = tmp_path / "ckpt"
    blocker.write_text("not a folder")
    for path in (blocker, blocker / "sub"):
        with pytest.raises(InputError, match="checkpoint_dir: .*file"):
            attr.fit([(x, y)], epochs=1, checkpoint_dir=str(path), **FIT)
    with pytest.raises(InputError, match=r"checkpoint_dir: expected a path \(a str or os.PathLike\) or None, got int 3"):
        attr.fit([(x, y)], epochs=1, checkpoint_dir=3, **FIT)
    assert same(masker_before, weights(attr)) and blocker.read_text() == "not a folder"
    # A pathlib.Path works and is stored as a string in the checkpoints' JSON.
    attr.fit([(x, y)], epochs=1, checkpoint_dir=tmp_path / "run", **FIT)
    assert (tmp_path / "run" / "step-000000001" / "config.json").is_file()


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_an_unavailable_cuda_device_is_refused_up_front():
    x, y = batch()
    attr = RealTimeMaskAttribution(classifier())
    with pytest.raises(InputError, match=r"device: 'cuda' .*CUDA is not available.*'cpu'"):
        attr.fit([(x, y)], epochs=1, device="cuda", **FIT)
    with pytest.raises(InputError, match="device: 'cuda:1'"):
        training.fit_masker(
            attr.masker, attr.model, [(x, y)], ObjectiveConfig(), FitConfig(**FIT), "cuda:1"
        )


@pytest.mark.parametrize("device", ["bogus", 1.5, [0]])
def test_devices_that_are_not_devices_are_refused(device):
    x, y = batch()
    with pytest.raises(InputError, match="device: "):
        RealTimeMaskAttribution(classifier()).fit([(x, y)], epochs=1, device=device, **FIT)


# --------------------------------------------------------------------------------- history
def test_history_numbering_continues_across_fit_calls(tmp_path):
    x, y = batch()
    attr = RealTimeMaskAttribution(classifier())
    attr.fit([(x, y)], max_steps=1, **FIT)
    attr.fit([(x, y), (x, y)], epochs=2, **FIT)
    assert [(h["epoch"], h["steps"]) for h in attr.history] == [(0, 1), (1, 3), (2, 5)]
    attr.save(tmp_path / "m")
    again = RealTimeMaskAttribution.load(tmp_path / "m", attr.forward_func)
    again.fit([(x, y)], epochs=1, **FIT)
    assert [(h["epoch"], h["steps"]) for h in again.history][-1] == (3, 6)


def test_resumed_history_is_the_interrupted_runs(tmp_path, monkeypatch):
    x, y = batch()
    data = [(x, y)] * 3
    reference = RealTimeMaskAttribution(classifier()).fit(data, epochs=2, **FIT)
    crashed = RealTimeMaskAttribution(classifier())
    real = trainer.step_terms
    calls = iter(range(100))

    def crash_at_5(*args, **kwargs):
        if next(calls) == 4:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    with monkeypatch.context() as m:
        m.setattr(trainer, "step_terms", crash_at_5)
        with pytest.raises(KeyboardInterrupt):
            crashed.fit(data, epochs=2, checkpoint_dir=str(tmp_path), checkpoint_every=1, **FIT)
    assert crashed.history == []  # a failed call reports nothing
    resumed = RealTimeMaskAttribution(classifier()).fit(data, epochs=2, resume_from=tmp_path, **FIT)
    assert resumed.history == reference.history
    assert [(h["epoch"], h["steps"]) for h in resumed.history] == [(0, 3), (1, 6)]


# ------------------------------------------------------------------------- argument types
@pytest.mark.parametrize(
    "options, expected",
    [
        ({"lr": "1e-3"}, r"lr: expected a finite real number > 0, got str '1e-3'.*lr=1e-3"),
        ({"lr": True}, "lr: expected a finite real number > 0, got bool True"),
        ({"lr": math.inf}, "lr: expected a finite real number > 0, got float inf"),
        ({"seed": None}, r"seed: expected an int, got NoneType None.*seed=0"),
        ({"seed": "x"}, "seed: expected an int"),
        ({"seed": 1.5}, "seed: expected an int"),
        ({"epochs": True, "max_steps": None}, r"epochs: .*bool True"),
        ({"max_steps": True}, r"max_steps: .*bool True"),
        ({"checkpoint_every": True}, r"checkpoint_every: .*bool True"),
        ({"keep_last": True}, r"keep_last: .*bool"),
        ({"weight_decay": "0"}, "weight_decay: expected a finite real number >= 0, got str"),
        ({"grad_clip": "1"}, "grad_clip: expected a finite real number > 0 or None, got str"),
        ({"area_warmup": None}, r"area_warmup: expected a real number in \[0, 1\], got NoneType"),
        ({"lr_schedule": ["cosine"]}, "lr_schedule: expected one of 'constant' or 'cosine'"),
        ({"extra": {}}, r"fit\(\): unknown options \['extra'\]"),
    ],
    ids=lambda v: str(v) if isinstance(v, dict) else "",
)
def test_fit_options_of_the_wrong_type_raise_input_errors(options, expected):
    x, y = batch()
    attr = RealTimeMaskAttribution(classifier())
    options = {"max_steps": 1, **options}
    with pytest.raises(InputError, match=expected):
        attr.fit([(x, y)], **options, **FIT)
    assert attr.history == []


def test_numpy_integers_and_floats_are_accepted_as_plain_numbers(tmp_path):
    x, y = batch()
    attr = RealTimeMaskAttribution(classifier())
    attr.fit(
        [(x, y)],
        epochs=np.int64(1),
        lr=np.float32(1e-3),
        seed=np.int32(3),
        checkpoint_dir=str(tmp_path),
        **FIT,
    )
    config = FitConfig(epochs=np.int64(2), lr=np.float64(1e-2))
    assert type(config.epochs) is int and type(config.lr) is float
    assert attr.history[-1]["steps"] == 1


@pytest.mark.parametrize(
    "loader, expected",
    [
        (None, r"loader: expected an iterable of \(images, labels\) batches.*got None"),
        (TensorDataset(torch.rand(4, 3, SIZE, SIZE)), r"dataset TensorDataset.*DataLoader\("),
        ("data/train", r"path 'data/train'.*DataLoader"),
        (torch.rand(4, 3, SIZE, SIZE), r"got a tensor.*\[\(images, labels\)\]"),
        (5, "loader: expected an iterable"),
    ],
    ids=["none", "dataset", "path", "tensor", "int"],
)
def test_things_that_are_not_loaders_are_refused(loader, expected):
    attr = RealTimeMaskAttribution(classifier())
    with pytest.raises(InputError, match=expected):
        attr.fit(loader, epochs=1, **FIT)
    x, y = batch()
    if loader is not None:
        with pytest.raises(InputError, match="val_loader: "):
            attr.fit([(x, y)], epochs=1, val_loader=loader, **FIT)
    assert attr.history == []
