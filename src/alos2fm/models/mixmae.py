"""MixMAE: mixed and masked autoencoder for a hierarchical (Swin) encoder.

Liu et al., "MixMAE: Mixed and Masked Autoencoder for Efficient Pretraining of
Hierarchical Vision Transformers" (CVPR 2023), with the SAR-W loss of SAR-W-MixMAE
(arXiv 2503.01181):

1. draw one random mask (ratio 0.5) on the last-stage token grid (stride 32), shared by
   the batch, and upsample it to the pixels;
2. mix: image i keeps its own pixels where the mask is 0 and takes those of its partner,
   image B-1-i (the batch flipped), where it is 1. Mixing pixels before the patch
   embedding equals mixing patch tokens: a mask unit covers whole patches;
3. encode the mixed batch with attention restricted to tokens of the same source image in
   every window, shifted windows included, so the two halves of a mixed image are two
   independent masked encodings;
4. unmix: stream "own" = the encoder tokens where the mask is 0 plus mask tokens
   (reconstructs image i), stream "partner" = the tokens where the mask is 1 plus mask
   tokens (reconstructs image B-1-i); one transformer decoder reconstructs both;
5. MSE on the hidden pixels of both streams (mask 1 for "own", mask 0 for "partner"),
   on per-patch normalised targets by default, optionally SAR-W weighted. Every pixel of
   every image is thus reconstructed once while hidden.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from timm.layers import trunc_normal_
from timm.layers.pos_embed_sincos import build_sincos2d_pos_embed
from timm.models.swin_transformer import window_partition
from timm.models.vision_transformer import Block
from torch import Tensor, nn

from alos2fm.models.backbones import ModelConfigError, is_swin
from alos2fm.models.sarw import weighted_masked_mean
from alos2fm.models.simmim import PretrainModel, PretrainOutput, random_unit_mask, repeat_grid

_PATCH_VAR_EPS = 1e-6


class MixMAE(PretrainModel):
    """MixMAE on a Swin encoder.

    Args:
        encoder: Swin encoder preset name or config dict (see ``resolve_encoder_config``).
        mask_ratio: fraction of last-stage tokens taken from the partner image, in (0, 1).
        decoder_depth, decoder_dim, decoder_heads: transformer decoder (paper: 8, 512, 16).
        norm_pix_loss: regress each 32 x 32 patch normalised by its own mean and std.
    """

    def __init__(
        self,
        encoder: str | Mapping[str, Any],
        mask_ratio: float = 0.5,
        decoder_depth: int = 8,
        decoder_dim: int = 512,
        decoder_heads: int = 16,
        norm_pix_loss: bool = True,
    ):
        super().__init__(encoder)
        if not is_swin(self.encoder):
            raise ModelConfigError(
                f"MixMAE needs a hierarchical Swin encoder, got {self._encoder_config['arch']}",
                hint="use a swin_* arch or SimMIM for ViT",
            )
        if not 0.0 < mask_ratio < 1.0:
            raise ModelConfigError(f"mask_ratio {mask_ratio} is not in (0, 1)")
        self.mask_ratio = mask_ratio
        self.norm_pix_loss = norm_pix_loss
        self.grid = self.img_size // self.stride

        self.decoder_embed = nn.Linear(self.encoder.num_features, decoder_dim)
        self.mask_token = nn.Parameter(trunc_normal_(torch.zeros(1, 1, decoder_dim), std=0.02))
        # Fixed 2-D sine-cosine positions for the decoder, as in MixMAE and MAE.
        positions = build_sincos2d_pos_embed([self.grid, self.grid], dim=decoder_dim)
        self.register_buffer("decoder_pos_embed", positions.unsqueeze(0), persistent=False)
        self.decoder_blocks = nn.Sequential(
            *[
                Block(decoder_dim, decoder_heads, mlp_ratio=4.0, qkv_bias=True)
                for _ in range(decoder_depth)
            ]
        )
        self.decoder_norm = nn.LayerNorm(decoder_dim)
        self.decoder_pred = nn.Linear(decoder_dim, self.stride**2 * self.in_chans)
        for module in (self.decoder_embed, self.decoder_blocks, self.decoder_pred):
            module.apply(_init_decoder_weights)

        # timm's WindowAttention accepts one additive mask per window (Swin's shifted-window
        # mask) but has no notion of two images sharing a window. A forward pre-hook on each
        # attention adds our per-window group mask to it; it is active only inside
        # forward_encoder, so the encoder's modules and weights stay plain timm.
        self._group_masks: dict[nn.Module, Tensor] = {}
        for stage in self.encoder.layers:
            for block in stage.blocks:
                block.attn.register_forward_pre_hook(self._restrict_attention, with_kwargs=True)

    def random_mask(self, device: torch.device | None = None) -> Tensor:
        """One (grid, grid) last-stage mask for the whole batch, 1 = taken from the partner."""
        return random_unit_mask(1, (self.grid, self.grid), self.mask_ratio, device)[0]

    def mix(self, x: Tensor, grid_mask: Tensor) -> Tensor:
        """Image i with its masked pixels replaced by those of image B-1-i."""
        pixel_mask = repeat_grid(grid_mask, self.stride).bool()
        return torch.where(pixel_mask, x.flip(0), x)

    def forward_encoder(self, mixed: Tensor, grid_mask: Tensor) -> Tensor:
        """Encode a mixed batch (B, C, H, W) so that each image's tokens attend only to tokens
        from the same source image; returns (B, grid, grid, D) last-stage tokens."""
        stages = len(self.encoder.layers)
        for index, stage in enumerate(self.encoder.layers):
            groups = repeat_grid(grid_mask, 2 ** (stages - 1 - index))
            for block in stage.blocks:
                self._group_masks[block.attn] = _window_group_mask(
                    groups, block.window_size, block.shift_size
                )
        try:
            return self.encoder.forward_features(mixed)
        finally:
            self._group_masks.clear()

    def _restrict_attention(
        self, module: nn.Module, args: tuple, kwargs: dict
    ) -> tuple[tuple, dict] | None:
        group_mask = self._group_masks.get(module)
        if group_mask is None:
            return None
        shift_mask = kwargs.pop("mask", args[1] if len(args) > 1 else None)
        mask = group_mask if shift_mask is None else shift_mask + group_mask
        return args[:1], {**kwargs, "mask": mask}

    def forward_decoder(self, latent: Tensor, grid_mask: Tensor) -> Tensor:
        """Unmix and decode. Returns (2B, C, H, W): first the "own" stream of every image
        (reconstructs image i), then the "partner" stream (reconstructs image B-1-i)."""
        tokens = self.decoder_embed(latent.flatten(1, 2))  # (B, L, d)
        from_partner = grid_mask.flatten().bool()[None, :, None]
        mask_token = self.mask_token.to(tokens.dtype)
        own = torch.where(from_partner, mask_token, tokens)
        partner = torch.where(from_partner, tokens, mask_token)
        streams = torch.cat([own, partner]) + self.decoder_pos_embed.to(tokens.dtype)
        patches = self.decoder_pred(self.decoder_norm(self.decoder_blocks(streams)))
        patches = patches.transpose(1, 2).reshape(patches.shape[0], -1, self.grid, self.grid)
        return F.pixel_shuffle(patches, self.stride)

    def forward_loss(
        self, target: Tensor, pred: Tensor, mask: Tensor, weight: Tensor | None
    ) -> tuple[Tensor, Tensor]:
        """Weighted MSE over masked pixels; returns (loss, pred in normalised input units).

        With ``norm_pix_loss`` the target of every stride x stride patch is normalised by its
        own mean and std (over pixels and channels); the prediction is mapped back with the
        same statistics so that it can be shown beside the input.
        """
        if not self.norm_pix_loss:
            return weighted_masked_mean((pred - target).square(), mask, weight), pred
        patches = F.pixel_unshuffle(target, self.stride)  # (N, C*s*s, grid, grid)
        mean = repeat_grid(patches.mean(dim=1, keepdim=True), self.stride)
        std = repeat_grid((patches.var(dim=1, keepdim=True) + _PATCH_VAR_EPS).sqrt(), self.stride)
        error = (pred - (target - mean) / std).square()
        return weighted_masked_mean(error, mask, weight), pred * std + mean

    def forward(self, x: Tensor, weight: Tensor | None = None) -> PretrainOutput:
        """One MixMAE step on normalised input x (B, C, H, W).

        ``weight`` (B, C, H, W), e.g. SAR-W, scales each pixel's error (0 drops it). The loss
        covers both streams: ``sum(w * err * hidden) / (sum(hidden) * C)`` over the 2B
        reconstructions. ``pred`` is each image's "own" stream, ``mask`` its hidden pixels.
        """
        batch = x.shape[0]
        grid_mask = self.random_mask(x.device)
        latent = self.forward_encoder(self.mix(x, grid_mask), grid_mask)
        pred = self.forward_decoder(latent, grid_mask).float()

        hidden = repeat_grid(grid_mask, self.stride).expand(batch, 1, -1, -1)
        targets = torch.cat([x, x.flip(0)])
        masks = torch.cat([hidden, 1.0 - hidden])
        weights = None if weight is None else torch.cat([weight, weight.flip(0)])
        loss, pred = self.forward_loss(targets.float(), pred, masks, weights)
        return PretrainOutput(loss=loss, pred=pred[:batch], mask=hidden.contiguous())


def _window_group_mask(groups: Tensor, window: tuple[int, int], shift: tuple[int, int]) -> Tensor:
    """Additive attention mask (num_windows, N, N): -inf between tokens of different groups.

    ``groups`` (H, W) holds 0 for tokens of the image itself and 1 for the partner's; it is
    shifted and partitioned exactly as the Swin block shifts and partitions its tokens.
    """
    if any(shift):
        groups = torch.roll(groups, shifts=(-shift[0], -shift[1]), dims=(0, 1))
    windows = window_partition(groups[None, :, :, None], window).flatten(1)  # (nW, N)
    different = windows[:, :, None] != windows[:, None, :]
    return torch.zeros(different.shape, device=groups.device).masked_fill(different, float("-inf"))


def _init_decoder_weights(module: nn.Module) -> None:
    # MAE's initialisation for the decoder: Xavier-uniform linear layers, zero biases.
    if isinstance(module, nn.Linear):
        nn.init.xavier_uniform_(module.weight)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
