"""``alos2fm import-weights``: stand-ins of the released files -> files our commands use."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch
import yaml
from safetensors.torch import load_file
from typer.testing import CliRunner

from alos2fm.cli import app
from alos2fm.interop.importer import import_weights
from alos2fm.models.authors_upernet import AuthorsSegmenter
from alos2fm.models.backbones import create_encoder
from alos2fm.models.segmenter import Segmenter, WeightsError, load_encoder_weights
from tests.interop.standins import (
    save_mixmae_checkpoint,
    save_segmenter_checkpoint,
    save_simmim_checkpoint,
)

TINY = dict(arch="swin_tiny", embed_dim=8, depths=[2, 2, 2, 2], num_heads=[1, 1, 2, 2])


def _encoder(**kw) -> torch.nn.Module:
    torch.manual_seed(0)
    arguments = dict(in_chans=1, img_size=64, window_size=4, ape=True, **TINY) | kw
    return create_encoder(**arguments).eval()


def test_simmim_encoder_import_feeds_finetune_encoder(tmp_path: Path) -> None:
    original = _encoder()
    source = save_simmim_checkpoint(original, tmp_path / "sar_w_simim_encoder.pth")
    result = runner_ok(["import-weights", str(source), "--out", str(tmp_path / "fm")])
    assert "dropped 1 (mask token" in result.output
    meta = json.loads((tmp_path / "fm" / "encoder.json").read_text())
    assert meta["data"] == {"bands": ["HH"], "mean": [-10.4327], "std": [5.8041], "units": "dB"}
    assert meta["licence"] == "MIT" and "JAXA" in meta["attribution"]
    assert meta["source"]["file"] == source.name and len(meta["source"]["sha256"]) == 64
    assert meta["encoder"]["shift"] is True and meta["method"] == "simmim"
    # The same file that finetune --encoder loads: every tensor, nothing left random.
    segmenter = Segmenter(create_encoder(**meta["encoder"]), num_classes=3, decoder_channels=16)
    report = load_encoder_weights(segmenter, tmp_path / "fm" / "encoder.safetensors")
    assert report.missing == [] and report.unexpected == [] and report.resized == []
    for key, value in original.state_dict().items():
        torch.testing.assert_close(segmenter.encoder.state_dict()[key], value)
    assert "dropped" in (tmp_path / "fm" / "import_report.txt").read_text()


def test_mixmae_import_needs_its_statistics_and_adapts_channels_only_when_asked(
    tmp_path: Path,
) -> None:
    encoder = _encoder(in_chans=2, window_size=[4, 4, 4, 2], ape="sincos", shift=False)
    source = save_mixmae_checkpoint(encoder, tmp_path / "my_mixmae.pth", decoder_depth=1)
    with pytest.raises(WeightsError, match="--statistics benv1 or benv2"):
        import_weights(source, tmp_path / "a")
    import_weights(source, tmp_path / "b", statistics="benv2")
    meta = json.loads((tmp_path / "b" / "encoder.json").read_text())
    assert meta["data"]["bands"] == ["VH", "VV"] and meta["data"]["std"] == [5.4501, 5.0019]
    assert meta["encoder"]["in_chans"] == 2 and meta["encoder"]["shift"] is False

    import_weights(source, tmp_path / "c", adapt="sum")
    meta = json.loads((tmp_path / "c" / "encoder.json").read_text())
    assert meta["encoder"]["in_chans"] == 1 and meta["data"]["bands"] == ["HH"]
    assert meta["channel_adaptation"]["method"] == "sum"
    kernel = load_file(tmp_path / "c" / "encoder.safetensors")["patch_embed.proj.weight"]
    original = encoder.state_dict()["patch_embed.proj.weight"]
    torch.testing.assert_close(kernel, original.sum(dim=1, keepdim=True))


def test_known_release_with_another_hash_is_flagged(tmp_path: Path, caplog) -> None:
    encoder = _encoder(in_chans=2, window_size=[4, 4, 4, 2], ape="sincos", shift=False)
    source = save_mixmae_checkpoint(encoder, tmp_path / "benv1_pretrain_checkpoint_64.pth", 1)
    with caplog.at_level(logging.WARNING):
        import_weights(source, tmp_path / "out")
    assert "differs from the published b4f385f9...0700" in caplog.text


def _nine_class_table(path: Path) -> Path:
    classes = [
        {"name": f"Land {i}", "color": [20 * i, 10, 200 - 20 * i], "values": [i]} for i in range(9)
    ]
    path.write_text(yaml.safe_dump({"name": "authors_9", "classes": classes, "ignore": [255]}))
    return path


@pytest.fixture(scope="module")
def authors_segmenter(tmp_path_factory) -> tuple[AuthorsSegmenter, Path]:
    folder = tmp_path_factory.mktemp("authors")
    torch.manual_seed(1)
    model = AuthorsSegmenter(_encoder(), num_classes=9, decoder_channels=16).eval()
    return model, save_segmenter_checkpoint(model, folder / "swin_upernet_finetuned.pth")


def runner_ok(args: list[str]):
    result = CliRunner().invoke(app, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result


def test_authors_segmenter_maps_a_scene_with_no_training(tmp_path: Path, authors_segmenter) -> None:
    from alos2fm.data.synth import write_synthetic_scene
    from alos2fm.evaluation.predict import load_segmenter_for_inference

    model, source = authors_segmenter
    table = _nine_class_table(tmp_path / "classes.yaml")
    runner_ok(
        ["import-weights", str(source), "--out", str(tmp_path / "seg"), "--classes", str(table)]
    )
    checkpoint = tmp_path / "seg" / "segmenter.ckpt"
    loaded, meta = load_segmenter_for_inference(checkpoint)
    x = torch.randn(2, 1, 64, 64)
    with torch.no_grad():  # the converted model is the authors' model, not an approximation
        torch.testing.assert_close(loaded(x), model(x), rtol=0, atol=0)
    assert meta.class_names[3] == "Land 3" and meta.bands == ("HH",)

    scene = write_synthetic_scene(tmp_path / "scene", size=128, seed=0)
    out = tmp_path / "map.tif"
    runner_ok(
        [
            "predict",
            str(scene.product),
            "--checkpoint",
            str(checkpoint),
            "--out",
            str(out),
            "--no-progress",
            "--no-quicklook",
        ]
    )
    with rasterio.open(out) as mapped, rasterio.open(scene.product) as product:
        classes = mapped.read(1)
        assert mapped.crs == product.crs and mapped.transform == product.transform
        assert mapped.tags()["CLASS_3"] == "Land 3"
    assert set(np.unique(classes)) <= set(range(9)) | {255}

    # evaluate's loader takes the same file (the fine-tuning module's own layout).
    from alos2fm.train.finetune import FinetuneModule

    module = FinetuneModule.load_from_checkpoint(checkpoint, map_location="cpu")
    assert module.cfg.decoder == "authors_upernet" and module.cfg.data.normalisation == "paper"


def test_segmenter_without_a_class_table_gets_generic_names_and_a_warning(
    tmp_path: Path, authors_segmenter, caplog
) -> None:
    from alos2fm.evaluation.predict import load_segmenter_for_inference

    with caplog.at_level(logging.WARNING):
        import_weights(authors_segmenter[1], tmp_path / "seg")
    assert "did not publish their 9 class names" in caplog.text
    _, meta = load_segmenter_for_inference(tmp_path / "seg" / "segmenter.ckpt")
    assert meta.class_names == tuple(f"class_{i}" for i in range(9))
    with pytest.raises(WeightsError, match="has 2 classes, the segmenter 9"):
        import_weights(authors_segmenter[1], tmp_path / "x", classes="water_mask")
