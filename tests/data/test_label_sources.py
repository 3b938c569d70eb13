"""Label sources beyond HRLULC, read onto patch grids and through ``prepare``:
integer class rasters of any type and CRS, label images on the product's pixel grid,
polygon layers; and the folder safety of ``prepare --out``."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import shapely
from affine import Affine
from rasterio.warp import transform as warp_transform

from alos2fm.data import store
from alos2fm.data.classes import load_class_table
from alos2fm.data.labels import (
    PixelLabels,
    VectorLabels,
    describe_labels,
    is_label_source,
    open_labels,
)
from alos2fm.data.prepare import prepare_config, run_prepare
from alos2fm.errors import DataError
from alos2fm.products.base import RasterGrid, Window
from alos2fm.products.processing import Multilooked
from tests.products.rasters import write_tif

# A Sentinel-1-like chip: two dB bands in EPSG:4326, ~11 m pixels near 139.5E 35.5N.
CHIP = Affine(1e-4, 0, 139.5, 0, -1e-4, 35.5)


def _chip(tmp_path: Path, size: int = 128, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    db = rng.normal(-15, 3, (2, size, size)).astype(np.float32)
    return write_tif(
        tmp_path / "S1_chip.tif", db, crs="EPSG:4326", transform=CHIP, descriptions=("VV", "VH")
    )


def _water_mask(size: int = 128) -> np.ndarray:
    """int16: 0 land, 1 water (a river band), -1 invalid (a corner)."""
    mask = np.zeros((size, size), np.int16)
    mask[:, 40:70] = 1
    mask[:20, :20] = -1
    return mask


def _prepare(tmp_path: Path, products, out: str = "ds", **options):
    cfg = prepare_config(
        products=[str(p) for p in products],
        out=str(tmp_path / out),
        patch_size=32,
        stride=32,
        block_size=64,
        buffer=0,
        progress=False,
        **options,
    )
    return run_prepare(cfg), tmp_path / out


def _patch_labels(out: Path) -> dict[tuple[int, int], np.ndarray]:
    index = store.read_index(out)
    labels = store.open_patch_arrays(out).labels
    return {(r.row, r.col): labels[i] for i, r in enumerate(index.itertuples())}


# --- integer class rasters ------------------------------------------------------------------


def test_int16_water_mask_with_minus_one_invalid_goes_through_prepare(tmp_path):
    """The case a new user reported: a VV/VH dB chip and its int16 0/1/-1 mask."""
    chip = _chip(tmp_path)
    mask = _water_mask()
    write_tif(tmp_path / "mask.tif", mask, crs="EPSG:4326", transform=CHIP)
    result, out = _prepare(tmp_path, [chip], labels=[tmp_path / "mask.tif"], classes="water_mask")
    assert result.patches > 0
    expected = np.where(mask == -1, 255, mask).astype(np.uint8)
    for (row, col), label in _patch_labels(out).items():
        np.testing.assert_array_equal(label, expected[row : row + 32, col : col + 32])
    stats = store.read_stats(out)
    assert stats["class_names"] == ["Not water", "Water"]
    assert store.open_patch_arrays(out).images.attrs["quantity"] == "db"
    assert store.open_patch_arrays(out).bands == ("VV", "VH")


def test_worldcover_values_reprojected_onto_a_utm_grid(tmp_path):
    """A uint8 WorldCover map in EPSG:4326 on a UTM 54N grid: nearest takes the map pixel
    under each patch pixel's centre (checked pixel by pixel away from map-pixel edges)."""
    values = np.array([10, 20, 30, 40, 50, 60, 70, 80, 90, 95, 100], np.uint8)
    rng = np.random.default_rng(3)
    world = values[rng.integers(0, len(values), (60, 60))]
    world[:5] = 0  # no data
    map_transform = Affine(5e-4, 0, 139.49, 0, -5e-4, 35.51)
    path = write_tif(tmp_path / "wc.tif", world, crs="EPSG:4326", transform=map_transform, nodata=0)
    grid = RasterGrid(64, 64, "EPSG:32654", Affine(20.0, 0, 364000.0, 0, -20.0, 3929000.0))
    labels = open_labels(path, "worldcover")
    got = labels.read_on_grid(grid, Window(0, 0, 64, 64))

    rows, cols = np.mgrid[0:64, 0:64]
    xs, ys = grid.transform * (cols.ravel() + 0.5, rows.ravel() + 0.5)
    lon, lat = warp_transform("EPSG:32654", "EPSG:4326", xs, ys)
    fcol, frow = ~map_transform * (np.asarray(lon), np.asarray(lat))
    source = world[np.floor(frow).astype(int), np.floor(fcol).astype(int)].reshape(64, 64)
    expected = load_class_table("worldcover").training_ids(source)
    clear = (np.abs(fcol - np.round(fcol)) > 0.05) & (np.abs(frow - np.round(frow)) > 0.05)
    clear = clear.reshape(64, 64)
    assert clear.mean() > 0.7
    np.testing.assert_array_equal(got[clear], expected[clear])
    assert set(np.unique(got)) - {255} <= set(range(11)) and len(np.unique(got)) > 8


def test_values_missing_from_the_table_are_named_or_ignored_on_request(tmp_path):
    chip = _chip(tmp_path)
    mask = _water_mask()
    mask[100:, 100:] = 7  # a value the water-mask table does not know
    write_tif(tmp_path / "mask.tif", mask, crs="EPSG:4326", transform=CHIP)
    with pytest.raises(DataError, match="label values 7 are not in class table 'water_mask'"):
        _prepare(tmp_path, [chip], labels=[tmp_path / "mask.tif"], classes="water_mask")
    _, out = _prepare(
        tmp_path,
        [chip],
        labels=[tmp_path / "mask.tif"],
        classes="water_mask",
        unknown_values="ignore",
    )
    label = _patch_labels(out)[(96, 96)]
    assert (label[4:, 4:] == 255).all()  # rows/cols 100.. of the chip


# --- label images on the product's pixel grid -----------------------------------------------


def test_pixel_grid_npy_labels_go_through_prepare_with_the_flevoland_table(tmp_path):
    chip = _chip(tmp_path, size=96)
    gt = np.random.default_rng(1).integers(0, 16, (96, 96)).astype(np.uint8)
    np.save(tmp_path / "gt.npy", gt)
    result, out = _prepare(
        tmp_path,
        [chip],
        labels=[tmp_path / "gt.npy"],
        labels_grid="pixel",
        classes="flevoland",
    )
    expected = np.where(gt == 0, 255, gt - 1).astype(np.uint8)
    patches = _patch_labels(out)
    assert result.candidates == 9 and len(patches) == result.patches > 0
    for (row, col), label in patches.items():
        np.testing.assert_array_equal(label, expected[row : row + 32, col : col + 32])
    assert store.read_stats(out)["class_names"][0] == "Water"


def test_pixel_grid_labels_follow_multilooking(tmp_path):
    """On a 2x2-multilooked grid: nearest takes the look block's centre pixel (1, 1) and
    mode its most common class."""
    gt = np.array([[1, 1, 2, 2], [1, 2, 2, 2], [3, 3, 0, 0], [3, 4, 0, 4]], np.uint8)
    np.save(tmp_path / "gt.npy", gt)
    base = SimpleNamespace(grid=RasterGrid(4, 4, None), path=Path("p"), bands=("HH",))
    base.quantity, base.date = "db", None
    looked = Multilooked(base, (2, 2))
    labels = PixelLabels(tmp_path / "gt.npy", "flevoland")
    labels.check_scene(looked, "p")
    nearest = labels.read_on_grid(looked.grid, Window(0, 0, 2, 2), "nearest")
    assert nearest.tolist() == [[1, 1], [3, 3]]  # gt[1,1]=2, gt[1,3]=2, gt[3,1]=4, gt[3,3]=4
    mode = labels.read_on_grid(looked.grid, Window(0, 0, 2, 2), "mode")
    assert mode.tolist() == [[0, 1], [2, 3]]  # 1 (3 of 4), 2, 3 (2 of 4), 4 (0 is no data)


def test_pixel_grid_labels_of_another_size_are_refused(tmp_path):
    chip = _chip(tmp_path, size=96)
    np.save(tmp_path / "gt.npy", np.zeros((90, 96), np.uint8))
    with pytest.raises(DataError, match=r"label image is 96 x 90 px but the product .* 96 x 96"):
        _prepare(
            tmp_path, [chip], labels=[tmp_path / "gt.npy"], labels_grid="pixel", classes="flevoland"
        )


def test_a_label_image_without_georeference_asks_for_the_pixel_grid_option(tmp_path):
    np.save(tmp_path / "gt.npy", np.zeros((4, 4), np.uint8))
    with pytest.raises(DataError, match="--labels-grid pixel"):
        open_labels(tmp_path / "gt.npy", "flevoland")


def test_png_label_image_on_the_pixel_grid(tmp_path):
    from PIL import Image

    gt = np.random.default_rng(2).integers(0, 16, (64, 64)).astype(np.uint8)
    Image.fromarray(gt).save(tmp_path / "gt.png")
    chip = _chip(tmp_path, size=64)
    _, out = _prepare(
        tmp_path, [chip], labels=[tmp_path / "gt.png"], labels_grid="pixel", classes="flevoland"
    )
    expected = np.where(gt == 0, 255, gt - 1).astype(np.uint8)
    for (row, col), label in _patch_labels(out).items():
        np.testing.assert_array_equal(label, expected[row : row + 32, col : col + 32])


# --- polygons ---------------------------------------------------------------------------------


def _write_layer(path: Path, polygons, classes, crs: str = "EPSG:4326") -> Path:
    import pyogrio.raw

    pyogrio.raw.write(
        path,
        geometry=shapely.to_wkb(np.array(polygons, dtype=object)),
        field_data=[np.array(classes, dtype=object)],
        fields=["landuse"],
        crs=crs,
        geometry_type="Polygon",
        driver="GPKG" if path.suffix == ".gpkg" else None,
    )
    return path


UTM_GRID = RasterGrid(64, 64, "EPSG:32654", Affine(10.0, 0, 455000.0, 0, -10.0, 3929000.0))


def _lonlat_box(x0, y0, x1, y1) -> shapely.Polygon:
    """A UTM 54N rectangle as a lon/lat polygon (its vertices, densified)."""
    ring = shapely.box(x0, y0, x1, y1).segmentize(20.0).exterior.coords
    xs, ys = zip(*ring, strict=True)
    lon, lat = warp_transform("EPSG:32654", "EPSG:4326", xs, ys)
    return shapely.Polygon(zip(lon, lat, strict=True))


@pytest.mark.parametrize("suffix", [".gpkg", ".geojson", ".fgb"])
def test_polygons_are_burnt_exactly_where_they_are_and_the_smallest_wins(tmp_path, suffix):
    """A field (land) with a pond (water) drawn inside it, in lon/lat; on the UTM grid every
    pixel whose centre lies in the pond is water, in the field land, elsewhere ignored."""
    field = _lonlat_box(455100, 3928500, 455500, 3928850)
    pond = _lonlat_box(455200, 3928600, 455300, 3928700)
    path = _write_layer(tmp_path / f"labels{suffix}", [pond, field], ["water", "land"])
    table = tmp_path / "classes.yaml"
    table.write_text(
        "classes:\n"
        "  - {name: Land, color: [9, 9, 9], values: [land]}\n"
        "  - {name: Water, color: [0, 0, 200], values: [water]}\n"
    )
    labels = open_labels(path, table, field="landuse")
    assert isinstance(labels, VectorLabels)
    got = labels.read_on_grid(UTM_GRID, Window(0, 0, 64, 64))

    rows, cols = np.mgrid[0:64, 0:64]
    xs, ys = UTM_GRID.transform * (cols + 0.5, rows + 0.5)
    lon, lat = warp_transform("EPSG:32654", "EPSG:4326", xs.ravel(), ys.ravel())
    in_pond = shapely.contains_xy(pond, lon, lat).reshape(64, 64)
    in_field = shapely.contains_xy(field, lon, lat).reshape(64, 64)
    expected = np.full((64, 64), 255, np.uint8)
    expected[in_field] = 0
    expected[in_pond] = 1  # listed first in the layer, but smaller: it wins
    # Pixel centres never sit on an edge here (edges at whole 10 m, centres at 5 m).
    np.testing.assert_array_equal(got, expected)
    assert in_pond.sum() == 100 and in_field.sum() == 40 * 35


def test_polygon_layer_needs_its_class_field_and_known_values(tmp_path):
    path = _write_layer(
        tmp_path / "labels.gpkg", [_lonlat_box(455100, 3928500, 455500, 3928850)], ["forest"]
    )
    with pytest.raises(DataError, match="--label-field NAME .fields: landuse"):
        open_labels(path, "water_mask")
    with pytest.raises(DataError, match="no attribute 'class'.*fields: landuse"):
        open_labels(path, "water_mask", field="class")
    labels = open_labels(path, "water_mask", field="landuse")
    product = SimpleNamespace(grid=UTM_GRID, path=Path("scene.tif"))
    with pytest.raises(DataError, match="label values forest are not in class table"):
        labels.check_scene(product, "scene.tif")


def test_polygon_labels_go_through_prepare(tmp_path):
    """A UTM product with a polygon layer in lon/lat: the stored labels are the polygons."""
    db = np.random.default_rng(0).normal(-12, 2, (1, 64, 64)).astype(np.float32)
    product = write_tif(tmp_path / "scene.tif", db, crs="EPSG:32654", transform=UTM_GRID.transform)
    water = _lonlat_box(455000, 3928360, 455640, 3928680)
    path = _write_layer(tmp_path / "water.gpkg", [water], [1])
    _, out = _prepare(
        tmp_path, [product], labels=[path], classes="water_mask", label_field="landuse"
    )
    got = _patch_labels(out)
    rows, cols = np.mgrid[0:64, 0:64]
    expected = np.where((rows >= 32) & (rows < 64), 1, 255)  # y 3928680..3928360 = rows 32..63
    for (row, col), label in got.items():
        np.testing.assert_array_equal(label, expected[row : row + 32, col : col + 32])


# --- info ---------------------------------------------------------------------------------------


def test_info_describes_label_sources_with_counts_and_names(tmp_path):
    mask = _water_mask()
    path = write_tif(tmp_path / "mask.tif", mask, crs="EPSG:4326", transform=CHIP)
    assert is_label_source(path) and not is_label_source(_chip(tmp_path))
    fields, values = describe_labels(path, "water_mask")
    assert fields["kind"] == "class raster" and fields["crs"] == "EPSG:4326"
    assert fields["type"] == "int16" and fields["size"].startswith("128 x 128")
    counts = {row["value"]: (row["px"], row["training class"]) for row in values}
    assert counts == {
        -1: (400, "ignored (no data)"),
        0: (128 * 128 - 128 * 30 - 400, "class 0 Not water"),
        1: (128 * 30, "class 1 Water"),
    }
    layer = _write_layer(tmp_path / "l.gpkg", [_lonlat_box(0, 0, 1, 1)] * 3, ["a", "b", "a"])
    fields, values = describe_labels(layer, field="landuse")
    assert fields["features"] == 3 and fields["fields"] == "landuse"
    assert values == [{"value": "a", "features": 2}, {"value": "b", "features": 1}]


# --- a split of the user's own ------------------------------------------------------------------


def test_split_map_gives_one_patch_per_split_with_only_its_labels(tmp_path):
    """Pixel-grid ground truth and split map (left half train, right half val/test): a
    window across the boundary is stored once per split, each copy with only its labels;
    cover_edges adds the windows ending on the 100-px scene's edge."""
    chip = _chip(tmp_path, size=100)
    gt = np.random.default_rng(4).integers(1, 16, (100, 100)).astype(np.uint8)
    split = np.ones((100, 100), np.uint8)  # train
    split[:, 50:] = 2  # val
    split[60:, 50:] = 3  # test
    split[:5] = 0  # in no split
    np.save(tmp_path / "gt.npy", gt)
    np.save(tmp_path / "split.npy", split)
    result, out = _prepare(
        tmp_path,
        [chip],
        labels=[tmp_path / "gt.npy"],
        labels_grid="pixel",
        classes="flevoland",
        split_map=[tmp_path / "split.npy"],
        cover_edges=True,
    )
    index = store.read_index(out)
    labels = store.open_patch_arrays(out).labels
    windows = sorted({(r, c) for r, c in zip(index["row"], index["col"], strict=True)})
    assert windows == [(r, c) for r in (0, 32, 64, 68) for c in (0, 32, 64, 68)]
    expected_ids = gt.astype(np.int64) - 1
    for i, entry in enumerate(index.itertuples()):
        inside = np.s_[entry.row : entry.row + 32, entry.col : entry.col + 32]
        code = {"train": 1, "val": 2, "test": 3}[entry.split]
        mine = split[inside] == code
        assert mine.any() and entry.patch_id.endswith(f"_{entry.split}")
        np.testing.assert_array_equal(labels[i][mine], expected_ids[inside][mine])
        assert (labels[i][~mine] == 255).all()
    # The window at (32, 32) straddles train, val and test.
    at = index[(index["row"] == 32) & (index["col"] == 32)]
    assert sorted(at["split"]) == ["test", "train", "val"]
    assert result.splits == {s: int((index["split"] == s).sum()) for s in ("train", "val", "test")}


def test_caps_exclusions_and_class_weights_use_the_table_of_any_source(tmp_path):
    """Balancing by the water-mask table's class names; weights from its pixel counts."""
    chip = _chip(tmp_path)
    write_tif(tmp_path / "mask.tif", _water_mask(), crs="EPSG:4326", transform=CHIP)
    result, out = _prepare(
        tmp_path,
        [chip],
        labels=[tmp_path / "mask.tif"],
        classes="water_mask",
        caps=["Not water=2"],
        split_fractions="1,0,0",
    )
    index = store.read_index(out)
    assert (index["category"] == 0).sum() == 2  # capped by name
    assert (index["category"] == 1).sum() == result.patches - 2
    distribution = (out / "class_distribution.csv").read_text()
    assert "Not water" in distribution and "Water" in distribution
    stats = store.read_stats(out)
    counts = np.array(stats["class_pixel_counts"])
    assert counts.sum() > 0 and len(stats["class_weights"]) == 2
    assert stats["class_weights"] == pytest.approx(store.median_frequency_weights(counts))


def test_mismatched_label_inputs_are_refused(tmp_path):
    """One pixel-grid image for two products, a line layer, polygons far from the scene."""
    first, second = tmp_path / "a", tmp_path / "b"
    first.mkdir(), second.mkdir()
    chips = [_chip(first, size=64), _chip(second, size=64, seed=1)]
    np.save(tmp_path / "gt.npy", np.zeros((64, 64), np.uint8))
    with pytest.raises(DataError, match="1 pixel-grid image.s. for 2 product.s."):
        _prepare(tmp_path, chips, labels=[tmp_path / "gt.npy"], labels_grid="pixel")

    import pyogrio.raw

    line = shapely.LineString([(139.5, 35.5), (139.51, 35.49)])
    pyogrio.raw.write(
        tmp_path / "roads.gpkg",
        geometry=shapely.to_wkb(np.array([line], dtype=object)),
        field_data=[np.array([1], dtype=object)],
        fields=["landuse"],
        crs="EPSG:4326",
        geometry_type="LineString",
    )
    with pytest.raises(DataError, match="LineString geometries, not polygons"):
        open_labels(tmp_path / "roads.gpkg", "water_mask", field="landuse")

    far = _write_layer(tmp_path / "far.gpkg", [shapely.box(10.0, 50.0, 10.1, 50.1)], [1])
    with pytest.raises(DataError, match="does not overlap the label layer"):
        _prepare(tmp_path, chips[:1], labels=[far], classes="water_mask", label_field="landuse")
