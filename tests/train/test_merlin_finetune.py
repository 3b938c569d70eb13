"""The MERLIN pair through `alos2fm finetune`'s path: the pretrained arm starts from the
released layers and is fed MERLIN's normalised ln-amplitude; its random twin is not."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch

from alos2fm.errors import DataError
from alos2fm.models.merlin import merlin_db_standardisation, released_weights_path
from alos2fm.train.config import resolve_config
from alos2fm.train.data import Normalisation, dataset_normalisation
from alos2fm.train.finetune import load_finetuned, run_finetune
from alos2fm.train.pretrained import finetune_normalisation

PRESET = str(Path(__file__).parents[2] / "experiments/flevoland/configs/finetune_merlin.yaml")
FAST = [
    "trainer.accelerator=cpu",
    "trainer.threads=1",
    "trainer.progress_bar=false",
    "data.batch_size=4",
    "schedule.max_steps=2",
    "trainer.val_every_n_steps=2",
]
DATASET = Normalisation(("HH",), (-12.0,), (4.0,))


def test_the_pretrained_arm_takes_merlins_scaling_and_its_random_twin_the_datasets():
    pretrained = resolve_config("finetune", PRESET, ["merlin_weights=stripmap"])
    mean_db, std_db = merlin_db_standardisation("stripmap", dataset_mean_db=-12.0)
    assert finetune_normalisation(pretrained, DATASET, None) == Normalisation(
        ("HH",), (mean_db,), (std_db,)
    )
    random = resolve_config("finetune", PRESET)
    assert random.merlin_weights == "none"
    assert finetune_normalisation(random, DATASET, None) == DATASET
    two_bands = Normalisation(("HH", "HV"), (-12.0, -18.0), (4.0, 4.0))
    with pytest.raises(DataError, match=r"MERLIN takes one band; this dataset has \['HH', 'HV'\]"):
        finetune_normalisation(pretrained, two_bands, None)


@pytest.mark.skipif(
    importlib.util.find_spec("deepdespeckling") is None,
    reason="deepdespeckling (the optional extra alos2fm[merlin]) is not installed",
)
def test_fine_tuning_starts_from_the_released_layers(tiny_store, tmp_path):
    cfg = resolve_config("finetune", PRESET, [*FAST, "merlin_weights=stripmap"])
    run = tmp_path / "run"
    # Layers the file fixes: after a step their change is that step's size, not a redraw.
    released = torch.load(released_weights_path("stripmap"), weights_only=True, map_location="cpu")
    best = run_finetune(cfg, tiny_store, run)
    assert "loaded 34 MERLIN tensors" in (run / "encoder_load.txt").read_text()
    module = load_finetuned(best)
    dataset_mean = dataset_normalisation(tiny_store).mean_db[0]
    mean_db, std_db = merlin_db_standardisation("stripmap", dataset_mean)
    assert module.normalise.mean_db == (mean_db,) and module.normalise.std_db == (std_db,)
    moved = (module.segmenter.enc3.weight - released["enc3.weight"]).abs().max()
    assert 0 < moved < 0.1  # two AdamW steps of at most ~lr each from the released kernel
    assert (run / "test" / "metrics.json").is_file()
