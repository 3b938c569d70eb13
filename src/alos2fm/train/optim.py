"""Optimiser pieces shared by pretraining and fine-tuning.

- :func:`scaled_lr` is the one place where the absolute learning rate is derived:
  ``base_lr x effective_batch / reference_batch`` (linear scaling, SPEC.md sections 2-3),
  with ``effective_batch = batch per process x processes (devices x nodes) x accumulation``.
- :func:`weight_decay_groups` splits parameters into AdamW groups with and without weight
  decay: norms, biases (every 1-d tensor), position embeddings, relative position tables
  and mask tokens get none.
- :func:`lr_multiplier` is the per-step schedule: linear warm-up, then cosine or multistep.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import lightning as L
import torch
from torch import nn

from alos2fm.train.config import OptimConfig, ScheduleConfig
from alos2fm.train.engine import effective_batch, steps_per_epoch

# Parameters without weight decay even when they are matrices. timm's Swin names its
# relative position tables this way and lists them as no-weight-decay *keywords*.
NO_DECAY_KEYWORDS = ("relative_position_bias_table", "pos_embed", "mask_token", "cls_token")


def scaled_lr(base_lr: float, reference_batch: int, effective_batch: int) -> float:
    """Absolute learning rate for ``effective_batch`` images per optimiser step."""
    return base_lr * effective_batch / reference_batch


def _is_no_decay(name: str, param: nn.Parameter, skip: Iterable[str]) -> bool:
    if param.ndim <= 1:  # norm weights and every bias
        return True
    if any(name == s or name.endswith("." + s) for s in skip):
        return True
    return any(keyword in name for keyword in NO_DECAY_KEYWORDS)


def no_decay_names(model: nn.Module) -> set[str]:
    """Names the model asks to exempt from decay (its ``no_weight_decay()``), if any."""
    hook = getattr(model, "no_weight_decay", None)
    return set(hook()) if callable(hook) else set()


def weight_decay_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """Two AdamW groups: ``weight_decay`` for weight matrices/kernels, 0 for the rest."""
    skip = no_decay_names(model)
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        (no_decay if _is_no_decay(name, param, skip) else decay).append(param)
    return [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]


def build_optimizer(
    groups: list[dict[str, Any]], cfg: OptimConfig, lr: float, fused: bool = False
) -> torch.optim.AdamW:
    """AdamW over ``groups``; a group's optional ``lr_scale`` (layer decay) scales ``lr``."""
    for group in groups:
        group["lr"] = lr * group.get("lr_scale", 1.0)
    groups = [g for g in groups if g["params"]]
    return torch.optim.AdamW(groups, lr=lr, betas=cfg.betas, eps=cfg.eps, fused=fused)


def lr_multiplier(step: int, cfg: ScheduleConfig, steps_per_epoch: int) -> float:
    """Factor applied to the peak LR at optimiser step ``step`` (0-based).

    Warm-up rises linearly from ``warmup_start_ratio`` to 1 over ``warmup_epochs`` (or
    ``warmup_fraction`` of ``max_steps``); then ``cosine`` decays to ``min_lr_ratio`` at the
    end of ``epochs`` (or at ``max_steps``) and ``multistep`` multiplies by ``gamma`` at
    each epoch in ``milestones``.
    """
    if cfg.max_steps is not None:  # a budget in steps: the dataset's size does not matter
        warmup, total = round(cfg.warmup_fraction * cfg.max_steps), cfg.max_steps
    else:
        warmup, total = round(cfg.warmup_epochs * steps_per_epoch), cfg.epochs * steps_per_epoch
    if step < warmup:
        return cfg.warmup_start_ratio + (1.0 - cfg.warmup_start_ratio) * step / warmup
    if cfg.kind == "multistep":
        passed = sum(step >= m * steps_per_epoch for m in cfg.milestones)
        return cfg.gamma**passed
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    cosine = 0.5 * (1.0 + math.cos(math.pi * progress))
    return cfg.min_lr_ratio + (1.0 - cfg.min_lr_ratio) * cosine


def build_scheduler(
    optimizer: torch.optim.Optimizer, cfg: ScheduleConfig, steps_per_epoch: int
) -> torch.optim.lr_scheduler.LambdaLR:
    """Per-step LambdaLR following :func:`lr_multiplier` (call ``step()`` every optimiser step)."""
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: lr_multiplier(step, cfg, steps_per_epoch)
    )


def configure_adamw(
    trainer: L.Trainer,
    groups: list[dict[str, Any]],
    optim: OptimConfig,
    schedule: ScheduleConfig,
    batch_size: int,
) -> dict[str, Any]:
    """``configure_optimizers`` result: AdamW at the scaled LR and its per-step schedule.

    The LR is derived here, once, from the batch per process and the Trainer's world size
    and accumulation (the effective batch).
    """
    lr = scaled_lr(optim.base_lr, optim.reference_batch, effective_batch(trainer, batch_size))
    # Fused AdamW (CPU and CUDA since torch 2.4) cuts the optimiser from ~12 ms to ~1 ms of
    # a ~200 ms tiny-preset CPU step; Lightning refuses gradient clipping with a fused
    # optimiser under mixed precision (it unscales internally), so only full precision.
    fused = not str(trainer.precision).endswith("mixed")
    optimizer = build_optimizer(groups, optim, lr, fused=fused)
    scheduler = build_scheduler(optimizer, schedule, steps_per_epoch(trainer))
    return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}


def layer_decay_groups(
    segmenter: nn.Module, base_lr: float, weight_decay: float, decay: float = 0.8
) -> list[dict[str, Any]]:
    """AdamW parameter groups with layer-wise LR decay (BEiT-style).

    A parameter with layer id ``i`` (see ``alos2fm.models.segmenter.encoder_layer_ids``;
    decoder = ``L``) gets ``lr_scale = decay ** (L - i)``: the decoder trains at
    ``base_lr``, the last encoder block at ``decay * base_lr``, the patch embedding at
    ``decay ** L * base_lr``.
    Weight decay follows :func:`weight_decay_groups` (none on norms,
    biases, position embeddings and tables).

    Returns one dict per (layer, decay/no-decay) with keys ``params``, ``weight_decay``,
    ``lr_scale``, ``lr`` (= base_lr x lr_scale) and ``name`` (``"layer3_decay"``), ready
    for ``torch.optim.AdamW`` or :func:`build_optimizer`, which sets
    ``lr`` from ``lr_scale`` itself.
    """
    from alos2fm.models.segmenter import encoder_layer_ids

    ids, num_layers = encoder_layer_ids(segmenter)
    decayed = weight_decay_groups(segmenter, weight_decay)[0]["params"]
    decayed_ids = {id(p) for p in decayed}
    groups: dict[str, dict[str, Any]] = {}
    for name, param in segmenter.named_parameters():
        if not param.requires_grad:
            continue
        layer = ids[name]
        kind = "decay" if id(param) in decayed_ids else "no_decay"
        scale = decay ** (num_layers - layer)
        group = groups.setdefault(
            f"layer{layer}_{kind}",
            {
                "params": [],
                "weight_decay": weight_decay if kind == "decay" else 0.0,
                "lr_scale": scale,
                "lr": base_lr * scale,
                "name": f"layer{layer}_{kind}",
            },
        )
        group["params"].append(param)
    return list(groups.values())
