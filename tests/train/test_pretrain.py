"""Pretraining module and the `alos2fm pretrain` command on a tiny store."""

from __future__ import annotations

import hashlib
import json
import math

import pytest
import torch
from safetensors.torch import load_file
from typer.testing import CliRunner

from alos2fm.cli import app
from alos2fm.identity import dataset_identity
from alos2fm.models.backbones import create_encoder
from alos2fm.outputs import OutputError
from alos2fm.train.config import resolve_config
from alos2fm.train.data import Normalisation
from alos2fm.train.pretrain import PretrainModule, RunFolderError, figure_patches, run_pretrain

FAST = ["--epochs", "1", "--batch-size", "4", "--set", "trainer.accelerator=cpu"]


def test_pixel_weights_sar_from_db_and_zero_on_no_data():
    cfg = resolve_config("pretrain", "cpu-tiny-simmim", ["weighting.kind=sar"])
    module = PretrainModule(
        cfg, Normalisation(("HH",), (-10.0,), (5.0,)), model=torch.nn.Identity()
    )
    db = torch.tensor([[[[-20.0, 0.0], [-10.0, 0.0]]]])  # darkest -20 dB, brightest 0 dB
    valid = torch.tensor([[[True, True], [True, False]]])
    w = module.pixel_weights(db, module.normalise(db), valid)
    assert w[0, 0, 0, 0] == pytest.approx(math.e)  # darkest valid pixel
    assert w[0, 0, 0, 1] == pytest.approx(1.0, abs=1e-5)  # brightest valid pixel
    assert w[0, 0, 1, 1] == 0.0  # no data
    plain = PretrainModule(resolve_config("pretrain"), module.normalise, model=torch.nn.Identity())
    assert plain.pixel_weights(db, db, valid).flatten().tolist() == [1.0, 1.0, 1.0, 0.0]


@pytest.mark.parametrize("method", ["simmim", "mixmae"])
def test_cli_pretrain_writes_the_run_folder(tiny_store, tmp_path, method):
    run = tmp_path / "run"
    args = ["pretrain", "--data", str(tiny_store), "--out", str(run), "--method", method]
    args += ["--weighting", "sar", "--preset", f"cpu-tiny-{method}", *FAST]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    for name in (
        "config.yaml",
        "checkpoints/last.ckpt",
        "logs/metrics.csv",
        "figures/loss_curve.png",
        "figures/reconstruction_e0001.png",
    ):
        assert (run / name).is_file(), name

    meta = json.loads((run / "encoder.json").read_text())
    weights = run / "encoder.safetensors"
    assert meta["sha256"] == hashlib.sha256(weights.read_bytes()).hexdigest()
    assert meta["method"] == method and meta["weighting"]["kind"] == "sar"
    assert meta["data"]["bands"] == ["HH"] and meta["global_step"] == 4  # 16 patches / 4
    assert meta["dataset"] == dataset_identity(tiny_store)
    # encoder.json alone rebuilds the encoder, which takes the weights strictly.
    encoder = create_encoder(**meta["encoder"])
    encoder.load_state_dict(load_file(weights), strict=True)
    trained = torch.load(run / "checkpoints/last.ckpt", weights_only=False)["state_dict"]
    name = "patch_embed.proj.weight"
    assert torch.equal(encoder.state_dict()[name], trained[f"model.encoder.{name}"])


@pytest.mark.parametrize("precision", ["32-true", "bf16-mixed"])
def test_cli_pretrain_clips_gradients_at_every_precision(tiny_store, tmp_path, precision):
    # The fused optimiser used at full precision must not meet mixed precision's unscaling.
    run = tmp_path / "run"
    args = ["pretrain", "--data", str(tiny_store), "--out", str(run), "--method", "simmim"]
    args += ["--preset", "cpu-tiny-simmim", "--precision", precision, *FAST]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    cfg = resolve_config("pretrain", "cpu-tiny-simmim")
    assert cfg.trainer.gradient_clip_val > 0
    assert torch.load(run / "checkpoints/last.ckpt", weights_only=False)["global_step"] == 4


def test_run_folder_is_not_mixed_up(tiny_store, tmp_path):
    cfg = resolve_config("pretrain", "cpu-tiny-simmim", ["schedule.epochs=1", "data.batch_size=4"])
    with pytest.raises(RunFolderError, match="nothing to resume"):
        run_pretrain(cfg, tiny_store, tmp_path / "run", resume=True)
    run_pretrain(cfg, tiny_store, tmp_path / "run")
    with pytest.raises(OutputError, match="already holds a pretrain run.*--resume"):
        run_pretrain(cfg, tiny_store, tmp_path / "run")


def test_model_that_does_not_fit_the_data_is_refused(tiny_store, tmp_path):
    cfg = resolve_config("pretrain", "cpu-tiny-simmim", ["model.img_size=128"])
    with pytest.raises(RunFolderError, match="windows of 128 px .at most the patch size"):
        run_pretrain(cfg, tiny_store, tmp_path / "run")
    two_bands = resolve_config("pretrain", "cpu-tiny-simmim", ["model.in_chans=2"])
    with pytest.raises(RunFolderError, match="1 band.s. \\['HH'\\] of 64 px; the model expects 2"):
        run_pretrain(two_bands, tiny_store, tmp_path / "run2")


def test_a_dataset_smaller_than_one_batch_trains_and_says_so(tmp_path, caplog):
    """synth + default prepare gives a dozen training patches, fewer than a batch of 16:
    windows are drawn per step, so a patch serves several samples of a batch."""
    import logging

    from tests.train.conftest import make_store

    store = make_store(tmp_path / "tiny", n_train=5, n_val=1, n_test=1)
    cfg = resolve_config(
        "pretrain",
        "cpu-tiny-simmim",
        ["schedule.max_steps=2", "data.batch_size=16", "trainer.progress_bar=false"],
    )
    with caplog.at_level(logging.WARNING, logger="alos2fm"):
        encoder = run_pretrain(cfg, store, tmp_path / "run")
    assert encoder.is_file()
    said = [r.getMessage() for r in caplog.records if "training patches" in r.getMessage()]
    assert said and "only 5 training patches for a global batch of 16" in said[0]
    assert "4 times" in said[0]


def test_figure_patches_are_spread_and_a_function_of_the_seed():
    picked = figure_patches(100, 4, seed=0)
    assert picked == figure_patches(100, 4, seed=0) == sorted(set(picked))
    assert picked != figure_patches(100, 4, seed=1)
    assert figure_patches(3, 4, seed=0) == [0, 1, 2]


def test_reconstruction_figures_show_the_same_patches_at_every_epoch(
    tiny_store, tmp_path, monkeypatch
):
    from alos2fm.evaluation import figures

    drawn = []
    monkeypatch.setattr(
        figures, "plot_reconstructions", lambda *args, **kwargs: drawn.append((args, kwargs))
    )
    cfg = resolve_config(
        "pretrain",
        "cpu-tiny-simmim",
        [
            "schedule.epochs=2",
            "data.batch_size=4",
            "figure_every_n_epochs=1",
            "figure_images=3",
            "trainer.progress_bar=false",
        ],
    )
    run_pretrain(cfg, tiny_store, tmp_path / "run")
    assert len(drawn) == 2  # epochs 1 and 2
    (first, first_kw), (second, second_kw) = drawn
    assert first_kw["row_labels"] == second_kw["row_labels"]
    assert len(first_kw["row_labels"]) == 3
    image, mask, reconstruction = first[:3]
    assert torch.equal(image.nan_to_num(), second[0].nan_to_num())  # same windows, in dB
    assert torch.equal(mask, second[1])  # same mask
    assert not torch.equal(reconstruction, second[2])  # what the model learnt in between
    assert first_kw["reconstruction_units"] == "dB"
    assert -40 < float(image.nanmean()) < 10  # backscatter in dB, not standardised
