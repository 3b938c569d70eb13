"""Two CPU processes (DDP over gloo) make the same update as one process on the same batch.

The model is a small deterministic conv autoencoder (no random mask), so that any
difference comes from the engine: per-rank sampling, gradient averaging, LR scaling with
the world size, clipping. With the global batch fixed at 4, one process x 4 patches and
two processes x 2 patches must end with the same weights.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from alos2fm.models.sarw import weighted_masked_mean
from alos2fm.models.simmim import PretrainOutput
from alos2fm.train.config import resolve_config
from alos2fm.train.data import PatchDataModule
from alos2fm.train.engine import CHECKPOINTS, build_trainer, seed_run
from alos2fm.train.pretrain import PretrainModule


class ConvAutoencoder(nn.Module):
    """Reconstructs every pixel (mask = 1 everywhere): the loss is a plain mean."""

    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.GELU(), nn.Conv2d(4, 1, 1))

    def forward(self, x, weight=None):
        pred = self.body(x)
        mask = torch.ones_like(x[:, :1])
        loss = weighted_masked_mean((pred - x).abs(), mask, weight)
        return PretrainOutput(loss=loss, pred=pred, mask=mask)

    # What the pretraining module exports at the end of a run.
    def encoder_state_dict(self):
        return self.body.state_dict()

    def encoder_config(self):
        return {"arch": "conv_autoencoder"}


def _train(store, run_dir, devices: int, batch: int) -> dict[str, torch.Tensor]:
    overrides = [
        f"data.batch_size={batch}",
        "data.hflip=false",
        "data.vflip=false",
        "weighting.kind=sar",
        "schedule.epochs=1",
        "schedule.warmup_epochs=0",
        "trainer.accelerator=cpu",
        f"trainer.devices={devices}",
        "trainer.limit_train_batches=3",
        "optim.base_lr=0.5",
    ]
    if devices > 1:
        overrides.append("trainer.strategy=ddp_spawn")
    cfg = resolve_config("pretrain", "cpu-tiny-simmim", overrides)
    dm = PatchDataModule(store, cfg.data, cfg.seed, with_labels=False, splits=("train",))
    seed_run(cfg.seed)
    module = PretrainModule(cfg, dm.normalisation, model=ConvAutoencoder())
    trainer = build_trainer(cfg.trainer, run_dir, 1, cfg.seed)
    trainer.fit(module, datamodule=dm)
    checkpoint = torch.load(run_dir / CHECKPOINTS / "last.ckpt", weights_only=False)
    assert checkpoint["global_step"] == 3
    return checkpoint["state_dict"]


@pytest.mark.slow  # spawning two processes takes about 15-25 s here
def test_two_processes_equal_one_process_with_the_same_global_batch(tiny_store, tmp_path):
    one = _train(tiny_store, tmp_path / "one", devices=1, batch=4)
    two = _train(tiny_store, tmp_path / "two", devices=2, batch=2)
    for name, value in one.items():
        torch.testing.assert_close(two[name], value, rtol=1e-5, atol=1e-6, msg=name)
    # The runs did train (weights moved away from the shared initialisation).
    seed_run(0)
    start = ConvAutoencoder().state_dict()
    assert not torch.allclose(start["body.0.weight"], one["model.body.0.weight"])
