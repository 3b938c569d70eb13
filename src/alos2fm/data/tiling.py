"""Cutting a scene into patches: the window grid, patch ids and each patch's georeference.

Patches lie on a regular grid anchored at the scene's top-left pixel: window k along a
row starts at column k * stride. Only full patches are produced, so the last
``(width - patch_size) % stride`` columns and ``(height - patch_size) % stride`` rows of
a scene (fewer than one stride) are never covered; a scene smaller than one patch gives
no windows. The scene's no-data border usually lies there anyway, and a full-size patch
keeps every sample the same shape without padding.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from alos2fm.errors import DataError
from alos2fm.products.base import RasterGrid, Window

LONLAT = "EPSG:4326"
_EDGE_POINTS = 21  # points per patch edge when converting bounds to lon/lat (as densify_pts)


def grid_windows(
    grid: RasterGrid, patch_size: int = 256, stride: int = 256, cover_edges: bool = False
) -> list[Window]:
    """Windows of ``patch_size`` x ``patch_size`` pixels every ``stride`` pixels, row-major.

    ``stride < patch_size`` gives overlapping patches; ``stride > patch_size`` gaps. With
    ``cover_edges`` a last row and column moved back to end on the scene's edge cover the
    remainder (as full-scene prediction tiles a scene).
    """
    if patch_size <= 0 or stride <= 0:
        raise DataError(
            f"patch size and stride must be positive, got {patch_size} and {stride}",
            hint="e.g. --patch-size 256 --stride 256",
        )
    if grid.height < patch_size or grid.width < patch_size:
        return []
    if cover_edges:
        rows = tile_origins(grid.height, patch_size, patch_size - stride)
        cols = tile_origins(grid.width, patch_size, patch_size - stride)
    else:
        rows = range(0, grid.height - patch_size + 1, stride)
        cols = range(0, grid.width - patch_size + 1, stride)
    return [Window(r, c, patch_size, patch_size) for r in rows for c in cols]


def tile_origins(length: int, tile: int, overlap: int) -> list[int]:
    """Start of each tile along one axis: every ``tile - overlap`` pixels, the last one
    moved back to end on the edge; ``[0]`` when the axis is shorter than one tile."""
    if length <= tile:
        return [0]
    step = tile - overlap
    origins = list(range(0, length - tile, step))
    origins.append(length - tile)
    return origins


def patch_id(scene: str, window: Window) -> str:
    """``<scene>_<row>_<col>``: the patch's pixel offset in its scene, e.g. ``S_12032_7680``."""
    return f"{scene}_{window.row}_{window.col}"


def patch_georef(grid: RasterGrid, window: Window) -> dict[str, Any]:
    """Georeference of one patch; see ``patch_georefs`` for the keys."""
    return patch_georefs(grid, [window])[0]


def patch_georefs(grid: RasterGrid, windows: Sequence[Window]) -> list[dict[str, Any]]:
    """Georeference of each window, with all coordinate conversions done in one call.

    Keys (the columns of the patch index):
    - ``crs``: the scene CRS string (None for a pixel grid);
    - ``transform``: the patch's affine (a, b, c, d, e, f), in scene CRS units;
    - ``minx``, ``miny``, ``maxx``, ``maxy``: patch bounds in the scene CRS;
    - ``lon_min``, ``lat_min``, ``lon_max``, ``lat_max``: the lon/lat box holding the
      patch (edges densified, as ``rasterio.warp.transform_bounds`` does), degrees;
    - ``lon_center``, ``lat_center``: the patch centre in degrees (EPSG:4326).
    Lon/lat are NaN for grids without a CRS.
    """
    if not windows:
        return []
    transforms, bounds = _transforms_and_bounds(grid, windows)
    return [
        {
            "crs": grid.crs,
            "transform": transform,
            "minx": minx,
            "miny": miny,
            "maxx": maxx,
            "maxy": maxy,
            **lonlat,
        }
        for transform, (minx, miny, maxx, maxy), lonlat in zip(
            transforms, bounds, _lonlat(grid, windows), strict=True
        )
    ]


def _transforms_and_bounds(
    grid: RasterGrid, windows: Sequence[Window]
) -> tuple[list[tuple[float, ...]], list[tuple[float, ...]]]:
    """Each window's transform (a, b, c, d, e, f) and (minx, miny, maxx, maxy) over its
    four transformed corners.

    All windows at once, with the arithmetic of ``RasterGrid.window_transform`` and
    ``window_bounds`` (affine's formulas, operation for operation) and the first of equal
    values kept as Python's ``min`` and ``max`` keep it: the same floats as one window at
    a time, without building Affine objects (slow: most of the cost for 6000 windows).
    """
    win = np.array([(w.col, w.row, w.width, w.height) for w in windows], dtype=np.float64)
    cols, rows, widths, heights = win.T
    sa, sb, sc, sd, se, sf = grid.transform[:6]
    c = sa * cols + sb * rows + sc  # the top-left corner of each window
    f = sd * cols + se * rows + sf
    a, b, _, d, e, _ = grid.window_transform(windows[0])[:6]  # the same for every window
    zeros = np.zeros_like(widths)
    minx = maxx = zeros * a + zeros * b + c  # the corner (0, 0)
    miny = maxy = zeros * d + zeros * e + f
    for vx, vy in ((widths, zeros), (widths, heights), (zeros, heights)):
        x = vx * a + vy * b + c
        y = vx * d + vy * e + f
        minx, maxx = np.where(x < minx, x, minx), np.where(x > maxx, x, maxx)
        miny, maxy = np.where(y < miny, y, miny), np.where(y > maxy, y, maxy)
    transforms = [(a, b, c_, d, e, f_) for c_, f_ in zip(c.tolist(), f.tolist(), strict=True)]
    bounds = zip(minx.tolist(), miny.tolist(), maxx.tolist(), maxy.tolist(), strict=True)
    return transforms, list(bounds)


def _lonlat(grid: RasterGrid, windows: Sequence[Window]) -> list[dict[str, float]]:
    """Lon/lat boxes and centres of the windows: one ``rasterio.warp.transform`` call."""
    keys = ("lon_min", "lat_min", "lon_max", "lat_max", "lon_center", "lat_center")
    if grid.crs is None:
        return [dict.fromkeys(keys, float("nan")) for _ in windows]
    from rasterio.warp import transform

    # Per window: points along the four edges of its pixel box, then its centre.
    steps = np.linspace(0.0, 1.0, _EDGE_POINTS)
    ring_x = np.concatenate([steps, np.ones_like(steps), steps, np.zeros_like(steps), [0.5]])
    ring_y = np.concatenate([np.zeros_like(steps), steps, np.ones_like(steps), steps, [0.5]])
    win = np.array([(w.col, w.row, w.width, w.height) for w in windows], dtype=np.float64)
    cols = win[:, :1] + ring_x[None, :] * win[:, 2:3]
    rows = win[:, 1:2] + ring_y[None, :] * win[:, 3:4]
    xs, ys = grid.transform @ (cols.ravel(), rows.ravel())
    lon, lat = transform(grid.crs, LONLAT, xs, ys)
    lon = np.asarray(lon).reshape(len(windows), -1)
    lat = np.asarray(lat).reshape(len(windows), -1)
    ring_lon, ring_lat = lon[:, :-1], lat[:, :-1]
    table = np.column_stack(
        [
            ring_lon.min(axis=1),
            ring_lat.min(axis=1),
            ring_lon.max(axis=1),
            ring_lat.max(axis=1),
            lon[:, -1],
            lat[:, -1],
        ]
    )
    return [dict(zip(keys, map(float, row), strict=True)) for row in table]


def valid_fraction(db: np.ndarray) -> float:
    """Share of pixels with data in a dB patch, (H, W) or (bands, H, W) with NaN = no data.

    A pixel counts as valid only if every band is finite, as the dataset's ``valid`` mask.
    """
    finite = np.isfinite(db)
    if finite.ndim == 3:
        finite = finite.all(axis=0)
    return float(finite.mean()) if finite.size else 0.0
