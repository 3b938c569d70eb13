"""Fine-tuning module, `alos2fm finetune` and `alos2fm evaluate` on a tiny store."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from alos2fm.cli import app
from alos2fm.data.store import open_patch_arrays, read_index
from alos2fm.train.config import resolve_config
from alos2fm.train.data import PatchDataModule
from alos2fm.train.engine import build_trainer, seed_run
from alos2fm.train.finetune import FinetuneModule

FAST = ["--batch-size", "4", "--set", "trainer.accelerator=cpu"]


def _valid_pixels(store, split: str) -> int:
    index = read_index(store)
    labels = open_patch_arrays(store).labels
    rows = np.flatnonzero(index["split"].to_numpy() == split)
    return int(sum((np.asarray(labels[r]) != 255).sum() for r in rows))


@pytest.mark.slow  # about 20 s on 2 shared cores
def test_tiny_segmenter_overfits_one_batch(tiny_store, tmp_path):
    # label_fraction 0.25 of 16 patches = 4 = exactly one batch, seen every epoch.
    overrides = [
        "data.batch_size=4",
        "data.label_fraction=0.25",
        "data.hflip=false",
        "data.vflip=false",
        "schedule.epochs=30",
        "schedule.warmup_epochs=0",
        "schedule.kind=multistep",
        "optim.layer_decay=null",
        "model.drop_path_rate=0.0",
        "optim.base_lr=1.0",
        "loss.name=ce",
        "trainer.limit_val_batches=0",
        "trainer.accelerator=cpu",
        "trainer.checkpoint_every_n_epochs=100",
    ]
    cfg = resolve_config("finetune", "cpu-tiny-seg", overrides)
    dm = PatchDataModule(tiny_store, cfg.data, cfg.seed)
    seed_run(cfg.seed)
    module = FinetuneModule.from_config(cfg, dm.normalisation, dm.stats, dm.root)
    losses = []
    original = module.training_step

    def recording_step(batch, batch_idx):
        loss = original(batch, batch_idx)
        losses.append(float(loss.detach()))
        return loss

    module.training_step = recording_step
    trainer = build_trainer(cfg.trainer, tmp_path, cfg.schedule.epochs, cfg.seed)
    trainer.fit(module, datamodule=dm)
    assert len(losses) == 30
    assert losses[-1] < 0.5 * losses[0], losses


def test_cli_finetune_from_pretrained_encoder_then_evaluate(tiny_store, tmp_path):
    runner = CliRunner()
    pre = tmp_path / "pre"
    result = runner.invoke(
        app,
        [
            "pretrain",
            "--data",
            str(tiny_store),
            "--out",
            str(pre),
            "--preset",
            "cpu-tiny-simmim",
            "--epochs",
            "1",
            *FAST,
        ],
    )
    assert result.exit_code == 0, result.output

    ft = tmp_path / "ft"
    result = runner.invoke(
        app,
        [
            "finetune",
            "--data",
            str(tiny_store),
            "--out",
            str(ft),
            "--preset",
            "cpu-tiny-seg",
            "--encoder",
            str(pre / "encoder.safetensors"),
            "--epochs",
            "2",
            "--label-fraction",
            "0.5",
            *FAST,
        ],
    )
    assert result.exit_code == 0, result.output
    assert "loaded" in (ft / "encoder_load.txt").read_text()
    for name in (
        "checkpoints/best.ckpt",
        "test/confusion_matrix.png",
        "test/per_class_iou.png",
        "figures/training_curves.png",
    ):
        assert (ft / name).is_file(), name
    scores = json.loads((ft / "test/metrics.json").read_text())
    # Every labelled test pixel is scored exactly once (none skipped, none duplicated).
    assert np.asarray(scores["confusion_matrix"]).sum() == _valid_pixels(tiny_store, "test")

    checkpoint = torch.load(ft / "checkpoints/best.ckpt", weights_only=False)
    hp = checkpoint["hyper_parameters"]
    assert hp["classes"]["names"] == ["water", "field", "urban"]
    assert hp["data"]["bands"] == ["HH"] and hp["data"]["patch_size"] == 64
    assert hp["model"]["num_classes"] == 3 and hp["model"]["encoder"]["embed_dim"] == 24
    assert hp["config"]["data"]["label_fraction"] == 0.5
    # 16 training patches x 0.5 = 8 patches = 2 steps per epoch of 4, over 2 epochs.
    assert checkpoint["global_step"] == 4

    out = tmp_path / "eval"
    result = runner.invoke(
        app,
        [
            "evaluate",
            "--checkpoint",
            str(ft / "checkpoints/best.ckpt"),
            "--data",
            str(tiny_store),
            "--split",
            "val",
            "--out",
            str(out),
        ],
    )
    assert result.exit_code == 0, result.output
    val = json.loads((out / "metrics.json").read_text())
    assert np.asarray(val["confusion_matrix"]).sum() == _valid_pixels(tiny_store, "val")
    assert (out / "confusion_matrix.png").is_file() and (out / "per_class_iou.png").is_file()
