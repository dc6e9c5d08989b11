"""Decoder blocks of the masking model: feature filter, upsampler, bottleneck and mask head."""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn

__all__ = ["Bottleneck", "FeatureFilter", "MaskHead", "Upsampler"]

UpsampleMode = Literal["transposed", "bilinear", "reduce_bilinear", "pixelshuffle"]


class FeatureFilter(nn.Module):
    """Class-selective gate on the deepest map: ``Y_ij = X_ij * sigmoid(X_ij^T C_s)`` (eq. 7).

    The dot product is divided by ``sqrt(channels)`` so that its scale does not grow with the
    encoder's width (a constant rescaling of the learned embedding ``C``). ``confidence`` is
    added to every gate logit at inference: positive values let more of the image through,
    negative values make the mask stricter (the authors' release exposes the same offset).

    Example:
        >>> f = FeatureFilter(channels=4, num_classes=3)
        >>> y, gate = f(torch.ones(2, 4, 5, 5), torch.tensor([0, 2]))
        >>> tuple(y.shape), tuple(gate.shape)
        ((2, 4, 5, 5), (2, 1, 5, 5))
    """

    def __init__(self, channels: int, num_classes: int) -> None:
        super().__init__()
        self.embedding = nn.Embedding(num_classes, channels)
        nn.init.normal_(self.embedding.weight, std=1.0)
        self.scale = channels**-0.5

    def forward(
        self, features: torch.Tensor, target: torch.Tensor, confidence: float = 0.0
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Gate the map; returns the filtered map and the gate logits ``(N, 1, H, W)``."""
        logits = self.gate_logits(features, target, confidence)
        return features * torch.sigmoid(logits), logits

    def gate_logits(
        self, features: torch.Tensor, target: torch.Tensor, confidence: float = 0.0
    ) -> torch.Tensor:
        """The gate logits ``X_ij^T C_s / sqrt(channels) + confidence``, ``(N, 1, H, W)``."""
        emb = self.embedding(target).to(features.dtype)
        logits = torch.einsum("nchw,nc->nhw", features, emb).unsqueeze(1) * self.scale
        return logits + confidence

    def presence_logit(
        self, features: torch.Tensor, target: torch.Tensor, confidence: float = 0.0
    ) -> torch.Tensor:
        """Class-competitive presence of ``target``, as a logit ``(N,)``.

        Every class ``k`` scores ``z_k = max_ij X_ij^T C_k / sqrt(channels)``; the presence of
        ``s`` is ``softmax(z)_s``, returned as its logit ``z_s - logsumexp_{k != s} z_k`` (plus
        ``confidence``), so that ``sigmoid`` of it is the probability. Unlike the independent
        gate, a class scores low whenever another class explains the image better.

        Example:
            >>> f = FeatureFilter(channels=4, num_classes=3)
            >>> tuple(f.presence_logit(torch.ones(2, 4, 5, 5), torch.tensor([0, 2])).shape)
            (2,)
        """
        emb = self.embedding.weight.to(features.dtype)
        scores = torch.einsum("nchw,kc->nkhw", features, emb).flatten(2).amax(2).float()
        scores = scores * self.scale
        own = scores.gather(1, target[:, None]).squeeze(1)
        if scores.shape[1] == 1:
            return own + confidence
        others = scores.scatter(1, target[:, None], float("-inf"))
        return own - torch.logsumexp(others, 1) + confidence


class Bottleneck(nn.Module):
    """ResNet bottleneck (1x1 reduce, 3x3, 1x1 expand) with an identity shortcut."""

    def __init__(self, channels: int, reduction: int = 4) -> None:
        super().__init__()
        mid = max(channels // reduction, 8)
        self.body = nn.Sequential(
            nn.Conv2d(channels, mid, 1, bias=False),
            nn.BatchNorm2d(mid),
            nn.ReLU(inplace=True),
            nn.Conv2d(mid, mid, 3, padding=1, bias=False),
            nn.BatchNorm2d(mid),
            nn.ReLU(inplace=True),
            nn.Conv2d(mid, channels, 1, bias=False),
            nn.BatchNorm2d(channels),
        )
        self.act = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Residual update."""
        return self.act(x + self.body(x))


class Upsampler(nn.Module):
    """Upsample x2, concatenate the encoder map of that scale, then bottleneck blocks.

    ``mode="transposed"`` is the paper's transposed convolution; ``"bilinear"`` (bilinear
    resize + 3x3 conv) avoids the checkerboard and stripe artifacts that a stride-2, kernel-2
    transposed convolution shows on small inputs; ``"pixelshuffle"`` follows the authors'
    PyTorch release (3x3 conv to 4x channels + PixelShuffle); ``"reduce_bilinear"`` reduces
    the channels with a 1x1 conv at the coarse scale and then resizes, so no convolution runs
    on the wide map at the fine scale (a sixth of ``"bilinear"``'s cost on a ResNet-50
    decoder; the bottleneck blocks after the merge do the spatial mixing).
    """

    def __init__(
        self,
        in_channels: int,
        skip_channels: int,
        out_channels: int,
        num_blocks: int,
        mode: UpsampleMode = "transposed",
    ) -> None:
        super().__init__()
        if mode == "transposed":
            up: nn.Module = nn.ConvTranspose2d(in_channels, out_channels, 2, stride=2)
        elif mode == "bilinear":
            up = nn.Sequential(
                nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False),
                nn.Conv2d(in_channels, out_channels, 3, padding=1),
            )
        elif mode == "reduce_bilinear":
            up = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1),
                nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False),
            )
        elif mode == "pixelshuffle":
            up = nn.Sequential(
                nn.Conv2d(in_channels, 4 * out_channels, 3, padding=1), nn.PixelShuffle(2)
            )
        else:
            raise ValueError(
                "upsample mode must be transposed, bilinear, reduce_bilinear or pixelshuffle: "
                f"{mode}"
            )
        self.up = up
        self.fuse = nn.Sequential(
            nn.Conv2d(out_channels + skip_channels, out_channels, 1, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True),
        )
        self.blocks = nn.Sequential(*[Bottleneck(out_channels) for _ in range(num_blocks)])

    def forward(self, x: torch.Tensor, skip: torch.Tensor | None) -> torch.Tensor:
        """Upsample ``x`` and merge the skip map (None where the encoder has no map there).

        Both run channels-last (NHWC), whatever layout the encoder hands over: on CPU a
        bilinear resize of a contiguous (NCHW) map took 9 times as long as of the same map
        channels-last (one thread, 32 maps of 32 x 16 x 16), and a mixed concatenation would
        turn the layout back. Only the layout changes, not the values.
        """
        x = self.up(x.contiguous(memory_format=torch.channels_last))
        if skip is not None:
            skip = skip.to(x.dtype).contiguous(memory_format=torch.channels_last)
            x = torch.cat([x, skip], dim=1)
        return self.blocks(self.fuse(x))


class MaskHead(nn.Module):
    """1x1 conv to two channels; ``mask = |C0| / (|C0| + |C1| + eps)`` (eq. 8)."""

    def __init__(self, in_channels: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, 2, 1)
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Mask in ``[0, 1]`` shaped ``(N, 1, H, W)``, computed in float32."""
        c = self.conv(x).float().abs()
        return c[:, :1] / (c[:, :1] + c[:, 1:] + self.eps)
