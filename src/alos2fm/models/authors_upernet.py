"""The authors' UPerNet segmenter, rebuilt so that their fine-tuned weights load unchanged.

The segmenter released with the ALOS-2 foundation model (Swin-B + UPerNet, 9 classes;
``../shared/WEIGHTS_INTEROP.md``) differs from :class:`alos2fm.models.upernet.UPerNetDecoder`
in ways that change the function, so it gets its own module rather than options:

- taps: the Swin outputs *after* each patch merging (microsoft's ``layers[i]`` outputs):
  ``2C`` at /8, ``4C`` at /16, ``8C`` at /32 (before the last stage's blocks) and ``8C`` at
  /32 (after them), raw, without norms; the stride-4 stage output is unused;
- pyramid pooling by *adaptive max* pooling (1, 2, 3, 6), the pooled maps concatenated
  before the map itself;
- a top-down path at /32 -> /16 -> /8 -> /4 in which each lateral is upsampled x2 before
  it is added to the x2-upsampled path, then all four levels fused coarse -> fine at /4;
- every block conv (with bias) -> GroupNorm(16) -> GELU -> Dropout(0.5); all interpolation
  ``align_corners=True``; a progressive head of two (x2 upsample, 3x3 conv) blocks and a
  3x3 classifier.

Module names reproduce the authors' keys (``decoder.decoder.PPMHead...``,
``decoder.prog_head...``) so that a converted checkpoint loads with ``strict=True``.
Dropout is active only while training and holds no weights; its place after each block
is our reading of "after most blocks".
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from alos2fm.models.backbones import encoder_feature_info, encoder_no_weight_decay, is_swin

POOL_SIZES = (1, 2, 3, 6)
GROUPS = 16
DROPOUT = 0.5


def _up(x: Tensor, size: Sequence[int]) -> Tensor:
    return F.interpolate(x, size=tuple(size), mode="bilinear", align_corners=True)


def _up2(x: Tensor) -> Tensor:
    return _up(x, (x.shape[-2] * 2, x.shape[-1] * 2))


class _Up2(nn.Module):
    """x2 bilinear upsampling with ``align_corners=True`` (nn.Upsample would be the same; a
    module keeps the head's indices where the authors' ``up1.1`` expects its conv)."""

    def forward(self, x: Tensor) -> Tensor:
        return _up2(x)


def _block(in_channels: int, out_channels: int, kernel_size: int = 1) -> nn.Sequential:
    """conv (bias) .0 -> GroupNorm .1 -> GELU -> Dropout, as the authors' ``Conv_*`` blocks."""
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel_size, padding=kernel_size // 2),
        nn.GroupNorm(GROUPS, out_channels),
        nn.GELU(),
        nn.Dropout(DROPOUT),
    )


class _PoolBranches(nn.Module):
    """``ppm_modules.k``: adaptive max pool .0 -> conv .1 -> GroupNorm .2 -> GELU."""

    def __init__(self, in_channels: int, channels: int, pool_sizes: Sequence[int]):
        super().__init__()
        self.ppm_modules = nn.ModuleList(
            nn.Sequential(
                nn.AdaptiveMaxPool2d(size),
                nn.Conv2d(in_channels, channels, 1),
                nn.GroupNorm(GROUPS, channels),
                nn.GELU(),
            )
            for size in pool_sizes
        )

    def forward(self, x: Tensor) -> list[Tensor]:
        return [_up(branch(x), x.shape[-2:]) for branch in self.ppm_modules]


class _PPMHead(nn.Module):
    def __init__(self, in_channels: int, channels: int, pool_sizes: Sequence[int] = POOL_SIZES):
        super().__init__()
        self.psp_modules = _PoolBranches(in_channels, channels, pool_sizes)
        self.final = _block(in_channels + len(pool_sizes) * channels, channels)

    def forward(self, x: Tensor) -> Tensor:
        return self.final(torch.cat([*self.psp_modules(x), x], dim=1))


class _FPNHead(nn.Module):
    """Pyramid pooling on the deepest tap, top-down fusion to /4, all levels fused."""

    def __init__(self, tap_channels: Sequence[int], channels: int):
        super().__init__()
        c8, c16, c32, c32_last = tap_channels
        self.PPMHead = _PPMHead(c32_last, channels)
        self.conv_x1 = nn.Conv2d(channels, channels, 1)
        self.Conv_fuse1 = _block(c32, channels)
        self.Conv_fuse1_ = _block(channels, channels)
        self.Conv_fuse2 = _block(c16, channels)
        self.Conv_fuse2_ = _block(channels, channels)
        self.Conv_fuse3 = _block(c8, channels)
        self.Conv_fuse3_ = _block(channels, channels)
        self.fuse_all = _block(4 * channels, channels)

    def forward(self, taps: Sequence[Tensor]) -> Tensor:
        t8, t16, t32, t32_last = taps
        level32 = self.PPMHead(t32_last)
        level16 = self.Conv_fuse1_(self.conv_x1(_up2(level32)) + _up2(self.Conv_fuse1(t32)))
        level8 = self.Conv_fuse2_(_up2(level16) + _up2(self.Conv_fuse2(t16)))
        level4 = self.Conv_fuse3_(_up2(level8) + _up2(self.Conv_fuse3(t8)))
        size = level4.shape[-2:]
        levels = [_up(level32, size), _up(level16, size), _up(level8, size), level4]
        return self.fuse_all(torch.cat(levels, dim=1))


class _ProgressiveHead(nn.Module):
    """/4 -> /2 -> /1 by two (x2 upsample, 3x3 conv, GroupNorm, GELU) blocks; 3x3 classifier."""

    def __init__(self, channels: int, num_classes: int):
        super().__init__()
        self.up1 = nn.Sequential(_Up2(), *_block(channels, channels, 3))
        self.up2 = nn.Sequential(_Up2(), *_block(channels, channels, 3))
        self.cls_seg = nn.Conv2d(channels, num_classes, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        return self.cls_seg(self.up2(self.up1(x)))


class AuthorsUPerNet(nn.Module):
    """Four taps (/8, /16, /32, /32) -> logits at full resolution (x32 the deepest grid)."""

    def __init__(self, tap_channels: Sequence[int], num_classes: int, channels: int = 256):
        super().__init__()
        self.decoder = _FPNHead(tap_channels, channels)
        self.prog_head = _ProgressiveHead(channels, num_classes)

    def forward(self, taps: Sequence[Tensor]) -> Tensor:
        return self.prog_head(self.decoder(taps))


def swin_merge_taps(encoder: nn.Module, x: Tensor) -> list[Tensor]:
    """NCHW outputs of patch mergings 1-3 and of the last stage of a timm Swin.

    In timm a stage starts with its patch merging (microsoft's Swin ends a stage with it),
    so the maps microsoft's ``layers[0..2]`` return are those of ``layers[1..3].downsample``.
    """
    tokens = encoder.layers[0](encoder.patch_embed(x))
    taps = []
    for stage in encoder.layers[1:]:
        tokens = stage.downsample(tokens)
        taps.append(tokens)
        tokens = stage.blocks(tokens)
    taps.append(tokens)
    return [tap.permute(0, 3, 1, 2) for tap in taps]


class AuthorsSegmenter(nn.Module):
    """Swin encoder + :class:`AuthorsUPerNet`: normalised ``(B, C, H, W)`` -> ``(B, K, H, W)``."""

    def __init__(self, encoder: nn.Module, num_classes: int, decoder_channels: int = 256):
        super().__init__()
        if not is_swin(encoder) or len(encoder.layers) != 4:
            raise ValueError("the authors' UPerNet needs a four-stage Swin encoder")
        self.encoder = encoder
        # Neither the stride-4 map nor the final norm feeds the decoder: frozen so that DDP
        # and the optimiser leave it alone (as in alos2fm.models.segmenter.Segmenter).
        encoder.norm.requires_grad_(False)
        _, c8, c16, c32 = (stage.channels for stage in encoder_feature_info(encoder))
        taps = [c8, c16, c32, c32]
        self.decoder = AuthorsUPerNet(taps, num_classes, decoder_channels)
        self.num_classes = num_classes

    def forward(self, x: Tensor) -> Tensor:
        return self.decoder(swin_merge_taps(self.encoder, x))

    def no_weight_decay(self) -> set[str]:
        return {f"encoder.{name}" for name in encoder_no_weight_decay(self.encoder)}
