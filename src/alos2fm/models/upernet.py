"""UPerNet decoder (Xiao et al. 2018, "Unified Perceptual Parsing") for a four-scale pyramid.

Input: four NCHW feature maps at strides 4, 8, 16 and 32 (any channel counts, read from
the encoder, never assumed). Steps, as in SPEC.md §3:

1. pyramid pooling (bins 1, 2, 3, 6) on the deepest map -> its FPN level;
2. 1x1 lateral convolutions on the three finer maps, top-down fusion (upsample + add);
3. a 3x3 convolution per level, all levels upsampled to stride 4 and fused;
4. a progressive head: x2 upsample + conv, x2 upsample + conv, 1x1 classifier -> logits at
   full resolution (stride 1).

Every convolution block is conv -> GroupNorm -> GELU: GroupNorm, unlike BatchNorm, does not
depend on the per-process batch, so small CPU batches and large DDP batches behave alike.
The published code fed only the stride-8 features; here the stride-4 map is fused too.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

POOL_SCALES = (1, 2, 3, 6)


def _groups(channels: int, max_groups: int = 32) -> int:
    """GroupNorm groups: the largest divisor of ``channels`` <= 32 that leaves at least two
    channels per group (32 for 256), so the 1x1 pyramid-pooling cell still has statistics."""
    upper = max(1, min(max_groups, channels // 2))
    return next(g for g in range(upper, 0, -1) if channels % g == 0)


class ConvGNAct(nn.Sequential):
    """Conv (no bias: GroupNorm follows) -> GroupNorm -> GELU."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3):
        super().__init__(
            nn.Conv2d(in_channels, out_channels, kernel_size, padding=kernel_size // 2, bias=False),
            nn.GroupNorm(_groups(out_channels), out_channels),
            nn.GELU(),
        )


def _resize(x: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    return F.interpolate(x, size=tuple(size), mode="bilinear", align_corners=False)


class PyramidPooling(nn.Module):
    """Average-pool the map into ``bins x bins`` cells per scale, project, upsample, concat."""

    def __init__(self, in_channels: int, channels: int, scales: Sequence[int] = POOL_SCALES):
        super().__init__()
        self.stages = nn.ModuleList(
            nn.Sequential(nn.AdaptiveAvgPool2d(bins), ConvGNAct(in_channels, channels, 1))
            for bins in scales
        )
        self.bottleneck = ConvGNAct(in_channels + len(scales) * channels, channels, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = [_resize(stage(x), x.shape[-2:]) for stage in self.stages]
        return self.bottleneck(torch.cat([x, *pooled], dim=1))


class UPerNetDecoder(nn.Module):
    """UPerNet over four maps (strides 4, 8, 16, 32) -> logits ``(B, K, 4h, 4w)``.

    ``in_channels``: channels of the four maps, finest first. ``channels``: width of the
    FPN (256 in the paper). The head halves the width at each x2 step.
    """

    def __init__(
        self,
        in_channels: Sequence[int],
        num_classes: int,
        channels: int = 256,
        pool_scales: Sequence[int] = POOL_SCALES,
        dropout: float = 0.1,
    ):
        super().__init__()
        if len(in_channels) != 4:
            raise ValueError(f"UPerNet needs four feature maps, got channels {list(in_channels)}")
        self.in_channels = tuple(in_channels)
        self.ppm = PyramidPooling(in_channels[-1], channels, pool_scales)
        self.lateral = nn.ModuleList(ConvGNAct(c, channels, 1) for c in in_channels[:-1])
        self.fpn = nn.ModuleList(ConvGNAct(channels, channels, 3) for _ in in_channels[:-1])
        self.fuse = ConvGNAct(len(in_channels) * channels, channels, 3)
        half, quarter = max(channels // 2, 1), max(channels // 4, 1)
        self.up1 = ConvGNAct(channels, half, 3)  # stride 4 -> 2
        self.up2 = ConvGNAct(half, quarter, 3)  # stride 2 -> 1
        self.dropout = nn.Dropout2d(dropout)
        self.classifier = nn.Conv2d(quarter, num_classes, 1)

    def forward(self, features: Sequence[torch.Tensor]) -> torch.Tensor:
        if len(features) != 4:
            raise ValueError(f"UPerNet needs four feature maps, got {len(features)}")
        # Top-down pathway: deepest level from pyramid pooling, then upsample-and-add.
        levels = [lateral(f) for lateral, f in zip(self.lateral, features[:-1], strict=True)]
        levels.append(self.ppm(features[-1]))
        for i in range(len(levels) - 1, 0, -1):
            levels[i - 1] = levels[i - 1] + _resize(levels[i], levels[i - 1].shape[-2:])
        outputs = [conv(level) for conv, level in zip(self.fpn, levels[:-1], strict=True)]
        outputs.append(levels[-1])

        # Fuse every level at stride 4, then climb to full resolution in two x2 steps.
        finest = outputs[0].shape[-2:]
        x = self.fuse(torch.cat([outputs[0]] + [_resize(o, finest) for o in outputs[1:]], dim=1))
        x = self.up1(F.interpolate(x, scale_factor=2.0, mode="bilinear", align_corners=False))
        x = self.up2(F.interpolate(x, scale_factor=2.0, mode="bilinear", align_corners=False))
        return self.classifier(self.dropout(x))
