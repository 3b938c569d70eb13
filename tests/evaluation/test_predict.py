"""Streaming full-scene prediction: tiling, blending, georeference, no data, checkpoints."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch
from affine import Affine
from torch import nn

from alos2fm.errors import CompatibilityError
from alos2fm.evaluation.predict import (
    InferenceMeta,
    PredictionError,
    PredictOptions,
    blend_ramp,
    load_segmenter_for_inference,
    predict_product,
    predict_strips,
    save_inference_checkpoint,
    tile_origins,
)
from alos2fm.models.segmenter import WeightsError, build_segmenter
from alos2fm.products.base import RasterGrid, Window
from tests.tiny_models import TINY_SEGMENTER

UTM = "EPSG:32654"
TRANSFORM = Affine(3.0, 0.0, 500_000.0, 0.0, -3.0, 4_000_000.0)
COLOURS = ((0, 0, 255), (255, 0, 0), (0, 200, 0))
MEAN_DB, STD_DB = -10.0, 5.0


@dataclass
class ArrayProduct:
    """A Product over an in-memory dB array; records the windows read."""

    db: np.ndarray  # (bands, H, W) float32, NaN = no data
    path: Path = Path("scene.tif")
    bands: tuple[str, ...] = ("HH",)
    quantity: str = "sigma0"
    date: str | None = None
    crs: str | None = UTM
    reads: list[Window] = field(default_factory=list)

    @property
    def grid(self) -> RasterGrid:
        return RasterGrid(self.db.shape[1], self.db.shape[2], self.crs, TRANSFORM)

    def read_db(self, window: Window) -> np.ndarray:
        self.reads.append(window)
        r, c, h, w = window
        return self.db[:, r : r + h, c : c + w].copy()

    def describe(self) -> dict:
        return {}


class Pointwise(nn.Module):
    """Logits a_k * x + b_k per pixel: no spatial context, so tiling must change nothing."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 3, 1)
        with torch.no_grad():
            self.conv.weight.copy_(torch.tensor([-2.0, 0.0, 2.0]).view(3, 1, 1, 1))
            self.conv.bias.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


def _meta(patch_size: int = 32, model: dict | None = None) -> InferenceMeta:
    return InferenceMeta(
        model=model or {},
        bands=("HH",),
        mean_db=(MEAN_DB,),
        std_db=(STD_DB,),
        class_names=("water", "urban", "rice"),
        class_colours=COLOURS,
        patch_size=patch_size,
    )


def _scene(height: int, width: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width]
    smooth = 8 * np.sin(yy / 9.0) * np.cos(xx / 13.0) + MEAN_DB
    return (smooth + rng.normal(0, 1, (height, width)))[None].astype(np.float32)


def _expected_pointwise(db: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Classes and max probability of ``Pointwise`` on the whole image at once."""
    x = torch.from_numpy(np.nan_to_num((db - MEAN_DB) / STD_DB))[None]
    with torch.no_grad():
        probs = torch.softmax(Pointwise()(x), dim=1)[0]
    confidence, classes = probs.max(dim=0)
    classes = classes.numpy().astype(np.uint8)
    classes[np.isnan(db).any(axis=0)] = 255
    return classes, confidence.numpy()


def _options(**kw) -> PredictOptions:
    return PredictOptions(**{"overlap": 8, "batch_size": 3, "progress": False, **kw})


def test_tile_origins_reach_the_edges() -> None:
    assert tile_origins(100, 32, 8) == [0, 24, 48, 68]  # last tile moved back to end at 100
    assert tile_origins(32, 32, 8) == [0]
    assert tile_origins(20, 32, 8) == [0]  # smaller than a tile: one padded tile


def test_ramps_of_neighbouring_tiles_sum_to_one() -> None:
    ramp = blend_ramp(32, 8)
    assert ramp.min() > 0 and ramp[8:24].tolist() == [1.0] * 16
    assert ramp[0] == pytest.approx(0.5 - 0.5 * np.cos(np.pi / 16), rel=1e-5)
    total = np.zeros(24 * 3 + 32)
    for origin in range(0, 24 * 4, 24):
        total[origin : origin + 32] += ramp
    np.testing.assert_allclose(total[8:-8], 1.0, rtol=1e-6)  # a partition of unity inside


def test_tiled_prediction_equals_whole_image_and_keeps_georeference(tmp_path: Path) -> None:
    db = _scene(100, 75)
    db[:, :10, :12] = np.nan  # a no-data corner
    db[:, 60:, 40:] = np.nan  # a no-data block wider than a tile: its tiles are skipped
    product = ArrayProduct(db)
    result = predict_product(
        product, Pointwise(), _meta(), tmp_path / "map.tif", _options(confidence=True)
    )
    classes, confidence = _expected_pointwise(db)
    with rasterio.open(result.map_path) as src:
        assert src.crs.to_string() == UTM and src.transform == TRANSFORM
        assert (src.height, src.width, src.dtypes[0], src.nodata) == (100, 75, "uint8", 255.0)
        assert src.colormap(1)[2] == (0, 200, 0, 255)
        assert src.profile["compress"] == "deflate" and src.profile["tiled"]
        assert src.tags()["CLASS_1"] == "urban"
        np.testing.assert_array_equal(src.read(1), classes)  # no seam anywhere, edges reached
    with rasterio.open(result.confidence_path) as src:
        percent = src.read(1)
    valid = classes != 255
    assert (percent[~valid] == 255).all()
    np.testing.assert_allclose(percent[valid], np.round(confidence[valid] * 100), atol=1)
    assert result.quicklook_path.exists() and result.quicklook_path.suffix == ".png"
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".partial")]


class TileMean(nn.Module):
    """Two classes, logits (0, 4 * tile mean): one probability per tile, so the blend shows."""

    def __init__(self) -> None:
        super().__init__()
        self.unused = nn.Parameter(torch.zeros(1))  # gives the model a device

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        score = 4 * x.mean(dim=(1, 2, 3)).view(-1, 1, 1, 1).expand(-1, 1, *x.shape[-2:])
        return torch.cat([torch.zeros_like(score), score], dim=1)


def test_overlaps_take_the_ramp_weighted_mean_of_both_tiles() -> None:
    # One strip, two tiles: columns 0-31 and 24-55 (overlap 8). Normalised input = col / 55.
    db = np.broadcast_to(MEAN_DB + STD_DB * np.arange(56) / 55, (1, 32, 56)).astype(np.float32)
    meta = dataclasses.replace(_meta(), class_names=("low", "high"), class_colours=COLOURS[:2])
    strips = predict_strips(ArrayProduct(db), TileMean(), meta, 32, 8, batch_size=2)
    [(classes, confidence, tiles)] = list(strips)
    assert tiles == 2 and (classes == 1).all()
    p_left = 1 / (1 + np.exp(-4 * 15.5 / 55))  # mean of columns 0..31
    p_right = 1 / (1 + np.exp(-4 * 39.5 / 55))  # mean of columns 24..55
    ramp = blend_ramp(32, 8)
    blended = (ramp[28] * p_left + ramp[4] * p_right) / (ramp[28] + ramp[4])  # column 28
    np.testing.assert_allclose(confidence[:, 10], p_left, rtol=1e-5)
    np.testing.assert_allclose(confidence[:, 28], blended, rtol=1e-5)
    np.testing.assert_allclose(confidence[:, 50], p_right, rtol=1e-5)
    # Across the overlap (columns 24-31) the confidence moves smoothly from tile to tile.
    assert (np.diff(confidence[0, 23:33]) > 0).all()


def test_reads_stream_one_strip_at_a_time_and_skip_empty_tiles(tmp_path: Path) -> None:
    db = _scene(100, 75)
    db[:, 60:, :] = np.nan  # the last two strips hold no data
    product = ArrayProduct(db)
    result = predict_product(
        product, Pointwise(), _meta(), tmp_path / "m.tif", _options(quicklook=False)
    )
    assert [(w.row, w.height, w.width) for w in product.reads] == [
        (0, 32, 75),
        (24, 32, 75),
        (48, 32, 75),
        (68, 32, 75),
    ]
    assert result.tiles == 3 * 3  # strips at rows 0, 24 and 48 (it reaches row 60), 3 tiles each
    assert result.tiles_total == 4 * 3  # the strip at row 68 holds no data: skipped


def test_scene_smaller_than_one_tile(tmp_path: Path) -> None:
    db = _scene(20, 27)
    result = predict_product(
        ArrayProduct(db), Pointwise(), _meta(), tmp_path / "small.tif", _options()
    )
    with rasterio.open(result.map_path) as src:
        assert src.shape == (20, 27)
        np.testing.assert_array_equal(src.read(1), _expected_pointwise(db)[0])


def test_map_without_crs_keeps_the_pixel_grid(tmp_path: Path) -> None:
    product = ArrayProduct(_scene(40, 40), crs=None)
    result = predict_product(product, Pointwise(), _meta(), tmp_path / "m.tif", _options())
    with rasterio.open(result.map_path) as src:
        assert src.crs is None and src.transform == TRANSFORM


def test_bands_and_options_must_fit_the_model(tmp_path: Path) -> None:
    two_bands = ArrayProduct(np.zeros((2, 40, 40), np.float32), bands=("HH", "HV"))
    predict_product(two_bands, Pointwise(), _meta(), tmp_path / "ok.tif", _options())  # picks HH
    wrong = ArrayProduct(np.zeros((2, 40, 40), np.float32), bands=("VV", "VH"))
    with pytest.raises(CompatibilityError, match=r"needs bands \['HH'\]"):
        predict_product(wrong, Pointwise(), _meta(), tmp_path / "m.tif", _options())
    with pytest.raises(PredictionError, match="use --tile 32"):
        predict_product(
            ArrayProduct(_scene(40, 40)),
            Pointwise(),
            _meta(),
            tmp_path / "m.tif",
            _options(tile=64),
        )
    with pytest.raises(PredictionError, match="overlap 20"):
        predict_product(
            ArrayProduct(_scene(40, 40)),
            Pointwise(),
            _meta(),
            tmp_path / "m.tif",
            _options(overlap=20),
        )
    with pytest.raises(PredictionError, match="gives 3 classes, its metadata names 2"):
        two_classes = dataclasses.replace(_meta(), class_names=("a", "b"))
        predict_product(
            ArrayProduct(_scene(40, 40)), Pointwise(), two_classes, tmp_path / "m.tif", _options()
        )
    written = {"ok.tif", "ok.png", "ok.tif.aux.xml", "ok.qml"}  # the map that was predicted
    assert not [p.name for p in tmp_path.iterdir() if p.name not in written]


# --- a real segmenter through a checkpoint ------------------------------------------------


def test_checkpoint_round_trip_and_segmenter_prediction(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = build_segmenter(TINY_SEGMENTER).eval()
    meta = _meta(model=TINY_SEGMENTER)
    path = save_inference_checkpoint(model, meta, tmp_path / "best.ckpt")
    loaded, loaded_meta = load_segmenter_for_inference(path)
    assert loaded_meta == meta
    x = torch.randn(2, 1, 32, 32)
    torch.testing.assert_close(loaded(x), model(x))

    db = _scene(70, 45)
    result = predict_product(
        ArrayProduct(db), loaded, loaded_meta, tmp_path / "map.tif", _options()
    )
    with rasterio.open(result.map_path) as src:
        classes = src.read(1)
    assert classes.shape == (70, 45) and set(np.unique(classes)) <= {0, 1, 2}


def test_checkpoint_without_metadata_or_weights(tmp_path: Path) -> None:
    model = build_segmenter(TINY_SEGMENTER)
    bare = tmp_path / "bare.ckpt"
    torch.save({"state_dict": {f"segmenter.{k}": v for k, v in model.state_dict().items()}}, bare)
    with pytest.raises(WeightsError, match="no hyper_parameters"):
        load_segmenter_for_inference(bare)
    empty = tmp_path / "empty.ckpt"
    torch.save({"state_dict": {}, "hyper_parameters": _meta(model=TINY_SEGMENTER).hparams()}, empty)
    with pytest.raises(WeightsError, match="lacks .* segmenter tensors"):
        load_segmenter_for_inference(empty)
    with pytest.raises(WeightsError, match="not found"):
        load_segmenter_for_inference(tmp_path / "missing.ckpt")


def test_generic_db_geotiff_through_open_product(tmp_path: Path) -> None:
    products = pytest.importorskip("alos2fm.products")
    if not hasattr(products, "open_product"):
        pytest.skip("alos2fm.products.open_product not available yet")
    db = _scene(50, 60)
    db[:, :5] = np.nan
    path = tmp_path / "scene_db.tif"
    profile = dict(
        driver="GTiff",
        width=60,
        height=50,
        count=1,
        dtype="float32",
        crs=UTM,
        transform=TRANSFORM,
        nodata=np.nan,
    )
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(db)
    product = products.open_product(path)
    result = predict_product(product, Pointwise(), _meta(), tmp_path / "map.tif", _options())
    with rasterio.open(result.map_path) as src:
        assert src.crs.to_string() == UTM and src.transform == TRANSFORM
        np.testing.assert_array_equal(src.read(1), _expected_pointwise(db)[0])


def test_predict_scene_reads_the_sibling_files_of_a_dual_pol_model(tmp_path: Path) -> None:
    from alos2fm.evaluation.predict import predict_scene
    from alos2fm.products import open_product
    from tests.products.rasters import dn_scene, write_tif

    name = "IMG-{pol}-ALOS2458503210-221119-UBSR2.1GUD.tif"
    hh = write_tif(tmp_path / name.format(pol="HH"), dn_scene(40, 48, seed=1))
    write_tif(tmp_path / name.format(pol="HV"), dn_scene(40, 48, seed=2))
    config = {**TINY_SEGMENTER, "encoder": {**TINY_SEGMENTER["encoder"], "in_chans": 2}}
    meta = dataclasses.replace(
        _meta(model=config), bands=("HH", "HV"), mean_db=(MEAN_DB,) * 2, std_db=(STD_DB,) * 2
    )
    torch.manual_seed(0)
    checkpoint = save_inference_checkpoint(build_segmenter(config), meta, tmp_path / "best.ckpt")
    # Given the HH file, predict reads HV from its sibling: the same map as an HH+HV product.
    result = predict_scene(hh, checkpoint, tmp_path / "map.tif", _options())
    model, meta = load_segmenter_for_inference(checkpoint)
    both = open_product(hh, bands=["HH", "HV"])
    expected = predict_product(both, model, meta, tmp_path / "expected.tif", _options())
    with rasterio.open(result.map_path) as got, rasterio.open(expected.map_path) as want:
        np.testing.assert_array_equal(got.read(1), want.read(1))


def test_cli_predict_writes_map_confidence_and_quicklook(tmp_path: Path, monkeypatch) -> None:
    from typer.testing import CliRunner

    import alos2fm.products
    from alos2fm.cli import app

    torch.manual_seed(0)
    checkpoint = save_inference_checkpoint(
        build_segmenter(TINY_SEGMENTER), _meta(model=TINY_SEGMENTER), tmp_path / "best.ckpt"
    )
    opened = []

    def fake_open_product(path, bands=None, **options):  # the CLI's reader, no file
        opened.append((Path(path), tuple(bands)))
        return ArrayProduct(_scene(50, 40))

    monkeypatch.setattr(alos2fm.products, "open_product", fake_open_product, raising=False)
    out = tmp_path / "maps" / "map.tif"
    args = [
        "predict",
        "scene.tif",
        "--checkpoint",
        str(checkpoint),
        "--out",
        str(out),
        "--confidence",
        "--batch-size",
        "2",
        "--no-progress",
    ]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert opened == [(Path("scene.tif"), ("HH",))]  # sibling files of the model's bands
    assert f"map written to {out}" in result.output
    for path in (out, out.with_name("map_confidence.tif"), out.with_suffix(".png")):
        assert path.is_file(), path
    with rasterio.open(out) as src:
        assert src.shape == (50, 40)

    result = CliRunner().invoke(app, [*args[:3], str(tmp_path / "nope.ckpt"), *args[4:]])
    assert isinstance(result.exception, WeightsError)


def test_the_progress_bar_counts_the_tiles_the_summary_reports(tmp_path: Path, capsys) -> None:
    db = _scene(100, 75)
    db[:, 60:, :] = np.nan
    result = predict_product(
        ArrayProduct(db),
        Pointwise(),
        _meta(),
        tmp_path / "m.tif",
        _options(quicklook=False, progress=True),
    )
    final = capsys.readouterr().err.replace("\r", "\n").strip().splitlines()[-1]
    assert f"{result.tiles_total}/{result.tiles_total} " in final  # no-data tiles skipped
    assert f"{result.tiles} with data" in final


def test_the_progress_bar_knows_its_total_before_the_first_strip(tmp_path, monkeypatch) -> None:
    import tqdm

    bars: list[tqdm.tqdm] = []

    class RecordedBar(tqdm.tqdm):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            bars.append(self)

    @dataclass
    class WatchedProduct(ArrayProduct):
        totals: list[float | None] = field(default_factory=list)  # the bar's, at each read

        def read_db(self, window: Window) -> np.ndarray:
            self.totals.append(bars[-1].total)
            return super().read_db(window)

    monkeypatch.setattr(tqdm, "tqdm", RecordedBar)
    db = _scene(100, 75)
    db[:, 60:, :] = np.nan
    product = WatchedProduct(db)
    result = predict_product(
        product, Pointwise(), _meta(), tmp_path / "m.tif", _options(quicklook=False, progress=True)
    )
    assert product.totals == [result.tiles_total] * 4  # 4 strips of 3 tiles, known up front
    assert bars[-1].n == result.tiles_total
