"""The shared engine: keyed RNG and exact resume (same step, same next losses, same weights)."""

from __future__ import annotations

import pandas as pd
import torch
from lightning.pytorch.callbacks import Callback

from alos2fm.train.config import resolve_config
from alos2fm.train.data import PatchDataModule
from alos2fm.train.engine import build_trainer, last_checkpoint, seed_run, step_seed
from alos2fm.train.pretrain import PretrainModule

FAST = ["data.batch_size=4", "schedule.epochs=2", "weighting.kind=sar", "trainer.accelerator=cpu"]


class _LossRecorder(Callback):
    def __init__(self):
        self.losses: dict[int, float] = {}

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.losses[trainer.global_step] = float(outputs["loss"])


def _fit(store, run_dir, max_epochs, resume=False):
    cfg = resolve_config("pretrain", "cpu-tiny-simmim", FAST)
    dm = PatchDataModule(store, cfg.data, cfg.seed, with_labels=False, splits=("train",))
    seed_run(cfg.seed)
    module = PretrainModule(cfg, dm.normalisation)
    recorder = _LossRecorder()
    trainer = build_trainer(cfg.trainer, run_dir, max_epochs, cfg.seed, callbacks=[recorder])
    trainer.fit(module, datamodule=dm, ckpt_path=last_checkpoint(run_dir) if resume else None)
    return trainer, module, recorder.losses


def test_step_seed_depends_on_every_coordinate():
    base = step_seed(0, 1, 2, 0)
    assert base == step_seed(0, 1, 2, 0)
    others = {
        step_seed(1, 1, 2, 0),
        step_seed(0, 2, 2, 0),
        step_seed(0, 1, 3, 0),
        step_seed(0, 1, 2, 1),
    }
    assert base not in others and len(others) == 4


def test_resume_replays_an_uninterrupted_run(tiny_store, tmp_path):
    # 16 training patches / batch 4 = 4 steps per epoch; masks, flips and SAR-W all active.
    full, full_module, full_losses = _fit(tiny_store, tmp_path / "full", max_epochs=2)
    _fit(tiny_store, tmp_path / "split", max_epochs=1)
    resumed, resumed_module, resumed_losses = _fit(
        tiny_store, tmp_path / "split", max_epochs=2, resume=True
    )
    assert full.global_step == resumed.global_step == 8
    assert sorted(resumed_losses) == [5, 6, 7, 8]  # continued at step 4, not from 0
    for step in resumed_losses:
        assert resumed_losses[step] == full_losses[step]
    for (name, a), (_, b) in zip(
        full_module.state_dict().items(), resumed_module.state_dict().items(), strict=True
    ):
        assert torch.equal(a, b), name
    # The LR schedule continued too (same LR after the last step).
    lr = [t.optimizers[0].param_groups[0]["lr"] for t in (full, resumed)]
    assert lr[0] == lr[1] > 0
    # The CSV log of the resumed run still holds the first session's steps.
    log = pd.read_csv(tmp_path / "split" / "logs" / "metrics.csv")
    logged = set(log["step"][log["train/loss_step"].notna()])
    assert set(range(0, 8)) <= logged


def test_progress_bar_can_be_turned_off(tmp_path):
    # Benchmarks print JSON on stdout: the bar must be off when the config says so.
    for value, expect_bar in (("true", True), ("false", False)):
        cfg = resolve_config("pretrain", "cpu-tiny-simmim", [f"trainer.progress_bar={value}"])
        trainer = build_trainer(cfg.trainer, tmp_path / value, 1, cfg.seed)
        assert (trainer.progress_bar_callback is not None) is expect_bar
