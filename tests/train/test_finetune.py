"""Fine-tuning module, `alos2fm finetune` and `alos2fm evaluate` on a tiny store."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from alos2fm.cli import app
from alos2fm.data.store import open_patch_arrays, read_index
from alos2fm.identity import dataset_identity
from alos2fm.train.config import load_config, resolve_config
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
        "schedule.max_steps=null",
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
    # --epochs replaced the preset's step budget and step-interval validation.
    ran = load_config(ft / "config.yaml")
    assert ran.schedule.max_steps is None and ran.trainer.val_every_n_steps is None
    assert ran.schedule.epochs == 2
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
    assert hp["data"]["dataset"] == dataset_identity(tiny_store)
    assert str(tiny_store.resolve()) not in json.dumps(hp)  # R18: no local path
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


def _module(tiny_store, overrides, pretrained=False):
    cfg = resolve_config("finetune", "cpu-tiny-seg", ["trainer.accelerator=cpu", *overrides])
    dm = PatchDataModule(tiny_store, cfg.data, cfg.seed)
    module = FinetuneModule.from_config(
        cfg, dm.normalisation, dm.stats, dm.root, pretrained=pretrained
    )
    return cfg, dm, module


def test_a_step_budget_stops_at_its_step_and_validates_on_a_step_interval(tiny_store, tmp_path):
    """16 patches at batch 4 = 4 steps an epoch; 10 steps cross two epoch boundaries."""
    cfg, dm, module = _module(
        tiny_store,
        [
            "data.batch_size=4",
            "schedule.max_steps=10",
            "schedule.warmup_fraction=0.2",
            "trainer.val_every_n_steps=5",
            "trainer.checkpoint_every_n_epochs=100",
        ],
    )
    validations = []
    module.on_validation_epoch_start = lambda: validations.append(module.global_step)
    trainer = build_trainer(
        cfg.trainer, tmp_path, cfg.schedule.train_epochs, cfg.seed, max_steps=10
    )
    trainer.fit(module, datamodule=dm)
    assert trainer.global_step == 10
    assert validations[-2:] == [5, 10]  # the sanity check aside, every 5 steps


def test_fine_tuning_clips_gradients_and_decays_layers_only_for_pretrained_encoders(tiny_store):
    cfg, _, _ = _module(tiny_store, [])
    assert cfg.trainer.gradient_clip_val == 1.0 and cfg.loss.name == "ce"
    paper = resolve_config("finetune", "paper-seg")
    assert paper.trainer.gradient_clip_val is None and paper.loss.name == "dice_focal"
    assert paper.optim.layer_decay_on_random_init

    class _Trainer:  # what configure_adamw reads
        world_size, accumulate_grad_batches, precision = 1, 1, "32-true"
        estimated_stepping_batches, max_epochs = 10, 1

    for pretrained, distinct in ((False, 1), (True, 3)):
        _, _, module = _module(tiny_store, ["optim.layer_decay=0.5"], pretrained=pretrained)
        module.trainer = _Trainer()
        optimizer = module.configure_optimizers()["optimizer"]
        peak = optimizer.defaults["lr"]
        scales = {round(g["initial_lr"] / peak, 6) for g in optimizer.param_groups}
        assert len(scales) >= distinct and (pretrained or scales == {1.0})


def test_patches_larger_than_the_model_are_evaluated_tile_by_tile_as_a_scene_is(tiny_store):
    """A 32-px model on 64-px patches: evaluation blends tiles like alos2fm predict; on a
    patch of the model's size it is the plain forward pass."""
    from alos2fm.evaluation.predict import blend_ramp

    _, dm, module = _module(tiny_store, ["model.img_size=32"])
    module.eval()
    dm.setup("fit")
    image = torch.stack([dm.datasets["val"][i]["image"] for i in range(2)])
    with torch.no_grad():
        logits = module.evaluation_logits(image)
        probs = logits.exp()
        assert probs.shape == (2, 3, 64, 64)
        assert torch.allclose(probs.sum(dim=1), torch.ones(2, 64, 64), atol=1e-5)
        # Pixel (0, 0) is covered by the first tile only: its probabilities are that tile's.
        first = torch.softmax(module(image[..., :32, :32]), dim=1)
        assert torch.allclose(probs[..., 0, 0], first[..., 0, 0], atol=1e-5)
        # Pixel (20, 20): tiles at 0 and 24 overlap there, blended by the ramp weights.
        origins, ramp = (0, 24), torch.from_numpy(blend_ramp(32, 8))
        parts, weights = 0, 0
        for top in origins:
            for left in origins:
                if top <= 20 < top + 32 and left <= 20 < left + 32:
                    tile = torch.softmax(module(image[..., top : top + 32, left : left + 32]), 1)
                    w = ramp[20 - top] * ramp[20 - left]
                    parts, weights = parts + w * tile[..., 20 - top, 20 - left], weights + w
        assert torch.allclose(probs[..., 20, 20], parts / weights, atol=1e-5)
        small = image[..., :32, :32]
        assert torch.equal(module.evaluation_logits(small), module(small))


def test_lr_sweep_runs_each_rate_and_keeps_the_best_validation_miou(tiny_store, tmp_path):
    from alos2fm.train.sweep import best_validation_miou

    result = CliRunner().invoke(
        app,
        ["lr-sweep", "--data", str(tiny_store), "--out", str(tmp_path), "--preset",
         "cpu-tiny-seg", "--rates", "1e-4,3e-2", "--max-steps", "8", "--set",
         "data.batch_size=4", "--set", "trainer.val_every_n_steps=4",
         "--set", "trainer.accelerator=cpu"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    summary = json.loads((tmp_path / "sweep.json").read_text())
    scores = [best_validation_miou(tmp_path / f"lr_{r:g}") for r in (1e-4, 3e-2)]
    assert summary["best_val_miou"] == pytest.approx(scores)
    assert summary["best_rate"] == (1e-4, 3e-2)[int(np.argmax(scores))]
    assert (tmp_path / "sweep.png").exists() and "best base_lr" in result.output
