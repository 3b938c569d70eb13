"""`alos2fm finetune --label-budget`: the budget reaches the training split and the run."""

from __future__ import annotations

import pandas as pd
from typer.testing import CliRunner

from alos2fm.cli import app
from alos2fm.train.config import load_config


def test_finetune_with_one_parcel_per_class_writes_what_it_kept(tiny_store, tmp_path):
    out = tmp_path / "ft"
    result = CliRunner().invoke(
        app,
        [
            "finetune",
            "--data",
            str(tiny_store),
            "--out",
            str(out),
            "--preset",
            "cpu-tiny-seg",
            "--label-budget",
            "k1",
            "--max-steps",
            "2",
            "--batch-size",
            "4",
            "--set",
            "trainer.val_every_n_steps=2",
        ],
    )
    assert result.exit_code == 0, result.output
    assert load_config(out / "config.yaml").data.label_budget == "k1"
    kept = pd.read_csv(out / "budget.csv")
    assert list(kept["name"]) == ["water", "field", "urban"]
    # Every class holds 16 x 16 blocks (>= 200 px): one parcel each, none dropped.
    assert list(kept["parcels_kept"]) == [1, 1, 1]
    assert (kept["pixels_kept"] >= 200).all()
    assert (kept["pixels_kept"] < kept["pixels_available"]).all()
