"""Stand-ins for the authors' released checkpoints, built from our own encoders.

The real files cannot be downloaded here. These have their exact key names, shapes and
containers (``../shared/WEIGHTS_INTEROP.md``): the microsoft/MixMIM Swin layout (patch
merging at the end of a stage, APE as token rows, one relative position index per block,
a shift mask per shifted block), an ``encoder.`` prefix, the pretraining decoders, and
the containers' non-tensor objects (a yacs ``CfgNode``, an ``argparse.Namespace``) pickled
under their real class names. The inverse mapping is written here independently of the
converter, from the layout's description.
"""

from __future__ import annotations

import argparse
import re
import sys
import types
from contextlib import contextmanager
from pathlib import Path

import torch
from torch import Tensor, nn

_TIMM_DOWNSAMPLE = re.compile(r"^layers\.(\d+)\.downsample\.(.+)$")


def swin_relative_position_index(window: int) -> Tensor:
    """Microsoft Swin's formula: (w^2, w^2) index into the ((2w-1)^2, heads) bias table."""
    coords = torch.stack(torch.meshgrid(torch.arange(window), torch.arange(window), indexing="ij"))
    flat = coords.flatten(1)
    relative = (flat[:, :, None] - flat[:, None, :]).permute(1, 2, 0).contiguous()
    relative[:, :, 0] += window - 1
    relative[:, :, 1] += window - 1
    relative[:, :, 0] *= 2 * window - 1
    return relative.sum(-1)


def to_authors_layout(encoder: nn.Module, shift_masks: bool = True) -> dict[str, Tensor]:
    """Our (timm) encoder's tensors in the microsoft/MixMIM Swin layout, with the buffers
    those files hold; ``shift_masks`` False for MixMIM (which never shifts)."""
    state = {}
    for key, value in encoder.state_dict().items():
        if m := _TIMM_DOWNSAMPLE.match(key):
            key = f"layers.{int(m.group(1)) - 1}.downsample.{m.group(2)}"
        elif key == "patch_embed.absolute_pos_embed":
            key, value = "absolute_pos_embed", value.flatten(1, 2)
        state[key] = value.clone()
    for s, stage in enumerate(encoder.layers):
        for b, block in enumerate(stage.blocks):
            index = swin_relative_position_index(block.window_size[0])
            state[f"layers.{s}.blocks.{b}.attn.relative_position_index"] = index
            if shift_masks and any(block.shift_size):
                state[f"layers.{s}.blocks.{b}.attn_mask"] = block.attn_mask.clone()
    return state


@contextmanager
def fake_yacs():
    """A ``yacs.config.CfgNode`` importable while saving, gone while loading."""
    package, module = types.ModuleType("yacs"), types.ModuleType("yacs.config")

    class CfgNode(dict):
        def __init__(self, init: dict | None = None):
            super().__init__(init or {})
            self.__dict__["__immutable__"] = True
            self.__dict__["__deprecated_keys__"] = set()
            self.__dict__["__new_allowed__"] = False

    CfgNode.__module__, CfgNode.__qualname__ = "yacs.config", "CfgNode"
    module.CfgNode = CfgNode
    sys.modules["yacs"], sys.modules["yacs.config"] = package, module
    try:
        yield CfgNode
    finally:
        del sys.modules["yacs"], sys.modules["yacs.config"]


def save_simmim_checkpoint(encoder: nn.Module, path: Path, in_chans: int = 1) -> Path:
    """SimMIM's training checkpoint: the whole model (encoder.*, mask token, 1x1 decoder)."""
    model = {f"encoder.{k}": v for k, v in to_authors_layout(encoder).items()}
    width, stride = encoder.num_features, 32
    model["encoder.mask_token"] = torch.zeros(1, 1, encoder.patch_embed.proj.out_channels)
    model["decoder.0.weight"] = torch.randn(stride**2 * in_chans, width, 1, 1)
    model["decoder.0.bias"] = torch.zeros(stride**2 * in_chans)
    with fake_yacs() as CfgNode:
        config = CfgNode({"MODEL": CfgNode({"TYPE": "swin", "NAME": "simmim_pretrain"})})
        torch.save(
            {
                "model": model,
                "optimizer": {"state": {}, "param_groups": []},
                "lr_scheduler": {},
                "max_accuracy": 0.0,
                "epoch": 799,
                "config": config,
                "amp": {},
            },
            path,
        )
    return path


def mixmae_decoder(encoder: nn.Module, depth: int = 8, dim: int = 512) -> dict[str, Tensor]:
    """MixMIM's pretraining decoder tensors (names and shapes), for an encoder of 2 channels."""
    grid = encoder.patch_embed.grid_size[0] // 8
    state = {
        "mask_token": torch.zeros(1, 1, dim),
        "decoder_pos_embed": torch.zeros(1, grid * grid, dim),
        "decoder_embed.weight": torch.randn(dim, encoder.num_features),
        "decoder_embed.bias": torch.zeros(dim),
        "decoder_norm.weight": torch.ones(dim),
        "decoder_norm.bias": torch.zeros(dim),
        "decoder_pred.weight": torch.randn(32 * 32 * 2, dim),
        "decoder_pred.bias": torch.zeros(32 * 32 * 2),
    }
    for i in range(depth):
        for name, shape in (
            ("norm1.weight", (dim,)),
            ("norm1.bias", (dim,)),
            ("attn.qkv.weight", (3 * dim, dim)),
            ("attn.qkv.bias", (3 * dim,)),
            ("attn.proj.weight", (dim, dim)),
            ("attn.proj.bias", (dim,)),
            ("norm2.weight", (dim,)),
            ("norm2.bias", (dim,)),
            ("mlp.fc1.weight", (4 * dim, dim)),
            ("mlp.fc1.bias", (4 * dim,)),
            ("mlp.fc2.weight", (dim, 4 * dim)),
            ("mlp.fc2.bias", (dim,)),
        ):
            state[f"decoder_blocks.{i}.{name}"] = torch.zeros(shape)
    return state


def save_mixmae_checkpoint(
    encoder: nn.Module, path: Path, decoder_depth: int = 8, head_classes: int | None = None
) -> Path:
    """A MixMAE checkpoint: encoder + decoder (pretraining) or + ``head`` (fine-tuned)."""
    model = to_authors_layout(encoder, shift_masks=False)
    if head_classes is None:
        model |= mixmae_decoder(encoder, decoder_depth)
    else:
        model["head.weight"] = torch.zeros(head_classes, encoder.num_features)
        model["head.bias"] = torch.zeros(head_classes)
    args = argparse.Namespace(model="mixmim_base", input_size=128, mask_ratio=0.5, epochs=64)
    torch.save({"model": model, "optimizer": {}, "epoch": 63, "scaler": {}, "args": args}, path)
    return path


def save_segmenter_checkpoint(segmenter: nn.Module, path: Path) -> Path:
    """The authors' fine-tuned Swin + UPerNet in their layout (encoder. + decoder.* keys)."""
    model = {f"encoder.{k}": v for k, v in to_authors_layout(segmenter.encoder).items()}
    model |= {k: v.clone() for k, v in segmenter.state_dict().items() if k.startswith("decoder.")}
    with fake_yacs() as CfgNode:
        torch.save({"model": model, "epoch": 99, "config": CfgNode({"DATA": CfgNode()})}, path)
    return path
