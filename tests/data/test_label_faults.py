"""Label faults that once gave silently wrong labels: masking polygons (R8), a file's nodata
tag that swallows a class (R9), a source read through a class table it does not fit (N1);
and property tests of class tables x nodata tags x pixel types."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import rasterio
import shapely
from affine import Affine
from hypothesis import given, settings
from hypothesis import strategies as st
from rasterio.warp import transform as warp_transform

from alos2fm.data.classes import ClassTable, TrainingClass
from alos2fm.data.labels import LabelMap, describe_labels, open_labels
from alos2fm.errors import DataError
from alos2fm.products.base import RasterGrid, Window

LONLAT = Affine(1e-3, 0, 139.5, 0, -1e-3, 35.5)
UTM_GRID = RasterGrid(64, 64, "EPSG:32654", Affine(10.0, 0, 455000.0, 0, -10.0, 3929000.0))


def _tif(path: Path, data: np.ndarray, nodata: float | None = None, transform=LONLAT) -> Path:
    profile = dict(
        driver="GTiff", width=data.shape[1], height=data.shape[0], count=1,
        dtype=str(data.dtype), crs="EPSG:4326", transform=transform, nodata=nodata,
    )  # fmt: skip
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data, 1)
    return path


def _own_grid(path: Path) -> RasterGrid:
    with rasterio.open(path) as src:
        return RasterGrid(src.height, src.width, "EPSG:4326", src.transform)


def _read_all(labels, path: Path) -> np.ndarray:
    grid = _own_grid(path)
    return labels.read_on_grid(grid, Window(0, 0, grid.height, grid.width))


# --- R8: polygons with an ignore or null class mask their area ----------------------------------


def _lonlat_box(x0, y0, x1, y1) -> shapely.Polygon:
    ring = shapely.box(x0, y0, x1, y1).segmentize(20.0).exterior.coords
    xs, ys = zip(*ring, strict=True)
    lon, lat = warp_transform("EPSG:32654", "EPSG:4326", xs, ys)
    return shapely.Polygon(zip(lon, lat, strict=True))


def _layer(path: Path, polygons, values) -> Path:
    import pyogrio.raw

    pyogrio.raw.write(
        path,
        geometry=shapely.to_wkb(np.array(polygons, dtype=object)),
        field_data=[np.array(values, dtype=object)],
        fields=["landuse"],
        crs="EPSG:4326",
        geometry_type="Polygon",
        driver="GPKG",
    )
    return path


def _centres_in(polygon) -> np.ndarray:
    rows, cols = np.mgrid[0:64, 0:64]
    xs, ys = UTM_GRID.transform * (cols + 0.5, rows + 0.5)
    lon, lat = warp_transform("EPSG:32654", "EPSG:4326", xs.ravel(), ys.ravel())
    return shapely.contains_xy(polygon, lon, lat).reshape(64, 64)


TEXT_TABLE = ClassTable(
    name="text",
    classes=[
        TrainingClass(name="Land", color=(9, 9, 9), values=["land"]),
        TrainingClass(name="Water", color=(0, 0, 200), values=["water"]),
    ],
    ignore=["unsure"],
)


@pytest.mark.parametrize("mask_value", ["unsure", None], ids=["ignore_value", "null"])
def test_R8_masking_polygon_inside_a_field_masks_its_area(tmp_path, mask_value):
    """A field (land) holding a pond (water) and a smaller patch marked unsure / null: the
    unsure patch is ignored (255), not land; the pond stays water."""
    field = _lonlat_box(455100, 3928500, 455500, 3928850)
    pond = _lonlat_box(455200, 3928600, 455300, 3928700)
    unsure = _lonlat_box(455350, 3928550, 455450, 3928650)
    path = _layer(tmp_path / "l.gpkg", [field, unsure, pond], ["land", mask_value, "water"])
    got = open_labels(path, TEXT_TABLE, field="landuse").read_on_grid(
        UTM_GRID, Window(0, 0, 64, 64)
    )
    expected = np.full((64, 64), 255, np.uint8)
    expected[_centres_in(field)] = 0
    expected[_centres_in(pond)] = 1
    expected[_centres_in(unsure)] = 255
    assert _centres_in(unsure).sum() == 100
    np.testing.assert_array_equal(got, expected)


def test_R8_null_polygon_with_a_smaller_class_polygon_inside_keeps_the_class(tmp_path):
    """Nesting holds both ways: a null area around a pond: the pond is water, the rest of
    the null area is ignored, the field around both is land."""
    field = _lonlat_box(455100, 3928500, 455500, 3928850)
    hole = _lonlat_box(455150, 3928550, 455350, 3928750)
    pond = _lonlat_box(455200, 3928600, 455300, 3928700)
    path = _layer(tmp_path / "l.gpkg", [pond, hole, field], ["water", None, "land"])
    got = open_labels(path, TEXT_TABLE, field="landuse").read_on_grid(
        UTM_GRID, Window(0, 0, 64, 64)
    )
    expected = np.full((64, 64), 255, np.uint8)
    expected[_centres_in(field)] = 0
    expected[_centres_in(hole)] = 255
    expected[_centres_in(pond)] = 1
    np.testing.assert_array_equal(got, expected)


# --- R9: a nodata tag that is a class value --------------------------------------------------


def _mask(size: int = 32) -> np.ndarray:
    mask = np.zeros((size, size), np.uint8)
    mask[:, 10:20] = 1
    return mask


def test_R9_nodata_tag_that_is_a_class_is_refused_naming_value_class_and_override(tmp_path):
    path = _tif(tmp_path / "mask.tif", _mask(), nodata=0)
    with pytest.raises(DataError, match=r"nodata.* 0 .*'Not water'.*--label-nodata none"):
        open_labels(path, "water_mask")
    with pytest.raises(DataError, match=r"'Not water'.*--label-nodata none"):
        open_labels(path, "water_mask", grid="pixel")


def test_R9_label_nodata_none_reads_the_value_by_the_class_table(tmp_path):
    path = _tif(tmp_path / "mask.tif", _mask(), nodata=0)
    labels = open_labels(path, "water_mask", nodata=None)
    np.testing.assert_array_equal(_read_all(labels, path), _mask())
    fields, rows = describe_labels(path, "water_mask", nodata=None)
    roles = {row["value"]: row["training class"] for row in rows}
    assert roles == {0: "class 0 Not water", 1: "class 1 Water"}
    assert "problem" not in fields


def test_R9_label_nodata_value_replaces_the_files_tag(tmp_path):
    data = _mask()
    data[:4] = 7
    path = _tif(tmp_path / "mask.tif", data, nodata=0)
    labels = open_labels(path, "water_mask", nodata=7)
    expected = np.where(data == 7, 255, data)
    np.testing.assert_array_equal(_read_all(labels, path), expected)


def test_R9_describe_labels_shows_the_collision_instead_of_hiding_the_class(tmp_path):
    path = _tif(tmp_path / "mask.tif", _mask(), nodata=0)
    fields, rows = describe_labels(path, "water_mask")
    assert "'Not water'" in fields["problem"] and "--label-nodata none" in fields["problem"]


def test_R9_nodata_tag_without_collision_changes_nothing(tmp_path):
    data = _mask()
    data[:2] = 255
    path = _tif(tmp_path / "mask.tif", data, nodata=255)
    got = _read_all(open_labels(path, "water_mask"), path)
    np.testing.assert_array_equal(got, np.where(data == 255, 255, data))


# --- N1: a source that does not fit its class table --------------------------------------------


def test_N1_water_mask_through_the_default_table_is_refused(tmp_path):
    """0/1 uint8 water mask, no --classes: HRLULC would make 0 no data and 1 Water."""
    data = np.zeros((64, 64), np.uint8)
    data[:, :40] = 1  # mostly water: the no-data share alone would not tell
    path = _tif(tmp_path / "mask.tif", data)
    with pytest.raises(DataError, match=r"hrlulc_v23\.12_to_9.*--classes water_mask"):
        open_labels(path)
    with pytest.raises(DataError, match=r"--classes water_mask"):
        open_labels(path, table_given=False)
    # The same file through the table it needs is fine.
    labels = open_labels(path, "water_mask")
    np.testing.assert_array_equal(_read_all(labels, path), data)


def test_N1_pixel_grid_water_mask_through_the_default_table_is_refused(tmp_path):
    np.save(tmp_path / "gt.npy", _mask())
    with pytest.raises(DataError, match=r"--classes water_mask"):
        open_labels(tmp_path / "gt.npy", grid="pixel")


def test_N1_most_pixels_turned_into_undeclared_no_data_is_refused_for_any_table(tmp_path):
    """A 0/255 water mask through water_mask: 255 (water here) would all be ignored."""
    data = np.zeros((64, 64), np.uint8)
    data[:, :48] = 255
    path = _tif(tmp_path / "mask.tif", data)
    with pytest.raises(DataError, match=r"255 \(3072 px\).*--label-nodata 255"):
        open_labels(path, "water_mask")
    # Declaring it (the user says 255 really is no data) lets it through.
    open_labels(path, "water_mask", nodata=255)
    fields, _ = describe_labels(path, "water_mask")
    assert "255 (3072 px)" in fields["problem"]


def test_N1_real_sources_still_pass(tmp_path, hrlulc_crop, flevoland_dir):
    """The real HRLULC crop with the default table, the real Flevoland ground truth (78 %
    unlabelled, which its table documents) and the README's synthetic example."""
    from alos2fm.data.synth import write_own_labels_example, write_synthetic_scene

    open_labels(hrlulc_crop)
    open_labels(flevoland_dir / "Flevoland_gt_uint8_750x1024.npy", "flevoland", grid="pixel")
    scene = write_synthetic_scene(tmp_path / "own", size=256)
    example = write_own_labels_example(scene)
    open_labels(scene.landcover)
    open_labels(example.mask, "water_mask")
    with pytest.raises(DataError, match="--classes water_mask"):
        open_labels(example.mask)


def test_N1_table_given_explicitly_is_not_held_to_the_hrlulc_rule(tmp_path):
    """A small HRLULC crop with two classes, the default table named by the user."""
    data = np.full((32, 32), 3, np.uint8)
    data[:, :10] = 1
    path = _tif(tmp_path / "lc.tif", data, nodata=0)
    with pytest.raises(DataError, match="default class table"):
        open_labels(path)
    got = _read_all(open_labels(path, "hrlulc_v23.12_to_9", table_given=True), path)
    np.testing.assert_array_equal(got, np.where(data == 1, 0, 2))


# --- properties: class tables x nodata tags x pixel types --------------------------------------

DTYPES = ["uint8", "int16", "uint16", "int32", "float32"]


@st.composite
def _cases(draw):
    dtype = draw(st.sampled_from(DTYPES))
    low = -3 if dtype in ("int16", "int32") else 0
    pool = draw(st.lists(st.integers(low, 12), min_size=3, max_size=8, unique=True))
    n_classes = draw(st.integers(1, min(3, len(pool) - 1)))
    class_values = [[v] for v in pool[:n_classes]]
    rest = pool[n_classes:]
    n_ignore = draw(st.integers(0, len(rest)))
    ignore, extra = rest[:n_ignore], rest[n_ignore:]
    table = ClassTable(
        name="t",
        classes=[
            TrainingClass(name=f"C{i}", color=(i, i, i), values=v)
            for i, v in enumerate(class_values)
        ],
        ignore=ignore,
    )
    tag = draw(st.one_of(st.none(), st.sampled_from(pool)))
    override = draw(st.one_of(st.just("file"), st.none(), st.sampled_from(pool)))
    values = [v for vs in class_values for v in vs] + ignore
    for nodata in (tag, None if override == "file" else override):
        if nodata is not None and nodata not in values:
            values.append(nodata)
    pixels = draw(st.lists(st.sampled_from(values), min_size=16, max_size=16))
    return dtype, table, tag, override, np.array(pixels).reshape(4, 4), extra


@settings(max_examples=25, deadline=None)
@given(case=_cases(), pixel_grid=st.booleans())
def test_property_labels_are_right_or_refused_naming_the_value(case, pixel_grid):
    import tempfile

    with tempfile.TemporaryDirectory() as folder:
        _check_read(Path(folder) / "p.tif", case, pixel_grid)


def _check_read(path: Path, case, pixel_grid: bool) -> None:
    dtype, table, tag, override, pixels, _ = case
    path = _tif(path, pixels.astype(dtype), nodata=tag)
    nodata = tag if override == "file" else override
    class_of = {v: i for i, c in enumerate(table.classes) for v in c.values}
    expected = np.array(
        [255 if v == nodata else class_of.get(v, 255) for v in pixels.ravel()], np.uint8
    ).reshape(pixels.shape)
    counted = pixels[pixels != nodata] if nodata is not None else pixels.ravel()
    undeclared = np.isin(counted, table.ignore).sum()
    mostly_dropped = undeclared * 2 > len(counted)
    collides = nodata is not None and nodata in class_of
    listed = set(class_of) | set(table.ignore)
    unknown = {int(v) for v in pixels.ravel() if v != nodata and v not in listed}
    try:
        labels = open_labels(path, table, nodata=override, grid="pixel" if pixel_grid else "map")
        if pixel_grid:
            grid = _own_grid(path)
            labels.attach(SimpleNamespace(grid=grid, path=path))
        got = _read_all(labels, path)
        labels.close()
    except DataError as err:
        message = str(err)
        reasons = []
        if unknown:
            reasons.append("not in class table" in message and f"{min(unknown)}" in message)
        if collides:
            reasons.append(f" {nodata} " in message and f"'C{class_of[nodata]}'" in message)
        if mostly_dropped:
            reasons.append("would become no data" in message)
        assert any(reasons), message
        return
    assert not (unknown or collides or mostly_dropped), "read instead of refused"
    np.testing.assert_array_equal(got, expected)


@settings(max_examples=25, deadline=None)
@given(case=_cases())
def test_property_describe_labels_agrees_with_reading(case):
    """describe_labels marks exactly the values that are nodata, whatever the type."""
    import tempfile

    dtype, table, tag, override, pixels, _ = case
    with tempfile.TemporaryDirectory() as folder:
        path = _tif(Path(folder) / "p.tif", pixels.astype(dtype), nodata=tag)
        fields, rows = describe_labels(path, table, nodata=override)
    nodata = tag if override == "file" else override
    class_of = {v: i for i, c in enumerate(table.classes) for v in c.values}
    collides = nodata is not None and nodata in class_of
    assert ("problem" in fields and f" {nodata} " in fields["problem"]) or not collides
    for row in rows:
        if row["value"] == nodata:
            assert row["training class"].startswith("ignored (")
        else:
            assert row["training class"] == table.value_role(row["value"])


def test_LabelMap_refuses_float_values_that_are_not_whole(tmp_path):
    data = np.full((4, 4), 1.5, np.float32)
    path = _tif(tmp_path / "f.tif", data)
    with pytest.raises(DataError, match="whole"):
        _read_all(LabelMap(path, "water_mask"), path)


def test_LabelMap_non_whole_nodata_tag_does_not_swallow_a_class(tmp_path):
    data = np.ones((4, 4), np.float32)
    path = _tif(tmp_path / "f.tif", data, nodata=1.5)
    got = _read_all(LabelMap(path, "water_mask"), path)
    np.testing.assert_array_equal(got, np.ones((4, 4), np.uint8))


def test_float_class_raster_with_a_float_nodata_tag_and_nan(tmp_path):
    data = np.zeros((8, 8), np.float32)
    data[:, :4] = 1
    data[0, 0] = np.finfo(np.float32).min  # GDAL's usual float nodata
    data[1, 1] = np.nan
    path = _tif(tmp_path / "f.tif", data, nodata=float(np.finfo(np.float32).min))
    expected = np.where(data == 1, 1, 0).astype(np.uint8)
    expected[0, 0] = expected[1, 1] = 255
    np.testing.assert_array_equal(_read_all(open_labels(path, "water_mask"), path), expected)
    fields, rows = describe_labels(path, "water_mask")
    assert "problem" not in fields
    assert [r["training class"] for r in rows if r["value"] not in (0, 1)] == [
        "ignored (file's nodata)"
    ] * 2
