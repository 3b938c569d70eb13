"""Faster training steps without changing what is computed: fused attention, compilation.

- ``fused_attention``: timm's Swin window attention can call PyTorch's fused
  ``scaled_dot_product_attention`` (flash / memory-efficient kernels on GPU) but leaves it
  off by default (``experimental`` in timm); this turns it on in every timm attention
  module of the model. Same result up to floating-point rounding.
- ``compile``: ``torch.compile`` of the whole model's forward (encoder, masking or
  decoder, loss): in place (``nn.Module.compile``), so parameter names, checkpoints and the
  exported encoder stay as they are. The first steps pay the compilation.

Both are applied by :class:`SpeedOptions` at the Trainer's setup (parameter names do not
change, so checkpoints restore into the result), and :func:`apply_speed_options` serves
any other caller, e.g. prediction.
"""

from __future__ import annotations

import lightning as L
from lightning.pytorch.callbacks import Callback
from torch import nn


def enable_fused_attention(model: nn.Module) -> int:
    """Turn on fused attention in every timm attention module; returns how many."""
    count = 0
    for module in model.modules():
        if hasattr(module, "fused_attn") and not module.fused_attn:
            module.fused_attn = True
            count += 1
    return count


def apply_speed_options(model: nn.Module, fused_attention: bool, compile: bool) -> None:
    """Apply the options to ``model`` in place (see the module docstring)."""
    if fused_attention:
        enable_fused_attention(model)
    if compile:
        model.compile()


class SpeedOptions(Callback):
    """Apply :func:`apply_speed_options` to the LightningModule's ``model`` at setup."""

    def __init__(self, fused_attention: bool, compile: bool):
        self.fused_attention = fused_attention
        self.compile = compile

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        model = getattr(pl_module, "model", pl_module)
        apply_speed_options(model, self.fused_attention, self.compile)
