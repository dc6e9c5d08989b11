"""The masking network: encoders, decoder blocks and the U-Net masker."""

from captum_realtime_mask.masker.blocks import Bottleneck, FeatureFilter, MaskHead, Upsampler
from captum_realtime_mask.masker.encoders import (
    EncoderSpec,
    FeatureEncoder,
    SmallCNN,
    build_encoder,
)
from captum_realtime_mask.masker.model import MaskerConfig, MaskerOutput, MaskingModel

__all__ = [
    "Bottleneck",
    "EncoderSpec",
    "FeatureEncoder",
    "FeatureFilter",
    "MaskHead",
    "MaskerConfig",
    "MaskerOutput",
    "MaskingModel",
    "SmallCNN",
    "Upsampler",
    "build_encoder",
]
