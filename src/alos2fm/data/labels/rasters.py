"""Class rasters with a CRS (``LabelMap``): tiles of any integer or whole-valued type,
reprojected onto each patch grid."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from alos2fm.data.classes import (
    DEFAULT_CLASSES,
    NODATA_CODE,
    ClassTable,
    load_class_table,
)
from alos2fm.data.labels.base import FILE_NODATA, LabelSource, Nodata, Resampling, UnknownValues
from alos2fm.data.labels.fit import _counts, _sample_raster, effective_nodata
from alos2fm.errors import DataError
from alos2fm.products.base import RasterGrid, Window


@dataclass(frozen=True)
class _Tile:
    """What we need to know about one label raster, read once at construction."""

    path: Path
    crs: Any  # rasterio CRS
    transform: Any  # affine.Affine
    width: int
    height: int
    nodata: float | None


_INTEGER_TYPES = ("uint8", "int8", "uint16", "int16", "uint32", "int32", "int64", "uint64")
# Class rasters saved as floats (QGIS raster calculator, numpy) are read when their values
# are whole numbers (checked as they are read); NaN is no data.
_CLASS_TYPES = (*_INTEGER_TYPES, "float32", "float64")


class LabelMap(LabelSource):
    """One or several georeferenced integer class rasters (e.g. HRLULC 1° tiles)."""

    # Source pixels read beyond the patch footprint on each side: covers the pixel that
    # contains a border target centre (nearest) and the full footprint (mode).
    MARGIN_PX = 2

    def __init__(
        self,
        paths: str | Path | Sequence[str | Path],
        classes: ClassTable | str | Path = DEFAULT_CLASSES,
        *,
        unknown: UnknownValues = "error",
        nodata: Nodata = FILE_NODATA,
    ):
        self.table = load_class_table(classes)
        self.encoder = self.table.encoder(unknown)
        paths = [paths] if isinstance(paths, (str, Path)) else list(paths)
        if not paths:
            raise DataError("no land-cover map given")
        self.tiles = [self._describe(Path(p), self.table, nodata) for p in paths]
        self.files = [t.path for t in self.tiles]
        self._handles: dict[Path, Any] = {}

    @staticmethod
    def _describe(path: Path, table: ClassTable, nodata: Nodata = FILE_NODATA) -> _Tile:
        import rasterio
        from rasterio.errors import RasterioIOError

        try:
            with rasterio.open(path) as src:
                if src.count != 1 or src.dtypes[0] not in _CLASS_TYPES:
                    raise DataError(
                        f"a class raster must be one band of integers, found {src.count} "
                        f"band(s) of {src.dtypes[0]}",
                        path,
                        hint="pass a single-band integer class map",
                    )
                if src.crs is None:
                    raise DataError(
                        "label raster has no CRS",
                        path,
                        hint="if it is on the product's own pixel grid, pass --labels-grid pixel",
                    )
                value = effective_nodata(src.nodata, nodata, table, path)
                return _Tile(path, src.crs, src.transform, src.width, src.height, value)
        except RasterioIOError as err:
            raise DataError(f"cannot open label raster: {err}", path) from err

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_handles"] = {}
        return state

    def close(self) -> None:
        for handle in self._handles.values():
            handle.close()
        self._handles.clear()

    def _open(self, tile: _Tile) -> Any:
        import rasterio

        if tile.path not in self._handles:
            self._handles[tile.path] = rasterio.open(tile.path)
        return self._handles[tile.path]

    def check_scene(self, product: Any, scene: str | Path) -> None:
        """Checks that the scene has a map CRS, that its bounds fall on Earth once converted
        to lon/lat (a wrong UTM zone or transform shows here), and that a map overlaps it."""
        grid = product.grid
        maps = ", ".join(str(p) for p in self.files)
        west, south, east, north = _scene_lonlat(grid, scene)
        if not self.overlaps(grid):
            raise DataError(
                f"scene does not overlap the label map(s) {maps} "
                f"(scene covers lon {west:.3f}..{east:.3f}, lat {south:.3f}..{north:.3f})",
                scene,
                hint="pass the label tiles that cover the scene, or omit --labels",
            )

    def value_counts(self) -> tuple[dict[Any, int], int]:
        """({value: pixels}, sample step) over all tiles, nodata left out; read decimated
        (at most ``_SAMPLE_SIDE`` pixels a side per tile), so a national map costs little."""
        totals: dict[Any, int] = {}
        step = 1
        for tile in self.tiles:
            values, tile_step = _sample_raster(tile.path, referenced=True)
            step = max(step, tile_step)
            for value, count in _counts(values, tile.nodata, tile_step * tile_step).items():
                totals[value] = totals.get(value, 0) + count
        return totals, step

    def overlaps(self, grid: RasterGrid, window: Window | None = None) -> bool:
        """Whether any map covers part of ``window`` (default: the whole grid)."""
        window = window or Window(0, 0, grid.height, grid.width)
        return any(self._source_window(t, grid, window, margin=0) for t in self.tiles)

    def read_on_grid(
        self, grid: RasterGrid, window: Window, resampling: Resampling = "nearest"
    ) -> np.ndarray:
        """Labels for one window. Values are encoded before resampling, so ``mode`` votes on
        training classes. GDAL's warper approximates the transformation: positions are exact
        to a few hundredths of a map pixel over a 64 km patch, far less over a 768 m one."""
        from rasterio.crs import CRS
        from rasterio.enums import Resampling as GdalResampling
        from rasterio.warp import reproject

        _check_resampling(resampling)
        if grid.crs is None:
            raise DataError("cannot place georeferenced labels on a grid without a CRS")
        codes = np.zeros((window.height, window.width), dtype=np.uint8)
        for tile in self.tiles:
            src_window = self._source_window(tile, grid, window)
            if src_window is None:
                continue
            src = self._open(tile)
            source = self.encoder.encode(
                src.read(1, window=src_window), nodata=tile.nodata, source=tile.path
            )
            tile_codes = np.zeros_like(codes)
            reproject(
                source,
                tile_codes,
                src_transform=src.window_transform(src_window),
                src_crs=tile.crs,
                src_nodata=NODATA_CODE,
                dst_transform=grid.window_transform(window),
                dst_crs=CRS.from_user_input(grid.crs),
                dst_nodata=NODATA_CODE,
                resampling=getattr(GdalResampling, resampling),
            )
            # Tiles do not overlap in HRLULC; where others might, the first one listed wins.
            empty = codes == NODATA_CODE
            codes[empty] = tile_codes[empty]
        return self.encoder.decode[codes]

    def _source_window(
        self, tile: _Tile, grid: RasterGrid, window: Window, margin: int = MARGIN_PX
    ) -> Any:
        """The rasterio window of ``tile`` under ``window`` of ``grid`` (+ margin), or None."""
        from rasterio.warp import transform_bounds
        from rasterio.windows import Window as RioWindow

        minx, miny, maxx, maxy = transform_bounds(
            grid.crs, tile.crs, *grid.window_bounds(window), densify_pts=21
        )
        inverse = ~tile.transform
        corners = [inverse @ (x, y) for x in (minx, maxx) for y in (miny, maxy)]
        cols, rows = zip(*corners, strict=True)
        col0 = max(int(np.floor(min(cols))) - margin, 0)
        row0 = max(int(np.floor(min(rows))) - margin, 0)
        col1 = min(int(np.ceil(max(cols))) + margin, tile.width)
        row1 = min(int(np.ceil(max(rows))) + margin, tile.height)
        if col1 <= col0 or row1 <= row0:
            return None
        return RioWindow(col0, row0, col1 - col0, row1 - row0)


def _check_resampling(resampling: str) -> None:
    if resampling not in ("nearest", "mode"):
        raise DataError(f"unknown label resampling {resampling!r}", hint="nearest or mode")


def _scene_lonlat(grid: RasterGrid, scene: str | Path) -> tuple[float, float, float, float]:
    """The scene's lon/lat bounds; ``DataError`` if it has no CRS or lies off the Earth."""
    from rasterio.warp import transform_bounds

    if grid.crs is None:
        raise DataError(
            "scene has no map CRS (slant range or pixel grid), so georeferenced labels "
            "cannot be placed on it",
            scene,
            hint="use a geocoded product (L1.5 G / L2.1), labels on the product's pixel "
            "grid (--labels-grid pixel), or omit --labels",
        )
    west, south, east, north = transform_bounds(
        grid.crs, "EPSG:4326", *grid.window_bounds(Window(0, 0, grid.height, grid.width))
    )
    on_earth = -180 <= west <= east <= 180 and -90 <= south <= north <= 90
    if not (np.isfinite([west, south, east, north]).all() and on_earth):
        raise DataError(
            f"scene CRS and transform give lon/lat bounds "
            f"({west:.3f}, {south:.3f}, {east:.3f}, {north:.3f}) that are not on Earth",
            scene,
            hint="check the product's CRS (e.g. its UTM zone) and geotransform",
        )
    return west, south, east, north
