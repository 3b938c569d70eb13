"""The compatibility contract between a model and its inputs (``alos2fm.contract``)."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from alos2fm.contract import (
    band_indices,
    bands_to_open,
    check_encoder_load,
    open_checkpoint,
)
from alos2fm.errors import Alos2fmError, CompatibilityError
from alos2fm.models.backbones import build_encoder
from alos2fm.models.segmenter import (
    Segmenter,
    WeightsError,
    build_segmenter,
    load_encoder_weights,
)
from alos2fm.train.config import resolve_config
from tests.test_cli import run_cli
from tests.train.conftest import make_store

CPU = ["trainer.accelerator=cpu"]


def _one_line_error(capfd) -> str:
    err = capfd.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("alos2fm: error:"), err
    return err


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Path:
    return make_store(tmp_path_factory.mktemp("contract") / "store")


def _checkpoint(path: Path, store: Path, classes: list[str], preprocessing=None) -> Path:
    """A fine-tuning checkpoint of the tiny preset, written as Lightning lays it out."""
    from alos2fm.train.finetune import FinetuneModule

    cfg = resolve_config("finetune", "cpu-tiny-seg", CPU)
    stats = json.loads((store / "stats.json").read_text())
    module = FinetuneModule(
        config=cfg.model_dump(mode="json"),
        model={
            "encoder": cfg.model.encoder_kwargs(),
            "num_classes": len(classes),
            "decoder_channels": cfg.decoder_channels,
            "decoder": cfg.decoder,
        },
        data={
            "bands": stats["bands"],
            "mean": stats["mean_db"],
            "std": stats["std_db"],
            "patch_size": cfg.model.img_size,
            "preprocessing": preprocessing or {"multilook": [1, 1], "speckle": None},
        },
        classes={"names": classes, "colours": [[0, 0, 0]] * len(classes)},
    )
    content = {"state_dict": module.state_dict(), "hyper_parameters": dict(module.hparams)}
    torch.save(content, path)
    return path


# --- bands --------------------------------------------------------------------------------


def test_bands_match_by_name_and_generic_names_by_position_in_both_directions(caplog):
    assert band_indices(["HV", "HH"], ["HH", "HV"]) == [1, 0]
    with caplog.at_level(logging.WARNING):
        assert band_indices(["DB1"], ["HH"]) == [0]  # generic model on a named product
        assert band_indices(["HH", "HV"], ["DB1", "DB2"]) == [0, 1]  # named model, generic raster
    assert caplog.text.count("fed by position") == 2
    with pytest.raises(CompatibilityError, match=r"needs bands \['HH'\], the product has \['VV'"):
        band_indices(["HH"], ["VV", "VH"])
    with pytest.raises(CompatibilityError, match=r"\['DB1', 'DB2'\].*\['HH'\]"):
        band_indices(["DB1", "DB2"], ["HH"])  # generic, but the counts differ


def test_R16_a_generic_db_model_opens_a_jaxa_product_whole_and_takes_its_bands_by_position(
    tmp_path, monkeypatch
):
    import alos2fm.products
    from alos2fm.evaluation.predict import InferenceMeta, predict_scene, save_inference_checkpoint
    from tests.evaluation.test_predict import ArrayProduct, _scene
    from tests.tiny_models import TINY_SEGMENTER

    assert bands_to_open(["DB1"]) is None and bands_to_open(["HH", "HV"]) == ("HH", "HV")
    meta = InferenceMeta(
        TINY_SEGMENTER, ("DB1",), (-10.0,), (5.0,), ("a", "b", "c"), ((0, 0, 0),) * 3, 32
    )
    checkpoint = save_inference_checkpoint(
        build_segmenter(TINY_SEGMENTER), meta, tmp_path / "m.ckpt"
    )
    opened = []

    def fake_open_product(path, bands=None, **options):  # a JAXA reader would look for IMG-DB1-...
        opened.append(bands)
        if bands is not None:
            raise alos2fm.errors.ProductError(f"no IMG-{bands[0]} file", path)
        return ArrayProduct(_scene(40, 40), bands=("HH",))

    monkeypatch.setattr(alos2fm.products, "open_product", fake_open_product, raising=False)
    from alos2fm.evaluation.predict import PredictOptions

    options = PredictOptions(quicklook=False, progress=False)
    result = predict_scene("IMG-HH-ALOS2", checkpoint, tmp_path / "map.tif", options)
    assert opened == [None] and result.map_path.is_file()


# --- classes, preprocessing, checkpoint files (evaluate) ----------------------------------


def test_R11_evaluate_refuses_a_checkpoint_of_other_classes(store, tmp_path, monkeypatch, capfd):
    nine = [f"class{i}" for i in range(9)]
    checkpoint = _checkpoint(tmp_path / "nine.ckpt", store, nine)
    code = run_cli(
        monkeypatch, "evaluate", "--checkpoint", str(checkpoint), "--data", str(store),
        "--out", str(tmp_path / "eval"),
    )  # fmt: skip
    assert code == 2
    err = _one_line_error(capfd)
    assert "predicts 9 classes" in err and "dataset has 3 ['water', 'field', 'urban']" in err
    assert not (tmp_path / "eval" / "metrics.json").exists()


def test_evaluate_refuses_a_checkpoint_of_other_preprocessing(tmp_path, monkeypatch, capfd):
    store = make_store(tmp_path / "multilooked")
    (store / "config.yaml").write_text("multilook: [2, 2]\nspeckle: lee\n")
    checkpoint = _checkpoint(tmp_path / "m.ckpt", store, ["water", "field", "urban"])
    code = run_cli(
        monkeypatch, "evaluate", "--checkpoint", str(checkpoint), "--data", str(store),
        "--out", str(tmp_path / "eval"),
    )  # fmt: skip
    assert code == 2
    err = _one_line_error(capfd)
    assert "'multilook': [1, 1]" in err and "'multilook': [2, 2]" in err


@pytest.mark.parametrize("content", [None, b"", b"PK\x03\x04truncated", b"hello"])
def test_R15_evaluate_refuses_a_missing_empty_or_foreign_checkpoint_in_one_line(
    content, store, tmp_path, monkeypatch, capfd
):
    checkpoint = tmp_path / "best.ckpt"
    if content is not None:
        checkpoint.write_bytes(content)
    code = run_cli(
        monkeypatch, "evaluate", "--checkpoint", str(checkpoint), "--data", str(store),
        "--out", str(tmp_path / "eval"),
    )  # fmt: skip
    assert code == 2
    assert str(checkpoint) in _one_line_error(capfd)


def test_R15_open_checkpoint_refuses_truncated_and_non_checkpoint_files(tmp_path):
    whole = tmp_path / "whole.ckpt"
    torch.save({"state_dict": {"w": torch.zeros(100)}, "hyper_parameters": {}}, whole)
    assert set(open_checkpoint(whole)) == {"state_dict", "hyper_parameters"}
    truncated = tmp_path / "truncated.ckpt"
    truncated.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    with pytest.raises(WeightsError, match="cannot read checkpoint"):
        open_checkpoint(truncated)
    other = tmp_path / "other.ckpt"
    torch.save([1, 2], other)
    with pytest.raises(WeightsError, match="not a model checkpoint"):
        open_checkpoint(other)


def test_R15_a_non_text_key_in_an_imported_file_is_a_one_line_error(tmp_path):
    from alos2fm.interop.authors import convert

    with pytest.raises(WeightsError, match="key that is not text: 0") as caught:
        convert({"model": {0: torch.zeros(1), "a": torch.zeros(1)}}, tmp_path / "w.pth")
    assert len(caught.value.message.splitlines()) == 1


def test_R14_a_malicious_pth_is_refused_naming_the_global_without_advising_full_unpickling(
    tmp_path,
):
    import os

    from alos2fm.interop.safe_load import CheckpointReadError, load_checkpoint_safely

    class Payload:
        def __reduce__(self):
            return (os.system, ("true",))

    torch.save({"model": {}, "extra": Payload()}, tmp_path / "evil.pth")
    with pytest.raises(CheckpointReadError) as caught:
        load_checkpoint_safely(tmp_path / "evil.pth")
    message = caught.value.message
    assert "system" in message and "would run code" in message
    assert "weights_only" not in message and len(message.splitlines()) == 1


# --- encoders: architecture, bands, normalisation -----------------------------------------


def _encoder_file(folder: Path, encoder_kwargs: dict, bands=("HH",)) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    encoder = build_encoder(encoder_kwargs)
    save_file(
        {k: v.contiguous() for k, v in encoder.state_dict().items()},
        str(folder / "encoder.safetensors"),
    )
    meta = {
        "encoder": encoder_kwargs,
        "data": {"bands": list(bands), "mean": [-9.0] * len(bands), "std": [4.0] * len(bands)},
    }
    (folder / "encoder.json").write_text(json.dumps(meta))
    return folder / "encoder.safetensors"


def test_R13_finetune_refuses_an_encoder_of_another_depth(store, tmp_path, monkeypatch, capfd):
    kwargs = resolve_config("finetune", "cpu-tiny-seg").model.encoder_kwargs()
    shallow = dict(kwargs, depths=[1, 1, 1, 1])  # the preset has [1, 1, 2, 1]
    weights = _encoder_file(tmp_path / "shallow", shallow)
    code = run_cli(
        monkeypatch, "finetune", "--data", str(store), "--out", str(tmp_path / "run"),
        "--preset", "cpu-tiny-seg", "--encoder", str(weights), "--accelerator", "cpu",
        "--epochs", "1",
    )  # fmt: skip
    assert code == 2
    err = _one_line_error(capfd)
    assert "left at random initialisation" in err and "layers.2.blocks.1." in err
    assert "--allow-partial-encoder" in err
    assert not (tmp_path / "run" / "checkpoints" / "best.ckpt").exists()


def test_R13_a_partial_encoder_load_is_refused_unless_allowed(tmp_path, caplog):
    kwargs = resolve_config("finetune", "cpu-tiny-seg").model.encoder_kwargs()
    weights = _encoder_file(tmp_path / "shallow", dict(kwargs, depths=[1, 1, 1, 1]))
    segmenter = Segmenter(build_encoder(kwargs), num_classes=3, decoder_channels=8)
    report = load_encoder_weights(segmenter, weights)
    with pytest.raises(CompatibilityError, match=rf"{len(report.missing)} encoder tensors left"):
        check_encoder_load(report)
    with caplog.at_level(logging.WARNING):
        check_encoder_load(report, allow_partial=True)
    assert "partial encoder load" in caplog.text
    whole = _encoder_file(tmp_path / "whole", kwargs)
    check_encoder_load(load_encoder_weights(segmenter, whole))  # a full load passes


def test_R12_probe_checks_the_encoders_bands_and_feeds_it_its_own_normalisation(store, tmp_path):
    from alos2fm.evaluation.probe import ProbeSettings, probe_normalisation, run_probe

    kwargs = resolve_config("finetune", "cpu-tiny-seg").model.encoder_kwargs()
    hh = _encoder_file(tmp_path / "hh", kwargs, bands=("HH",))
    own = probe_normalisation(hh, store)
    assert own.mean_db == (-9.0,) and own.std_db == (4.0,)  # encoder.json, not stats.json
    stats = json.loads((store / "stats.json").read_text())
    assert probe_normalisation("random", store).mean_db == tuple(stats["mean_db"])
    hv = _encoder_file(tmp_path / "hv", kwargs, bands=("HV",))
    with pytest.raises(CompatibilityError, match=r"needs bands \['HV'\].*dataset has \['HH'\]"):
        run_probe(store, [hv], ProbeSettings(seeds=1, train_pixels=10, eval_pixels=10))


def test_refusals_are_user_errors():
    assert issubclass(CompatibilityError, Alos2fmError)


# --- model cards (R18) --------------------------------------------------------------------


def test_R18_the_model_card_names_the_dataset_folder_not_its_local_path(tmp_path):
    from alos2fm.evaluation.export import export_checkpoint_encoder
    from alos2fm.evaluation.predict import (
        InferenceMeta,
        load_segmenter_for_inference,
        save_inference_checkpoint,
    )
    from tests.tiny_models import TINY_SEGMENTER

    meta = InferenceMeta(
        TINY_SEGMENTER, ("HH",), (-10.0,), (5.0,), ("a", "b", "c"), ((0, 0, 0),) * 3, 32
    )
    checkpoint = save_inference_checkpoint(
        build_segmenter(TINY_SEGMENTER), meta, tmp_path / "run" / "best.ckpt"
    )
    content = torch.load(checkpoint, weights_only=True)
    content["hyper_parameters"]["data"]["dataset"] = {
        "name": "kanto_store",
        "path": "/home/someone/private/kanto_store",
    }
    torch.save(content, checkpoint)
    export_checkpoint_encoder(
        *load_segmenter_for_inference(checkpoint), checkpoint, tmp_path / "hub"
    )
    card = (tmp_path / "hub" / "README.md").read_text()
    assert "`kanto_store`" in card
    assert "/home/someone" not in card and str(tmp_path) not in card
    assert np.all([line.count("private") == 0 for line in card.splitlines()])
