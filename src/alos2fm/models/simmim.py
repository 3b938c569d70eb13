"""SimMIM: masked image modelling with a mask token and a one-layer pixel decoder.

Xie et al., "SimMIM: a Simple Framework for Masked Image Modeling" (CVPR 2022), as used by
the ALOS-2 tutorial (arXiv 2603.15119) on Swin-B and one HH channel:

1. draw a random mask on a grid of ``mask_unit``-pixel squares, exactly
   ``round(mask_ratio * units)`` units per image;
2. replace the patch embeddings of masked patches by one learnable mask token (before the
   absolute position embedding, so a masked patch still knows where it is);
3. run the encoder; a 1x1 convolution to ``stride^2 * C`` channels and a PixelShuffle by
   the encoder stride (32 for Swin, 16 for ViT) predict every pixel;
4. the loss (L1 by default; MSE or Huber) counts masked pixels only, optionally weighted
   per pixel by SAR-W (``alos2fm.models.sarw``).

The target is the input's pixels (the paper) or, selectable, a speckle-robust one
(``alos2fm.models.targets``): its local mean, or its HOG per ``hog_cell``-px cell, which
the decoder then predicts at cell resolution (PixelShuffle by stride / cell).

This module also holds what SimMIM and MixMAE share: ``PretrainOutput``, the
``PretrainModel`` base (encoder config, encoder weights, no-decay names) and the mask
helpers ``random_unit_mask`` and ``repeat_grid``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

import torch
import torch.nn.functional as F
from timm.layers import trunc_normal_
from torch import Tensor, nn

from alos2fm.models.backbones import (
    ModelConfigError,
    create_encoder,
    encoder_no_weight_decay,
    encoder_stride,
    is_swin,
    resolve_encoder_config,
)
from alos2fm.models.sarw import weighted_masked_mean
from alos2fm.models.targets import hog, local_mean

PixelLoss = Literal["l1", "mse", "huber"]
Target = Literal["pixels", "local_mean", "hog"]


@dataclass
class PretrainOutput:
    """What a pretraining model returns for a batch of B images of C x H x W.

    loss: scalar tensor to minimise.
    pred: (B, C, H, W) reconstruction of each input image, in the units of the normalised
        input; only its masked pixels were trained.
    mask: (B, 1, H, W) float, 1 where the pixel was hidden from the encoder.
    """

    loss: Tensor
    pred: Tensor
    mask: Tensor


def random_unit_mask(
    batch: int, grid: tuple[int, int], ratio: float, device: torch.device | None = None
) -> Tensor:
    """Random (batch, gh, gw) float mask with exactly ``floor(ratio * gh * gw + 0.5)`` ones
    per image (1 = masked), drawn from torch's global RNG."""
    units = grid[0] * grid[1]
    masked = math.floor(ratio * units + 0.5)
    # Ranking uniform noise gives a uniformly random subset of exactly `masked` units.
    ranks = torch.rand(batch, units, device=device).argsort(dim=1).argsort(dim=1)
    return (ranks < masked).float().view(batch, *grid)


def repeat_grid(grid: Tensor, factor: int) -> Tensor:
    """Nearest-neighbour upsampling of the last two dims by an integer factor."""
    return grid.repeat_interleave(factor, dim=-2).repeat_interleave(factor, dim=-1)


class PretrainModel(nn.Module):
    """An encoder built from a config dict, plus what the training engine needs from it."""

    def __init__(self, encoder: str | Mapping[str, Any]):
        super().__init__()
        self._encoder_config = resolve_encoder_config(encoder)
        self.encoder = create_encoder(**self._encoder_config)
        self.in_chans: int = self._encoder_config["in_chans"]
        self.img_size: int = self._encoder_config["img_size"]
        self.stride = encoder_stride(self.encoder)

    def encoder_config(self) -> dict[str, Any]:
        """The ``create_encoder`` arguments that rebuild this encoder (JSON-friendly)."""
        return dict(self._encoder_config)

    def encoder_state_dict(self) -> dict[str, Tensor]:
        """Encoder weights only (no mask token or decoder); ``create_encoder(**encoder_config())``
        loads them with ``strict=True``."""
        return {name: value.detach().clone() for name, value in self.encoder.state_dict().items()}

    def no_weight_decay(self) -> set[str]:
        """Full parameter names to exclude from weight decay: position embeddings, relative
        position tables, class tokens and mask tokens (norms and biases are the optimizer's)."""
        names = {f"encoder.{name}" for name in encoder_no_weight_decay(self.encoder)}
        return names | {name for name, _ in self.named_parameters() if name.endswith("mask_token")}


class SimMIM(PretrainModel):
    """SimMIM on a Swin or ViT encoder.

    Args:
        encoder: encoder preset name or config dict (see ``resolve_encoder_config``).
        mask_unit: side of a mask unit in pixels; a multiple of the patch size that divides
            the image size (16 in the paper: 4 x 4 Swin patches).
        mask_ratio: fraction of mask units hidden, in (0, 1).
        loss: per-pixel error: ``"l1"`` (paper), ``"mse"`` or ``"huber"`` (delta 1).
        target: ``"pixels"`` (paper), ``"local_mean"`` (``target_size`` px boxcar) or
            ``"hog"`` (``hog_bins`` orientations per ``hog_cell``-px cell).
    """

    def __init__(
        self,
        encoder: str | Mapping[str, Any],
        mask_unit: int = 16,
        mask_ratio: float = 0.6,
        loss: PixelLoss = "l1",
        target: Target = "pixels",
        target_size: int = 5,
        hog_cell: int = 8,
        hog_bins: int = 9,
    ):
        super().__init__(encoder)
        patch = self.encoder.patch_embed.patch_size[0]
        if mask_unit % patch or self.img_size % mask_unit:
            raise ModelConfigError(
                f"mask unit {mask_unit} px must be a multiple of the patch size {patch} "
                f"and divide the image size {self.img_size}",
                hint="change mask_unit or img_size",
            )
        if not 0.0 < mask_ratio < 1.0:
            raise ModelConfigError(f"mask_ratio {mask_ratio} is not in (0, 1)")
        if loss not in ("l1", "mse", "huber"):
            raise ModelConfigError(f"unknown SimMIM loss {loss!r}", hint="use l1, mse or huber")
        if target not in ("pixels", "local_mean", "hog"):
            raise ModelConfigError(
                f"unknown SimMIM target {target!r}", hint="use pixels, local_mean or hog"
            )
        if target == "hog" and (self.stride % hog_cell or mask_unit % hog_cell):
            raise ModelConfigError(
                f"HOG cell {hog_cell} px must divide the encoder stride {self.stride} and "
                f"the mask unit {mask_unit}",
                hint="e.g. simmim.hog_cell=8",
            )
        self.target = target
        self.target_size = target_size
        self.hog_cell = hog_cell
        self.hog_bins = hog_bins
        self.mask_unit = mask_unit
        self.mask_ratio = mask_ratio
        self.loss_name = loss
        self.patches_per_unit = mask_unit // patch

        embed_dim = self.encoder.patch_embed.proj.out_channels
        self.mask_token = nn.Parameter(trunc_normal_(torch.zeros(1, 1, embed_dim), std=0.02))
        # Pixels: stride^2 x C outputs per token, shuffled to pixels; HOG: one histogram of
        # C x bins per cell, (stride / cell)^2 cells per token.
        factor = self.stride // hog_cell if target == "hog" else self.stride
        per_position = self.in_chans * (hog_bins if target == "hog" else 1)
        self.decoder = nn.Sequential(
            nn.Conv2d(self.encoder.num_features, factor**2 * per_position, kernel_size=1),
            nn.PixelShuffle(factor),
        )

    def random_mask(self, batch: int, device: torch.device | None = None) -> Tensor:
        """(batch, H/unit, W/unit) mask-unit grid, 1 = masked."""
        units = self.img_size // self.mask_unit
        return random_unit_mask(batch, (units, units), self.mask_ratio, device)

    def forward_encoder(self, x: Tensor, patch_mask: Tensor) -> Tensor:
        """Encode x (B, C, H, W) with masked patches (patch_mask (B, H/p, W/p), 1 = masked)
        replaced by the mask token; returns the final map (B, D, H/stride, W/stride)."""
        encoder = self.encoder
        if is_swin(encoder):
            tokens = encoder.patch_embed.project(x)  # (B, H/p, W/p, D)
            tokens = self._substitute_mask_token(tokens, patch_mask.unsqueeze(-1))
            tokens = encoder.patch_embed.add_position(tokens)
            tokens = encoder.norm(encoder.layers(tokens))
            return tokens.permute(0, 3, 1, 2)

        tokens = encoder.patch_embed(x)  # (B, N, D), row-major patches
        tokens = self._substitute_mask_token(tokens, patch_mask.flatten(1).unsqueeze(-1))
        tokens = encoder.norm_pre(encoder.patch_drop(encoder._pos_embed(tokens)))
        tokens = encoder.norm(encoder.blocks(tokens))[:, encoder.num_prefix_tokens :]
        grid_h, grid_w = patch_mask.shape[-2:]
        return tokens.transpose(1, 2).reshape(x.shape[0], -1, grid_h, grid_w)

    def _substitute_mask_token(self, tokens: Tensor, masked: Tensor) -> Tensor:
        masked = masked.to(tokens.dtype)
        return tokens * (1.0 - masked) + self.mask_token.to(tokens.dtype) * masked

    def forward_loss(
        self, x: Tensor, pred: Tensor, pixel_mask: Tensor, weight: Tensor | None
    ) -> Tensor:
        """Mean error over masked pixels: ``sum(w * err * mask) / (sum(mask) * C)``."""
        if self.loss_name == "l1":
            error = (pred - x).abs()
        elif self.loss_name == "mse":
            error = (pred - x).square()
        else:
            error = F.huber_loss(pred, x, reduction="none", delta=1.0)
        return weighted_masked_mean(error, pixel_mask, weight)

    def forward(self, x: Tensor, weight: Tensor | None = None) -> PretrainOutput:
        """One SimMIM step on normalised input x (B, C, H, W).

        ``weight`` (B, C, H, W), e.g. SAR-W, scales each pixel's error; 0 drops a pixel
        (no data). The loss is normalised by the number of masked pixels times C.
        """
        unit_mask = self.random_mask(x.shape[0], x.device)
        latent = self.forward_encoder(x, repeat_grid(unit_mask, self.patches_per_unit))
        pred = self.decoder(latent).float()  # the loss in fp32 also under autocast
        pixel_mask = repeat_grid(unit_mask, self.mask_unit).unsqueeze(1)
        if self.target == "hog":
            return self._hog_step(x.float(), pred, unit_mask, pixel_mask, weight)
        target = x.float()
        if self.target == "local_mean":
            target = local_mean(target, self.target_size)
        loss = self.forward_loss(target, pred, pixel_mask, weight)
        return PretrainOutput(loss=loss, pred=pred, mask=pixel_mask)

    def _hog_step(
        self, x: Tensor, pred: Tensor, unit_mask: Tensor, pixel_mask: Tensor, weight: Tensor | None
    ) -> PretrainOutput:
        """Loss on the HOG of masked cells; ``pred`` shown as the predicted histogram's total
        per channel, at pixel resolution (a picture of where edges are expected)."""
        cell, bins = self.hog_cell, self.hog_bins
        target = hog(x, cell, bins)
        cell_mask = repeat_grid(unit_mask, self.mask_unit // cell).unsqueeze(1)
        cell_weight = None
        if weight is not None:  # a cell weighs the mean of its pixels' weights
            cell_weight = F.avg_pool2d(weight.float(), cell).repeat_interleave(bins, dim=1)
        loss = self.forward_loss(target, pred, cell_mask, cell_weight)
        batch, _, h, w = pred.shape
        energy = pred.view(batch, self.in_chans, bins, h, w).sum(dim=2)
        return PretrainOutput(loss=loss, pred=repeat_grid(energy, cell), mask=pixel_mask)
