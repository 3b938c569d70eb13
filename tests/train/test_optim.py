"""AdamW groups, LR scaling and the per-step schedules, against hand-computed values."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from alos2fm.train.config import OptimConfig, ScheduleConfig
from alos2fm.train.optim import (
    build_optimizer,
    build_scheduler,
    lr_multiplier,
    scaled_lr,
    weight_decay_groups,
)


class _Toy(nn.Module):
    def __init__(self):
        super().__init__()
        self.pos_embed = nn.Parameter(torch.zeros(1, 4, 8))
        self.mask_token = nn.Parameter(torch.zeros(1, 1, 8))
        self.proj = nn.Linear(8, 8)
        self.norm = nn.LayerNorm(8)
        self.attn = nn.Module()
        self.attn.relative_position_bias_table = nn.Parameter(torch.zeros(9, 2))
        self.gate = nn.Parameter(torch.zeros(3, 3))  # a matrix the model exempts by name
        self.frozen = nn.Parameter(torch.zeros(2, 2), requires_grad=False)

    def no_weight_decay(self):
        return {"gate"}


def test_scaled_lr_is_linear_in_the_effective_batch():
    assert scaled_lr(1e-4, 512, 512) == pytest.approx(1e-4)
    assert scaled_lr(1.25e-4, 512, 16 * 8 * 2) == pytest.approx(1.25e-4 * 256 / 512)
    assert scaled_lr(1.5e-4, 256, 1024) == pytest.approx(6e-4)


def test_only_weight_matrices_decay():
    model = _Toy()
    decay, no_decay = weight_decay_groups(model, 0.05)
    names = {id(p): n for n, p in model.named_parameters()}
    assert {names[id(p)] for p in decay["params"]} == {"proj.weight"}
    assert {names[id(p)] for p in no_decay["params"]} == {
        "pos_embed",
        "mask_token",
        "proj.bias",
        "norm.weight",
        "norm.bias",
        "attn.relative_position_bias_table",
        "gate",
    }
    assert (decay["weight_decay"], no_decay["weight_decay"]) == (0.05, 0.0)


def test_optimizer_applies_group_lr_scale():
    a, b = nn.Parameter(torch.zeros(2, 2)), nn.Parameter(torch.zeros(2, 2))
    groups = [{"params": [a], "lr_scale": 0.64}, {"params": [b]}, {"params": []}]
    opt = build_optimizer(groups, OptimConfig(betas=(0.9, 0.95)), lr=1e-3)
    assert [g["lr"] for g in opt.param_groups] == pytest.approx([6.4e-4, 1e-3])
    assert opt.param_groups[0]["betas"] == (0.9, 0.95)


def test_multistep_schedule_at_known_steps():
    cfg = ScheduleConfig(epochs=10, warmup_epochs=2, kind="multistep", milestones=(7, 9))
    # 5 steps per epoch: warm-up over steps 0..9, x0.1 from step 35, x0.01 from step 45.
    values = {s: lr_multiplier(s, cfg, 5) for s in (0, 5, 10, 34, 35, 44, 45)}
    assert values == pytest.approx({0: 0.0, 5: 0.5, 10: 1.0, 34: 1.0, 35: 0.1, 44: 0.1, 45: 0.01})


def test_cosine_schedule_at_known_steps():
    cfg = ScheduleConfig(epochs=10, warmup_epochs=1, kind="cosine", milestones=(), min_lr_ratio=0.1)
    # 4 steps per epoch: warm-up 4 steps, cosine over the remaining 36.
    assert lr_multiplier(2, cfg, 4) == pytest.approx(0.5)
    assert lr_multiplier(4, cfg, 4) == pytest.approx(1.0)
    assert lr_multiplier(22, cfg, 4) == pytest.approx(0.1 + 0.9 * 0.5)  # halfway
    assert lr_multiplier(13, cfg, 4) == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi / 4)))
    assert lr_multiplier(40, cfg, 4) == pytest.approx(0.1)


def test_scheduler_steps_the_optimizer_lr():
    p = nn.Parameter(torch.zeros(1))
    opt = build_optimizer([{"params": [p]}], OptimConfig(), lr=2e-3)
    sched = build_scheduler(opt, ScheduleConfig(epochs=4, warmup_epochs=1, kind="cosine"), 4)
    seen = []
    for _ in range(6):
        seen.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert seen[:5] == pytest.approx([0.0, 5e-4, 1e-3, 1.5e-3, 2e-3])
    assert seen[5] < 2e-3


def test_step_budget_schedule_ignores_epochs_and_dataset_size():
    cfg = ScheduleConfig(max_steps=200, warmup_fraction=0.1, kind="cosine", milestones=())
    # Warm-up 20 steps, cosine over 180, whatever the steps per epoch (here 0, or 7).
    for per_epoch in (0, 7):
        assert lr_multiplier(10, cfg, per_epoch) == pytest.approx(0.5)
        assert lr_multiplier(20, cfg, per_epoch) == pytest.approx(1.0)
        assert lr_multiplier(110, cfg, per_epoch) == pytest.approx(0.5)
        assert lr_multiplier(200, cfg, per_epoch) == pytest.approx(0.0)
    with pytest.raises(ValueError, match="max_steps.*cosine"):
        ScheduleConfig(max_steps=10, kind="multistep")
