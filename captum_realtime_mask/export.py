"""Export a masker for serving: an ONNX file for onnxruntime, or a ``torch.export`` program.

The exported graph computes ``masks = attr.mask(images, target=classes)`` for a batch of any
size: inputs ``images`` ``(N, C, H, W)`` float32 (``H, W`` fixed at export) and ``classes``
``(N,)`` int64, output ``masks`` ``(N, 1, H, W)`` float32 in ``[0, 1]``. With the default
``encoder="classifier"`` the classifier's backbone is part of the graph (its weights are
copied into the file); the classifier itself is never changed: its modes, ``requires_grad``
flags and hooks are as they were before the call.

What can be exported. Every encoder kind (``"classifier"``, ``"timm"``, ``"torchvision"``,
``"small_cnn"``, ``"module"``) exports when :func:`torch.export.export` can trace the code it
runs, which holds for the timm and torchvision models tried (ResNets, EfficientNet, ConvNeXt,
ViT, Swin) and for the masker's own decoder with every preset. What cannot be traced, and so
cannot be exported, is Python code that looks at tensor *values*:

* a ``"module"`` encoder, or a classifier used as the encoder, with data-dependent control
  flow (``if x.mean() > 0:``), ``.item()``, ``.tolist()`` or a detour through NumPy;
* in particular a classifier holding torchvision's v1 ``transforms.Normalize`` (for example
  ``nn.Sequential(Normalize(mean, std), resnet)``): its ``forward`` checks ``(std == 0).any()``
  in Python. ``torchvision.transforms.v2.Normalize`` or a plain ``(x - mean) / std`` module
  exports.

Those raise :class:`~captum_realtime_mask.errors.InputError` naming the reason. The exported
graph holds no input checks: classes outside ``[0, num_classes)`` make onnxruntime fail, and
NaN images give NaN masks.

``onnx``, ``onnxruntime`` and ``onnxscript`` (which torch's ONNX exporter needs) are optional:
``pip install "captum-realtime-mask[export]"``.
"""

from __future__ import annotations

import json
import os
import tempfile
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from torch import nn

from captum_realtime_mask import __version__
from captum_realtime_mask import _checks as check
from captum_realtime_mask._model_state import frozen_model
from captum_realtime_mask.errors import InputError
from captum_realtime_mask.masker.encoders import eval_mode

__all__ = [
    "FORMATS",
    "INPUT_NAMES",
    "OUTPUT_NAME",
    "export_masker",
    "read_export_metadata",
]

FORMATS = ("onnx", "torch_export")
INPUT_NAMES = ("images", "classes")
OUTPUT_NAME = "masks"
BATCH_DIM = "batch"
#: The lowest ONNX opset torch's exporter writes without a lossy version conversion.
MIN_OPSET = 18
#: Name of the metadata entry stored beside a ``torch.export`` program (``extra_files``).
PT2_METADATA = "captum_realtime_mask.json"
_EXTRA = 'pip install "captum-realtime-mask[export]"'
_DTYPES = {
    torch.float32: "float32",
    "float32": "float32",
    "fp32": "float32",
    torch.float16: "float16",
    "float16": "float16",
    "fp16": "float16",
}
_LARGE_BYTES = 1_800_000_000  # above this the ONNX weights go to an external data file


class _MaskGraph(nn.Module):
    """``(images, classes) -> masks``: the module that is traced.

    The classifier (with ``encoder="classifier"``) is registered here, so that its weights are
    parameters of the traced program; this wraps the user's module without changing it.
    """

    def __init__(self, masker: nn.Module, classifier: nn.Module | None, confidence: float):
        super().__init__()
        self.masker = masker
        if classifier is not None:
            self.classifier = classifier
        self.confidence = confidence

    def forward(self, images: torch.Tensor, classes: torch.Tensor) -> torch.Tensor:
        """Masks ``(N, 1, H, W)`` in ``[0, 1]``."""
        return self.masker(images, classes, self.confidence).mask


def _require(module: str) -> Any:
    """Import an optional dependency, or raise an ImportError naming the extra."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise ImportError(
            f"exporting to ONNX needs the optional package {module!r}, which is not installed. "
            f"Install the export extra: {_EXTRA}"
        ) from exc


def _check_attr(attr: Any) -> None:
    from captum_realtime_mask.attribution import RealTimeMaskAttribution

    if not isinstance(attr, RealTimeMaskAttribution):
        raise InputError(
            f"expected a RealTimeMaskAttribution, got {check.describe(attr)}.", argument="attr"
        )


def _check_format(format: Any, path: str) -> str:
    if format is None:
        return "torch_export" if path.lower().endswith(".pt2") else "onnx"
    return check.one_of(format, "format", FORMATS)


def _check_path(path: Any) -> str:
    path = check.path_str(path, "path", "masker.onnx")
    if os.path.isdir(path):
        raise InputError(
            f"{path!r} is a folder; expected the path of the file to write, e.g. "
            f"{os.path.join(path, 'masker.onnx')!r}.",
            argument="path",
        )
    parent = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(parent):
        raise InputError(
            f"the folder {parent!r} does not exist. Hint: create it first "
            "(os.makedirs(folder, exist_ok=True)).",
            argument="path",
        )
    return path


def _check_image_size(attr: Any, image_size: Any) -> tuple[int, int]:
    encoder = attr.masker.encoder
    fixed = getattr(encoder, "input_size", None)  # an encoder that takes one size only
    if image_size is None:
        if fixed is None:
            raise InputError(
                "pass the (height, width) of the images the exported masker will take, e.g. "
                "image_size=(224, 224): the file is exported for one image size (any batch "
                "size).",
                argument="image_size",
            )
        image_size = fixed
    h, w = check.size_pair(image_size, "image_size")
    stride = attr.masker.max_stride
    if h % stride or w % stride:
        raise InputError(
            f"height and width must be divisible by the encoder's stride {stride}; got "
            f"{(h, w)}. Hint: use a multiple of {stride}, as for attribute().",
            argument="image_size",
        )
    if fixed is not None and (h, w) != (fixed, fixed):
        raise InputError(
            f"the masker's encoder takes {fixed}x{fixed} images only; got {(h, w)}.",
            argument="image_size",
        )
    return h, w


def _check_dtype(dtype: Any, format: str) -> str:
    name = _DTYPES.get(dtype) if isinstance(dtype, (str, torch.dtype)) else None
    if name is None:
        raise InputError(
            f"expected torch.float32 or torch.float16 ('fp32' / 'fp16'), got "
            f"{check.describe(dtype)}.",
            argument="dtype",
        )
    if name == "float16" and format != "onnx":
        raise InputError(
            "a torch.export program is exported in float32 only. Hint: use format='onnx' "
            "for a float16 graph, or run the program under torch.autocast.",
            argument="dtype",
        )
    return name


def _check_opset(opset: Any, format: str) -> int | None:
    if opset is None:
        return None
    if format != "onnx":
        raise InputError("opset applies to format='onnx' only; leave it None.", argument="opset")
    onnx = _require("onnx")
    newest = onnx.defs.onnx_opset_version()
    value = check.integer(opset, "opset", MIN_OPSET, hint=f"(torch writes {MIN_OPSET} and up)")
    if value > newest:
        raise InputError(
            f"the installed onnx package knows opsets up to {newest}; got {value}.",
            argument="opset",
        )
    return value


def _untraceable_modules(modules: list[nn.Module]) -> list[str]:
    """Modules known to defeat ``torch.export``, by class name."""
    found = []
    for module in modules:
        cls = type(module)
        if cls.__name__ == "Normalize" and cls.__module__ == "torchvision.transforms.transforms":
            found.append("torchvision.transforms.Normalize")
    return sorted(set(found))


def _traced_modules(attr: Any) -> list[nn.Module]:
    modules = list(attr.masker.modules())
    if attr.masker.config.encoder.kind == "classifier" and attr.model is not None:
        modules += list(attr.model.modules())
    return modules


def _device(attr: Any) -> torch.device:
    sources = [attr.model] if attr.masker.config.encoder.kind == "classifier" else []
    for module in [*sources, attr.masker]:
        param = next(module.parameters(), None) if module is not None else None
        if param is not None:
            return param.device
    return torch.device("cpu")


def _metadata(attr: Any, size: tuple[int, int], dtype: str, confidence: float) -> dict[str, str]:
    """String metadata written into the file (JSON values)."""
    config = attr.masker.config
    meta: dict[str, Any] = {
        "producer": "captum-realtime-mask",
        "package_version": __version__,
        "num_classes": config.num_classes,
        "image_size": list(size),
        "in_chans": config.encoder.in_chans,
        "encoder_kind": config.encoder.kind,
        "encoder_name": config.encoder.name,
        "dtype": dtype,
        "confidence": confidence,
        "inputs": "images (N, C, H, W) float32 in the classifier's input space, classes (N,) int64",
        "outputs": "masks (N, 1, H, W) float32 in [0, 1]",
        "masker_config": config.to_dict(),
    }
    # The normalisation the classifier's timm config declares (the graph does not apply it:
    # images go in as the classifier takes them). Unknown for other classifiers.
    cfg = getattr(attr.model, "pretrained_cfg", None)
    if isinstance(cfg, dict) and cfg.get("mean") is not None and cfg.get("std") is not None:
        meta["mean"] = [float(v) for v in cfg["mean"]]
        meta["std"] = [float(v) for v in cfg["std"]]
    return {k: v if isinstance(v, str) else json.dumps(v) for k, v in meta.items()}


@contextmanager
def _quiet() -> Iterator[None]:
    """Hide the exporters' progress warnings (not errors)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def _trace(graph: nn.Module, example: tuple[torch.Tensor, torch.Tensor], kind: str) -> Any:
    """``torch.export.export`` with a dynamic batch; failures become an InputError."""
    batch = torch.export.Dim(BATCH_DIM, min=1)
    try:
        with _quiet():
            return torch.export.export(
                graph,
                example,
                dynamic_shapes={"images": {0: batch}, "classes": {0: batch}},
                strict=False,
            )
    except Exception as exc:  # torch.export raises many types; say which and why
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise InputError(
            f"torch.export could not trace the masker (encoder kind {kind!r}): "
            f"{type(exc).__name__}: {first[:300]} Code that looks at tensor values in Python "
            "(data-dependent if, .item(), .tolist(), NumPy) cannot be exported; see "
            "captum_realtime_mask.export for the encoders that can. Hint: rewrite that code "
            "with tensor operations (torch.where), or use encoder='classifier' with a timm or "
            "torchvision model, a named encoder or 'small_cnn'.",
            argument="encoder",
        ) from exc


def _atomic_target(path: str) -> tuple[str, str]:
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".export-", suffix=Path(path).suffix, dir=folder)
    os.close(fd)
    return tmp, path


def _save_torch_export(program: Any, path: str, meta: dict[str, str]) -> None:
    tmp, path = _atomic_target(path)
    try:
        torch.export.save(program, tmp, extra_files={PT2_METADATA: json.dumps(meta)})
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def _rename_batch(proto: Any) -> None:
    """Name the symbolic batch dimension ``batch`` wherever torch named it (``s0``, ...)."""
    graph = proto.graph
    first = graph.input[0].type.tensor_type.shape.dim[0].dim_param
    if not first:
        return
    for value in [*graph.input, *graph.output, *graph.value_info]:
        for dim in value.type.tensor_type.shape.dim:
            if dim.dim_param == first:
                dim.dim_param = BATCH_DIM


def _save_onnx(
    graph: nn.Module,
    program: Any,
    example: tuple[torch.Tensor, torch.Tensor],
    path: str,
    meta: dict[str, str],
    opset: int | None,
    dtype: str,
) -> None:
    onnx = _require("onnx")
    _require("onnxscript")  # torch's exporter imports it; fail early with the extra's name
    with _quiet():
        onnx_program = torch.onnx.export(
            program,
            example,
            input_names=list(INPUT_NAMES),
            output_names=[OUTPUT_NAME],
            opset_version=opset,
            dynamo=True,
            optimize=True,  # constant folding and graph clean-up by onnxscript
            verbose=False,
        )
        proto = onnx_program.model_proto
    _rename_batch(proto)
    if dtype == "float16":
        _require("onnxruntime")
        from onnxruntime.transformers.float16 import convert_float_to_float16

        # Weights and arithmetic in float16; the inputs and the output stay float32.
        with _quiet():
            proto = convert_float_to_float16(proto, keep_io_types=True)
    proto.producer_name = "captum-realtime-mask"
    proto.producer_version = __version__
    proto.doc_string = "masks = RealTimeMaskAttribution.mask(images, target=classes)"
    del proto.metadata_props[:]
    for key, value in meta.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    size = sum(p.numel() * p.element_size() for p in graph.parameters())
    if size > _LARGE_BYTES:  # protobuf files stop at 2 GiB: weights beside the file
        onnx.save_model(proto, path, save_as_external_data=True, location=Path(path).name + ".data")
        return
    tmp, path = _atomic_target(path)
    try:
        onnx.save_model(proto, tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def export_masker(
    attr: Any,
    path: str | os.PathLike[str],
    *,
    format: str | None = None,
    image_size: int | tuple[int, int] | None = None,
    opset: int | None = None,
    dtype: torch.dtype | str = torch.float32,
    confidence: float = 0.0,
) -> Path:
    """Write ``attr``'s masker as an ONNX file or a ``torch.export`` program.

    The graph maps ``images`` ``(N, C, H, W)`` float32 and ``classes`` ``(N,)`` int64 to
    ``masks`` ``(N, 1, H, W)`` in ``[0, 1]``, equal to ``attr.mask(images, target=classes)``
    (float32: within 1e-4, the tests' tolerance; about 1e-6 is usual); the batch size ``N`` is
    free, the image size fixed. The classifier is left as it was (modes, ``requires_grad``,
    hooks); with ``encoder="classifier"`` its backbone's weights are copied into the file.
    The masker is traced in eval mode on its device (a program exported on CUDA holds CUDA
    tensors; an ONNX file runs anywhere).

    ONNX files carry metadata (``metadata_props``, JSON values): ``num_classes``,
    ``image_size``, ``in_chans``, ``encoder_kind``, ``dtype``, ``confidence``,
    ``package_version``, ``masker_config`` and, for a timm classifier, the ``mean`` and
    ``std`` of its config (the graph does not normalise). A ``.pt2`` holds the same in its
    extra file ``captum_realtime_mask.json``; :func:`read_export_metadata` reads either.

    Encoders whose code looks at tensor values in Python (for example torchvision's v1
    ``transforms.Normalize`` inside the classifier) cannot be traced; see the module's
    documentation.

    Args:
        attr: The :class:`~captum_realtime_mask.RealTimeMaskAttribution` (trained: an
            untrained one warns, as :meth:`~captum_realtime_mask.RealTimeMaskAttribution.mask`
            does).
        path: The file to write (replaced if it exists; its folder must exist).
        format: ``"onnx"`` or ``"torch_export"`` (saved with :func:`torch.export.save`; load
            with :func:`torch.export.load`). None: ``"torch_export"`` for a ``.pt2`` path,
            else ``"onnx"``.
        image_size: ``(height, width)`` or one side, divisible by the encoder's largest
            stride. None only for an encoder that takes one size (it is used).
        opset: ONNX opset (at least 18); None is torch's default.
        dtype: ``torch.float32`` or (ONNX only) ``torch.float16``: weights and arithmetic in
            float16 (onnxruntime's converter), inputs and output still float32.
        confidence: The gate offset of :meth:`~captum_realtime_mask.RealTimeMaskAttribution.mask`,
            fixed in the graph.

    Returns:
        The path written, as a :class:`pathlib.Path`.

    Raises:
        InputError: A bad argument, or an encoder that cannot be traced (the message says
            why).
        ImportError: ``onnx``, ``onnxscript`` or (float16) ``onnxruntime`` missing, for
            ``format="onnx"``; the message names the extra to install.

    Example:
        >>> import tempfile, timm
        >>> from captum_realtime_mask import RealTimeMaskAttribution
        >>> attr = RealTimeMaskAttribution(timm.create_model("test_resnet", num_classes=3))
        >>> images, classes = torch.rand(3, 3, 64, 64), torch.tensor([0, 2, 1])
        >>> _ = attr.fit([(images, classes)], epochs=1, progress=False)
        >>> path = export_masker(attr, f"{tempfile.mkdtemp()}/masker.pt2", image_size=64)
        >>> program = torch.export.load(path).module()  # any batch size
        >>> with torch.no_grad():
        ...     masks = program(images, classes)
        >>> bool((masks - attr.mask(images, target=classes)).abs().max() < 1e-5)
        True
    """
    _check_attr(attr)
    path = _check_path(path)
    format = _check_format(format, path)
    size = _check_image_size(attr, image_size)
    dtype_name = _check_dtype(dtype, format)
    opset = _check_opset(opset, format)
    confidence = check.real(confidence, "confidence")
    if format == "onnx":
        _require("onnx")
        _require("onnxscript")
    kind = attr.masker.config.encoder.kind
    bad = _untraceable_modules(_traced_modules(attr))
    if bad:
        raise InputError(
            f"the masker's encoder (kind {kind!r}) runs {', '.join(bad)}, which torch.export "
            "cannot trace: its forward checks (std == 0).any() in Python. Hint: build the "
            "classifier with torchvision.transforms.v2.Normalize, or a module computing "
            "(x - mean) / std, instead (same weights, same outputs).",
            argument="encoder",
        )
    attr._warn_if_untrained(stacklevel=3)
    device = _device(attr)
    attr.masker.to(device)
    classifier = attr.model if kind == "classifier" else None
    graph = _MaskGraph(attr.masker, classifier, confidence)
    c_in = attr.masker.config.encoder.in_chans
    generator = torch.Generator().manual_seed(0)
    images = torch.rand(2, c_in, *size, generator=generator).to(device)  # 2: batch 1 specialises
    classes = torch.arange(2).remainder(attr.num_classes).to(device)
    example = (images, classes)
    meta = _metadata(attr, size, dtype_name, confidence)
    with frozen_model(attr.model), eval_mode(attr.masker), torch.no_grad():
        program = _trace(graph, example, kind)
        if format == "torch_export":
            _save_torch_export(program, path, meta)
        else:
            _save_onnx(graph, program, example, path, meta, opset, dtype_name)
    return Path(path)


def read_export_metadata(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The metadata :func:`export_masker` wrote into an ONNX file or a ``.pt2`` program.

    Args:
        path: The exported file.

    Returns:
        The entries, their JSON values decoded (``num_classes`` an int, ``image_size`` a
        list, ...).

    Raises:
        InputError: ``path`` is not a file.
        ImportError: An ONNX file and no ``onnx`` package.
    """
    path = check.path_str(path, "path", "masker.onnx")
    if not os.path.isfile(path):
        raise InputError(f"no file at {path!r}.", argument="path")
    if path.lower().endswith(".pt2"):
        import zipfile

        with zipfile.ZipFile(path) as archive:
            name = next((n for n in archive.namelist() if n.endswith(PT2_METADATA)), None)
            raw = json.loads(archive.read(name)) if name else {}
    else:
        onnx = _require("onnx")
        model = onnx.load(path, load_external_data=False)
        raw = {p.key: p.value for p in model.metadata_props}

    def decode(value: str) -> Any:
        try:
            return json.loads(value)
        except ValueError:
            return value

    return {k: decode(v) for k, v in raw.items()}
