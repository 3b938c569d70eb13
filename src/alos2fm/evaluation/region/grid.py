"""The region's common grid: one CRS, one pixel size, the union of the scenes' footprints.

The default CRS is the Lambert azimuthal equal-area plane that the dataset split uses
(centred on the scenes, whole degrees), so that scenes of several UTM zones share one
frame and every pixel has the same area (what area estimates need); the default pixel
is the finest scene pixel, measured in that plane.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from alos2fm.errors import DataError
from alos2fm.products.base import RasterGrid, Window


@dataclass(frozen=True)
class RegionGrid:
    """A north-up grid: ``crs`` (WKT or PROJ string), pixel ``resolution`` in CRS units,
    upper-left corner ``(left, top)``, ``width`` x ``height`` pixels."""

    crs: str
    resolution: float
    left: float
    top: float
    width: int
    height: int

    @property
    def transform(self) -> Any:
        from affine import Affine

        return Affine(self.resolution, 0.0, self.left, 0.0, -self.resolution, self.top)

    def window_bounds(self, window: Window) -> tuple[float, float, float, float]:
        """(left, bottom, right, top) of ``window`` in the grid's CRS."""
        left = self.left + window.col * self.resolution
        top = self.top - window.row * self.resolution
        return (
            left,
            top - window.height * self.resolution,
            left + window.width * self.resolution,
            top,
        )

    def blocks(self, side: int) -> list[Window]:
        """The grid in windows of at most ``side`` pixels, row by row."""
        return [
            Window(row, col, min(side, self.height - row), min(side, self.width - col))
            for row in range(0, self.height, side)
            for col in range(0, self.width, side)
        ]


def scene_bounds(grid: RasterGrid, crs: str) -> tuple[float, float, float, float]:
    """The scene's footprint in ``crs``: its edges densified, so curved edges count."""
    from rasterio.warp import transform_bounds

    left, bottom, right, top = grid.window_bounds(Window(0, 0, grid.height, grid.width))
    return transform_bounds(grid.crs, crs, left, bottom, right, top, densify_pts=21)


def equal_area_crs(grids: list[RasterGrid]) -> str:
    """The equal-area plane of the dataset split, centred on these scenes."""
    from rasterio.warp import transform

    from alos2fm.geodesy import equal_area_plane

    lon, lat = [], []
    for grid in grids:
        centre = grid.transform * (grid.width / 2, grid.height / 2)
        x, y = transform(grid.crs, "EPSG:4326", [centre[0]], [centre[1]])
        lon += x
        lat += y
    return equal_area_plane(np.asarray(lon), np.asarray(lat))


def finest_pixel(grids: list[RasterGrid], crs: str) -> float:
    """The smallest scene pixel side, measured in ``crs`` at each scene's centre."""
    from rasterio.warp import transform

    sides = []
    for grid in grids:
        cx, cy = grid.width / 2, grid.height / 2
        corners = [grid.transform * p for p in ((cx, cy), (cx + 1, cy), (cx, cy + 1))]
        xs, ys = transform(grid.crs, crs, [c[0] for c in corners], [c[1] for c in corners])
        sides += [
            math.hypot(xs[1] - xs[0], ys[1] - ys[0]),
            math.hypot(xs[2] - xs[0], ys[2] - ys[0]),
        ]
    return min(sides)


def region_grid(
    grids: list[RasterGrid], crs: str | None = None, resolution: float | None = None
) -> RegionGrid:
    """The common grid of the scenes: ``crs`` (default: the equal-area plane) at
    ``resolution`` (default: the finest scene pixel), aligned to whole pixels from the
    CRS origin so that runs over overlapping regions share pixel edges."""
    if any(grid.crs is None for grid in grids):
        raise DataError(
            "a product without a CRS cannot be placed on a map",
            hint="map georeferenced products (predict maps a pixel-grid product on its own)",
        )
    crs = crs or equal_area_crs(grids)
    resolution = resolution or finest_pixel(grids, crs)
    if not resolution > 0:
        raise DataError(f"--resolution {resolution} must be positive")
    boxes = np.array([scene_bounds(grid, crs) for grid in grids])
    left = math.floor(boxes[:, 0].min() / resolution) * resolution
    bottom = math.floor(boxes[:, 1].min() / resolution) * resolution
    right = math.ceil(boxes[:, 2].max() / resolution) * resolution
    top = math.ceil(boxes[:, 3].max() / resolution) * resolution
    width, height = round((right - left) / resolution), round((top - bottom) / resolution)
    if width * height > 2**40:
        raise DataError(
            f"the region is {width} x {height} px at {resolution:g}: too large",
            hint="check --crs and --resolution (CRS units, e.g. metres)",
        )
    return RegionGrid(str(crs), float(resolution), left, top, width, height)
