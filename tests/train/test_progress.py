"""The training bar counts optimiser steps under a step budget ("step 5/7", not "Epoch 2/-2")."""

from __future__ import annotations

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import Callback
from torch.utils.data import DataLoader, TensorDataset

from alos2fm.train.config import resolve_config
from alos2fm.train.engine import build_trainer
from alos2fm.train.progress import StepBudgetBar

pytest.importorskip("rich")


class _Regression(L.LightningModule):
    """The smallest module Lightning fits: three batches an epoch."""

    def __init__(self):
        super().__init__()
        self.layer = torch.nn.Linear(2, 1)

    def training_step(self, batch, batch_idx):
        x, y = batch
        return torch.nn.functional.mse_loss(self.layer(x), y)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)

    def train_dataloader(self):
        return DataLoader(TensorDataset(torch.randn(12, 2), torch.randn(12, 1)), batch_size=4)


class _BarReader(Callback):
    """What the bar shows after each step (it runs after the bar, which comes first)."""

    def __init__(self):
        self.seen: list[tuple[str, float | None, float]] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        bar = trainer.progress_bar_callback
        task = next(t for t in bar.progress.tasks if t.id == bar.train_progress_bar_id)
        self.seen.append((task.description.strip(), task.total, task.completed))


def _fit(tmp_path, max_epochs: int, max_steps: int | None) -> list[tuple[str, float | None, float]]:
    cfg = resolve_config("finetune", "cpu-tiny-seg", ["trainer.val_every_n_steps=null"])
    reader = _BarReader()
    trainer = build_trainer(
        cfg.trainer, tmp_path, max_epochs, cfg.seed, callbacks=[reader], max_steps=max_steps
    )
    assert isinstance(trainer.progress_bar_callback, StepBudgetBar)
    trainer.fit(_Regression())
    return reader.seen


def test_a_step_budget_shows_steps_over_the_whole_budget(tmp_path):
    seen = _fit(tmp_path, max_epochs=60, max_steps=7)  # 3 batches an epoch: 3 epochs
    assert [s[0] for s in seen] == [f"step {n}/7" for n in range(1, 8)]
    assert {s[1] for s in seen} == {7}  # one total, not an epoch's 3 batches
    assert [s[2] for s in seen] == list(range(1, 8))  # never reset at an epoch boundary


def test_an_epoch_budget_keeps_lightning_s_epoch_bar(tmp_path):
    seen = _fit(tmp_path, max_epochs=2, max_steps=None)
    assert [s[0] for s in seen] == ["Epoch 0/1"] * 3 + ["Epoch 1/1"] * 3
    assert [s[2] for s in seen] == [1, 2, 3] * 2
