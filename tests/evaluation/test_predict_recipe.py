"""Prediction repeats the training data's recipe: preprocessing, bands by name; and the
map it writes is a Cloud-Optimized GeoTIFF that carries its classes."""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch

from alos2fm.data.synth import write_synthetic_scene
from alos2fm.errors import CompatibilityError
from alos2fm.evaluation.predict import (
    predict_product,
    predict_scene,
    save_inference_checkpoint,
)
from alos2fm.models.segmenter import build_segmenter
from tests.evaluation.test_predict import ArrayProduct, Pointwise, _meta, _options, _scene
from tests.tiny_models import TINY_SEGMENTER


def test_predict_repeats_the_multilook_the_model_was_trained_on(tmp_path: Path) -> None:
    torch.manual_seed(0)
    scene = write_synthetic_scene(tmp_path / "scene", size=128, seed=0)
    model = build_segmenter(TINY_SEGMENTER)
    meta = dataclasses.replace(
        _meta(32, TINY_SEGMENTER),
        preprocessing={"multilook": [2, 2], "speckle": "lee", "filter_size": 5},
    )
    checkpoint = save_inference_checkpoint(model, meta, tmp_path / "model.ckpt")
    out = predict_scene(scene.product, checkpoint, tmp_path / "map.tif", _options(quicklook=False))
    with rasterio.open(out.map_path) as mapped, rasterio.open(scene.product) as product:
        assert (mapped.height, mapped.width) == (product.height // 2, product.width // 2)
        assert mapped.transform.a == 2 * product.transform.a  # pixels twice the size
        assert mapped.transform.c == product.transform.c  # same origin


def test_checkpoint_without_recorded_preprocessing_warns(tmp_path: Path, caplog) -> None:
    scene = write_synthetic_scene(tmp_path / "scene", size=64, seed=0)
    checkpoint = save_inference_checkpoint(
        build_segmenter(TINY_SEGMENTER), _meta(32, TINY_SEGMENTER), tmp_path / "old.ckpt"
    )
    with caplog.at_level(logging.WARNING):
        predict_scene(scene.product, checkpoint, tmp_path / "map.tif", _options(quicklook=False))
    assert "does not record the training data's preprocessing" in caplog.text


def test_bands_match_by_name_and_by_position_only_for_generic_names(tmp_path: Path, caplog) -> None:
    db = _scene(40, 40)
    hv = ArrayProduct(db, bands=("HV",))
    with pytest.raises(CompatibilityError, match=r"needs bands \['HH'\], the product has \['HV'\]"):
        predict_product(hv, Pointwise(), _meta(), tmp_path / "hv.tif", _options())
    generic = ArrayProduct(db, bands=("DB1",))
    with caplog.at_level(logging.WARNING):
        predict_product(generic, Pointwise(), _meta(), tmp_path / "db.tif", _options())
    assert "fed by position" in caplog.text


def test_map_is_a_cloud_optimized_geotiff_with_overviews_colours_and_class_names(
    tmp_path: Path,
) -> None:
    product = ArrayProduct(_scene(600, 520))
    meta = _meta()
    result = predict_product(product, Pointwise(), meta, tmp_path / "map.tif", _options())
    with rasterio.open(result.map_path) as mapped:
        assert mapped.tags(ns="IMAGE_STRUCTURE")["LAYOUT"] == "COG"
        assert mapped.overviews(1) == [2, 4]  # halved until one 256-px block holds the map
        assert mapped.colormap(1)[1][:3] == meta.class_colours[1]
        assert mapped.tags()["CLASS_2"] == "rice"
        assert mapped.crs.to_string() == "EPSG:32654"
        overview = mapped.read(1, out_shape=(300, 260))
    assert set(np.unique(overview)) <= {0, 1, 2, 255}  # nearest: no invented class ids
    assert not list(tmp_path.glob(".*partial"))


@pytest.mark.slow  # compiling the model takes tens of seconds on a CPU
def test_compiled_prediction_maps_the_same_classes_as_eager(tmp_path: Path) -> None:
    torch.manual_seed(0)
    scene = write_synthetic_scene(tmp_path / "scene", size=96, seed=0)
    checkpoint = save_inference_checkpoint(
        build_segmenter(TINY_SEGMENTER), _meta(32, TINY_SEGMENTER), tmp_path / "model.ckpt"
    )
    maps = {}
    for name, speed in {"eager": {}, "fast": {"compile": True, "fused_attention": True}}.items():
        options = _options(quicklook=False, confidence=True, **speed)
        result = predict_scene(scene.product, checkpoint, tmp_path / f"{name}.tif", options)
        with rasterio.open(result.map_path) as mapped, rasterio.open(result.confidence_path) as c:
            maps[name] = mapped.read(1), c.read(1).astype(int)
    # the same computation up to rounding: identical classes, confidence within a percent
    assert np.array_equal(maps["eager"][0], maps["fast"][0])
    assert np.abs(maps["eager"][1] - maps["fast"][1]).max() <= 1
