"""Segmenter = encoder (Swin or ViT) + UPerNet, and loading a pretrained ``encoder.safetensors``.

``Segmenter(encoder, num_classes)`` maps a normalised image ``(B, C, H, W)`` to class
logits ``(B, K, H, W)``. The encoder's four maps come from
:func:`alos2fm.models.backbones.encoder_features`, each given its own LayerNorm (the
encoder hands raw block outputs). Swin gives a true pyramid (strides 4, 8, 16, 32). A ViT
gives one stride; its last map is turned into a pyramid by ViTDet's simple feature pyramid
(Li et al. 2022): two x2 deconvolutions for stride 4, one for 8, identity for 16, max-pool
for 32. Channel counts always come from ``encoder_feature_info``.

``load_encoder_weights`` initialises the encoder from the pretraining output, adapting
what legitimately differs between pretraining and fine-tuning (window size -> relative
position tables, input size -> absolute position embeddings, both bicubic) and refusing
what means a wrong file (other channel count, other widths, most keys missing).

``encoder_layer_ids`` numbers parameters by depth for layer-wise LR decay
(``alos2fm.train.optim.layer_decay_groups``).
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from timm.layers import LayerNorm2d, resample_abs_pos_embed
from torch import nn

from alos2fm.errors import Alos2fmError
from alos2fm.models.authors_upernet import AuthorsSegmenter
from alos2fm.models.backbones import (
    build_encoder,
    encoder_feature_info,
    encoder_features,
    encoder_no_weight_decay,
)
from alos2fm.models.upernet import UPerNetDecoder

log = logging.getLogger(__name__)


class WeightsError(Alos2fmError):
    """A weights or checkpoint file that does not fit the model it is loaded into."""


class SimpleFeaturePyramid(nn.Module):
    """One stride-s map with ``channels`` -> four maps at strides s/4, s/2, s, 2s."""

    def __init__(self, channels: int):
        super().__init__()
        half, quarter = channels // 2, channels // 4
        self.to_quarter_stride = nn.Sequential(
            nn.ConvTranspose2d(channels, half, 2, stride=2),
            LayerNorm2d(half),
            nn.GELU(),
            nn.ConvTranspose2d(half, quarter, 2, stride=2),
        )
        self.to_half_stride = nn.ConvTranspose2d(channels, half, 2, stride=2)
        self.to_double_stride = nn.MaxPool2d(2)
        self.out_channels = (quarter, half, channels, channels)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return [self.to_quarter_stride(x), self.to_half_stride(x), x, self.to_double_stride(x)]


class Segmenter(nn.Module):
    """Encoder + UPerNet: normalised image ``(B, C, H, W)`` -> logits ``(B, K, H, W)``.

    Args:
        encoder: a model from :func:`alos2fm.models.backbones.create_encoder`.
        num_classes: K, the number of land-cover classes.
        decoder_channels: UPerNet width (256 in the paper).
        dropout: dropout before the classifier.
    """

    def __init__(
        self,
        encoder: nn.Module,
        num_classes: int,
        decoder_channels: int = 256,
        dropout: float = 0.1,
    ):
        super().__init__()
        self.encoder = encoder
        # Dense features are the raw stage outputs, normalised per level below: the
        # encoder's final norm takes no part. Frozen, so that DDP (which requires every
        # trainable parameter to receive a gradient) and the optimiser ignore it, while
        # its weights still load from a pretrained encoder file.
        encoder.norm.requires_grad_(False)
        info = encoder_feature_info(encoder)
        pyramid = len({stage.stride for stage in info}) == len(info)
        if pyramid:  # Swin: four strides already
            self.neck = None
            in_channels = [stage.channels for stage in info]
        else:  # ViT: one stride, build the pyramid from the deepest map
            self.neck = SimpleFeaturePyramid(info[-1].channels)
            in_channels = list(self.neck.out_channels)
        source_channels = [stage.channels for stage in info] if pyramid else [info[-1].channels]
        self.feature_norms = nn.ModuleList(LayerNorm2d(c) for c in source_channels)
        self.decoder = UPerNetDecoder(in_channels, num_classes, decoder_channels, dropout=dropout)
        self.num_classes = num_classes

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = encoder_features(self.encoder, x)
        if self.neck is None:
            features = [norm(f) for norm, f in zip(self.feature_norms, features, strict=True)]
        else:
            features = self.neck(self.feature_norms[0](features[-1]))
        logits = self.decoder(features)
        if logits.shape[-2:] != x.shape[-2:]:  # e.g. a ViT whose patch is not 16
            logits = F.interpolate(logits, x.shape[-2:], mode="bilinear", align_corners=False)
        return logits

    def no_weight_decay(self) -> set[str]:
        """Full names of position embeddings and tables (read by ``weight_decay_groups``)."""
        return {f"encoder.{name}" for name in encoder_no_weight_decay(self.encoder)}


DECODERS: dict[str, type[nn.Module]] = {"upernet": Segmenter, "authors_upernet": AuthorsSegmenter}


def build_segmenter(spec: Mapping[str, Any]) -> nn.Module:
    """Rebuild a segmenter from its description (as stored in checkpoints).

    ``spec``: ``{"encoder": <create_encoder arguments, see backbones.resolve_encoder_config>,
    "num_classes": K, "decoder_channels": 256, "decoder": "upernet"}`` (``decoder_channels``
    and ``decoder`` optional; ``authors_upernet`` is the released ALOS-2 segmenter's head,
    ``unet`` a CNN encoder with a U-Net decoder, see ``alos2fm.models.cnn_unet``; ``merlin``
    MERLIN's despeckling U-Net with a segmentation head, see ``alos2fm.models.merlin``).
    """
    kind = spec.get("decoder", "upernet")
    if kind == "unet":  # a CNN builds its own encoder (timm features_only)
        from alos2fm.models.cnn_unet import CnnUnet

        return CnnUnet(
            spec["encoder"],
            num_classes=int(spec["num_classes"]),
            decoder_channels=int(spec.get("decoder_channels", 256)),
        )
    if kind == "merlin":  # one network, no separate encoder; weights loaded by the caller
        from alos2fm.models.merlin import MerlinUnet

        return MerlinUnet(int(spec["num_classes"]), int(spec["encoder"].get("in_chans", 1)))
    if kind not in DECODERS:
        raise WeightsError(f"unknown decoder {kind!r}", hint=f"use one of {sorted(DECODERS)}")
    return DECODERS[kind](
        build_encoder(spec["encoder"]),
        num_classes=int(spec["num_classes"]),
        decoder_channels=int(spec.get("decoder_channels", 256)),
    )


# --- layer-wise learning-rate decay -------------------------------------------------------

_BLOCK = re.compile(r"(?:layers\.(\d+)\.)?blocks\.(\d+)\.")
_DOWNSAMPLE = re.compile(r"layers\.(\d+)\.downsample\.")
_EMBEDDING = ("patch_embed", "pos_embed", "cls_token", "reg_token", "absolute_pos_embed")


def encoder_layer_ids(segmenter: Segmenter) -> tuple[dict[str, int], int]:
    """Layer id of every parameter, and the decoder's id (= the number of layers).

    Encoder: patch embedding and position embeddings 0; transformer blocks 1..N in forward
    order (Swin's ``layers.s.blocks.b`` counted across stages); a Swin patch-merging layer
    shares the id of the block before it; other encoder parameters (final norm) N.
    Everything outside the encoder (feature norms, ViT pyramid, UPerNet) gets N + 1.
    """
    names = [name for name, _ in segmenter.encoder.named_parameters()]
    blocks = sorted(
        {(int(m.group(1) or 0), int(m.group(2))) for n in names if (m := _BLOCK.search(n))}
    )
    block_id = {key: i + 1 for i, key in enumerate(blocks)}
    num_blocks = len(blocks)

    def encoder_id(name: str) -> int:
        if (m := _BLOCK.search(name)) is not None:
            return block_id[(int(m.group(1) or 0), int(m.group(2)))]
        if (m := _DOWNSAMPLE.search(name)) is not None:
            return sum(1 for stage, _ in blocks if stage < int(m.group(1)))
        if name.split(".")[0] in _EMBEDDING:
            return 0
        return num_blocks

    ids = {}
    for name, _ in segmenter.named_parameters():
        inner = name.removeprefix("encoder.")
        ids[name] = encoder_id(inner) if inner != name else num_blocks + 1
    return ids, num_blocks + 1


# --- loading a pretrained encoder ---------------------------------------------------------


@dataclass
class EncoderLoadReport:
    """What ``load_encoder_weights`` did, key by key (names relative to the encoder)."""

    path: Path
    loaded: list[str] = field(default_factory=list)
    resized: list[str] = field(default_factory=list)  # "key: (old shape) -> (new shape)"
    missing: list[str] = field(default_factory=list)  # in the model, not in the file
    unexpected: list[str] = field(default_factory=list)  # in the file, not in the model

    def summary(self) -> str:
        lines = [f"{self.path}: loaded {len(self.loaded)} encoder tensors"]
        for title, keys in (
            ("interpolated", self.resized),
            ("missing (left at initialisation)", self.missing),
            ("unexpected (ignored)", self.unexpected),
        ):
            if keys:
                lines.append(f"  {title}: {len(keys)}: " + ", ".join(keys))
        return "\n".join(lines)


def _resize_relative_position_table(table: torch.Tensor, rows: int) -> torch.Tensor:
    """Swin table ((2w-1)^2, heads) -> (rows, heads), bicubic over the (2w-1)^2 offset grid."""
    old_side, new_side = math.isqrt(table.shape[0]), math.isqrt(rows)
    heads = table.shape[1]
    grid = table.T.reshape(1, heads, old_side, old_side).float()
    grid = F.interpolate(grid, size=(new_side, new_side), mode="bicubic", align_corners=False)
    return grid.reshape(heads, rows).T.to(table.dtype)


def _resize_swin_ape(embedding: torch.Tensor, shape: torch.Size) -> torch.Tensor:
    """Swin APE (1, h, w, D) -> (1, h', w', D), bicubic."""
    grid = embedding.permute(0, 3, 1, 2).float()
    grid = F.interpolate(grid, size=tuple(shape[1:3]), mode="bicubic", align_corners=False)
    return grid.permute(0, 2, 3, 1).to(embedding.dtype)


def _adapt(encoder: nn.Module, key: str, value: torch.Tensor, want: torch.Size, path: Path):
    """``value`` resized to ``want`` when the difference is one pretraining may legitimately
    have (window or input size); otherwise a ``WeightsError`` naming the key."""
    leaf = key.rsplit(".", 1)[-1]
    if key == "patch_embed.proj.weight" and value.shape[1] != want[1]:
        raise WeightsError(
            f"the encoder was pretrained on {value.shape[1]} input channel(s), the model has "
            f"{want[1]}",
            path,
            "use weights pretrained on the same bands, or set model.in_chans to match",
        )
    if leaf == "relative_position_bias_table" and value.shape[1] == want[1]:
        return _resize_relative_position_table(value, want[0])
    if leaf == "absolute_pos_embed" and value.ndim == 4 and value.shape[3] == want[3]:
        return _resize_swin_ape(value, want)
    if leaf == "pos_embed" and value.ndim == 3 and value.shape[2] == want[2]:
        prefix = getattr(encoder, "num_prefix_tokens", 0)
        old_side = math.isqrt(value.shape[1] - prefix)
        return resample_abs_pos_embed(
            value,
            new_size=list(encoder.patch_embed.grid_size),
            old_size=[old_side, old_side],
            num_prefix_tokens=prefix,
        )
    raise WeightsError(
        f"{key} has shape {tuple(value.shape)} in the file but {tuple(want)} in the model",
        path,
        "the file was pretrained for another architecture or width: check the encoder config",
    )


def load_encoder_weights(
    segmenter: Segmenter, path: str | Path, min_fraction: float = 0.5
) -> EncoderLoadReport:
    """Initialise ``segmenter.encoder`` from an ``encoder.safetensors`` file.

    Keys may be stored bare or prefixed ``encoder.`` (the prefix is dropped). Relative
    position tables and absolute position embeddings are interpolated (bicubic) when the
    window or input size differ from pretraining. Keys present on only one side are
    reported, not fatal (e.g. SimMIM's mask token, or a final norm) — unless fewer than
    ``min_fraction`` of the encoder's tensors would load: the file is for another model.

    Raises:
        WeightsError: unreadable file, channel-count or width mismatch, too few keys.
    """
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = Path(path)
    try:
        source = load_file(path)
    except (OSError, SafetensorError) as err:
        raise WeightsError(f"cannot read encoder weights: {err}", path) from None
    source = {key.removeprefix("encoder."): value for key, value in source.items()}

    encoder = segmenter.encoder
    target = encoder.state_dict()
    report = EncoderLoadReport(path)
    weights = {}
    for key, value in source.items():
        if key not in target:
            report.unexpected.append(key)
            continue
        if value.shape != target[key].shape:
            resized = _adapt(encoder, key, value, target[key].shape, path)
            report.resized.append(f"{key}: {tuple(value.shape)} -> {tuple(resized.shape)}")
            value = resized
        weights[key] = value
        report.loaded.append(key)
    report.missing = [key for key in target if key not in weights]
    if len(weights) < min_fraction * len(target):
        raise WeightsError(
            f"only {len(weights)} of the encoder's {len(target)} tensors are in the file "
            f"({len(report.unexpected)} others are)",
            path,
            "this is not an encoder.safetensors for this architecture",
        )
    encoder.load_state_dict(weights, strict=False)
    log.info(report.summary())
    return report
