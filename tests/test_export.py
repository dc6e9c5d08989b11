"""Exported maskers (ONNX through onnxruntime on CPU, torch.export programs) equal attr.mask().

Stated tolerance for float32: 1e-4 max abs difference from ``attr.mask`` (measured: ~1e-6).
Each ONNX file is exported once per module (an export takes seconds) and run at batch sizes
other than the one it was traced at.
"""

from __future__ import annotations

import doctest
import sys

import pytest
import torch
from torch import nn

from captum_realtime_mask import InputError, RealTimeMaskAttribution
from captum_realtime_mask import export as export_module
from captum_realtime_mask._model_state import snapshot_model
from captum_realtime_mask.export import export_masker, read_export_metadata

ort = pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")
pytest.importorskip("onnxscript")

pytestmark = pytest.mark.filterwarnings("ignore:RealTimeMaskAttribution. the masker has not")

TOL = 1e-4
SIZE = 64


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    """One torch thread for this module (restored after): tracing is mostly single-threaded
    and a second OpenMP thread on a loaded 2-core machine slows every operator."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _timm(name: str, num_classes: int = 3) -> nn.Module:
    import timm

    torch.manual_seed(0)
    return timm.create_model(name, pretrained=False, num_classes=num_classes).eval()


def _batch(n: int, num_classes: int = 3, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 3, SIZE, SIZE, generator=g)
    return x, torch.randint(0, num_classes, (n,), generator=g)


def _session(path) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def _run(session: ort.InferenceSession, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    (out,) = session.run(["masks"], {"images": x.numpy(), "classes": c.numpy()})
    return torch.from_numpy(out)


def _messy_classifier() -> nn.Module:
    """A classifier in a mixed state: train mode, one frozen layer, a hook."""
    model = _timm("test_resnet").train()
    model.conv1.requires_grad_(False)
    model.layer1.eval()
    model.register_forward_hook(lambda *args: None)
    return model


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """ONNX files of three maskers, each with its attribution (and the classifier's diffs)."""
    folder = tmp_path_factory.mktemp("onnx")
    makers = {
        "classifier-resnet": lambda: RealTimeMaskAttribution(_messy_classifier()),
        "classifier-vit": lambda: RealTimeMaskAttribution(_timm("test_vit")),
        "torchvision-resnet18": lambda: RealTimeMaskAttribution(
            _timm("test_resnet"), encoder="torchvision:resnet18", pretrained=False
        ),
    }
    out = {}
    for name, make in makers.items():
        attr = make()
        before = snapshot_model(attr.model, tensors=True)
        path = export_masker(attr, folder / f"{name}.onnx", image_size=SIZE)
        out[name] = (attr, path, before.differences(snapshot_model(attr.model, tensors=True)))
    return out


@pytest.mark.parametrize("name", ["classifier-resnet", "classifier-vit", "torchvision-resnet18"])
def test_onnx_masks_equal_attr_mask_at_other_batch_sizes(exported, name):
    attr, path, _ = exported[name]
    session = _session(path)
    for n in (1, 5):  # traced at batch 2
        x, c = _batch(n, seed=n)
        got = _run(session, x, c)
        want = attr.mask(x, target=c)
        assert got.shape == (n, 1, SIZE, SIZE)
        assert float((got - want).abs().max()) < TOL
        assert float(got.min()) >= 0 and float(got.max()) <= 1


def test_onnx_signature_and_metadata(exported):
    attr, path, _ = exported["classifier-resnet"]
    session = _session(path)
    inputs = {i.name: i for i in session.get_inputs()}
    assert list(inputs) == ["images", "classes"]
    assert inputs["images"].shape == ["batch", 3, SIZE, SIZE]
    assert inputs["images"].type == "tensor(float)"
    assert inputs["classes"].shape == ["batch"] and inputs["classes"].type == "tensor(int64)"
    (output,) = session.get_outputs()
    assert output.name == "masks" and output.shape == ["batch", 1, SIZE, SIZE]
    meta = read_export_metadata(path)
    assert meta["num_classes"] == 3 and meta["image_size"] == [SIZE, SIZE]
    assert meta["encoder_kind"] == "classifier" and meta["dtype"] == "float32"
    assert meta["mean"] == [0.5, 0.5, 0.5] and len(meta["std"]) == 3  # timm's config
    import captum_realtime_mask

    assert meta["package_version"] == captum_realtime_mask.__version__
    assert session.get_modelmeta().custom_metadata_map["num_classes"] == "3"
    # A torchvision-encoder masker on a timm classifier: the classifier's config still counts.
    assert read_export_metadata(exported["torchvision-resnet18"][1])["encoder_name"] == "resnet18"


def test_export_leaves_the_classifier_unchanged(exported):
    for _, _, diffs in exported.values():
        assert diffs == []
    model = exported["classifier-resnet"][0].model
    assert model.training and not model.layer1.training  # the mixed state survived
    assert not model.conv1[0].weight.requires_grad and model.fc.weight.requires_grad


def test_torch_export_program_reloads_with_the_same_masks(tmp_path):
    model = _timm("test_resnet")
    attr = RealTimeMaskAttribution(model)
    before = snapshot_model(model, tensors=True)
    path = attr.export(tmp_path / "masker.pt2", image_size=SIZE)  # format from the suffix
    assert before.differences(snapshot_model(model, tensors=True)) == []
    program = torch.export.load(path).module()
    for n in (1, 4):
        x, c = _batch(n, seed=10 + n)
        with torch.no_grad():
            got = program(x, c)
        assert float((got - attr.mask(x, target=c)).abs().max()) < TOL
    meta = read_export_metadata(path)
    assert meta["num_classes"] == 3 and meta["image_size"] == [SIZE, SIZE]


def test_float16_onnx_and_an_own_encoder(tmp_path):
    attr = RealTimeMaskAttribution(_timm("test_resnet"), encoder="small_cnn")
    path = export_masker(attr, tmp_path / "fp16.onnx", image_size=32, dtype="fp16")
    x, c = _batch(3)
    x = x[..., :32, :32].contiguous()
    got = _run(_session(path), x, c)
    assert got.dtype == torch.float32  # inputs and outputs stay float32
    assert float((got - attr.mask(x, target=c)).abs().max()) < 1e-2
    assert read_export_metadata(path)["dtype"] == "float16"


@pytest.fixture(scope="module")
def small_attr():
    return RealTimeMaskAttribution(_timm("test_resnet"), encoder="small_cnn")


@pytest.mark.parametrize(
    ("kwargs", "argument"),
    [
        ({"format": "tflite"}, "format"),
        ({"image_size": None}, "image_size"),
        ({"image_size": 60}, "image_size"),
        ({"image_size": (64, 0)}, "image_size"),
        ({"dtype": torch.int8}, "dtype"),
        ({"dtype": "bf16"}, "dtype"),
        ({"dtype": torch.float16, "format": "torch_export"}, "dtype"),
        ({"opset": 13}, "opset"),
        ({"opset": 10_000}, "opset"),
        ({"opset": 18, "format": "torch_export"}, "opset"),
        ({"confidence": float("nan")}, "confidence"),
    ],
)
def test_bad_arguments_raise_input_error(small_attr, tmp_path, kwargs, argument):
    kwargs = {"image_size": SIZE, **kwargs}
    with pytest.raises(InputError) as info:
        export_masker(small_attr, tmp_path / "m.onnx", **kwargs)
    assert info.value.argument == argument
    assert not list(tmp_path.iterdir())  # nothing written


def test_bad_targets_raise_input_error(small_attr, tmp_path):
    with pytest.raises(InputError) as info:
        export_masker(nn.Linear(2, 2), tmp_path / "m.onnx", image_size=SIZE)
    assert info.value.argument == "attr"
    with pytest.raises(InputError, match="is a folder"):
        small_attr.export(tmp_path, image_size=SIZE)
    with pytest.raises(InputError, match="does not exist"):
        small_attr.export(tmp_path / "missing" / "m.onnx", image_size=SIZE)
    with pytest.raises(InputError):
        small_attr.export(3, image_size=SIZE)


class _DataDependent(nn.Module):
    """An encoder that branches on a tensor's value: torch.export cannot trace it."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Conv2d(3, 8, 3, 2, 1)
        self.b = nn.Conv2d(8, 16, 3, 2, 1)
        self.c = nn.Conv2d(16, 16, 3, 2, 1)

    def forward(self, x):
        a = self.a(x)
        if a.mean() > 0:
            a = a * 2
        b = self.b(a)
        return [a, b, self.c(b)]


def test_untraceable_encoders_raise_input_error(tmp_path):
    from torchvision.transforms import Normalize

    attr = RealTimeMaskAttribution(_timm("test_resnet"), encoder=_DataDependent())
    with pytest.raises(InputError, match="could not trace") as info:
        attr.export(tmp_path / "m.pt2", image_size=32)
    assert info.value.argument == "encoder"
    classifier = nn.Sequential(Normalize([0.5] * 3, [0.25] * 3), _timm("test_resnet"))
    attr = RealTimeMaskAttribution(classifier, num_classes=3)
    with pytest.raises(InputError, match="v2.Normalize"):
        attr.export(tmp_path / "m.onnx", image_size=SIZE)
    assert not list(tmp_path.iterdir())


def test_missing_onnx_names_the_extra(small_attr, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnx", None)  # import onnx now raises ImportError
    with pytest.raises(ImportError, match=r"captum-realtime-mask\[export\]"):
        small_attr.export(tmp_path / "m.onnx", image_size=SIZE)
    assert not list(tmp_path.iterdir())


def test_docstring_examples():
    assert doctest.testmod(export_module, optionflags=doctest.ELLIPSIS).failed == 0


def test_read_metadata_of_a_missing_file(tmp_path):
    with pytest.raises(InputError):
        read_export_metadata(tmp_path / "nothing.onnx")
