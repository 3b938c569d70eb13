"""RasterGrid bounds on rotated grids, and the readers and label reprojection that use them.

Georeferenced L1.5 products run along track, not map north: their affine has rotation
terms. Bounds taken from the diagonal terms alone miss part of such a footprint, and
labels are only read inside those bounds.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from affine import Affine

from alos2fm.data.labels import IGNORE_INDEX, LabelMap, identity_remap
from alos2fm.products import open_product
from alos2fm.products.base import RasterGrid, Window
from tests.products.rasters import UTM54N, dn_scene, write_tif

# A 10 m grid in UTM 54N turned 12° anticlockwise: columns run 12° north of east, lines
# 12° east of south. x = X0 + a·col + b·row, y = Y0 + d·col + e·row.
X0, Y0, PIXEL = 380_000.0, 3_950_000.0, 10.0
COS, SIN = math.cos(math.radians(12)), math.sin(math.radians(12))
ROTATED = Affine(PIXEL * COS, PIXEL * SIN, X0, PIXEL * SIN, -PIXEL * COS, Y0)
GRID = RasterGrid(300, 400, UTM54N, ROTATED)


def _x(col: float, row: float) -> float:
    return X0 + PIXEL * COS * col + PIXEL * SIN * row


def _y(col: float, row: float) -> float:
    return Y0 + PIXEL * SIN * col - PIXEL * COS * row


def test_window_bounds_of_a_rotated_grid_come_from_all_four_corners() -> None:
    # Window rows 100..300, columns 50..350. x grows with column and row, so the west
    # edge is the top-left corner and the east edge the bottom-right one; y grows with
    # column and falls with row: south is the bottom-left corner, north the top-right.
    bounds = GRID.window_bounds(Window(100, 50, 200, 300))
    expected = (_x(50, 100), _y(50, 300), _x(350, 300), _y(350, 100))
    assert bounds == pytest.approx(expected, abs=1e-6)
    # Bounds from the diagonal terms alone (x0 + a·width, y0 + e·height) would cut 624 m
    # off the north and 416 m off the east of this window.
    assert bounds[3] - _y(50, 100) == pytest.approx(300 * PIXEL * SIN, abs=1e-6)
    assert bounds[2] - _x(350, 100) == pytest.approx(200 * PIXEL * SIN, abs=1e-6)


def test_north_up_bounds_are_unchanged() -> None:
    grid = RasterGrid(10, 20, UTM54N, Affine(3.0, 0.0, X0, 0.0, -3.0, Y0))
    assert grid.window_bounds(Window(2, 4, 5, 6)) == (X0 + 12, Y0 - 21, X0 + 30, Y0 - 6)


def test_info_of_a_rotated_geotiff_reports_the_footprint_and_pixel_size(tmp_path: Path) -> None:
    path = tmp_path / "IMG-HH-ALOS2458503210-221119-UBSR1.5RUD.tif"
    write_tif(path, dn_scene(30, 40), transform=ROTATED)
    info = open_product(path).describe()
    assert info["bounds"] == pytest.approx((_x(0, 0), _y(0, 30), _x(40, 30), _y(40, 0)), abs=1e-5)
    assert info["pixel size"] == "10 x 10 m"


def _label_map(path: Path, crs: str) -> tuple[Path, Affine]:
    """SYNTHETIC HRLULC-like map, north-up in ``crs``, over the rotated grid and 300 m
    more: classes 1..14 in blocks of 4 x 4 map pixels, no 0 (no data) anywhere."""
    from rasterio.warp import transform_bounds

    # The grid's corners that lie furthest west, south, east and north (see above).
    west, south = _x(0, 0) - 300, _y(0, GRID.height) - 300
    east, north = _x(GRID.width, GRID.height) + 300, _y(GRID.width, 0) + 300
    step = 5.0  # m
    if crs == "EPSG:4326":
        west, south, east, north = transform_bounds(UTM54N, crs, west, south, east, north)
        step = 5e-5  # degrees, about 5 m
    width, height = math.ceil((east - west) / step), math.ceil((north - south) / step)
    rows, cols = np.mgrid[0:height, 0:width]
    classes = (1 + ((rows // 4) * 5 + cols // 4) % 14).astype(np.uint8)
    transform = Affine(step, 0.0, west, 0.0, -step, north)
    return write_tif(path, classes, crs=crs, transform=transform), transform


@pytest.mark.parametrize("map_crs", [UTM54N, "EPSG:4326"])
def test_labels_on_a_rotated_grid_lose_no_pixel(tmp_path: Path, map_crs: str) -> None:
    from rasterio.warp import transform

    path, map_transform = _label_map(tmp_path / "landcover.tif", map_crs)
    labels = LabelMap([path], identity_remap("23.12"))
    window = Window(40, 60, 128, 128)  # a patch away from the grid's origin
    got = labels.read_on_grid(GRID, window)
    assert got.dtype == np.uint8 and got.shape == (128, 128)
    assert not (got == IGNORE_INDEX).any()  # the map covers every pixel: none is lost

    # Each pixel takes the class of the map pixel under its centre (identity remap: id =
    # class - 1). Checked where the centre is clear of a class-block edge, since GDAL's
    # warper approximates the lon/lat transformation to a fraction of a pixel.
    rows, cols = np.mgrid[0 : window.height : 7, 0 : window.width : 7]
    xs, ys = GRID.window_transform(window) @ (cols.ravel() + 0.5, rows.ravel() + 0.5)
    if map_crs != UTM54N:
        xs, ys = transform(UTM54N, map_crs, xs, ys)
    map_cols, map_rows = ~map_transform @ (np.asarray(xs), np.asarray(ys))
    clear = ((map_cols / 4) % 1 > 0.05) & ((map_cols / 4) % 1 < 0.95)
    clear &= ((map_rows / 4) % 1 > 0.05) & ((map_rows / 4) % 1 < 0.95)
    expected = (((map_rows // 4) * 5 + map_cols // 4) % 14).astype(np.uint8)  # class - 1
    assert clear.sum() > 200
    np.testing.assert_array_equal(got[rows.ravel(), cols.ravel()][clear], expected[clear])
