"""Polygons (``VectorLabels``): a class attribute rasterised on each patch grid, the
smallest polygon winning where they overlap."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from alos2fm.data.classes import (
    DEFAULT_CLASSES,
    NODATA_CODE,
    ClassTable,
    attribute_key,
    load_class_table,
)
from alos2fm.data.labels.base import LabelSource, Resampling, UnknownValues
from alos2fm.data.labels.rasters import _check_resampling, _scene_lonlat
from alos2fm.errors import DataError
from alos2fm.identity import reader_files
from alos2fm.products.base import RasterGrid, Window


class VectorLabels(LabelSource):
    """A polygon layer with a class attribute, rasterised per window (see module docstring)."""

    def __init__(
        self,
        path: str | Path,
        field: str,
        classes: ClassTable | str | Path = DEFAULT_CLASSES,
        *,
        layer: str | int | None = None,
        unknown: UnknownValues = "error",
    ):
        self.path = Path(path)
        self.field = field
        self.layer = layer
        self.table = load_class_table(classes)
        self.encoder = self.table.encoder(unknown)
        info = _vector_info(self.path, layer)
        if field not in info["fields"]:
            raise DataError(
                f"layer has no attribute {field!r}",
                self.path,
                hint=f"fields: {', '.join(info['fields']) or 'none'}",
            )
        if "polygon" not in str(info["geometry_type"]).lower():
            raise DataError(
                f"label layer holds {info['geometry_type']} geometries, not polygons",
                self.path,
                hint="draw the labelled areas as polygons",
            )
        if not info["crs"]:
            raise DataError("label layer has no CRS", self.path, hint="assign one in QGIS")
        self.crs = info["crs"]
        self.files = reader_files(self.path)  # a shapefile's sidecars, a GeoPackage's log
        self._checked = False

    def check_scene(self, product: Any, scene: str | Path) -> None:
        """The layer's values are all in the class table (read once) and the scene has a CRS
        and overlaps the layer."""
        from rasterio.warp import transform_bounds

        if not self._checked:  # attribute column only: cheap even for a national layer
            import pyogrio

            _, _, _, (values,) = pyogrio.raw.read(
                self.path, layer=self.layer, columns=[self.field], read_geometry=False
            )
            self.encoder.encode_values(list(values), self.path)
            self._checked = True
        grid = product.grid
        west, south, east, north = _scene_lonlat(grid, scene)
        layer_bounds = _vector_info(self.path, self.layer, bounds=True)["total_bounds"]
        lx0, ly0, lx1, ly1 = transform_bounds(self.crs, "EPSG:4326", *layer_bounds)
        if lx1 < west or lx0 > east or ly1 < south or ly0 > north:
            raise DataError(
                f"scene does not overlap the label layer {self.path} "
                f"(scene covers lon {west:.3f}..{east:.3f}, lat {south:.3f}..{north:.3f})",
                scene,
                hint="pass the polygons that cover the scene, or omit --labels",
            )

    def value_counts(self) -> dict[Any, int]:
        """{value: features} of the class attribute (null values left out)."""
        import pyogrio

        _, _, _, (values,) = pyogrio.raw.read(
            self.path, layer=self.layer, columns=[self.field], read_geometry=False
        )
        totals: dict[Any, int] = {}
        for value in values.tolist():
            if value is not None:
                key = attribute_key(value)
                totals[key] = totals.get(key, 0) + 1
        return totals

    def read_on_grid(
        self, grid: RasterGrid, window: Window, resampling: Resampling = "nearest"
    ) -> np.ndarray:
        """Polygons burnt by pixel centre (``resampling`` does not apply to polygons)."""
        import pyogrio
        import shapely
        from rasterio.crs import CRS
        from rasterio.features import rasterize
        from rasterio.warp import transform_bounds

        _check_resampling(resampling)
        if grid.crs is None:
            raise DataError("cannot place polygon labels on a grid without a CRS")
        bbox = transform_bounds(grid.crs, self.crs, *grid.window_bounds(window), densify_pts=21)
        _, _, wkb, (values,) = pyogrio.raw.read(
            self.path, layer=self.layer, columns=[self.field], bbox=bbox
        )
        codes = np.zeros((window.height, window.width), dtype=np.uint8)
        if wkb is None or len(wkb) == 0:
            return self.encoder.decode[codes]
        geometries = _to_crs(shapely.from_wkb(wkb), self.crs, CRS.from_user_input(grid.crs))
        feature_codes = self.encoder.encode_values(list(values), self.path)
        # Polygons of ignored or null value are burnt too (as NODATA_CODE): they mask the
        # larger polygons around them, as a smaller class polygon overrides them.
        keep = ~shapely.is_empty(geometries)
        # Largest first, so that smaller polygons are burnt over them (a stable sort keeps
        # the layer's order among equal areas: the later feature wins).
        order = np.argsort(-shapely.area(geometries[keep]), kind="stable")
        shapes = list(
            zip(geometries[keep][order], feature_codes[keep][order].tolist(), strict=True)
        )
        if shapes:
            codes = rasterize(
                shapes,
                out_shape=codes.shape,
                transform=grid.window_transform(window),
                fill=NODATA_CODE,
                dtype="uint8",
            )
        return self.encoder.decode[codes]


def _to_crs(geometries: np.ndarray, src_crs: Any, dst_crs: Any) -> np.ndarray:
    import shapely
    from rasterio.warp import transform

    def project(xy: np.ndarray) -> np.ndarray:
        if len(xy) == 0:
            return xy
        xs, ys = transform(src_crs, dst_crs, xy[:, 0], xy[:, 1])
        return np.column_stack([xs, ys])

    return shapely.transform(geometries, project)


def _vector_info(path: Path, layer: str | int | None = None, bounds: bool = False) -> dict:
    import pyogrio
    from pyogrio.errors import DataSourceError

    try:
        info = pyogrio.read_info(path, layer=layer, force_total_bounds=bounds)
    except (DataSourceError, OSError, ValueError) as err:
        raise DataError(f"cannot open polygon layer: {err}", path) from err
    return info | {"fields": [str(f) for f in info["fields"]]}


def _vector_fields(path: Path) -> list[str]:
    return _vector_info(path)["fields"]
