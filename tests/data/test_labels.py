"""Label sources read onto patch grids: class rasters, pixel-grid images, polygons."""

from __future__ import annotations

import pickle
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import rasterio
from affine import Affine
from rasterio.warp import transform

from alos2fm.data.classes import ClassTable, TrainingClass
from alos2fm.data.labels import IGNORE_INDEX, LabelMap, identity_remap, open_labels
from alos2fm.errors import DataError
from alos2fm.products.base import RasterGrid, Window


def _write_labels(
    path: Path,
    data: np.ndarray,
    transform_: Affine,
    crs: str | None = "EPSG:4326",
    nodata: float | None = 0,
) -> Path:
    profile = dict(
        driver="GTiff", width=data.shape[1], height=data.shape[0], count=1, dtype=str(data.dtype),
        crs=crs, transform=transform_, nodata=nodata,
    )  # fmt: skip
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data, 1)
    return path


def _on(grid: RasterGrid) -> SimpleNamespace:
    """A stand-in product: all that check_scene reads is the grid (and the path)."""
    return SimpleNamespace(grid=grid, path=Path("scene.tif"))


# --- reading onto grids -----------------------------------------------------------------------


def test_read_on_own_grid_returns_the_window_remapped(hrlulc_crop):
    """On the map's own grid, reprojection is the identity: labels = lut[window slice]."""
    labels = LabelMap(hrlulc_crop)
    with rasterio.open(hrlulc_crop) as src:
        grid = RasterGrid(src.height, src.width, "EPSG:4326", src.transform)
        source = src.read(1)
    window = Window(700, 300, 64, 96)
    expected = labels.table.training_ids(source[700:764, 300:396])
    np.testing.assert_array_equal(labels.read_on_grid(grid, window), expected)


def test_nearest_on_a_utm_grid_takes_the_map_pixel_under_each_pixel_centre(hrlulc_crop):
    """UTM 54N, 250 m pixels, a 64 x 64 patch near 139.2E 35.6N, against a direct lookup."""
    grid = RasterGrid(512, 512, "EPSG:32654", Affine(250.0, 0.0, 300000.0, 0.0, -250.0, 3990000.0))
    window = Window(100, 120, 64, 64)
    labels = LabelMap(hrlulc_crop, identity_remap("23.12"))
    got = labels.read_on_grid(grid, window, resampling="nearest")

    rows, cols = np.mgrid[0:64, 0:64]
    xs, ys = grid.window_transform(window) * (cols.ravel() + 0.5, rows.ravel() + 0.5)
    lon, lat = transform("EPSG:32654", "EPSG:4326", xs, ys)
    with rasterio.open(hrlulc_crop) as src:
        fcol, frow = ~src.transform * (np.asarray(lon), np.asarray(lat))
        source = src.read(1)
    expected = source[np.floor(frow).astype(int), np.floor(fcol).astype(int)]
    expected = np.where(expected == 0, IGNORE_INDEX, expected - 1).reshape(64, 64)
    # GDAL's warper approximates the transformation to a few hundredths of a map pixel, so
    # compare the centres that are clearly inside one map pixel (the vast majority).
    inside = (np.abs(fcol - np.round(fcol)) > 0.05) & (np.abs(frow - np.round(frow)) > 0.05)
    inside = inside.reshape(64, 64)
    assert inside.mean() > 0.75
    np.testing.assert_array_equal(got[inside], expected[inside])
    # Two pixels checked by hand: the patch's top-left and centre pixels.
    assert got[0, 0] == expected[0, 0] and got[32, 32] == expected[32, 32]
    assert len(np.unique(got)) > 4  # a varied area, not a trivial all-forest patch


def test_mode_votes_on_remapped_classes(tmp_path):
    """3 x 3 map pixels per patch pixel; remapping before the vote changes the winner.

    Block A: 2 DBF (6), 3 ENF (9), 4 cropland (4). Source mode = cropland, but after the
    forest merge forest has 5 votes -> Forest. Block B: 5 water, 4 no data -> Water.
    Block C: 6 solar (12, excluded here) and 3 paddy -> ignore (excluded wins the vote).
    """
    a = np.array([[6, 6, 9], [9, 9, 4], [4, 4, 4]])
    b = np.array([[1, 1, 1], [1, 1, 0], [0, 0, 0]])
    c = np.array([[12, 12, 12], [12, 12, 12], [3, 3, 3]])
    data = np.hstack([a, b, c]).astype(np.uint8)
    path = _write_labels(tmp_path / "lc.tif", data, Affine(0.001, 0, 139.0, 0, -0.001, 35.0))
    remap = ClassTable(
        name="mode-test",
        source_classes="hrlulc_v23.12",
        classes=[
            TrainingClass(name="Water", color=(0, 0, 100), values=[1]),
            TrainingClass(name="Cropland", color=(9, 9, 9), values=[4, 14]),
            TrainingClass(name="Forest", color=(0, 172, 86), values=[6, 7, 8, 9, 11]),
            TrainingClass(name="Other", color=(1, 1, 1), values=[2, 3, 5, 10, 13]),
        ],
        ignore=[0],
        exclude=[12],
    )
    grid = RasterGrid(1, 3, "EPSG:4326", Affine(0.003, 0, 139.0, 0, -0.003, 35.0))
    labels = LabelMap(path, remap)
    got = labels.read_on_grid(grid, Window(0, 0, 1, 3), resampling="mode")
    names = {**remap.names, IGNORE_INDEX: "ignore"}
    assert [names[int(v)] for v in got[0]] == ["Forest", "Water", "ignore"]


def test_pixels_outside_the_map_are_ignored_and_the_read_is_windowed(hrlulc_crop):
    labels = LabelMap(hrlulc_crop)
    # A 4326 grid whose left half lies west of the map (137.9E..138.0E).
    grid = RasterGrid(10, 96, "EPSG:4326", Affine(1 / 480, 0, 138 - 48 / 480, 0, -1 / 480, 36.0))
    got = labels.read_on_grid(grid, Window(0, 0, 10, 96))
    assert (got[:, :48] == IGNORE_INDEX).all()
    assert (got[:, 48:] != IGNORE_INDEX).any()
    # A 2 km UTM patch reads a handful of map pixels, not the map.
    utm = RasterGrid(512, 512, "EPSG:32654", Affine(10.0, 0, 320000.0, 0, -10.0, 3950000.0))
    src_window = labels._source_window(labels.tiles[0], utm, Window(0, 0, 200, 200))
    assert src_window.width < 20 and src_window.height < 20


def test_several_tiles_fill_one_patch(tmp_path):
    """Two 1-degree-like tiles side by side; a patch across the seam gets both."""
    west = _write_labels(
        tmp_path / "w.tif", np.full((4, 4), 1, np.uint8), Affine(0.25, 0, 139, 0, -0.25, 36)
    )
    east = _write_labels(
        tmp_path / "e.tif", np.full((4, 4), 2, np.uint8), Affine(0.25, 0, 140, 0, -0.25, 36)
    )
    grid = RasterGrid(2, 4, "EPSG:4326", Affine(0.25, 0, 139.5, 0, -0.25, 35.75))
    got = LabelMap([west, east]).read_on_grid(grid, Window(0, 0, 2, 4))
    assert got.tolist() == [[0, 0, 1, 1], [0, 0, 1, 1]]  # Water | Built-up (target ids)


def test_values_outside_the_class_table_fail_clearly(tmp_path):
    path = _write_labels(
        tmp_path / "v25.tif", np.full((4, 4), 15, np.uint8), Affine(0.1, 0, 139, 0, -0.1, 36)
    )
    grid = RasterGrid(4, 4, "EPSG:4326", Affine(0.1, 0, 139, 0, -0.1, 36))
    with pytest.raises(
        DataError, match=r"values 15 are not in class table 'hrlulc_v23.12_to_9'"
    ) as err:
        LabelMap(path).read_on_grid(grid, Window(0, 0, 4, 4))
    assert "v25.tif" in str(err.value)
    # ... and read fine as v25.04.
    got = LabelMap(path, "hrlulc_v25.04_to_9").read_on_grid(grid, Window(0, 0, 4, 4))
    assert (got == 8).all()


def test_non_label_rasters_are_refused(tmp_path):
    path = tmp_path / "float.tif"
    with rasterio.open(path, "w", driver="GTiff", width=2, height=2, count=1, dtype="float32",
                       crs="EPSG:4326", transform=Affine(1, 0, 0, 0, -1, 0)) as dst:  # fmt: skip
        dst.write(np.array([[[-12.5, -3.25], [0.0, -20.0]]], np.float32))  # dB, not classes
    with pytest.raises(DataError, match="label values -12.5, -3.25 are not whole numbers"):
        open_labels(path)
    path = tmp_path / "rgb.tif"
    with rasterio.open(path, "w", driver="GTiff", width=2, height=2, count=3, dtype="uint8",
                       crs="EPSG:4326", transform=Affine(1, 0, 0, 0, -1, 0)) as dst:  # fmt: skip
        dst.write(np.zeros((3, 2, 2), np.uint8))
    with pytest.raises(DataError, match="one band of integers, found 3 band.s. of uint8"):
        LabelMap(path)
    (tmp_path / "junk.tif").write_bytes(b"not a tiff")
    with pytest.raises(DataError, match="cannot open label raster"):
        LabelMap(tmp_path / "junk.tif")


# --- scene checks ---------------------------------------------------------------------------


def test_scene_checks_name_the_scene_and_the_map(hrlulc_crop):
    labels = LabelMap(hrlulc_crop)
    inside = RasterGrid(100, 100, "EPSG:32654", Affine(30.0, 0, 320000.0, 0, -30.0, 3950000.0))
    labels.check_scene(_on(inside), "scene.tif")  # no error
    assert labels.overlaps(inside)

    europe = RasterGrid(100, 100, "EPSG:32633", Affine(30.0, 0, 400000.0, 0, -30.0, 5300000.0))
    assert not labels.overlaps(europe)
    with pytest.raises(DataError, match="does not overlap") as err:
        labels.check_scene(_on(europe), "IMG-HH-far.tif")
    assert "IMG-HH-far.tif" in str(err.value) and hrlulc_crop.name in str(err.value)

    with pytest.raises(DataError, match="no map CRS"):
        labels.check_scene(_on(RasterGrid(100, 100, None)), "slant.tif")
    off_earth = RasterGrid(10, 10, "EPSG:32654", Affine(30.0, 0, 3e7, 0, -30.0, 9e7))
    with pytest.raises(DataError, match="not on Earth"):
        labels.check_scene(_on(off_earth), "bad.tif")


def test_label_map_survives_pickling_for_worker_processes(hrlulc_crop):
    labels = LabelMap(hrlulc_crop)
    grid = RasterGrid(100, 100, "EPSG:32654", Affine(30.0, 0, 320000.0, 0, -30.0, 3950000.0))
    before = labels.read_on_grid(grid, Window(0, 0, 32, 32))  # opens a handle
    clone = pickle.loads(pickle.dumps(labels))
    np.testing.assert_array_equal(clone.read_on_grid(grid, Window(0, 0, 32, 32)), before)
    labels.close()
