"""The masking model: encoder, feature filter, upsamplers and head (paper section 4, figure 4)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from typing import Any, Literal, NamedTuple, get_args

import torch
import torch.nn.functional as F
from torch import nn

from captum_realtime_mask import _checks as check
from captum_realtime_mask.errors import InputError
from captum_realtime_mask.masker.blocks import FeatureFilter, MaskHead, UpsampleMode, Upsampler
from captum_realtime_mask.masker.encoders import EncoderSpec, FeatureEncoder, build_encoder

__all__ = ["MaskerConfig", "MaskerOutput", "MaskingModel"]

Preset = Literal["paper", "light", "fast"]
Presence = Literal["competitive", "independent"]


@dataclass
class MaskerConfig:
    """Architecture of the masking model; saved as JSON beside the weights.

    Attributes:
        num_classes: Number of classes of the black box (size of the class embedding).
        encoder: How to build the encoder.
        first_width: Channels of the first (coarsest) upsampler; halved at each later block.
            None means a quarter of the channels of the filtered (deepest) encoder map, at
            least 32 (the ``paper`` preset sets 768, the paper's value).
        min_width: Lower bound when halving.
        blocks_per_upsampler: Bottleneck blocks in each upsampler (3 in the paper, 1 in its
            CIFAR variant).
        upsample: ``"transposed"`` (paper), ``"bilinear"`` (``light``), ``"reduce_bilinear"``
            (``fast``) or ``"pixelshuffle"``; see
            :class:`~captum_realtime_mask.masker.blocks.Upsampler`.
        mask_stride: Stride of the mask before the final bilinear resize (4 in the paper).
            None means the encoder's smallest stride, or 4 if that is larger (ViTs).
        filter_stride: Stride of the encoder map that the class filter gates and the
            decoder starts from. None means the deepest map (the paper). A finer map gives
            the decoder more spatial detail (at 64 px a ResNet's stride-16 map is 4x4); the
            deepest map then gets a filter of its own that scores the class's *presence*, and
            the mask is scaled by it (see ``presence``), so that classes absent from the image
            still get empty masks.
        presence: How that presence gate scores a class and applies to the mask (only with
            ``filter_stride``). ``"competitive"``: a softmax over all classes of their largest
            logit on the deepest map (see :meth:`FeatureFilter.presence_logit`), so a class
            scores low where another explains the image better, and it scales the mask's odds
            (``m' / (1 - m') = p * m / (1 - m)``), so that a confident decoder is not cut down by
            a moderate presence. ``"independent"``: the sigmoid of the class's own largest
            logit (the form of the paper's gate) multiplies the mask. Configurations saved
            without this field load as ``"independent"``.
        skip_filters: Gate every encoder map the decoder merges (its skip connections) with a
            class filter of its own, ``S_ij * sigmoid(S_ij^T C'_s)`` (eq. 7 at that scale),
            instead of only the map the decoder starts from. Without it the class enters the
            decoder only through the coarsest map (3 x 3 cells at 96 px), and the finer skip
            maps show every object of the image to it alike. Configurations saved without this
            field load as False.
        eps: Epsilon in the mask ratio.
    """

    num_classes: int
    encoder: EncoderSpec = field(default_factory=EncoderSpec)
    first_width: int | None = None
    min_width: int = 16
    blocks_per_upsampler: int = 1
    upsample: UpsampleMode = "bilinear"
    mask_stride: int | None = None
    filter_stride: int | None = None
    presence: Presence = "competitive"
    skip_filters: bool = False
    eps: float = 1e-6

    def __post_init__(self) -> None:
        def name(field: str) -> str:
            return f"MaskerConfig.{field}"

        self.num_classes = check.integer(self.num_classes, name("num_classes"), 1)
        if not isinstance(self.encoder, EncoderSpec):
            raise InputError(
                f"expected an EncoderSpec, got {check.describe(self.encoder)}.", name("encoder")
            )
        for f in ("first_width", "mask_stride", "filter_stride"):
            setattr(self, f, check.integer(getattr(self, f), name(f), 1, none_ok=True))
        self.min_width = check.integer(self.min_width, name("min_width"), 1)
        self.blocks_per_upsampler = check.integer(
            self.blocks_per_upsampler, name("blocks_per_upsampler"), 0
        )
        self.upsample = check.one_of(self.upsample, name("upsample"), get_args(UpsampleMode))
        self.presence = check.one_of(self.presence, "presence", get_args(Presence))
        self.skip_filters = check.flag(self.skip_filters, name("skip_filters"))
        self.eps = check.real(self.eps, name("eps"), 0, low_open=True)

    @classmethod
    def preset(cls, name: Preset, num_classes: int, encoder: EncoderSpec) -> MaskerConfig:
        """``"paper"``: 768 channels halving, 3 bottlenecks, transposed convs, mask at stride 4.

        ``"light"``: widths from the encoder, 1 bottleneck, bilinear upsampling (for small
        inputs and CPUs). ``"fast"``: ``light`` with ``"reduce_bilinear"`` upsampling, whose
        decoder costs a sixth as much on wide encoders (near the encoder's speed at 224 px).
        """
        if name == "paper":
            return cls(num_classes, encoder, 768, 16, 3, "transposed", 4)
        if name == "light":
            return cls(num_classes, encoder, None, 16, 1, "bilinear", None)
        if name == "fast":
            return cls(num_classes, encoder, None, 16, 1, "reduce_bilinear", None)
        raise InputError(f"expected 'paper', 'light' or 'fast', got {name!r}.", argument="preset")

    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON form."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> MaskerConfig:
        """Inverse of :meth:`to_dict`."""
        data = dict(data)
        data["encoder"] = EncoderSpec.from_dict(data["encoder"])
        data.setdefault("presence", "independent")  # saved before the option existed
        data.setdefault("skip_filters", False)  # likewise
        return cls(**data)


class MaskerOutput(NamedTuple):
    """What one forward pass of the masker returns.

    Attributes:
        mask: ``(N, 1, H, W)`` at input resolution, values in ``[0, 1]``.
        small_mask: ``(N, 1, H / s, W / s)`` at the masker's resolution (TV and area use it).
        gate_logit: ``(N,)`` largest feature-filter logit of each image, or with a presence
            gate (``filter_stride``) the logit of the class's presence.
    """

    mask: torch.Tensor
    small_mask: torch.Tensor
    gate_logit: torch.Tensor


class MaskingModel(nn.Module):
    """U-Net masker: ``mask = M(image, class)`` in one forward pass.

    Args:
        config: The architecture. Kept as ``self.config``, except that where the encoder takes
            other input channels than ``config.encoder.in_chans`` (a grayscale classifier as
            the encoder), ``self.config`` is a copy that records them.
        classifier: The black box, needed when ``config.encoder.kind == "classifier"``.
        encoder_module: The user's encoder module for ``kind == "module"``.

    Example:
        >>> spec = EncoderSpec(kind="small_cnn", width=8, min_reduction=2)
        >>> masker = MaskingModel(MaskerConfig(num_classes=3, encoder=spec))
        >>> out = masker(torch.rand(2, 3, 32, 32), torch.tensor([0, 1]))
        >>> tuple(out.mask.shape), tuple(out.small_mask.shape)
        ((2, 1, 32, 32), (2, 1, 16, 16))
    """

    def __init__(
        self,
        config: MaskerConfig,
        classifier: nn.Module | None = None,
        encoder_module: nn.Module | None = None,
    ) -> None:
        super().__init__()
        config = replace(config)  # a copy, checked again: fields may have been set since
        self.encoder: FeatureEncoder = build_encoder(config.encoder, classifier, encoder_module)
        in_chans = getattr(self.encoder, "in_chans", config.encoder.in_chans)
        if in_chans != config.encoder.in_chans:
            # The classifier decides its backbone's channels (e.g. 1 for grayscale): record
            # them on a copy, so input checks and the saved config agree with the encoder.
            config = replace(config, encoder=replace(config.encoder, in_chans=in_chans))
        self.config = config
        channels, strides = self.encoder.channels, self.encoder.reductions
        mask_stride = config.mask_stride or min(min(strides), 4)
        if mask_stride > max(strides) or mask_stride & (mask_stride - 1):
            raise InputError(
                "expected a power of two <= the encoder's largest stride "
                f"{max(strides)}, got {mask_stride}.",
                argument="mask_stride",
            )
        self.mask_stride = mask_stride
        filter_stride = config.filter_stride or max(strides)
        if filter_stride not in strides or filter_stride < mask_stride:
            raise InputError(
                f"expected one of the encoder's strides {list(strides)} that is "
                f">= the mask stride {mask_stride}, got {config.filter_stride}.",
                argument="filter_stride",
            )
        self.filter_index = strides.index(filter_stride)
        self.filter = FeatureFilter(channels[self.filter_index], config.num_classes)
        # With a finer filter map, the deepest map decides whether the class is present.
        deepest = self.filter_index == len(strides) - 1
        self.presence = None if deepest else FeatureFilter(channels[-1], config.num_classes)
        width = config.first_width or max(32, channels[self.filter_index] // 4)
        skips = dict(zip(strides, channels))
        ups, cin, stride = [], channels[self.filter_index], filter_stride
        self.skip_index: list[int | None] = []
        while stride > mask_stride:
            stride //= 2
            skip_ch = skips.get(stride, 0)
            ups.append(Upsampler(cin, skip_ch, width, config.blocks_per_upsampler, config.upsample))
            self.skip_index.append(strides.index(stride) if stride in skips else None)
            cin, width = width, max(config.min_width, width // 2)
        self.upsamplers = nn.ModuleList(ups)
        # One class filter per merged skip map (keyed by its index), if asked for.
        self.skip_filter = nn.ModuleDict(
            {
                str(i): FeatureFilter(channels[i], config.num_classes)
                for i in self.skip_index
                if i is not None and config.skip_filters
            }
        )
        self.head = MaskHead(cin, config.eps)

    @property
    def max_stride(self) -> int:
        """Inputs' height and width must be divisible by this."""
        return self.encoder.max_stride

    def forward(
        self, inputs: torch.Tensor, target: torch.Tensor, confidence: float = 0.0
    ) -> MaskerOutput:
        """Compute masks for images and class selectors.

        Args:
            inputs: Images ``(N, C, H, W)`` in the classifier's input space.
            target: Class selectors, a LongTensor ``(N,)``.
            confidence: Offset added to the feature filter's gate logits.

        Returns:
            The :class:`MaskerOutput`.
        """
        return self.decode(self.encode(inputs), target, confidence, inputs.shape[-2:])

    def encode(self, inputs: torch.Tensor) -> list[torch.Tensor]:
        """The encoder's multi-scale maps of the images, finest first (class-independent).

        Run it once and :meth:`decode` the maps for as many class selectors as needed:
        ``decode(encode(x), t)`` equals ``forward(x, t)`` bit for bit.

        Args:
            inputs: Images ``(N, C, H, W)`` in the classifier's input space.

        Returns:
            One ``(N, C_i, H / s_i, W / s_i)`` map per stride ``s_i`` of
            ``encoder.reductions``.
        """
        return self.encoder(inputs)

    def decode(
        self,
        maps: list[torch.Tensor],
        target: torch.Tensor,
        confidence: float = 0.0,
        size: tuple[int, int] | torch.Size | None = None,
    ) -> MaskerOutput:
        """Everything after the encoder: filter, upsamplers, head and the resize to ``size``.

        Args:
            maps: The encoder's maps, finest first (what :meth:`encode` returns; to decode
                several selectors per image, repeat each map along the batch).
            target: Class selectors ``(N,)``, one per row of the maps.
            confidence: Offset added to the gate logits.
            size: Height and width of the returned mask. None means the masker's mask grid
                times its stride, the input size for inputs divisible by :attr:`max_stride`.

        Returns:
            The :class:`MaskerOutput`.

        Example:
            >>> spec = EncoderSpec(kind="small_cnn", width=8, min_reduction=2)
            >>> masker = MaskingModel(MaskerConfig(num_classes=3, encoder=spec)).eval()
            >>> x, t = torch.rand(2, 3, 32, 32), torch.tensor([0, 2])
            >>> torch.equal(masker.decode(masker.encode(x), t).mask, masker(x, t).mask)
            True
        """
        x, gate = self.filter(maps[self.filter_index], target, confidence)
        if self.presence is None:
            gate_logit = gate.flatten(1).amax(1)
        elif self.config.presence == "competitive":
            gate_logit = self.presence.presence_logit(maps[-1], target, confidence)
        else:
            gate_logit = self.presence.gate_logits(maps[-1], target, confidence).flatten(1).amax(1)
        for up, idx in zip(self.upsamplers, self.skip_index):
            x = up(x, self._skip(maps, idx, target, confidence))
        small = self.head(x)
        if self.presence is not None:
            small = self._apply_presence(small, torch.sigmoid(gate_logit.float()))
        if size is None:
            size = (small.shape[-2] * self.mask_stride, small.shape[-1] * self.mask_stride)
        mask = F.interpolate(small, size=size, mode="bilinear", align_corners=False)
        return MaskerOutput(mask.clamp(0, 1), small, gate_logit)

    def _skip(
        self, maps: list[torch.Tensor], idx: int | None, target: torch.Tensor, confidence: float
    ) -> torch.Tensor | None:
        """The encoder map merged at a decoder scale, class-gated with ``skip_filters``."""
        if idx is None:
            return None
        if str(idx) not in self.skip_filter:
            return maps[idx]
        return self.skip_filter[str(idx)](maps[idx], target, confidence)[0]

    def _apply_presence(self, small: torch.Tensor, presence: torch.Tensor) -> torch.Tensor:
        """Scale the mask by the class presence ``(N,)``: its odds if competitive, else itself."""
        p = presence.view(-1, 1, 1, 1)
        if self.config.presence == "independent":
            return small * p
        # Odds scaling: m' / (1 - m') = p * m / (1 - m). A confident decoder keeps its mask
        # when the presence is moderate; an absent class (p near 0) still empties it.
        kept = p * small
        return kept / (kept + 1 - small).clamp_min(self.config.eps)
