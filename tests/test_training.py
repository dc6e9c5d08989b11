"""Training the masker (the ``training`` package): fit()'s options (FitConfig), the loaders and
batches it takes, dtypes and grad modes, one step's terms and selectors, and the loop."""

from __future__ import annotations

import math
import re
import warnings

import numpy as np
import pytest
import timm
import torch
from conftest import (
    FIT,
    QUIET,
    TINY_SIZE,
    assert_same_masker,
    changed_tensors,
    layout,
    make_attr,
    make_batches,
    make_test_resnet,
    masker_tensors,
    resnet_batch,
    tiny_classifier,
)
from torch import nn
from torch.optim.optimizer import register_optimizer_step_pre_hook
from torch.utils.data import DataLoader, TensorDataset

from captum_realtime_mask import (
    EncoderSpec,
    FitConfig,
    InputError,
    ObjectiveConfig,
    RealTimeMaskAttribution,
    TrainingError,
)
from captum_realtime_mask._model_state import snapshot_model
from captum_realtime_mask.objective import resolve_classifier_output
from captum_realtime_mask.training import step
from captum_realtime_mask.training.step import shape_bucket, step_terms

SIZE = TINY_SIZE

pytestmark = pytest.mark.usefixtures("one_thread")


def user_warnings(record) -> list[str]:
    return [str(w.message) for w in record if issubclass(w.category, UserWarning)]


# ---------------------------------------------------------------------- options (FitConfig)


def test_fit_config_refuses_options_out_of_range():
    for option in (
        {"keep_last": 0},  # used to delete every checkpoint including the newest
        {"nonfinite_patience": 0},
        {"grad_clip": -1.0},
        {"area_warmup": 2.0},
        {"weight_decay": -1.0},
        {"embedding_lr_scale": 0.0},
        {"channels_last": "yes"},
        {"amp": 1},
    ):
        with pytest.raises(InputError, match=next(iter(option))):
            FitConfig(**option)


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
    x, y = resnet_batch()
    attr = RealTimeMaskAttribution(make_test_resnet(5))
    options = {"max_steps": 1, **options}
    with pytest.raises(InputError, match=expected):
        attr.fit([(x, y)], **options, **QUIET)
    assert attr.history == []


def test_numpy_integers_and_floats_are_accepted_as_plain_numbers(tmp_path):
    x, y = resnet_batch()
    attr = RealTimeMaskAttribution(make_test_resnet(5))
    attr.fit(
        [(x, y)],
        epochs=np.int64(1),
        lr=np.float32(1e-3),
        seed=np.int32(3),
        checkpoint_dir=str(tmp_path),
        **QUIET,
    )
    config = FitConfig(epochs=np.int64(2), lr=np.float64(1e-2))
    assert type(config.epochs) is int and type(config.lr) is float
    assert attr.history[-1]["steps"] == 1


def test_options_that_need_the_run_length_warn_once_without_it():
    x, y = resnet_batch()
    attr = RealTimeMaskAttribution(make_test_resnet(5))
    with pytest.warns(UserWarning) as record:
        attr.fit(((x, y) for _ in range(2)), lr_schedule="cosine", **QUIET)
    messages = [m for m in user_warnings(record) if "no length" in m]
    assert len(messages) == 1
    assert "lr_schedule='cosine'" in messages[0] and "area_warmup=0.2" in messages[0]
    assert "max_steps=" in messages[0]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        attr.fit(((x, y) for _ in range(2)), max_steps=2, lr_schedule="cosine", **QUIET)
        # nothing is lost:
        attr.fit(((x, y) for _ in range(2)), area_warmup=0, lr_schedule="constant", **QUIET)


# --------------------------------------------------------------------------- loaders and batches


@pytest.mark.parametrize(
    "loader, expected",
    [
        (None, r"loader: expected an iterable of \(images, labels\) batches.*got None"),
        (TensorDataset(torch.rand(4, 3, 32, 32)), r"dataset TensorDataset.*DataLoader\("),
        ("data/train", r"path 'data/train'.*DataLoader"),
        (torch.rand(4, 3, 32, 32), r"got a tensor.*\[\(images, labels\)\]"),
        (5, "loader: expected an iterable"),
    ],
    ids=["none", "dataset", "path", "tensor", "int"],
)
def test_things_that_are_not_loaders_are_refused(loader, expected):
    attr = RealTimeMaskAttribution(make_test_resnet(5))
    with pytest.raises(InputError, match=expected):
        attr.fit(loader, epochs=1, **QUIET)
    x, y = resnet_batch()
    if loader is not None:
        with pytest.raises(InputError, match="val_loader: "):
            attr.fit([(x, y)], epochs=1, val_loader=loader, **QUIET)
    assert attr.history == []


@pytest.mark.parametrize(
    "batch, expected",
    [
        ((torch.full((2, 3, SIZE, SIZE), float("nan")), torch.tensor([0, 1])), "finite"),
        (
            (torch.zeros(2, 3, SIZE, SIZE, dtype=torch.uint8), torch.tensor([0, 1])),
            r"loader: images must be a floating.*uint8.*float\(\)",
        ),
        ((torch.rand(2, 3, SIZE, SIZE), torch.tensor([True, False])), r"torch\.bool"),
        ((torch.rand(2, 3, SIZE, SIZE), torch.tensor([0.0, 1.0])), "integer"),
        ((torch.rand(2, 3, SIZE, SIZE), torch.tensor([0, 1, 2])), "length 2"),
        ((torch.rand(2, 3, SIZE, SIZE), torch.tensor([0, 3])), r"\[0, 3\)"),
        ((torch.rand(2, 3, 0, SIZE), torch.tensor([0, 1])), "empty"),
        ((torch.rand(2, 3, 12, 12), torch.tensor([0, 1])), "stride 8"),
        (torch.rand(2, 3, SIZE, SIZE), r"\(images, labels"),
    ],
    ids=[
        "nan",
        "uint8",
        "bool_labels",
        "float_labels",
        "length",
        "range",
        "empty",
        "stride",
        "bare",
    ],
)
def test_bad_training_batches(batch, expected):
    with pytest.raises(InputError, match="loader") as err:
        make_attr().fit([batch], epochs=1, **FIT)
    assert re.search(expected, str(err.value)), str(err.value)


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
    x, y = resnet_batch()
    attr = RealTimeMaskAttribution(make_test_resnet(5))
    with pytest.raises(InputError, match="val_loader: ") as err:
        attr.fit([(x, y)], max_steps=1, val_loader=[val_batch(x, y)], **QUIET)
    assert re.search(expected, str(err.value)), str(err.value)
    assert attr.history == []


def test_a_generator_shorter_than_max_steps_stops_with_a_warning_and_keeps_history():
    x, y = resnet_batch()
    attr = RealTimeMaskAttribution(make_test_resnet(5))
    masker_before = masker_tensors(attr)
    with pytest.warns(UserWarning, match=r"no batches in epoch 1.*stopped after 2 steps"):
        attr.fit(((x, y) for _ in range(2)), max_steps=5, area_warmup=0, **QUIET)
    assert [(h["epoch"], h["steps"]) for h in attr.history] == [(0, 2)]
    assert changed_tensors(masker_before, masker_tensors(attr)) != []
    with pytest.warns(UserWarning, match="no batches in epoch 1.*consumed only once"):
        attr.fit(iter([(x, y)]), epochs=3, area_warmup=0, **QUIET)  # the epoch trained is kept
    assert [(h["epoch"], h["steps"]) for h in attr.history] == [(0, 2), (1, 3)]


def test_a_loader_that_is_empty_or_yields_nothing_at_first_raises():
    attr = RealTimeMaskAttribution(make_test_resnet(5))
    with pytest.raises(InputError, match="no batches in epoch 0"):
        attr.fit(iter([]), max_steps=3, area_warmup=0, **QUIET)
    with pytest.raises(InputError, match="loader: the training loader is empty"):
        attr.fit([], epochs=1, **QUIET)
    assert attr.history == []


# ----------------------------------------------------------------------- single-image batches


def test_a_last_batch_of_one_image_is_skipped_once_with_a_warning():
    x, y = resnet_batch(9)
    loader = DataLoader(TensorDataset(x, y), batch_size=4)  # 4, 4, 1
    attr = RealTimeMaskAttribution(make_test_resnet(5), encoder="test_resnet", pretrained=False)
    with pytest.warns(UserWarning, match=r"skipped a batch of 1 image.*drop_last=True") as rec:
        attr.fit(loader, epochs=2, **QUIET)
    assert len([m for m in user_warnings(rec) if "batch of 1 image" in m]) == 1
    assert [h["steps"] for h in attr.history] == [2, 4]


def test_single_image_batches_only_raise_before_any_step():
    x, y = resnet_batch(3)
    attr = RealTimeMaskAttribution(make_test_resnet(5), encoder="test_resnet", pretrained=False)
    masker_before = masker_tensors(attr)
    singles = [(x[i : i + 1], y[i : i + 1]) for i in range(3)]
    with (
        pytest.warns(UserWarning, match="skipped"),
        pytest.raises(InputError, match=r"every batch of the epoch had 1 image.*batch_size"),
    ):
        attr.fit(singles, epochs=1, **QUIET)
    with pytest.raises(InputError, match=r"batch_size is 1.*drop_last"):
        attr.fit(DataLoader(TensorDataset(x, y), batch_size=1), epochs=1, **QUIET)
    assert changed_tensors(masker_before, masker_tensors(attr)) == [] and attr.history == []


def test_an_endless_stream_of_single_images_raises_instead_of_skipping_forever():
    x, y = resnet_batch(2)

    def singles():  # no length, no end: the guard is the only way out
        while True:
            yield x[:1], y[:1]

    attr = RealTimeMaskAttribution(make_test_resnet(5), encoder="test_resnet", pretrained=False)
    masker_before = masker_tensors(attr)
    with (
        warnings.catch_warnings(),
        pytest.raises(InputError, match=r"100 batches in a row had 1 image.*batch_size"),
    ):
        warnings.simplefilter("ignore")
        attr.fit(singles(), max_steps=5, **QUIET)
    assert changed_tensors(masker_before, masker_tensors(attr)) == [] and attr.history == []


def test_single_images_are_kept_where_batch_norm_can_handle_them():
    x, y = resnet_batch(2, size=64)  # a 2x2 deepest map: BatchNorm has 4 values per channel
    attr = RealTimeMaskAttribution(make_test_resnet(5), encoder="test_resnet", pretrained=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        attr.fit([(x[:1], y[:1]), (x[1:], y[1:])], epochs=1, **QUIET)
    assert attr.history[-1]["steps"] == 2
    # A frozen encoder (the classifier's) has no BatchNorm in training mode.
    x, y = resnet_batch(2)
    frozen = RealTimeMaskAttribution(make_test_resnet(5)).fit([(x[:1], y[:1])], epochs=1, **QUIET)
    assert frozen.history[-1]["steps"] == 1


# ----------------------------------------------------------------------------------- dtypes


@pytest.mark.parametrize("dtype", [torch.float64, torch.float16, torch.bfloat16])
def test_floating_images_of_any_precision_are_cast_to_the_masker_dtype(dtype):
    x, y = resnet_batch()
    reference = RealTimeMaskAttribution(make_test_resnet(5)).fit([(x, y)], max_steps=2, **QUIET)
    attr = RealTimeMaskAttribution(make_test_resnet(5))
    attr.fit([(x.to(dtype), y)], max_steps=2, val_loader=[(x.to(dtype), y)], **QUIET)
    assert attr.masker.filter.embedding.weight.dtype == torch.float32
    assert all(math.isfinite(v) for v in attr.history[-1].values())
    if dtype == torch.float64:  # float32 -> float64 -> float32 is exact: the same run
        assert attr.history[-1]["loss"] == reference.history[-1]["loss"]


@pytest.mark.parametrize("encoder", ["classifier", "small_cnn"])
@pytest.mark.parametrize("dtype", [torch.float64, torch.bfloat16])
def test_a_converted_classifier_trains_as_the_encoder_or_beside_another(dtype, encoder):
    model = make_test_resnet(5).to(dtype)
    before = snapshot_model(model, tensors=True)
    # The stride fit() derives for 32 px, given up front so the masker is not rebuilt.
    spec = EncoderSpec(kind=encoder, min_reduction=2)
    attr = RealTimeMaskAttribution(model, encoder=spec)
    masker_before = masker_tensors(attr)
    x, y = resnet_batch()
    attr.fit([(x.to(dtype), y)], max_steps=2, **QUIET)
    assert math.isfinite(attr.history[-1]["loss"])
    assert changed_tensors(masker_before, masker_tensors(attr)) != []
    assert before.differences(snapshot_model(model, tensors=True)) == []
    assert next(model.parameters()).dtype == dtype
    assert attr.attribute(x.to(dtype), target=y).dtype == dtype
    assert attr.attribute(x.to(dtype)).dtype == dtype


# ------------------------------------------------------------------------------- grad modes


def test_fit_inside_no_grad_trains_and_leaves_the_model_alone():
    model = make_test_resnet(5).train()
    before = snapshot_model(model, tensors=True)
    attr = RealTimeMaskAttribution(model, encoder=EncoderSpec(kind="classifier", min_reduction=2))
    masker_before = masker_tensors(attr)
    x, y = resnet_batch()
    with torch.no_grad():
        attr.fit([(x, y)], max_steps=2, val_loader=[(x, y)], **QUIET)
        assert not torch.is_grad_enabled()  # the caller's mode is back
    assert changed_tensors(masker_before, masker_tensors(attr)) != []
    assert before.differences(snapshot_model(model, tensors=True)) == []


def test_fit_inside_inference_mode_trains_on_batches_made_there():
    model = make_test_resnet(5)
    before = snapshot_model(model, tensors=True)
    attr = RealTimeMaskAttribution(model)
    # fit() rebuilds the masker for 32-px images (stride 2) from the same seed, in there too.
    as_rebuilt = RealTimeMaskAttribution(
        model, encoder=EncoderSpec(kind="classifier", min_reduction=2)
    )
    masker_before = masker_tensors(as_rebuilt)
    with torch.inference_mode():
        x, y = resnet_batch()
        attr.fit([(x, y)], max_steps=2, val_loader=[(x, y)], **QUIET)
        assert torch.is_inference_mode_enabled()
        assert attr.attribute(x, target=y).shape == x.shape
    assert changed_tensors(masker_before, masker_tensors(attr)) != []
    assert not any(p.is_inference() for p in attr.masker.parameters())
    assert before.differences(snapshot_model(model, tensors=True)) == []


def test_a_masker_or_classifier_created_in_inference_mode_is_refused():
    x, y = resnet_batch()
    model = make_test_resnet(5)
    before = snapshot_model(model, tensors=True)
    with torch.inference_mode():
        attr = RealTimeMaskAttribution(model)
        with pytest.raises(InputError, match=r"masker: .*inference_mode.*outside"):
            attr.fit([(x, y)], max_steps=1, **QUIET)
        frozen = make_test_resnet(5)
    assert before.differences(snapshot_model(model, tensors=True)) == []
    with pytest.raises(InputError, match=r"forward_func: .*inference_mode"):
        RealTimeMaskAttribution(frozen, encoder="small_cnn").fit([(x, y)], max_steps=1, **QUIET)


# ------------------------------------------------------------------------ one step (step.py)


@pytest.mark.parametrize("destroy_fill", ["alternative", "inpaint"])
def test_gradients_reach_the_masker_and_never_the_classifier(timm_resnet, destroy_fill):

    x, y = make_batches(1, size=64, num_classes=5)[0]
    attr = RealTimeMaskAttribution(timm_resnet, encoder="small_cnn")
    attr.masker.train()
    for p in timm_resnet.parameters():
        p.requires_grad_(False)
    terms, _ = step_terms(
        attr.masker,
        timm_resnet,
        x,
        y,
        5,
        ObjectiveConfig(fake_prob=0.0, destroy_fill=destroy_fill),
        torch.Generator().manual_seed(0),
    )
    terms.total.backward()
    grads = [p.grad for p in attr.masker.parameters() if p.requires_grad]
    assert all(g is not None for g in grads)
    assert sum(float(g.abs().sum()) for g in grads) > 0
    assert all(p.grad is None for p in timm_resnet.parameters())


def test_shape_bucket_pads_real_selectors_with_fake_ones():

    g = torch.Generator().manual_seed(0)
    for _ in range(20):
        real = torch.rand(64, generator=g) > 0.3
        idx = real.nonzero().squeeze(1)
        used = shape_bucket(idx, real)
        assert torch.equal(used[: len(idx)], idx)
        assert len(used) % 8 == 0 or len(used) == 64
        assert not real[used[len(idx) :]].any()
        assert len(set(used.tolist())) == len(used)


def test_fake_selectors_avoid_classes_the_classifier_sees(timm_resnet):

    # Fixed logits: class 4 is the only class under 5% on images 0-3; on images 4-5 every
    # class is likely (uniform), so they have no candidate and keep their label.
    logits = torch.full((6, 5), 3.0)
    logits[:4, 4] = -3.0
    logits[4:] = 0.0

    class Fixed(torch.nn.Module):
        def forward(self, images):
            return logits[: len(images)] if len(images) == 6 else timm_resnet(images)

    x, y = torch.rand(6, 3, 32, 32), torch.tensor([0, 1, 2, 3, 0, 1])
    attr = RealTimeMaskAttribution(timm_resnet, encoder="small_cnn", seed=0)
    # The default recipe's "auto": 0.05 with class indices, None with multi-hot labels.
    assert ObjectiveConfig().fake_max_prob == "auto"
    assert resolve_classifier_output(ObjectiveConfig(), y).fake_max_prob == 0.05
    multi_hot = torch.nn.functional.one_hot(y, 5)
    assert resolve_classifier_output(ObjectiveConfig(), multi_hot).fake_max_prob is None
    # The same draw as an explicit 0.05 (step_terms resolves "auto" from these labels).
    for seed in range(3):
        drawn = [
            step_terms(
                attr.masker,
                Fixed(),
                x,
                y,
                5,
                ObjectiveConfig(fake_prob=1.0, fake_max_prob=f),
                torch.Generator().manual_seed(seed),
            )[1].tolist()
            for f in ("auto", 0.05)
        ]
        assert drawn[0] == drawn[1] == [False] * 4 + [True] * 2
    objective = ObjectiveConfig(fake_prob=1.0, fake_max_prob=0.05)
    seen = []
    masker_forward = attr.masker.forward

    def spy(images, selector):
        seen.append(selector.clone())
        return masker_forward(images, selector)

    attr.masker.forward = spy
    for seed in range(5):
        _, real = step_terms(
            attr.masker, Fixed(), x, y, 5, objective, torch.Generator().manual_seed(seed)
        )
        assert real.tolist() == [False] * 4 + [True] * 2
        assert seen[-1].tolist() == [4, 4, 4, 4, 0, 1]
    with pytest.raises(ValueError, match="fake_max_prob"):
        ObjectiveConfig(fake_max_prob=0.0)
    saved = ObjectiveConfig().to_dict()
    del saved["fake_max_prob"], saved["destroy_fill"]  # saved before the options existed
    assert ObjectiveConfig.from_dict(saved).fake_max_prob is None  # as it trained
    assert ObjectiveConfig.from_dict(saved).destroy_fill == "alternative"


def test_padded_classifier_batches_leave_the_loss_unchanged(timm_resnet, monkeypatch):

    x, y = torch.rand(12, 3, 32, 32), torch.arange(12) % 5
    attr = RealTimeMaskAttribution(timm_resnet, encoder="small_cnn", seed=0)
    # Blurred alternatives only, so that the extra rows' random draws change no image.
    objective = ObjectiveConfig(fake_prob=0.5, blur_prob=1.0)

    def terms(devices):
        monkeypatch.setattr(step, "BUCKETED_DEVICES", frozenset(devices))
        out, real = step.step_terms(
            attr.masker, timm_resnet, x, y, 5, objective, torch.Generator().manual_seed(3)
        )
        return out, real

    plain, real = terms(())
    padded, real_padded = terms({"cpu"})
    assert torch.equal(real, real_padded) and int(real.sum()) % 8 > 0
    torch.testing.assert_close(padded.total, plain.total)


# ---------------------------------------------------------------------- the loop (trainer.py)


def test_fit_updates_only_the_masker_and_keeps_history(timm_resnet):
    x, y = make_batches(1, size=64, num_classes=5)[0]
    attr = RealTimeMaskAttribution(timm_resnet)
    before = {k: v.clone() for k, v in attr.masker.state_dict().items()}
    attr.fit([(x, y)], epochs=2, progress=False, val_loader=[(x, y)])
    after = attr.masker.state_dict()
    assert any(not torch.equal(before[k], after[k]) for k in before)
    assert len(attr.history) == 2
    for key in ("loss", "tv", "area", "preserve", "destroy", "gate", "val_loss", "val_area"):
        assert np.isfinite(attr.history[-1][key]), key


def test_history_numbering_continues_across_fit_calls(tmp_path):
    x, y = resnet_batch()
    attr = RealTimeMaskAttribution(make_test_resnet(5))
    attr.fit([(x, y)], max_steps=1, **QUIET)
    attr.fit([(x, y), (x, y)], epochs=2, **QUIET)
    assert [(h["epoch"], h["steps"]) for h in attr.history] == [(0, 1), (1, 3), (2, 5)]
    attr.save(tmp_path / "m")
    again = RealTimeMaskAttribution.load(tmp_path / "m", attr.forward_func)
    again.fit([(x, y)], epochs=1, **QUIET)
    assert [(h["epoch"], h["steps"]) for h in again.history][-1] == (3, 6)


def test_same_seed_gives_the_same_masker_and_attributions_whatever_the_global_rng():
    data = make_batches(3)
    x, y = make_batches(1, seed=5)[0]

    def run(global_seed, seed=4):
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(global_seed)
            attr = make_attr(seed=seed)
            rng = torch.get_rng_state()
            attr.fit(data, epochs=2, **FIT)
            assert torch.equal(torch.get_rng_state(), rng), "fit() consumed the global RNG"
        return attr

    a, b = run(1), run(2)
    assert_same_masker(a, b)
    assert torch.equal(a.attribute(x, target=y), b.attribute(x, target=y))
    assert torch.equal(a.attribute(x), b.attribute(x))
    with pytest.raises(AssertionError):
        assert_same_masker(a, run(1, seed=5))


def test_embedding_lr_scale_speeds_up_only_the_class_embedding():
    """Adam moves each weight by about lr per step, so 20x the lr moves the embedding ~20x."""

    def moved(scale: float) -> tuple[float, float]:
        attr = make_attr()
        before = {k: v.clone() for k, v in attr.masker.state_dict().items()}
        attr.fit(
            make_batches(3),
            max_steps=3,
            lr=1e-4,
            lr_schedule="cosine",
            embedding_lr_scale=scale,
            progress=False,
        )
        after = attr.masker.state_dict()
        emb = (after["filter.embedding.weight"] - before["filter.embedding.weight"]).abs().max()
        head = (after["head.conv.weight"] - before["head.conv.weight"]).abs().max()
        return float(emb), float(head)

    emb1, head1 = moved(1.0)
    emb20, head20 = moved(20.0)
    assert emb20 > 10 * emb1
    assert head20 < 2 * head1  # the rest of the masker keeps its learning rate


def test_gradient_clipping_bounds_the_norm_the_optimiser_sees():
    norms: list[float] = []

    def record(opt, args, kwargs):
        grads = [p.grad for g in opt.param_groups for p in g["params"] if p.grad is not None]
        norms.append(float(torch.linalg.vector_norm(torch.stack([g.norm() for g in grads]))))

    handle = register_optimizer_step_pre_hook(record)
    try:
        make_attr().fit(make_batches(3), epochs=1, **FIT)
        unclipped, norms[:] = list(norms), []
        make_attr().fit(make_batches(3), epochs=1, grad_clip=1e-3, **FIT)
    finally:
        handle.remove()
    assert len(unclipped) == len(norms) == 3
    assert min(unclipped) > 1e-3  # the bound below is not met by chance
    assert max(norms) <= 1e-3 * (1 + 1e-4), norms


def test_channels_last_fit_trains_alike_and_gives_both_models_their_layout_back(timm_resnet):
    cl = torch.channels_last
    x, y = make_batches(1, size=64, num_classes=5)[0]
    before, layout_before = snapshot_model(timm_resnet, tensors=True), layout(timm_resnet)
    seen = []

    def record(module, args):
        weight = next(p for p in module.parameters() if p.dim() == 4)
        seen.append((args[0].is_contiguous(memory_format=cl), weight.is_contiguous()))

    runs = {}
    for channels_last in (False, True):
        attr = RealTimeMaskAttribution(timm_resnet, seed=0)
        handle = timm_resnet.register_forward_pre_hook(record)
        try:
            attr.fit([(x, y)], epochs=2, progress=False, channels_last=channels_last)
        finally:
            handle.remove()
        runs[channels_last] = attr
    # The option reached the classifier: channels-last images and weights, only when asked.
    assert {s for s, _ in seen} == {False, True}
    assert seen[0] == (False, True) and seen[-1] == (True, False)
    # Only rounding differs: the first step's terms (before any update) agree closely; Adam's
    # first update is about lr * sign(gradient), so near-zero gradients let it grow a little.
    for plain, nhwc, rel in zip(runs[False].history, runs[True].history, (1e-5, 2e-2)):
        assert plain.keys() == nhwc.keys()
        for k in plain:
            assert nhwc[k] == pytest.approx(plain[k], rel=rel, abs=1e-6), k
    assert all(p.is_contiguous() for p in runs[True].masker.parameters())
    assert layout(timm_resnet) == layout_before  # the same storage and strides as before
    assert before.differences(snapshot_model(timm_resnet, tensors=True)) == []


def test_default_epochs_by_hand():
    from captum_realtime_mask.training import TRAINING_IMAGES, default_epochs

    def loader(n):
        return DataLoader(TensorDataset(torch.zeros(n, 1)), batch_size=8)

    assert TRAINING_IMAGES == 60_000
    assert [default_epochs(loader(n)) for n in (10_000, 20_000, 25_000, 60_000)] == [6, 3, 3, 1]
    assert default_epochs(loader(1_281_167)) == 1 and default_epochs(loader(7)) == 8572
    # no sized dataset: one pass
    assert default_epochs([(0, 0)] * 4) == 1 and default_epochs(iter([(0, 0)])) == 1


class _SizedButShort(torch.utils.data.Dataset):
    """A dataset that claims ``n`` images; its loader's sampler visits only the first two."""

    def __init__(self, n):
        self.n, self.x, self.y = n, *resnet_batch(2)

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        return self.x[i], self.y[i]


@pytest.mark.parametrize("claimed, epochs", [(12_000, 5), (60_000, 1)])
def test_fit_without_epochs_trains_for_the_derived_number_of_passes(claimed, epochs):
    loader = DataLoader(_SizedButShort(claimed), batch_size=2, sampler=[0, 1])
    attr = RealTimeMaskAttribution(make_test_resnet(5), encoder="test_resnet", pretrained=False)
    attr.fit(loader, **QUIET)
    assert [h["steps"] for h in attr.history] == list(range(1, epochs + 1))
    attr.fit(loader, epochs=2, **QUIET)  # an explicit count wins
    assert len(attr.history) == epochs + 2
    attr.fit(loader, max_steps=3, **QUIET)  # and so does max_steps: 3 one-step epochs
    assert len(attr.history) == epochs + 5


# ------------------------------------------------------------------------ non-finite values


class NaNLogits(nn.Module):
    """Returns NaN logits on the given calls (1-based), or on every call."""

    def __init__(self, inner, calls=None):
        super().__init__()
        self.inner, self.calls, self.n = inner, calls, 0

    def forward(self, x):
        self.n += 1
        out = self.inner(x)
        if self.calls is None or self.n in self.calls:
            out = out * float("nan")
        return out


class _NaNGrad(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        return x.clone()

    @staticmethod
    def backward(ctx, grad):
        return torch.full_like(grad, float("nan"))


class NaNGradient(nn.Module):
    """Finite logits whose backward sends NaN gradients to the masker."""

    def __init__(self, inner):
        super().__init__()
        self.inner = inner

    def forward(self, x):
        return self.inner(_NaNGrad.apply(x))


def test_a_nonfinite_loss_skips_the_step_with_a_warning():
    attr = make_attr(
        NaNLogits(tiny_classifier(), calls={1}), objective=ObjectiveConfig(fake_prob=0)
    )
    with pytest.warns(RuntimeWarning) as record:
        attr.fit(make_batches(3), epochs=1, **FIT)
    messages = [str(w.message) for w in record if issubclass(w.category, RuntimeWarning)]
    assert len(messages) == 1 and "non-finite loss at step 0; step skipped (1/10" in messages[0]
    assert attr.history[0]["steps"] == 2  # 3 batches, one skipped
    assert all(torch.isfinite(p).all() for p in attr.masker.parameters())
    assert math.isfinite(attr.history[0]["loss"])


@pytest.mark.parametrize("wrapper, what", [(NaNLogits, "loss"), (NaNGradient, "gradient")])
def test_a_persisting_nonfinite_loss_or_gradient_stops_with_training_error(wrapper, what):
    attr = make_attr(wrapper(tiny_classifier()), objective=ObjectiveConfig(fake_prob=0))
    before = masker_tensors(attr, buffers=False)
    with (
        pytest.warns(RuntimeWarning, match=f"non-finite {what}"),
        pytest.raises(TrainingError, match=f"the {what} was non-finite .* 3 steps in a row"),
    ):
        attr.fit(make_batches(5), epochs=1, nonfinite_patience=3, **FIT)
    after = masker_tensors(attr, buffers=False)
    assert all(torch.equal(before[k], after[k]) for k in before), "a skipped step updated weights"


# ------------------------------------------------- classifiers that return other things


class _Output:
    """What a Hugging Face classifier returns: an object holding the logits."""

    def __init__(self, logits):
        self.logits = logits


class _ReturnsAnObject(nn.Module):
    def __init__(self):
        super().__init__()
        self.net = timm.create_model("test_resnet", pretrained=False, num_classes=5)

    def forward(self, x):
        return _Output(self.net(x))


class _Logits(nn.Module):
    """The wrapper the error's hint describes."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, x):
        return self.model(x).logits


def test_a_classifier_returning_an_object_gets_a_hint_that_fit_accepts():
    x, y = torch.rand(8, 3, 32, 32), torch.arange(8) % 5
    model = _ReturnsAnObject()
    attr = RealTimeMaskAttribution(model, num_classes=5, encoder="small_cnn")
    with pytest.raises(InputError, match=r"for a batch of 8 images.*nn\.Module") as info:
        attr.fit([(x, y)], max_steps=1, progress=False)
    assert info.value.argument == "forward_func"
    assert "lambda" not in str(info.value).split("Hint:")[1].split("(fit()")[0]
    # Following the hint trains.
    attr = RealTimeMaskAttribution(_Logits(model), num_classes=5, encoder="small_cnn")
    attr.fit([(x, y)], max_steps=1, progress=False)
    assert attr.history and attr.history[0]["steps"] == 1
    # A lambda is refused by fit() with the same hint.
    attr = RealTimeMaskAttribution(lambda t: model(t).logits, num_classes=5, encoder="small_cnn")
    with pytest.raises(InputError, match=r"forward_func: fit\(\) needs.*Hint: wrap the model"):
        attr.fit([(x, y)], max_steps=1, progress=False)


# ------------------------------------------------------------------------ training diagnostics


def test_history_reports_the_mask_area_of_real_and_fake_selectors():
    # Fakes among all other classes: the untrained tiny classifier gives none under 5%.
    attr = make_attr(objective=ObjectiveConfig(fake_prob=0.5, fake_max_prob=None))
    attr.fit(make_batches(4), epochs=2, val_loader=make_batches(2, seed=3), **FIT)
    for record in attr.history:
        for key in ("mask_area_real", "mask_area_fake", "val_mask_area_real"):
            assert 0.0 <= record[key] <= 1.0, key
    # A step's areas are the masks' own means (all selectors real here: fake_prob=0).
    x, y = make_batches(1, seed=5)[0]
    attr.masker.eval()
    terms, real = step_terms(
        attr.masker, attr.model, x, y, 3, ObjectiveConfig(fake_prob=0.0), torch.Generator()
    )
    expected = attr.masker(x, y).small_mask.mean(dim=(1, 2, 3))
    torch.testing.assert_close(terms.mask_area, expected)
    assert terms.means(real)["mask_area_real"] == pytest.approx(float(expected.mean()))
    assert "mask_area_fake" not in terms.means(real)


def test_fake_areas_are_averaged_over_the_steps_that_drew_fakes(monkeypatch):
    from captum_realtime_mask.objective import LossTerms

    means = iter([{"loss": 1.0, "mask_area_fake": 0.4}, {"loss": 3.0}])
    monkeypatch.setattr(LossTerms, "means", lambda self, real=None: dict(next(means)))
    attr = make_attr()
    attr.fit(make_batches(2), epochs=1, **FIT)
    assert attr.history[0]["loss"] == 2.0  # over both steps
    assert attr.history[0]["mask_area_fake"] == 0.4  # over the one step that had fakes


@pytest.mark.parametrize(
    "record, expected",
    [
        ({"mask_area_real": 0.30, "mask_area_fake": 0.02}, None),
        ({"mask_area_real": 0.004, "mask_area_fake": 0.001}, r"nearly empty.*area_weight"),
        ({"mask_area_real": 0.30, "mask_area_fake": 0.24}, r"80% of the true.*embedding_lr_scale"),
        ({"mask_area_real": 0.30}, None),  # no fake selectors: nothing to compare
    ],
)
def test_collapse_is_named_with_the_knob_that_fixes_it(record, expected):
    from captum_realtime_mask.training.diagnostics import collapse_warnings

    found = collapse_warnings(record, steps=1000)
    if expected is None:
        assert found == []
    else:
        assert len(found) == 1 and re.search(expected, found[0])
    assert collapse_warnings(record, steps=10) == []  # short fits are not judged


@pytest.mark.parametrize(
    "large_area, expected",
    [(1.0, "barely depend on the class"), (0.4, "cover 5[0-9]% of the image")],
)
def test_a_failed_fit_warns_once_at_its_end(monkeypatch, large_area, expected):
    from captum_realtime_mask.training import diagnostics

    monkeypatch.setattr(diagnostics, "DIAGNOSE_AFTER_STEPS", 4)
    monkeypatch.setattr(diagnostics, "LARGE_AREA", large_area)
    # Embeddings that barely learn and no area pressure: absent classes keep the same mask,
    # about half the image (too large, unless that check is moved out of the way).
    attr = make_attr(objective=ObjectiveConfig(fake_prob=0.5, fake_max_prob=None, area_weight=0.0))
    with pytest.warns(UserWarning, match=expected) as caught:
        attr.fit(make_batches(4), epochs=2, embedding_lr_scale=1e-6, **{**FIT, "lr": 1e-6})
    assert sum(str(w.message).startswith("fit: the masks") for w in caught) == 1
    assert caught[0].filename == __file__  # points at the user's fit() call


def test_the_end_of_the_fit_is_judged_not_its_epochs(monkeypatch):
    from captum_realtime_mask.training import diagnostics

    # Areas of the last steps only: 0.3 then three steps at 0.005 (empty) in a window of 3.
    monkeypatch.setattr(diagnostics, "DIAGNOSE_AFTER_STEPS", 1)
    steps = [{"mask_area_real": 0.3}] + [{"mask_area_real": 0.005}] * 3
    with pytest.warns(UserWarning, match="nearly empty"):
        diagnostics.warn_if_collapsed(steps[-3:], steps=4, stacklevel=1)
    assert diagnostics.collapse_warnings(diagnostics.recent_areas(steps), 4) == []  # all four
