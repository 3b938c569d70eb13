"""Patch grid and patch georeference."""

from __future__ import annotations

import math

import numpy as np
import pytest
from affine import Affine
from rasterio.warp import transform, transform_bounds

from alos2fm.data.tiling import grid_windows, patch_georef, patch_georefs, patch_id, valid_fraction
from alos2fm.errors import DataError
from alos2fm.products.base import RasterGrid, Window

# A 3 m UTM 54N scene whose top-left corner is (E 380000, N 3950000).
SCENE = RasterGrid(1000, 700, "EPSG:32654", Affine(3.0, 0.0, 380000.0, 0.0, -3.0, 3950000.0))


def test_full_patches_only_and_the_edge_remainder_is_left_out():
    windows = grid_windows(SCENE, patch_size=256, stride=256)
    # rows 0, 256, 512 (768 + 256 > 1000); cols 0, 256 (512 + 256 > 700)
    assert [(w.row, w.col) for w in windows] == [
        (0, 0), (0, 256), (256, 0), (256, 256), (512, 0), (512, 256),
    ]  # fmt: skip
    assert all(w.height == w.width == 256 for w in windows)


def test_overlapping_stride_and_small_scenes():
    windows = grid_windows(SCENE, patch_size=256, stride=192)
    assert sorted({w.row for w in windows}) == [0, 192, 384, 576]  # 576 + 256 = 832 <= 1000
    assert sorted({w.col for w in windows}) == [0, 192, 384]  # 384 + 256 = 640 <= 700
    assert grid_windows(RasterGrid(100, 100, None), patch_size=256) == []
    with pytest.raises(DataError, match="must be positive"):
        grid_windows(SCENE, patch_size=256, stride=0)


def test_patch_id_carries_the_pixel_offset():
    assert patch_id("ALOS2458503210-221119", Window(12032, 7680, 256, 256)) == (
        "ALOS2458503210-221119_12032_7680"
    )


def test_patch_georef_utm_bounds_and_transform_by_hand():
    geo = patch_georef(SCENE, Window(256, 512, 256, 256))
    # x0 = 380000 + 512 * 3 = 381536; y0 = 3950000 - 256 * 3 = 3949232; 256 px = 768 m
    assert geo["crs"] == "EPSG:32654"
    assert geo["transform"] == (3.0, 0.0, 381536.0, 0.0, -3.0, 3949232.0)
    assert (geo["minx"], geo["miny"], geo["maxx"], geo["maxy"]) == (
        381536.0, 3948464.0, 382304.0, 3949232.0,
    )  # fmt: skip


def test_lonlat_of_a_known_utm_point():
    """The central meridian of zone 54 is 141E: E 500000 on it, N 3984000 is about 36N."""
    grid = RasterGrid(512, 512, "EPSG:32654", Affine(2.0, 0.0, 499488.0, 0.0, -2.0, 3985000.0))
    geo = patch_georef(grid, Window(244, 0, 256, 512))  # centre column 256 -> E 500000
    # centre: E 499488 + 256 * 2 = 500000, N 3985000 - (244 + 128) * 2 = 3984256
    assert geo["lon_center"] == pytest.approx(141.0, abs=1e-12)  # on the central meridian
    lon, lat = transform("EPSG:32654", "EPSG:4326", [500000.0], [3984256.0])
    assert geo["lat_center"] == pytest.approx(lat[0], abs=1e-12)
    # 1 degree of latitude ~ 110.95 km at 36N; UTM northing has scale 0.9996 on the meridian.
    assert geo["lat_center"] == pytest.approx(36.0, abs=0.01)


def test_lonlat_bounds_agree_with_rasterio_transform_bounds():
    windows = grid_windows(SCENE, 256, 256)
    for window, geo in zip(windows, patch_georefs(SCENE, windows), strict=True):
        expected = transform_bounds("EPSG:32654", "EPSG:4326", *SCENE.window_bounds(window))
        got = (geo["lon_min"], geo["lat_min"], geo["lon_max"], geo["lat_max"])
        np.testing.assert_allclose(got, expected, rtol=0, atol=1e-9)
        assert geo["lon_min"] < geo["lon_center"] < geo["lon_max"]
        assert geo["lat_min"] < geo["lat_center"] < geo["lat_max"]


def test_pixel_grids_without_crs_get_pixel_bounds_and_nan_lonlat():
    geo = patch_georef(RasterGrid(512, 512, None), Window(256, 0, 256, 256))
    assert (geo["minx"], geo["miny"], geo["maxx"], geo["maxy"]) == (0.0, 256.0, 256.0, 512.0)
    assert geo["crs"] is None and np.isnan(geo["lon_center"])


def test_valid_fraction_needs_every_band():
    db = np.zeros((2, 4, 4), np.float32)
    db[0, 0, :] = np.nan  # 4 pixels missing in band 0
    db[1, :, 0] = np.nan  # 4 pixels missing in band 1, one shared -> 7 invalid
    assert valid_fraction(db) == pytest.approx(9 / 16)
    assert valid_fraction(db[1]) == pytest.approx(12 / 16)


def test_rotated_patch_bounds_hold_its_whole_footprint():
    """A georeferenced (along-track) grid, turned 12°: bounds from all four corners."""
    cos, sin = math.cos(math.radians(12)), math.sin(math.radians(12))
    grid = RasterGrid(
        600, 600, "EPSG:32654", Affine(3 * cos, 3 * sin, 380000.0, 3 * sin, -3 * cos, 3950000.0)
    )
    window = Window(256, 128, 256, 256)
    geo = patch_georef(grid, window)

    def corner(col, row):  # x = c + a·col + b·row, y = f + d·col + e·row
        return 380000.0 + 3 * cos * col + 3 * sin * row, 3950000.0 + 3 * sin * col - 3 * cos * row

    # West: top-left corner; east: bottom-right; south: bottom-left; north: top-right.
    (west, _), (east, _) = corner(128, 256), corner(384, 512)
    (_, south), (_, north) = corner(128, 512), corner(384, 256)
    assert (geo["minx"], geo["miny"], geo["maxx"], geo["maxy"]) == pytest.approx(
        (west, south, east, north), abs=1e-6
    )
    # Lon/lat box of the rotated footprint itself: 1001 points along each edge.
    steps = np.linspace(0, 256, 1001)
    cols = np.concatenate(
        [128 + steps, np.full_like(steps, 384), 128 + steps, np.full_like(steps, 128)]
    )
    rows = np.concatenate(
        [np.full_like(steps, 256), 256 + steps, np.full_like(steps, 512), 256 + steps]
    )
    lon, lat = transform("EPSG:32654", "EPSG:4326", *corner(cols, rows))
    expected = (min(lon), min(lat), max(lon), max(lat))
    got = (geo["lon_min"], geo["lat_min"], geo["lon_max"], geo["lat_max"])
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-9)
    centre_lon, centre_lat = transform("EPSG:32654", "EPSG:4326", *[[v] for v in corner(256, 384)])
    assert (geo["lon_center"], geo["lat_center"]) == pytest.approx(
        (centre_lon[0], centre_lat[0]), abs=1e-12
    )


def test_patch_georefs_equal_each_window_s_affine_arithmetic():
    """The windows' transforms and bounds, computed all at once, are the floats of
    ``window_transform`` and ``window_bounds`` one window at a time (rotated grid too)."""
    rotated = RasterGrid(900, 800, None, Affine.rotation(12.3) * Affine(2.5, 0, 3e5, 0, -2.5, 4e6))
    for grid in (SCENE, rotated):
        windows = grid_windows(grid, 256, 200) + [Window(7, 13, 64, 100)]
        for window, geo in zip(windows, patch_georefs(grid, windows), strict=True):
            assert geo["transform"] == tuple(grid.window_transform(window)[:6])
            bounds = (geo["minx"], geo["miny"], geo["maxx"], geo["maxy"])
            assert bounds == grid.window_bounds(window)
