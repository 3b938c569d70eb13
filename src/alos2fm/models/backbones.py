"""Encoders: timm Swin Transformer and ViT, configured for SAR.

``create_encoder`` builds a timm model without classifier (``num_classes=0``) for any
number of input channels, any input size and a window size consistent with it (one for
all stages, or one per stage), with optional drop path and, for Swin, an optional
absolute position embedding (APE): the paper's Swin-B uses a learned one, MixMAE a fixed
2-D sin-cos one, and timm's Swin has none, so ``SwinPatchEmbed`` adds it through the
``embed_layer`` argument timm already offers (no fork of Swin). ``shift=False`` gives
MixMAE's Swin, whose blocks never shift their windows: timm has no switch for it, so the
shift of every block is set to zero after construction (see ``_disable_window_shift``).

Dense heads read the encoder through two functions that hide the family:
``encoder_feature_info`` (channels and stride of four maps) and ``encoder_features``
(the four NCHW maps). Swin gives a true pyramid (strides 4, 8, 16, 32 with patch 4). A
plain ViT has one resolution: it gives four maps from evenly spaced blocks, all at its
patch stride (16), and the dense head must rescale them (e.g. the simple feature pyramid
of ViTDet: deconvolutions x4 and x2, identity, max-pool /2) — ``feature_info`` says so.

An encoder configuration is a plain dict of ``create_encoder`` arguments (JSON/YAML
friendly); ``ENCODER_PRESETS`` names the ones used here and ``resolve_encoder_config``
turns a preset name or a partial dict into the full dict that rebuilds the same model.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any, Literal

import timm
import torch
from timm.layers import PatchEmbed, trunc_normal_
from timm.layers.pos_embed_sincos import build_sincos2d_pos_embed
from timm.models.swin_transformer import SwinTransformer
from timm.models.vision_transformer import VisionTransformer
from torch import Tensor, nn

from alos2fm.errors import Alos2fmError


class ModelConfigError(Alos2fmError):
    """A model configuration that cannot be built (unknown name, inconsistent sizes)."""


# Our architecture names -> the timm entry point whose defaults (widths, depths, heads) they use.
ARCHITECTURES: dict[str, str] = {
    "swin_tiny": "swin_tiny_patch4_window7_224",
    "swin_small": "swin_small_patch4_window7_224",
    "swin_base": "swin_base_patch4_window7_224",
    "vit_small": "vit_small_patch16_224",
    "vit_base": "vit_base_patch16_224",
}

# Named encoder configurations; any key can be overridden (see resolve_encoder_config).
ENCODER_PRESETS: dict[str, dict[str, Any]] = {
    # The tutorial's Swin-B: patch 4, window 8, APE, one HH channel, 256 x 256 patches.
    "swin_base_w8_256_ape_1ch": {
        "arch": "swin_base",
        "in_chans": 1,
        "img_size": 256,
        "window_size": 8,
        "ape": True,
    },
    # A Swin small enough to pretrain on one CPU in minutes (about 0.8 M parameters).
    "swin_nano_w4_128_ape_1ch": {
        "arch": "swin_tiny",
        "in_chans": 1,
        "img_size": 128,
        "window_size": 4,
        "ape": True,
        "embed_dim": 24,
        "depths": [1, 1, 2, 1],
        "num_heads": [1, 2, 4, 8],
    },
}

# create_encoder's named arguments, in its order; other config keys are timm overrides.
_CORE_KEYS = ("arch", "in_chans", "img_size", "window_size", "ape", "shift", "drop_path_rate")

# ``ape`` values: no APE, a learned one (the paper's Swin-B), a frozen 2-D sin-cos (MixMAE).
ApeKind = bool | Literal["sincos"]
WindowSize = int | Sequence[int]

_NO_DECAY_NAMES = frozenset(
    {
        "absolute_pos_embed",
        "pos_embed",
        "cls_token",
        "reg_token",
        "dist_token",
        "relative_position_bias_table",
    }
)


@dataclass(frozen=True)
class StageInfo:
    """One feature map of an encoder: channel count and stride in input pixels."""

    channels: int
    stride: int


class SwinPatchEmbed(PatchEmbed):
    """timm's patch embedding followed by an optional absolute position embedding.

    ``project`` gives the normalised patch embeddings (B, H/p, W/p, D); ``add_position``
    adds the APE. SimMIM substitutes its mask token between the two, as the original Swin
    with ``ape=True`` does. The APE is stored as ``patch_embed.absolute_pos_embed``
    (1, H/p, W/p, D): learned (``ape=True``) or a fixed 2-D sin-cos (``ape="sincos"``), a
    parameter that never trains, so that it still loads and saves with the weights.
    """

    def __init__(self, *args: Any, ape: ApeKind = False, **kwargs: Any):
        super().__init__(*args, **kwargs)
        grid_h, grid_w = self.grid_size
        dim = self.proj.out_channels
        if ape == "sincos":
            table = build_sincos2d_pos_embed([grid_h, grid_w], dim=dim)
            table = table.reshape(1, grid_h, grid_w, dim)
            self.absolute_pos_embed = nn.Parameter(table, requires_grad=False)
        elif ape is True:
            embedding = torch.zeros(1, grid_h, grid_w, dim)
            self.absolute_pos_embed = nn.Parameter(trunc_normal_(embedding, std=0.02))
        elif ape is False:
            self.register_parameter("absolute_pos_embed", None)
        else:
            raise ModelConfigError(f"ape={ape!r}", hint="use true, false or sincos")

    def project(self, x: Tensor) -> Tensor:
        return super().forward(x)

    def add_position(self, tokens: Tensor) -> Tensor:
        if self.absolute_pos_embed is None:
            return tokens
        return tokens + self.absolute_pos_embed

    def forward(self, x: Tensor) -> Tensor:
        return self.add_position(self.project(x))


def create_encoder(
    arch: str,
    in_chans: int,
    img_size: int,
    window_size: WindowSize | None = None,
    ape: ApeKind = False,
    shift: bool = True,
    drop_path_rate: float = 0.0,
    **kw: Any,
) -> nn.Module:
    """Build a timm encoder without classification head.

    Args:
        arch: one of ``ARCHITECTURES`` (swin_tiny, swin_small, swin_base, vit_small, vit_base).
        in_chans: input channels (1 for HH; 2 for HH+HV, ...).
        img_size: square input size in pixels; Swin needs a multiple of its total stride (32).
        window_size: Swin attention window in tokens, one for all stages or a list with one
            per stage (MixMAE's [8, 8, 8, 4]); default = the last stage's grid size (8 at
            256 px, timm's 7 at 224 px). Each stage's grid must be a multiple of its window
            or smaller than it (the window then shrinks to the grid, as in timm). Not for ViT.
        ape: Swin only: add an absolute position embedding after the patch embedding,
            learned (True) or a frozen 2-D sin-cos ("sincos"). A ViT always has one.
        shift: Swin only: shift the windows of every second block (Swin); False keeps every
            window in place (MixMAE's encoder).
        drop_path_rate: stochastic depth rate at the deepest block.
        **kw: timm overrides, e.g. ``embed_dim``, ``depths``, ``num_heads``, ``patch_size``.

    Raises:
        ModelConfigError: unknown arch, window size for a ViT, sizes that do not tile.
    """
    if arch not in ARCHITECTURES:
        raise ModelConfigError(
            f"unknown encoder architecture {arch!r}", hint=f"use one of {sorted(ARCHITECTURES)}"
        )
    common = dict(
        pretrained=False,
        num_classes=0,
        in_chans=in_chans,
        img_size=img_size,
        drop_path_rate=drop_path_rate,
    )
    if arch.startswith("vit"):
        for name, value, default in (("window_size", window_size, None), ("shift", shift, True)):
            if value != default:
                raise ModelConfigError(
                    f"{name}={value} given for {arch}", hint="ViT has global attention"
                )
        return timm.create_model(ARCHITECTURES[arch], **common, **kw)

    windows = _stage_windows(arch, img_size, window_size, kw)
    embed_layer = partial(SwinPatchEmbed, ape=ape)
    encoder = timm.create_model(
        ARCHITECTURES[arch], **common, window_size=windows, embed_layer=embed_layer, **kw
    )
    if not shift:
        _disable_window_shift(encoder)
    return encoder


def _disable_window_shift(encoder: SwinTransformer) -> None:
    """Every block attends within unshifted windows (no cyclic shift, no shift mask).

    timm builds odd blocks shifted by half a window wherever the grid exceeds the window
    and offers no option against it; its block reads ``shift_size`` and ``attn_mask`` at
    every forward and recomputes both from ``target_shift_size`` when resized.
    """
    for stage in encoder.layers:
        for block in stage.blocks:
            block.target_shift_size = (0, 0)
            block.shift_size = (0, 0)
            block.attn_mask = None


def _swin_stage_grids(arch: str, img_size: int, kw: Mapping[str, Any]) -> list[int]:
    patch = kw.get("patch_size", 4)
    stages = len(kw.get("depths", (2, 2, 6, 2)))
    total_stride = patch * 2 ** (stages - 1)
    if img_size % total_stride:
        raise ModelConfigError(
            f"{arch}: img_size {img_size} is not a multiple of the total stride {total_stride}",
            hint=f"use an img_size that is a multiple of {total_stride}",
        )
    return [img_size // (patch * 2**stage) for stage in range(stages)]


def _stage_windows(
    arch: str, img_size: int, window_size: WindowSize | None, kw: Mapping[str, Any]
) -> list[int]:
    """One window per stage, checked to tile its stage's grid (or to cover it whole)."""
    grids = _swin_stage_grids(arch, img_size, kw)
    if window_size is None:
        windows = [grids[-1]] * len(grids)
    elif isinstance(window_size, int):
        windows = [window_size] * len(grids)
    else:
        windows = [int(w) for w in window_size]
    if len(windows) != len(grids):
        raise ModelConfigError(
            f"{arch}: {len(windows)} window sizes for {len(grids)} stages",
            hint="give one window size, or one per stage",
        )
    for stage, (grid, window) in enumerate(zip(grids, windows, strict=True)):
        if window < 1 or (grid > window and grid % window):
            raise ModelConfigError(
                f"{arch}: window {window} does not tile stage {stage} ({grid} x {grid} tokens "
                f"at img_size {img_size})",
                hint="choose a window size that divides every stage grid larger than it",
            )
    return windows


def resolve_encoder_config(spec: str | Mapping[str, Any]) -> dict[str, Any]:
    """The full ``create_encoder`` arguments for a preset name or a (partial) dict.

    A dict may name a ``preset`` and override any of its keys. The result has every
    argument explicit (window size resolved) and lists instead of tuples, so that it can
    be written to JSON/YAML and rebuilds the same encoder with ``build_encoder``.
    """
    spec = {"preset": spec} if isinstance(spec, str) else dict(spec)
    preset_name = spec.pop("preset", None)
    if preset_name is not None:
        if preset_name not in ENCODER_PRESETS:
            raise ModelConfigError(
                f"unknown encoder preset {preset_name!r}",
                hint=f"use one of {sorted(ENCODER_PRESETS)}",
            )
        spec = {**ENCODER_PRESETS[preset_name], **spec}
    missing = {"arch", "in_chans", "img_size"} - spec.keys()
    if missing:
        raise ModelConfigError(
            f"encoder config lacks {sorted(missing)}", hint="add them or a preset"
        )
    defaults = {"window_size": None, "ape": False, "shift": True, "drop_path_rate": 0.0}
    config = {key: spec.get(key, defaults.get(key)) for key in _CORE_KEYS}
    config.update((key, value) for key, value in spec.items() if key not in _CORE_KEYS)
    if config["arch"].startswith("swin") and config["window_size"] is None:
        extra = {k: v for k, v in config.items() if k not in _CORE_KEYS}
        config["window_size"] = _swin_stage_grids(config["arch"], config["img_size"], extra)[-1]
    return {k: list(v) if isinstance(v, tuple) else v for k, v in config.items()}


def build_encoder(spec: str | Mapping[str, Any]) -> nn.Module:
    """``create_encoder`` from a preset name or config dict (see ``resolve_encoder_config``)."""
    return create_encoder(**resolve_encoder_config(spec))


def is_swin(encoder: nn.Module) -> bool:
    return isinstance(encoder, SwinTransformer)


def _vit_taps(encoder: VisionTransformer) -> list[int]:
    """Indices of four evenly spaced blocks, the last one included (2, 5, 8, 11 for 12)."""
    depth = len(encoder.blocks)
    return [depth * quarter // 4 - 1 for quarter in (1, 2, 3, 4)]


def encoder_feature_info(encoder: nn.Module) -> list[StageInfo]:
    """Channels and stride (input pixels) of the four maps ``encoder_features`` returns."""
    if is_swin(encoder):
        return [StageInfo(info["num_chs"], info["reduction"]) for info in encoder.feature_info]
    if isinstance(encoder, VisionTransformer):
        stride = encoder.patch_embed.patch_size[0]
        return [StageInfo(encoder.embed_dim, stride) for _ in _vit_taps(encoder)]
    raise TypeError(f"not an alos2fm encoder: {type(encoder).__name__}")


def encoder_features(encoder: nn.Module, x: Tensor) -> list[Tensor]:
    """Four NCHW feature maps of an input batch (B, C, H, W), shallow to deep.

    Swin: the outputs of its four stages (strides 4, 8, 16, 32 for patch 4). ViT: the
    outputs of four evenly spaced blocks, all at the patch stride. Maps are raw block
    outputs without the final norm, so a dense head adds its own norm per level.
    """
    if is_swin(encoder):
        return encoder.forward_intermediates(x, intermediates_only=True)
    return encoder.forward_intermediates(
        x, indices=_vit_taps(encoder), output_fmt="NCHW", intermediates_only=True
    )


def encoder_stride(encoder: nn.Module) -> int:
    """Stride in pixels of the encoder's final token grid (32 for Swin patch 4, 16 for ViT/16)."""
    return encoder_feature_info(encoder)[-1].stride


def encoder_no_weight_decay(encoder: nn.Module) -> set[str]:
    """Parameter names (relative to the encoder) that AdamW should not decay.

    Position embeddings, class/register tokens and Swin's relative position tables; norms and
    biases are left to the optimizer's usual rule (no decay on 1-D parameters).
    """
    return {
        name for name, _ in encoder.named_parameters() if name.rsplit(".", 1)[-1] in _NO_DECAY_NAMES
    }
