"""Fine-tuning from a pretrained encoder reads its encoder.json: bands, kind, statistics;
and one no-data rule for every normalisation."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from alos2fm.errors import DataError
from alos2fm.train.config import ConfigError, resolve_config
from alos2fm.train.data import Normalisation
from alos2fm.train.pretrained import check_encoder_fits, finetune_normalisation, read_encoder_meta

DATASET = Normalisation(("HH",), (-12.0,), (4.0,))


def _meta(tmp_path: Path, **encoder) -> Path:
    meta = {
        "encoder": {"arch": "swin_base", "shift": True, "ape": True, **encoder},
        "data": {"bands": ["HH"], "mean": [-10.4327], "std": [5.8041], "units": "dB"},
    }
    (tmp_path / "encoder.json").write_text(json.dumps(meta))
    return tmp_path / "encoder.safetensors"


def test_the_encoders_statistics_are_the_default_and_stats_overrides_them(tmp_path) -> None:
    meta = read_encoder_meta(_meta(tmp_path))
    default = resolve_config("finetune")
    assert default.data.normalisation == "encoder"
    assert finetune_normalisation(default, DATASET, meta).mean_db == (-10.4327,)
    assert finetune_normalisation(default, DATASET, None) == DATASET  # random init: the data's
    stats = resolve_config("finetune", overrides=["data.normalisation=stats"])
    assert finetune_normalisation(stats, DATASET, meta) == DATASET
    with pytest.raises(ConfigError, match="applies to fine-tuning only"):
        resolve_config("pretrain", overrides=["data.normalisation=encoder"])


def test_bands_and_encoder_kind_must_be_those_of_pretraining(tmp_path) -> None:
    weights = _meta(tmp_path)
    meta = read_encoder_meta(weights)
    cfg = resolve_config("finetune")
    check_encoder_fits(meta, cfg, ("HH",), weights)
    with pytest.raises(DataError, match=r"pretrained on bands \['HH'\], the dataset has \['HV'\]"):
        check_encoder_fits(meta, cfg, ("HV",), weights)
    unshifted = read_encoder_meta(_meta(tmp_path, shift=False, ape="sincos"))
    with pytest.raises(DataError, match="--set model.shift=false --set model.ape=sincos"):
        check_encoder_fits(unshifted, cfg, ("HH",), weights)
    matching = resolve_config("finetune", overrides=["model.shift=false", "model.ape=sincos"])
    check_encoder_fits(unshifted, matching, ("HH",), weights)


def test_no_data_is_zero_after_standardising_whatever_the_statistics() -> None:
    image = torch.full((1, 1, 2, 2), -12.0)  # the dataset filled no data with its mean
    valid = torch.tensor([[[True, False], [True, True]]])
    paper = Normalisation(("HH",), (-10.4327,), (5.8041,))
    out = paper(image, valid)
    assert out[0, 0, 0, 1] == 0.0  # as predict feeds it
    assert out[0, 0, 0, 0] == pytest.approx((-12.0 + 10.4327) / 5.8041)


def test_mixmae_presets_use_the_published_encoder() -> None:
    for preset in ("cpu-tiny-mixmae", "paper-mixmae"):
        model = resolve_config("pretrain", preset).model
        assert model.shift is False and model.ape == "sincos"
    assert resolve_config("pretrain", "paper-mixmae").model.window_size == (8, 8, 8, 4)
