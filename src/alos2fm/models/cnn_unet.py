"""CNN encoder (timm ``features_only``) + U-Net decoder: the supervised reference.

Every SAR segmentation benchmark reports a U-Net trained from scratch, and on small
datasets it is a practical choice in its own right; Swin/ViT stay the encoders that
pretraining serves. The encoder is any timm CNN built with ``features_only=True`` (e.g.
``resnet18``, ``resnet34``, ``convnext_atto``, ``convnext_nano``), so channels and strides
come from timm's ``feature_info`` rather than from a table of ours.

The decoder is our own, not segmentation-models-pytorch's: the U-Net decoder is ~40 lines
(upsample, concatenate the skip, two 3x3 conv-BN-ReLU), and writing it keeps one more
dependency with its own timm pin out, takes timm encoders of any stride layout (ResNet
starts at stride 2, ConvNeXt at 4) without smp's encoder registry, and exports to ONNX
like the rest of our models.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import timm
import torch
import torch.nn.functional as F
from torch import nn


def is_cnn(arch: str) -> bool:
    """Whether ``arch`` is a CNN encoder for :class:`CnnUnet` (not a Swin/ViT)."""
    return arch.startswith(("resnet", "convnext", "efficientnet", "regnet", "mobilenet"))


def create_cnn_encoder(spec: Mapping[str, Any]) -> nn.Module:
    """A timm CNN returning its feature maps (shallow to deep), random init, any channels."""
    return timm.create_model(
        spec["arch"],
        pretrained=False,
        features_only=True,
        in_chans=int(spec.get("in_chans", 1)),
        drop_path_rate=float(spec.get("drop_path_rate", 0.0)),
    )


class _ConvBlock(nn.Sequential):
    def __init__(self, in_channels: int, out_channels: int):
        super().__init__(
            nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True),
            nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True),
        )


class CnnUnet(nn.Module):
    """Normalised image ``(B, C, H, W)`` -> logits ``(B, K, H, W)``.

    From the deepest map up, each decoder stage upsamples to the next skip's size,
    concatenates it and applies two 3x3 convolutions; widths halve from
    ``decoder_channels`` (at least 16). The last stage is upsampled to the input size.
    """

    def __init__(self, encoder: Mapping[str, Any], num_classes: int, decoder_channels: int = 256):
        super().__init__()
        self.encoder = create_cnn_encoder(encoder)
        channels = self.encoder.feature_info.channels()
        self.strides = tuple(self.encoder.feature_info.reduction())
        widths = [max(decoder_channels // 2**i, 16) for i in range(len(channels) - 1)]
        stages, below = [], channels[-1]
        for skip, width in zip(reversed(channels[:-1]), widths, strict=True):
            stages.append(_ConvBlock(below + skip, width))
            below = width
        self.stages = nn.ModuleList(stages)
        self.head = nn.Conv2d(below, num_classes, 1)
        self.num_classes = num_classes

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        *skips, deepest = self.encoder(x)
        y = deepest
        for stage, skip in zip(self.stages, reversed(skips), strict=True):
            y = F.interpolate(y, size=skip.shape[-2:], mode="bilinear", align_corners=False)
            y = stage(torch.cat([y, skip], dim=1))
        return F.interpolate(self.head(y), size=x.shape[-2:], mode="bilinear", align_corners=False)
