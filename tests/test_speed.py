"""Device and dtype handling of the inference speed options (channels_last, autocast, compile)."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest
import torch

from captum_realtime_mask import InputError, RealTimeMaskAttribution
from captum_realtime_mask._model_state import snapshot_model
from captum_realtime_mask._speed import (
    InferenceOptions,
    apply_inference_options,
    masker_forward,
    optimize_for_inference,
    resolve_autocast,
)

HAS_CUDA = torch.cuda.is_available()
needs_cuda = pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA device")


@pytest.fixture
def attr(timm_resnet):
    return RealTimeMaskAttribution(timm_resnet, seed=0)


@pytest.fixture
def batch():
    g = torch.Generator().manual_seed(0)
    return torch.rand(2, 3, 32, 32, generator=g), torch.tensor([0, 4])


@pytest.fixture
def on_cuda(timm_resnet):
    """The attribution, two 64 px images and their targets on the GPU, and the default masks."""
    attr = RealTimeMaskAttribution(timm_resnet.cuda(), seed=0)
    x = torch.rand(2, 3, 64, 64, device="cuda")
    t = torch.tensor([0, 1], device="cuda")
    return attr, x, t, attr.mask(x, target=t)  # mask() also moves the masker to the GPU


def _conv_weights(module):
    return [m.weight for m in module.modules() if isinstance(m, torch.nn.Conv2d)]


class CountingBackend:
    """A torch.compile backend that runs the traced graphs eagerly; it records the shapes of
    each compiled graph's tensor inputs, and counts the runs of compiled code."""

    def __init__(self) -> None:
        self.compiled: list[list[tuple[int, ...]]] = []
        self.runs = 0

    def __call__(self, graph_module, example_inputs):
        tensors = [i for i in example_inputs if isinstance(i, torch.Tensor)]
        self.compiled.append([tuple(t.shape) for t in tensors])

        def run(*args):
            self.runs += 1
            return graph_module.forward(*args)

        return run

    def saw_images(self, x: torch.Tensor) -> bool:
        """Whether images shaped like ``x`` were an input of a compiled graph."""
        return any(tuple(x.shape) in shapes for shapes in self.compiled)


# ------------------------------------------------------------------ autocast selection
@pytest.mark.parametrize(
    ("request_", "input_dtype", "expected"),
    [
        (None, torch.float32, None),
        (False, torch.float32, None),
        ("auto", torch.float32, None),
        (True, torch.float32, None),
        (None, torch.bfloat16, None),  # CPU: half inputs run in float32, as before
        ("bf16", torch.float32, torch.bfloat16),
        ("bfloat16", torch.float32, torch.bfloat16),
        (torch.bfloat16, torch.float32, torch.bfloat16),
        ("fp16", torch.float32, torch.float16),
        (torch.float16, torch.float64, torch.float16),
    ],
)
def test_resolve_autocast_on_cpu(request_, input_dtype, expected):
    assert resolve_autocast(torch.device("cpu"), request_, input_dtype) == expected


@pytest.mark.parametrize("bf16_ok", [True, False])
def test_resolve_autocast_on_cuda_without_touching_a_gpu(monkeypatch, bf16_ok):
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: bf16_ok)
    auto = torch.bfloat16 if bf16_ok else torch.float16
    assert resolve_autocast("cuda", "auto") == auto
    assert resolve_autocast("cuda:1", True) == auto
    assert resolve_autocast("cuda", None) is None
    assert resolve_autocast("cuda", None, torch.float16) == torch.float16  # input's own dtype
    assert resolve_autocast("cuda", None, torch.bfloat16) == torch.bfloat16
    assert resolve_autocast("cuda", "fp16") == torch.float16
    if bf16_ok:
        assert resolve_autocast("cuda", "bf16") == torch.bfloat16
    else:
        with pytest.raises(InputError, match="fp16"):
            resolve_autocast("cuda", "bf16")


@pytest.mark.parametrize("bad", ["fp8", "float32", torch.float32, torch.int8, 3])
def test_resolve_autocast_rejects_unknown_settings(bad):
    with pytest.raises(InputError, match="autocast"):
        resolve_autocast("cpu", bad)


def test_resolve_autocast_rejects_devices_without_autocast():
    with pytest.raises(InputError, match="no autocast"):
        resolve_autocast("meta", "bf16")


def test_optimize_validates_early(attr):
    with pytest.raises(InputError, match="autocast"):
        optimize_for_inference(attr, autocast="int8")
    with pytest.raises(InputError, match="compile=True"):
        optimize_for_inference(attr, mode="max-autotune")


# ------------------------------------------------------------------ masker_forward
def test_default_options_keep_the_float32_path(attr, batch):
    x, t = batch
    with torch.no_grad():
        ref = attr.masker(x, t).mask
        out = masker_forward(attr.masker, x, t)
        out64 = masker_forward(attr.masker, x.double(), t, options=InferenceOptions())
    torch.testing.assert_close(out, ref, rtol=0, atol=0)
    assert out64.dtype == torch.float64
    torch.testing.assert_close(out64.float(), ref, rtol=0, atol=0)


def test_half_inputs_on_cpu_run_in_float32_and_come_back_in_their_dtype(attr, batch):
    x, t = batch
    with torch.no_grad():
        ref = attr.masker(x.bfloat16().float(), t).mask
        out = masker_forward(attr.masker, x.bfloat16(), t)
    assert out.dtype == torch.bfloat16
    torch.testing.assert_close(out.float(), ref, rtol=0, atol=1e-2)


def test_bf16_autocast_on_cpu_is_close_and_returns_the_input_dtype(attr, batch):
    x, t = batch
    with torch.no_grad():
        ref = attr.masker(x, t).mask
        out = masker_forward(attr.masker, x, t, options=InferenceOptions(autocast="bf16"))
    assert out.dtype == torch.float32
    assert float((out - ref).abs().mean()) < 0.02
    assert float(out.min()) >= 0 and float(out.max()) <= 1


def test_channels_last_gives_the_same_masks_and_keeps_the_classifier(attr, batch, timm_resnet):
    x, t = batch
    before = snapshot_model(timm_resnet, tensors=True)
    with torch.no_grad():
        ref = attr.masker(x, t).mask
    assert attr.optimize_for_inference(channels_last=True) is attr
    layouts = []

    def record(module, args):
        layouts.append(args[0].is_contiguous(memory_format=torch.channels_last))

    handle = attr.masker.head.register_forward_pre_hook(record)
    try:
        out = attr.mask(x, target=t)
    finally:
        handle.remove()
    assert layouts == [True]  # the decoder ran on channels-last maps
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-5)
    decoder = _conv_weights(attr.masker)
    assert decoder and all(w.is_contiguous(memory_format=torch.channels_last) for w in decoder)
    # The classifier (the masker's encoder here) is neither converted nor changed.
    assert all(w.is_contiguous() for w in _conv_weights(timm_resnet))
    assert before.differences(snapshot_model(timm_resnet, tensors=True)) == []
    # Back to the default layout.
    optimize_for_inference(attr)
    assert all(w.is_contiguous() for w in _conv_weights(attr.masker))


def test_channels_last_masker_saves_and_loads(attr, batch, timm_resnet, tmp_path):
    x, t = batch
    optimize_for_inference(attr, channels_last=True)
    attr.save(tmp_path / "m")
    loaded = RealTimeMaskAttribution.load(tmp_path / "m", timm_resnet)
    with torch.no_grad():
        torch.testing.assert_close(loaded.masker(x, t).mask, attr.masker(x, t).mask)


def test_options_do_not_change_state_dict_keys_or_values(attr):
    keys = {k: v.clone() for k, v in attr.masker.state_dict().items()}
    optimize_for_inference(attr, channels_last=True, compile=True, backend="eager")
    after = attr.masker.state_dict()
    assert list(after) == list(keys)
    for k, v in keys.items():
        torch.testing.assert_close(after[k], v, rtol=0, atol=0)
    optimize_for_inference(attr)


def test_compile_option_wires_and_unwires_the_decoder(attr, batch, timm_resnet):
    x, t = batch
    before = snapshot_model(timm_resnet, tensors=True)
    modules = [name for name, _ in attr.masker.named_modules()]
    with torch.no_grad():
        ref = attr.masker(x, t).mask
    backend = CountingBackend()
    attr.optimize_for_inference(compile=True, backend=backend)
    out = attr.mask(x, target=t)
    assert backend.runs > 0, "the compiled decoder did not run"
    assert [name for name, _ in attr.masker.named_modules()] == modules  # nothing registered
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-6)
    # The classifier (the encoder here) was run, not compiled or changed.
    assert not backend.saw_images(x)
    assert getattr(timm_resnet, "_compiled_call_impl", None) is None
    assert before.differences(snapshot_model(timm_resnet, tensors=True)) == []
    attr.optimize_for_inference(compile=False)
    runs = backend.runs
    attr.mask(x, target=t)
    assert backend.runs == runs


def test_compile_covers_an_encoder_the_masker_owns():
    from captum_realtime_mask import EncoderSpec, MaskerConfig, MaskingModel

    spec = EncoderSpec(kind="small_cnn", width=8, min_reduction=2)
    masker = MaskingModel(MaskerConfig(num_classes=3, encoder=spec)).eval()
    x, t = torch.rand(2, 3, 32, 32), torch.tensor([0, 2])
    backend = CountingBackend()
    options = InferenceOptions(compile=True, compile_kwargs={"backend": backend})
    apply_inference_options(masker, options)
    with torch.no_grad():
        torch.testing.assert_close(masker_forward(masker, x, t, options=options), masker(x, t).mask)
    assert backend.saw_images(x)  # the images enter a compiled graph: the encoder is in it


def test_a_masker_in_training_mode_never_runs_compiled(attr, batch):
    x, t = batch
    backend = CountingBackend()
    options = InferenceOptions(compile=True, compile_kwargs={"backend": backend})
    apply_inference_options(attr.masker, options)
    attr.masker.train()
    with torch.no_grad():
        masker_forward(attr.masker, x, t, options=options)
    assert backend.runs == 0
    attr.masker.eval()
    with torch.no_grad():
        masker_forward(attr.masker, x, t, options=options)
    assert backend.runs > 0, "an eval-mode masker did not run compiled"


@pytest.mark.slow
def test_inductor_compile_on_cpu_matches_eager(attr, batch):
    x, t = batch
    with torch.no_grad():
        ref = attr.masker(x, t).mask
    attr.optimize_for_inference(compile=True)
    try:
        out = attr.mask(x, target=t)
    except Exception as exc:  # no C++ toolchain: say so rather than fail obscurely
        pytest.skip(f"torch.compile (inductor) unavailable on this CPU: {exc}")
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-5)


def test_attribute_with_options_matches_default(attr, batch):
    x, t = batch
    ref = attr.attribute(x, target=t)
    assert attr.optimize_for_inference(channels_last=True, autocast=None) is attr
    out = attr.attribute(x, target=t)
    assert out.is_contiguous() and out.shape == x.shape
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-5)
    attr.optimize_for_inference(autocast="bf16")
    assert attr.attribute(x, target=t).dtype == torch.float32
    attr.optimize_for_inference()
    torch.testing.assert_close(attr.mask(x, target=t), ref[:, :1], rtol=0, atol=0)


# ------------------------------------------------------------------ the benchmark script
def _load_benchmark():
    name = "_captum_realtime_mask_speed_benchmark"
    if name not in sys.modules:
        path = Path(__file__).resolve().parents[1] / "benchmarks" / "speed.py"
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module  # dataclasses look their module up while it executes
        spec.loader.exec_module(module)
    return sys.modules[name]


def test_benchmark_parses_options():
    bench = _load_benchmark()
    opts = bench.parse_option("compile+bf16+channels_last")
    assert (opts.channels_last, opts.autocast, opts.compile) == (True, "bf16", True)
    assert bench.parse_option("fp32") == InferenceOptions()
    with pytest.raises(SystemExit):
        bench.parse_option("int8")


def test_benchmark_memory_probe_sees_an_allocation():
    bench = _load_benchmark()
    mb, how = bench.peak_memory_mb(lambda: torch.ones(64, 2**20).sum(), torch.device("cpu"))
    assert how in ("rss_peak", "maxrss_delta")
    if how == "rss_peak":
        assert mb > 100  # 256 MiB were allocated


@pytest.mark.slow
def test_benchmark_script_runs_end_to_end(tmp_path):
    bench = _load_benchmark()
    out = tmp_path / "speed.json"
    argv = ["--configs", "64-light", "--batch-sizes", "2", "--options", "fp32", "--budget", "0"]
    argv += ["--min-rounds", "1", "--max-rounds", "1", "--train", "--train-batch", "4"]
    argv += ["--train-steps", "1", "--train-rounds", "1", "--threads", "1", "--json", str(out)]
    threads = torch.get_num_threads()
    try:
        assert bench.main(argv) == 0
    finally:
        torch.set_num_threads(threads)  # --threads must not leak into later tests
    result = json.loads(out.read_text())
    (row,) = result["inference"]
    assert row["ratio"] > 0 and row["attribute_img_s"] > 0 and row["decoder_gflop_per_img"] > 0
    (train,) = result["training"]
    assert set(train["parts_s"]) == {"masker_fwd_bwd", "classifier_fwd_bwd", "evidence_removal"}


# ------------------------------------------------------------------ CUDA (skip without a GPU)
@pytest.mark.gpu
@needs_cuda
@pytest.mark.parametrize("autocast", ["bf16", "fp16", "auto"])
def test_cuda_autocast_channels_last_masks_are_close(timm_resnet, autocast):
    if autocast == "bf16" and not torch.cuda.is_bf16_supported():
        pytest.skip("this GPU has no bf16")
    model = timm_resnet.cuda()
    attr = RealTimeMaskAttribution(model, seed=0)
    x = torch.rand(4, 3, 64, 64, device="cuda")
    t = torch.tensor([0, 1, 2, 3], device="cuda")
    ref = attr.mask(x, target=t)
    attr.optimize_for_inference(channels_last=True, autocast=autocast)
    out = attr.mask(x, target=t)
    assert out.device.type == "cuda" and out.dtype == torch.float32
    assert float((out - ref).abs().mean()) < 0.02
    assert all(w.is_cuda for w in _conv_weights(attr.masker))


@pytest.mark.gpu
@needs_cuda
def test_cuda_half_inputs_keep_their_dtype(on_cuda):
    attr, x, t, ref = on_cuda
    with torch.no_grad():
        out = masker_forward(attr.masker, x.half(), t)
    assert out.dtype == torch.float16 and out.is_cuda
    assert float((out.float() - ref).abs().mean()) < 0.02


@pytest.mark.gpu
@needs_cuda
def test_cuda_compile_matches_eager(on_cuda):
    attr, x, t, ref = on_cuda
    attr.optimize_for_inference(compile=True)
    out = attr.mask(x, target=t)
    torch.testing.assert_close(out, ref, rtol=1e-3, atol=1e-3)


@pytest.mark.gpu
@needs_cuda
def test_cuda_peak_memory_probe():
    bench = _load_benchmark()
    mb, how = bench.peak_memory_mb(
        lambda: torch.ones(64, 2**20, device="cuda").sum(), torch.device("cuda")
    )
    assert how == "cuda_max_allocated" and mb >= 255
