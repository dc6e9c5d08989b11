"""Encoders: multi-scale feature maps from timm, torchvision, the classifier itself, or a small CNN.

Every encoder is a :class:`FeatureEncoder`: ``forward(x)`` returns a list of NCHW maps ordered
from fine to coarse, one per stride, and ``channels`` / ``reductions`` describe them. The
decoder is sized from this metadata, never from hard-coded channel counts.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from typing import Any, Literal, get_args

import torch
from torch import nn

from captum_realtime_mask._checks import describe, flag, integer, is_int, one_of
from captum_realtime_mask._model_state import floating_dtype
from captum_realtime_mask.errors import InputError

__all__ = [
    "EncoderSpec",
    "FeatureEncoder",
    "SmallCNN",
    "build_encoder",
]

EncoderKind = Literal["classifier", "timm", "torchvision", "small_cnn", "module"]


@dataclass
class EncoderSpec:
    """How to build the masker's encoder; saved in the masker's JSON config.

    Every encoder receives the masker's input unchanged: images exactly as the classifier
    takes them. ``"classifier"`` runs a leading preprocessing module of the classifier (for
    example the ``Normalize`` of ``nn.Sequential(Normalize(mean, std), net)``) because it is
    part of the classifier. The named encoders (``"timm"``, ``"torchvision"``) do **not**
    normalise their input: with ``pretrained=True`` their ImageNet weights expect ImageNet-
    normalised images, which they get when the classifier itself takes normalised images (the
    usual timm / torchvision transforms). If your classifier takes ``[0, 1]`` images and
    normalises inside, give a pretrained encoder its own normalisation as a module encoder,
    e.g. ``encoder=nn.Sequential(Normalize(mean, std), timm.create_model("resnet50",
    pretrained=True, features_only=True))`` with ``pretrained=True`` (which freezes it; pass
    the module again to ``load``), or use ``encoder="classifier"``.

    Attributes:
        kind: ``"classifier"`` (the black box's own backbone, frozen; shares its weights),
            ``"timm"`` (a timm model name through ``features_only``), ``"torchvision"`` (a
            torchvision classification model name through its feature extractor),
            ``"small_cnn"`` (the paper's CIFAR encoder, section 5.2) or ``"module"`` (a
            user-supplied module returning a list of maps; pass it again when loading).
            ``"classifier"`` looks inside ``nn.DataParallel``, ``DistributedDataParallel`` and
            ``torch.compile`` wrappers.
        name: Model name for ``timm`` and ``torchvision``.
        pretrained: Load ImageNet weights (needs a network; timm / torchvision download them).
            The input is not normalised for them (see above).
        frozen: Keep the encoder's weights fixed and its BatchNorm in eval mode. None means
            frozen for ``classifier`` and pretrained encoders, trained otherwise.
        in_chans: Input channels. For ``"classifier"`` the classifier decides: the masker
            reads the input channels of its first ``Conv2d`` (this value is used only for a
            classifier without one) and records them in its configuration.
        min_reduction: Smallest stride of the maps fed to the decoder (the paper's scale 2 is 4).
            Not used by ``"small_cnn"``, which always returns its three maps (strides 2, 4, 8).
        max_reduction: Largest stride used (the paper's scale 5 is 32). Not used by
            ``"small_cnn"`` either.
        width: Base width of ``small_cnn``.
        return_nodes: Optional node names for torchvision's feature extractor (else probed).
        probe_size: Side of the probe image used to read strides where there is no metadata.
            A model that takes a single image size (torchvision's ViTs, whose ``image_size``
            attribute fixes it) is probed at that size instead.
        kwargs: Extra keyword arguments for ``timm.create_model`` / torchvision's builder.

    Raises:
        InputError: A field has the wrong type or is out of range (for example a stride
            range with ``max_reduction < min_reduction``, or a named kind without its name).
    """

    kind: EncoderKind = "classifier"
    name: str | None = None
    pretrained: bool = False
    frozen: bool | None = None
    in_chans: int = 3
    min_reduction: int = 4
    max_reduction: int = 32
    width: int = 32
    return_nodes: list[str] | None = None
    probe_size: int = 224
    kwargs: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        def name(attr: str) -> str:
            return f"EncoderSpec.{attr}"

        self.kind = one_of(self.kind, name("kind"), get_args(EncoderKind))
        if self.name is not None and not isinstance(self.name, str):
            raise InputError(
                f"expected a model name (str), got {describe(self.name)}.", name("name")
            )
        if self.kind in ("timm", "torchvision") and not self.name:
            example = "resnet18" if self.kind == "timm" else "resnet50"
            raise InputError(
                f"kind {self.kind!r} needs the model's name, e.g. "
                f"EncoderSpec(kind={self.kind!r}, name={example!r}).",
                name("name"),
            )
        self.pretrained = flag(self.pretrained, name("pretrained"))
        self.frozen = None if self.frozen is None else flag(self.frozen, name("frozen"))
        for attr in ("in_chans", "min_reduction", "width", "probe_size"):
            setattr(self, attr, integer(getattr(self, attr), name(attr), 1))
        self.max_reduction = integer(self.max_reduction, name("max_reduction"), self.min_reduction)
        if self.return_nodes is not None:
            nodes = self.return_nodes
            if not isinstance(nodes, (list, tuple)) or not all(isinstance(n, str) for n in nodes):
                raise InputError(
                    f"expected a list of node names (str) or None, got {describe(nodes)}.",
                    name("return_nodes"),
                )
            self.return_nodes = list(nodes)
        if not isinstance(self.kwargs, Mapping):
            raise InputError(
                f"expected a dict of keyword arguments, got {describe(self.kwargs)}.",
                name("kwargs"),
            )
        self.kwargs = dict(self.kwargs)

    @property
    def is_frozen(self) -> bool:
        """Whether the encoder's weights stay fixed during fit()."""
        if self.frozen is not None:
            return self.frozen
        return self.kind == "classifier" or self.pretrained

    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON form."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> EncoderSpec:
        """Inverse of :meth:`to_dict`."""
        return cls(**data)


class FeatureEncoder(nn.Module):
    """Base of all encoders: maps ordered fine to coarse with their channels and strides.

    Subclasses set ``channels`` and ``reductions`` (lists of ints, one per returned map),
    ``in_chans`` (the input channels they take; 3 unless set) and, for a network that takes
    one image size only, ``input_size`` (its side; None: any size) with ``size_hint`` (how to
    fit the images to it). A frozen encoder stays in eval mode whatever ``train()`` is asked,
    and runs without building a graph.
    """

    channels: list[int]
    reductions: list[int]
    in_chans: int = 3
    input_size: int | None = None
    size_hint: str = ""

    def __init__(self, frozen: bool) -> None:
        super().__init__()
        self.frozen = frozen

    def train(self, mode: bool = True) -> FeatureEncoder:
        """Set training mode; a frozen encoder always stays in eval mode."""
        return super().train(False if self.frozen else mode)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Return the feature maps, fine to coarse, as NCHW tensors.

        Raises:
            InputError: The encoder takes one image size (``input_size``) and ``x`` has another.
        """
        size = self.input_size
        if size is not None and tuple(x.shape[-2:]) != (size, size):
            raise InputError(
                f"the masker's encoder takes {size}x{size} images only, got images of "
                f"{x.shape[-2]}x{x.shape[-1]} pixels. {self.size_hint}",
                argument="inputs",
            )
        if self.frozen:
            with torch.no_grad():
                return self.features(x)
        return self.features(x)

    def features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Compute the maps (implemented by subclasses)."""
        raise NotImplementedError

    @property
    def max_stride(self) -> int:
        """The largest stride; inputs must be divisible by it."""
        return max(self.reductions)


@contextmanager
def eval_mode(module: nn.Module) -> Iterator[nn.Module]:
    """Put every submodule in eval mode; restore each one's own flag afterwards, even on error."""
    flags = [(m, m.training) for m in module.modules()]
    module.eval()
    try:
        yield module
    finally:
        for m, flag in flags:
            m.training = flag


def _select_scales(reductions: list[int], min_reduction: int, max_reduction: int) -> list[int]:
    """Indices of the last map at each distinct stride within ``[min, max]`` (fine to coarse)."""
    last: dict[int, int] = {}
    for i, r in enumerate(reductions):
        if min_reduction <= r <= max_reduction:
            last[r] = i
    if not last:
        raise InputError(
            f"no feature map has a stride between min_reduction={min_reduction} and "
            f"max_reduction={max_reduction} (strides found: {reductions}). Hint: widen the range "
            "in EncoderSpec.",
            argument="encoder",
        )
    return [last[r] for r in sorted(last)]


def _to_nchw(maps: list[torch.Tensor], channels: list[int]) -> list[torch.Tensor]:
    """Turn NHWC maps (e.g. Swin) into NCHW using the known channel counts."""
    out = []
    for m, c in zip(maps, channels):
        if m.dim() == 4 and m.shape[1] != c and m.shape[-1] == c:
            m = m.permute(0, 3, 1, 2)
        out.append(m.contiguous())
    return out


class TimmFeatures(FeatureEncoder):
    """A timm model created with ``features_only=True`` (its own copy of the weights)."""

    def __init__(self, spec: EncoderSpec) -> None:
        import timm

        super().__init__(spec.is_frozen)
        self.in_chans = spec.in_chans
        probe = timm.create_model(
            spec.name, pretrained=False, features_only=True, in_chans=spec.in_chans, **spec.kwargs
        )
        indices = _select_scales(
            probe.feature_info.reduction(), spec.min_reduction, spec.max_reduction
        )
        del probe
        self.net = timm.create_model(
            spec.name,
            pretrained=spec.pretrained,
            features_only=True,
            out_indices=tuple(indices),
            in_chans=spec.in_chans,
            **spec.kwargs,
        )
        self.channels = list(self.net.feature_info.channels())
        self.reductions = list(self.net.feature_info.reduction())
        if self.frozen:
            self.net.requires_grad_(False)
            self.net.eval()

    def features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Maps from timm's feature wrapper, normalised to NCHW."""
        return _to_nchw(list(self.net(x)), self.channels)


class _Unregistered:
    """Holds a module without registering it, so the masker never moves, saves or retrains it."""

    def __init__(self, module: nn.Module) -> None:
        self.module = module


class ClassifierBackbone(FeatureEncoder):
    """The black box's own backbone, frozen and sharing its weights (nothing is copied).

    The classifier is held outside the module tree: ``masker.to()``, ``train()`` and
    ``state_dict()`` never touch it, and building the encoder leaves every module's
    ``training`` flag, ``requires_grad`` and hooks as they were. timm classifiers are read
    through ``forward_intermediates``; others through a torchvision feature extractor that
    shares the classifier's modules. Either way the backbone runs in eval mode, restored
    afterwards. ``nn.DataParallel`` / ``DistributedDataParallel`` / ``torch.compile`` wrappers
    are looked through. The input channels are those of the classifier's first ``Conv2d``.
    """

    def __init__(self, classifier: nn.Module, spec: EncoderSpec) -> None:
        super().__init__(True)
        self._classifier = _Unregistered(classifier)
        model = _unwrap(classifier)
        self._model = _Unregistered(model)
        self.in_chans = _first_conv_in_chans(model) or spec.in_chans
        self._extractor: _Unregistered | None = None
        self._prefix, timm_model = _split_timm(model)
        if timm_model is not None:
            self._timm = _Unregistered(timm_model)
            reductions = [int(f["reduction"]) for f in timm_model.feature_info]
            channels = [int(f["num_chs"]) for f in timm_model.feature_info]
            self.indices = _select_scales(reductions, spec.min_reduction, spec.max_reduction)
            self.channels = [channels[i] for i in self.indices]
            self.reductions = [reductions[i] for i in self.indices]
            self._mode = "timm"
        else:
            extractor, channels, reductions = _torchvision_extractor(
                model, spec, self.in_chans, "model", "the classifier's backbone"
            )
            self._extractor = _Unregistered(extractor)
            self.channels, self.reductions = channels, reductions
            self._mode = "fx"
            self.input_size = _fixed_input_size(model)
            if self.input_size is not None:
                side = f"{self.input_size}x{self.input_size}"
                self.size_hint = (
                    f"Hint: resize the images to {side} pixels, as the classifier needs."
                )

    @property
    def classifier(self) -> nn.Module:
        """The wrapped classifier."""
        return self._classifier.module

    def features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Maps of the classifier's backbone (always in eval mode, restored afterwards).

        A classifier converted to another precision (``model.half()``, ``model.double()``)
        gets ``x`` in its own dtype, and the maps come back in ``x``'s.
        """
        module = self._model.module if self._mode == "timm" else self._extractor.module
        dtype = x.dtype
        own = floating_dtype(self._model.module)
        cast = own is not None and own != dtype and not torch.is_autocast_enabled(x.device.type)
        if cast:
            x = x.to(own)
        with eval_mode(module):
            if self._mode == "timm":
                for pre in self._prefix:
                    x = pre(x)
                maps = self._timm.module.forward_intermediates(
                    x, indices=self.indices, intermediates_only=True
                )
            else:
                maps = list(module(x).values())
        maps = _to_nchw(list(maps), self.channels)
        return [m.to(dtype) for m in maps] if cast else maps


def _is_timm(model: nn.Module) -> bool:
    return hasattr(model, "forward_intermediates") and hasattr(model, "feature_info")


def _split_timm(model: nn.Module) -> tuple[list[nn.Module], nn.Module | None]:
    """Split a timm classifier, or ``nn.Sequential(preprocessing..., timm_model)``, in two.

    Returns the preprocessing modules to run first and the timm model, or ``([], None)``.
    """
    if _is_timm(model):
        return [], model
    if isinstance(model, nn.Sequential) and len(model) > 0 and _is_timm(model[-1]):
        return list(model)[:-1], model[-1]
    return [], None


def _unwrap(model: nn.Module) -> nn.Module:
    """The model inside ``nn.DataParallel``, ``DistributedDataParallel`` or ``torch.compile``."""
    from torch.nn.parallel import DataParallel, DistributedDataParallel

    while True:
        if isinstance(model, (DataParallel, DistributedDataParallel)):
            model = model.module
        elif isinstance(getattr(model, "_orig_mod", None), nn.Module):  # torch.compile
            model = model._orig_mod
        else:
            return model


def _first_conv_in_chans(model: nn.Module) -> int | None:
    """Input channels of the model's first ``Conv2d`` (its stem), or None without one.

    timm's ``pretrained_cfg["input_size"]`` is not used: it stays ``(3, ...)`` for a model
    created with ``in_chans=1``.
    """
    for m in model.modules():
        if isinstance(m, nn.Conv2d) and m.in_channels > 0:  # 0: an uninitialised lazy conv
            return int(m.in_channels)
    return None


def _fixed_input_size(model: nn.Module) -> int | None:
    """The one image side ``model`` takes, where it declares one; None otherwise.

    torchvision's Vision Transformers assert that their input is ``image_size`` pixels square
    (224 unless built with another ``image_size``), so a probe at any other size fails. The
    first module (``model`` itself first) with a positive int ``image_size`` attribute decides,
    which also finds a ViT inside ``nn.Sequential(Normalize(...), vit)``.

    Example:
        >>> import torchvision
        >>> vit = torchvision.models.VisionTransformer(32, 8, 1, 2, 16, 32, num_classes=3)
        >>> _fixed_input_size(nn.Sequential(nn.Identity(), vit))
        32
    """
    for module in model.modules():
        size = getattr(module, "image_size", None)
        if is_int(size) and size > 0:
            return int(size)
    return None


def _device_of(module: nn.Module) -> torch.device:
    param = next(module.parameters(), None)
    return param.device if param is not None else torch.device("cpu")


def _probe_strides(
    module: nn.Module,
    in_chans: int,
    size: int,
    names: list[str] | None = None,
    label: str = "model",
) -> tuple[list[str], list[int], list[int]]:
    """Run one probe image and record, per module, the channels and stride of 4-D outputs.

    Hooks are removed and the module's mode restored even if the probe fails; a failing
    probe raises an :class:`InputError` naming ``label``.
    """
    records: dict[str, tuple[int, int, int]] = {}
    order: list[str] = []
    handles = []

    def make_hook(name: str):
        def hook(_mod: nn.Module, _inp: Any, out: Any) -> None:
            if isinstance(out, torch.Tensor) and out.dim() == 4 and out.shape[-1] > 1:
                stride = size // out.shape[-1]
                if stride * out.shape[-1] == size:
                    records[name] = (int(out.shape[1]), stride, len(order))
                    order.append(name)

        return hook

    for name, sub in module.named_modules():
        if name and (names is None or name in names):
            handles.append(sub.register_forward_hook(make_hook(name)))
    try:
        with eval_mode(module), torch.no_grad():
            module(torch.zeros(1, in_chans, size, size, device=_device_of(module)))
    except Exception as exc:  # the probe image does not suit the model
        raise InputError(
            f"a probe image of shape (1, {in_chans}, {size}, {size}), used to find the "
            f"feature maps, failed to pass through it ({type(exc).__name__}: {exc}). Hint: set "
            "EncoderSpec(probe_size=...) to a size it accepts, or use encoder='small_cnn' or a "
            "named encoder such as 'resnet18' (timm) or 'torchvision:resnet18'.",
            argument=label,
        ) from exc
    finally:
        for h in handles:
            h.remove()
    return order, [records[n][0] for n in order], [records[n][1] for n in order]


def _leaf_modules(model: nn.Module) -> list[type]:
    """Module types torch.fx must call rather than trace: torchvision's transforms.

    A ``torchvision.transforms.Normalize`` (v1 or v2) checks its input's type in Python, which
    a tracer's proxy fails; as a leaf it is called like any layer.
    """
    found = {type(m) for m in model.modules()}
    return [t for t in found if t.__module__.startswith("torchvision.transforms")]


def _torchvision_extractor(
    model: nn.Module, spec: EncoderSpec, in_chans: int, label: str, what: str
) -> tuple[nn.Module, list[int], list[int]]:
    """A torchvision feature extractor over ``model``, with probed channels and strides.

    The extractor shares ``model``'s modules. Building it (torchvision traces in train and
    eval mode) leaves every module's ``training`` flag as it was; the extractor itself is
    in eval mode. A model that takes one image size only (:func:`_fixed_input_size`) is
    probed at that size, else at ``spec.probe_size``.

    Args:
        model: The network to read maps from.
        spec: Strides, return nodes and probe size.
        in_chans: Channels of the probe image.
        label: The argument named in errors (``"model"`` or ``"encoder"``).
        what: The network, in words, for errors.
    """
    from torchvision.models.feature_extraction import create_feature_extractor

    size = _fixed_input_size(model) or spec.probe_size
    modes = [(m, m.training) for m in model.modules()]
    try:
        order, channels, reductions = _probe_strides(
            model, in_chans, size, spec.return_nodes, label
        )
        if spec.return_nodes is None:
            if not any(spec.min_reduction <= r <= spec.max_reduction for r in reductions):
                raise InputError(
                    f"{what} could not be split into feature maps: a probe at "
                    f"{size}px found no layer output with a whole stride between "
                    f"min_reduction={spec.min_reduction} and max_reduction={spec.max_reduction} "
                    f"(strides found: {sorted(set(reductions))}). Hint: give the masker an "
                    "encoder of its own: encoder='small_cnn', or a named encoder such as "
                    "'resnet18' (timm) or 'torchvision:resnet18' (pretrained=False without a "
                    "network); or pass an EncoderSpec with return_nodes or another probe_size.",
                    argument=label,
                )
            # The last module (in completion order) at each stride is the output of that stage.
            picked = _select_scales(reductions, spec.min_reduction, spec.max_reduction)
            nodes = [order[i] for i in picked]
        else:
            nodes = list(spec.return_nodes)
            missing = [n for n in nodes if n not in order]
            if missing:
                raise InputError(
                    f"{missing} produced no 4-D feature map in a probe at "
                    f"{size}px. Hint: list node names with "
                    "torchvision.models.feature_extraction.get_graph_node_names(model).",
                    argument="encoder.return_nodes",
                )
            picked = [order.index(n) for n in nodes]
        if not nodes:
            raise InputError(
                "found no convolutional feature maps to use as the masker's encoder. "
                "Hint: pass encoder='resnet50' (timm) or an EncoderSpec with return_nodes.",
                argument="model",
            )
        try:
            extractor = create_feature_extractor(
                model, return_nodes=nodes, tracer_kwargs={"leaf_modules": _leaf_modules(model)}
            )
        except Exception as exc:  # torch.fx cannot trace every model
            raise InputError(
                f"torchvision's feature extractor could not trace {what} ({exc}). "
                "Hint: use a timm model, encoder='small_cnn', or pass a module that returns a "
                "list of feature maps.",
                argument=label,
            ) from exc
    finally:
        # create_feature_extractor switches the (shared) modules to train, then eval mode.
        for m, flag in modes:
            m.training = flag
    extractor.training = False  # only the extractor's own flag: it picks the eval graph
    return extractor, [channels[i] for i in picked], [reductions[i] for i in picked]


class TorchvisionFeatures(FeatureEncoder):
    """A torchvision classification model (its own weights) through its feature extractor."""

    def __init__(self, spec: EncoderSpec) -> None:
        import torchvision

        super().__init__(spec.is_frozen)
        self.in_chans = spec.in_chans
        weights = "DEFAULT" if spec.pretrained else None
        model = torchvision.models.get_model(spec.name, weights=weights, **spec.kwargs)
        self.net, self.channels, self.reductions = _torchvision_extractor(
            model, spec, spec.in_chans, "encoder", f"torchvision model {spec.name!r}"
        )
        self.input_size = _fixed_input_size(model)
        if self.input_size is not None:
            self.size_hint = (
                f"Hint: resize the images to {self.input_size}x{self.input_size} pixels, or (for "
                "an encoder trained from scratch) build it for their side S, which its patch "
                f"size must divide: EncoderSpec(kind='torchvision', name={spec.name!r}, "
                "kwargs={'image_size': S})."
            )
        self.net.eval()  # its own copy of the weights: eval until the masker trains it
        if self.frozen:
            self.net.requires_grad_(False)

    def features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Maps from the traced extractor."""
        return list(self.net(x).values())


def _conv_bn(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)
    )


class SmallCNN(FeatureEncoder):
    """The paper's CIFAR-10 encoder (section 5.2): 3 down-sampling blocks of 5 conv layers.

    Block ``k`` halves the resolution with its first conv, so the maps have strides 2, 4, 8
    and widths ``width``, ``2 * width``, ``4 * width``. All three always go to the decoder:
    :class:`EncoderSpec`'s ``min_reduction`` / ``max_reduction`` do not apply (saved maskers
    hold all three maps whatever those fields say).

    Example:
        >>> enc = SmallCNN(width=8)
        >>> [tuple(m.shape) for m in enc(torch.zeros(1, 3, 32, 32))]
        [(1, 8, 16, 16), (1, 16, 8, 8), (1, 32, 4, 4)]
    """

    def __init__(self, in_chans: int = 3, width: int = 32, frozen: bool = False) -> None:
        super().__init__(frozen)
        self.in_chans = in_chans
        self.channels = [width, 2 * width, 4 * width]
        self.reductions = [2, 4, 8]
        blocks = []
        cin = in_chans
        for cout in self.channels:
            layers = [_conv_bn(cin, cout, 2)] + [_conv_bn(cout, cout) for _ in range(4)]
            blocks.append(nn.Sequential(*layers))
            cin = cout
        self.blocks = nn.ModuleList(blocks)

    def features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Output of each block."""
        maps = []
        for block in self.blocks:
            x = block(x)
            maps.append(x)
        return maps


class ModuleFeatures(FeatureEncoder):
    """A user module that returns a list (or dict) of NCHW maps; strides read by a probe."""

    def __init__(self, module: nn.Module, spec: EncoderSpec) -> None:
        super().__init__(spec.is_frozen)
        self.in_chans = spec.in_chans
        self.net = module
        size = _fixed_input_size(module) or spec.probe_size
        probe = torch.zeros(1, spec.in_chans, size, size, device=_device_of(module))
        with eval_mode(module), torch.no_grad():
            out = self._as_list(module(probe))
        if not out or any(m.dim() != 4 for m in out):
            raise InputError(
                "a custom encoder module must return a list of 4-D (N, C, H, W) "
                f"feature maps; got {[tuple(m.shape) for m in out]}.",
                argument="encoder",
            )
        reductions = [size // m.shape[-1] for m in out]
        self.indices = _select_scales(reductions, spec.min_reduction, spec.max_reduction)
        self.channels = [int(out[i].shape[1]) for i in self.indices]
        self.reductions = [reductions[i] for i in self.indices]
        if self.frozen:
            self.net.requires_grad_(False)

    @staticmethod
    def _as_list(out: Any) -> list[torch.Tensor]:
        if isinstance(out, dict):
            return list(out.values())
        if isinstance(out, torch.Tensor):
            return [out]
        return list(out)

    def features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The selected maps of the module's output."""
        out = self._as_list(self.net(x))
        return [out[i] for i in self.indices]


def build_encoder(
    spec: EncoderSpec, classifier: nn.Module | None = None, module: nn.Module | None = None
) -> FeatureEncoder:
    """Build the encoder an :class:`EncoderSpec` describes.

    Args:
        spec: What to build.
        classifier: The black box; required for ``kind="classifier"``.
        module: The user's encoder module; required for ``kind="module"``.

    Returns:
        A :class:`FeatureEncoder`.

    Example:
        >>> enc = build_encoder(EncoderSpec(kind="timm", name="test_resnet"))
        >>> enc.reductions
        [4, 8, 16, 32]
    """
    if spec.kind == "classifier":
        if classifier is None:
            raise InputError("kind 'classifier' needs the classifier model.", argument="encoder")
        return ClassifierBackbone(classifier, spec)
    if spec.kind == "timm":
        return TimmFeatures(spec)
    if spec.kind == "torchvision":
        return TorchvisionFeatures(spec)
    if spec.kind == "small_cnn":
        return SmallCNN(spec.in_chans, spec.width, frozen=bool(spec.frozen))
    if spec.kind == "module":
        if module is None:
            raise InputError(
                "kind 'module' needs the encoder module (pass encoder=<module> again "
                "when loading).",
                argument="encoder",
            )
        return ModuleFeatures(module, spec)
    raise InputError(
        "expected one of 'classifier', 'timm', 'torchvision', 'small_cnn', "
        f"'module'; got {spec.kind!r}.",
        argument="encoder.kind",
    )
