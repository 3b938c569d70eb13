"""The method authors' released checkpoints -> alos2fm's timm-based models.

Three layouts (``../shared/WEIGHTS_INTEROP.md``): SimMIM on microsoft's Swin (the
SAR-W-SimMIM ALOS-2 encoder), MixMIM's Swin (SAR-W-MixMAE, Sentinel-1) and the SimMIM
Swin-B + UPerNet fine-tuned on ALOS-2 land cover. Conversion is four steps:

1. ``unwrap``: the state dict inside the container (``{'model': ...}`` or bare), without
   its ``encoder.`` prefix;
2. ``detect_format``: which of the three layouts it is;
3. ``infer_encoder_config``: the ``create_encoder`` arguments, read off the tensors' shapes
   (widths, depths, heads, per-stage windows, input size), plus what each format fixes
   (learned APE and shifted windows for SimMIM, sin-cos APE and no shift for MixMAE);
4. ``convert_encoder``: rename onto timm (patch merging moves to the next stage, APE rows
   to a grid), check what is dropped against what timm computes itself, and require that
   the result equals the built encoder's keys and shapes exactly. A converter that
   tolerated missing or mis-shaped keys would leave the APE or all patch mergings random
   while "most keys" loaded.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from torch import Tensor, nn

from alos2fm.models.backbones import build_encoder
from alos2fm.models.segmenter import WeightsError

Format = Literal["simmim", "mixmae", "simmim-upernet"]
FORMATS: tuple[str, ...] = ("simmim", "mixmae", "simmim-upernet")

_DOWNSAMPLE = re.compile(r"^layers\.(\d+)\.downsample\.(.+)$")
_BLOCK_BUFFER = re.compile(
    r"^layers\.(\d+)\.blocks\.(\d+)\.(attn\.relative_position_index|attn_mask)$"
)
_TABLE = re.compile(r"^layers\.(\d+)\.blocks\.0\.attn\.relative_position_bias_table$")
_ENCODER_ROOTS = ("patch_embed.", "absolute_pos_embed", "layers.", "norm.")
SEGMENTER_DECODER_PREFIXES = ("decoder.decoder.", "decoder.prog_head.")

# Why each non-encoder entry of a released file is left out of an encoder import.
_DROP_REASONS = (
    ("mask_token", "mask token: used in pretraining only"),
    ("decoder.", "pretraining decoder: reconstructs pixels, not used downstream"),
    ("decoder_", "MixMAE decoder: reconstructs pixels, not used downstream"),
    ("head.", "classification head of a fine-tuned model: segmentation trains its own"),
)


@dataclass
class Conversion:
    """A converted state dict and what was left out of it, with why."""

    encoder_config: dict[str, Any]
    encoder_state: dict[str, Tensor]
    format: Format
    decoder_state: dict[str, Tensor] = field(default_factory=dict)
    dropped: list[tuple[str, str]] = field(default_factory=list)

    def report(self) -> str:
        lines = [f"converted {len(self.encoder_state)} encoder tensors"]
        if self.decoder_state:
            lines.append(f"converted {len(self.decoder_state)} segmenter decoder tensors")
        reasons: dict[str, list[str]] = {}
        for key, reason in self.dropped:
            reasons.setdefault(reason, []).append(key)
        for reason, keys in reasons.items():
            shown = ", ".join(keys[:4]) + (", ..." if len(keys) > 4 else "")
            lines.append(f"dropped {len(keys)} ({reason}): {shown}")
        return "\n".join(lines)


def unwrap(content: Any, path: Path) -> dict[str, Tensor]:
    """The tensors of a released file: ``content['model']`` or ``content`` itself, keys
    without the ``encoder.`` prefix that SimMIM and UPerNet wrappers put on the encoder."""
    state = content.get("model", content) if isinstance(content, Mapping) else None
    if not isinstance(state, Mapping) or not state:
        raise WeightsError("no state dict in the file (expected a dict or {'model': ...})", path)
    foreign = [key for key in state if not isinstance(key, str)]
    if foreign:
        raise WeightsError(
            f"the state dict holds a key that is not text: {foreign[0]!r:.60}",
            path,
            "not a PyTorch state dict: re-save the weights with text keys",
        )
    tensors = {key: value for key, value in state.items() if isinstance(value, Tensor)}
    if len(tensors) != len(state):
        other = next(key for key in state if key not in tensors)
        raise WeightsError(f"the state dict holds a non-tensor entry {other!r}", path)
    return {key.removeprefix("encoder."): value for key, value in tensors.items()}


def detect_format(content: Any, state: Mapping[str, Tensor], path: Path) -> Format:
    """Which released layout ``state`` has: the segmenter by its UPerNet keys, MixMAE by its
    decoder or ``args``, SimMIM by its shift masks or ``config``."""
    if any(key.startswith(SEGMENTER_DECODER_PREFIXES) for key in state):
        return "simmim-upernet"
    container = content if isinstance(content, Mapping) else {}
    if "args" in container or any(key.startswith("decoder_") for key in state):
        return "mixmae"
    if "config" in container or any(key.endswith("attn_mask") for key in state):
        return "simmim"
    raise WeightsError(
        "cannot tell the checkpoint's layout (no config, args, decoder or shift masks)",
        path,
        f"name it with --format ({', '.join(FORMATS)})",
    )


def _encoder_part(state: Mapping[str, Tensor]) -> dict[str, Tensor]:
    return {k: v for k, v in state.items() if k.startswith(_ENCODER_ROOTS)}


def infer_encoder_config(state: Mapping[str, Tensor], fmt: Format, path: Path) -> dict[str, Any]:
    """``create_encoder`` arguments that reproduce the file's encoder, from tensor shapes."""
    encoder = _encoder_part(state)
    try:
        proj = encoder["patch_embed.proj.weight"]  # (D, C, p, p)
    except KeyError:
        raise WeightsError("no patch_embed.proj.weight: not a Swin encoder", path) from None
    stages = sorted({int(k.split(".")[1]) for k in encoder if k.startswith("layers.")})
    depths = [
        len({k.split(".")[3] for k in encoder if k.startswith(f"layers.{s}.blocks.")})
        for s in stages
    ]
    tables = {int(m.group(1)): v for k, v in encoder.items() if (m := _TABLE.match(k))}
    if sorted(tables) != stages:
        raise WeightsError("a stage lacks its relative position bias table", path)
    patch = proj.shape[-1]
    if patch != 4:
        raise WeightsError(f"patch size {patch}: the released Swins use 4", path)
    ape = encoder.get("absolute_pos_embed")
    # Without an APE the input size cannot be read off: the authors' published one then.
    side = math.isqrt(ape.shape[1]) if ape is not None else {"mixmae": 32}.get(fmt, 64)
    return {
        "arch": "swin_base",
        "in_chans": int(proj.shape[1]),
        "img_size": int(side * patch),
        "window_size": [(math.isqrt(tables[s].shape[0]) + 1) // 2 for s in stages],
        "ape": False if ape is None else ("sincos" if fmt == "mixmae" else True),
        "shift": fmt != "mixmae",
        "drop_path_rate": 0.0,
        "embed_dim": int(proj.shape[0]),
        "depths": depths,
        "num_heads": [int(tables[s].shape[1]) for s in stages],
    }


def _drop_reason(key: str) -> str:
    for prefix, reason in _DROP_REASONS:
        if key.startswith(prefix):
            return reason
    return "not part of a Swin encoder"


def _check_buffer(key: str, value: Tensor, encoder: nn.Module, path: Path) -> str:
    """Why a file's buffer can be dropped: it equals what timm computes (index), or marks a
    block that timm shifts too (mask). Anything else means the tables or blocks differ."""
    stage, block, name = _BLOCK_BUFFER.match(key).groups()
    target = encoder.layers[int(stage)].blocks[int(block)]
    if name == "attn_mask":
        if not any(target.shift_size):
            raise WeightsError(
                f"{key}: the file's block shifts its windows, the encoder's does not",
                path,
                "import with the format that matches the file (--format)",
            )
        return "shifted-window mask: timm recomputes it"
    if not torch.equal(value.long(), target.attn.relative_position_index.long()):
        raise WeightsError(
            f"{key} differs from Swin's relative position index",
            path,
            "the bias tables cannot be interpreted: this is not a Swin checkpoint",
        )
    return "relative position index: equals timm's, which recomputes it"


def convert_encoder(
    state: Mapping[str, Tensor], config: Mapping[str, Any], path: Path
) -> tuple[dict[str, Tensor], list[tuple[str, str]]]:
    """The file's encoder tensors renamed onto the timm encoder ``config`` builds, checked
    key by key and shape by shape; and the dropped entries with the reason for each."""
    encoder = build_encoder(config)
    target = encoder.state_dict()
    converted: dict[str, Tensor] = {}
    dropped: list[tuple[str, str]] = []
    for key, value in _encoder_part(state).items():
        if _BLOCK_BUFFER.match(key):
            dropped.append((key, _check_buffer(key, value, encoder, path)))
            continue
        if key == "absolute_pos_embed":  # (1, h*w, D), tokens row-major -> (1, h, w, D)
            side = math.isqrt(value.shape[1])
            converted["patch_embed.absolute_pos_embed"] = value.reshape(1, side, side, -1)
            continue
        if m := _DOWNSAMPLE.match(key):  # ends stage i in microsoft's Swin, starts i+1 in timm
            key = f"layers.{int(m.group(1)) + 1}.downsample.{m.group(2)}"
        converted[key] = value
    _check_every_shift_has_its_mask(encoder, dropped, path)
    missing = [k for k in target if k not in converted]
    unexpected = [k for k in converted if k not in target]
    wrong = [k for k in converted if k in target and converted[k].shape != target[k].shape]
    if missing or unexpected or wrong:
        problems = []
        for title, keys in (("missing", missing), ("unexpected", unexpected), ("shape", wrong)):
            if not keys:
                continue
            shown = keys[0]
            if title == "shape":
                shown += f" {tuple(converted[shown].shape)} vs {tuple(target[shown].shape)}"
            problems.append(f"{len(keys)} {title} (e.g. {shown})")
        raise WeightsError(
            "the converted encoder does not match its architecture: " + "; ".join(problems),
            path,
            "check --format; a partial load would leave layers at random initialisation",
        )
    dropped += [
        (k, _drop_reason(k))
        for k in state
        if not k.startswith(_ENCODER_ROOTS) and not k.startswith(SEGMENTER_DECODER_PREFIXES)
    ]
    return converted, dropped


def _check_every_shift_has_its_mask(
    encoder: nn.Module, dropped: list[tuple[str, str]], path: Path
) -> None:
    """A file that stores shift masks stores one per shifted block: a block that timm shifts
    without a mask in the file computed unshifted attention when trained."""
    masks = {key for key, _ in dropped if key.endswith("attn_mask")}
    if not masks:
        return  # masks are buffers: a file of parameters only cannot tell
    for s, stage in enumerate(encoder.layers):
        for b, block in enumerate(stage.blocks):
            if any(block.shift_size) and f"layers.{s}.blocks.{b}.attn_mask" not in masks:
                raise WeightsError(
                    f"block layers.{s}.blocks.{b} shifts its windows in the encoder but has no "
                    "shift mask in the file",
                    path,
                    "the file's windows differ from the inferred architecture",
                )


def convert(content: Any, path: Path, fmt: Format | Literal["auto"] = "auto") -> Conversion:
    """Unwrap, detect (unless ``fmt`` says), infer the architecture and convert."""
    state = unwrap(content, path)
    if fmt == "auto":
        fmt = detect_format(content, state, path)
    config = infer_encoder_config(state, fmt, path)
    encoder_state, dropped = convert_encoder(state, config, path)
    decoder_state = {}
    if fmt == "simmim-upernet":
        decoder_state = {k: v for k, v in state.items() if k.startswith(SEGMENTER_DECODER_PREFIXES)}
        if not decoder_state:
            raise WeightsError("no UPerNet decoder keys (decoder.decoder.*)", path)
    return Conversion(config, encoder_state, fmt, decoder_state, dropped)
