"""Label sources read onto a patch's grid: class rasters, pixel-grid label images, polygons.

Every source gives ``read_on_grid(grid, window) -> uint8 (h, w)`` with training class ids
0..n-1 and ``IGNORE_INDEX`` (255) for no data, excluded classes and pixels outside the
labels; a class table (``alos2fm.data.classes``) turns source values into class ids.
Only the part of a source under one window is read, so memory never depends on the
size of the map or the layer.

- ``LabelMap``: integer class rasters with a CRS (JAXA HRLULC, ESA WorldCover, CORINE,
  a user's own), any integer type, nodata from the file's metadata; reprojected onto the
  patch grid (``nearest``: the map pixel under each patch pixel's centre; ``mode``: the
  most common class in its footprint). Several rasters (tiles) may be given.
- ``PixelLabels``: a label image on the product's own pixel grid, without a CRS
  (PolSARpro / ENVI ground truth, PNG, ``.npy``); it must have the product's size.
- ``VectorLabels``: polygons (GeoPackage, Shapefile, GeoJSON, FlatGeobuf) with a class
  attribute, reprojected from the layer's CRS and rasterised on the patch grid. A pixel
  takes the class of the polygon holding its centre; where polygons overlap, **the
  smallest polygon wins** (a pond drawn inside a field keeps its class), and among equal
  areas the later feature of the layer.

``open_labels`` picks the source from the files and options and checks that it fits its
class table (``check_fit``: a file's nodata value that is a class is refused, as is a source
whose pixels mostly become undeclared no data, or one read through the default HRLULC
table that does not look like HRLULC); ``describe_labels`` is what ``alos2fm info`` prints
for a label file, with those problems shown instead of raised. Polygons of an ignored or
null value mask their area (the smallest polygon wins, whatever its value). Sources are
safe to pickle (no open handles travel to worker processes).

Vector layers are read with pyogrio (GDAL's vectorised OGR reader, maintained with
GeoPandas): one call per window with a bounding-box filter returns WKB geometries and the
class column as arrays, so neither a dataframe library nor the whole layer is needed;
shapely 2 handles the geometries and rasterio.features burns them.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from alos2fm.data.classes import (
    DEFAULT_CLASSES,
    IGNORE_INDEX,
    ClassTable,
    hrlulc_classes,
    identity_remap,
)
from alos2fm.data.labels.base import (
    FILE_NODATA,
    IMAGE_SUFFIXES,
    VECTOR_SUFFIXES,
    LabelsGrid,
    LabelSource,
    Nodata,
    UnknownValues,
)
from alos2fm.data.labels.describe import describe_labels, is_label_source
from alos2fm.data.labels.fit import check_fit
from alos2fm.data.labels.images import PixelLabels
from alos2fm.data.labels.rasters import LabelMap
from alos2fm.data.labels.vectors import VectorLabels, _vector_fields
from alos2fm.errors import DataError

__all__ = [
    "FILE_NODATA",
    "LabelSource",
    "check_fit",
    "IGNORE_INDEX",
    "LabelMap",
    "LabelSource",
    "PixelLabels",
    "VectorLabels",
    "describe_labels",
    "hrlulc_classes",
    "identity_remap",
    "is_label_source",
    "open_labels",
]


def open_labels(
    paths: str | Path | Sequence[str | Path],
    classes: ClassTable | str | Path = DEFAULT_CLASSES,
    *,
    grid: LabelsGrid = "map",
    field: str | None = None,
    unknown: UnknownValues = "error",
    nodata: Nodata = FILE_NODATA,
    table_given: bool | None = None,
) -> LabelSource:
    """The label source for ``paths``: polygons, a pixel-grid image or class rasters.

    ``grid="pixel"`` says the files are on the product's own pixel grid (one per product,
    in product order); ``field`` is the class attribute of a vector layer.

    ``nodata`` says what no data is in rasters and images: ``"file"`` (default) the
    file's own nodata tag, ``None`` none (the tag is wrong: its value is read by the class
    table), a number that value instead of the tag. A nodata value that the class table
    maps to a class is refused (the class would silently vanish).

    ``table_given`` says whether the user chose ``classes``; ``None`` infers it: a table
    other than ``DEFAULT_CLASSES`` was chosen. Every source must fit its table (see
    ``check_fit``): a source read through the default table must look like HRLULC.
    """
    if table_given is None:
        table_given = not (isinstance(classes, str) and classes == DEFAULT_CLASSES)
    source = _open_source(paths, classes, grid=grid, field=field, unknown=unknown, nodata=nodata)
    check_fit(source, table_given=table_given)
    return source


def _open_source(
    paths: str | Path | Sequence[str | Path],
    classes: ClassTable | str | Path,
    *,
    grid: LabelsGrid,
    field: str | None,
    unknown: UnknownValues,
    nodata: Nodata,
) -> LabelSource:
    paths = [Path(paths)] if isinstance(paths, (str, Path)) else [Path(p) for p in paths]
    if not paths:
        raise DataError("no label source given")
    for path in paths:
        if not path.exists():
            raise DataError("no such label file", path)
    vectors = [p for p in paths if p.suffix.lower() in VECTOR_SUFFIXES]
    if vectors:
        if len(vectors) != len(paths):
            raise DataError(
                "label sources mix polygon layers and rasters",
                vectors[0],
                hint="prepare with one kind of label source",
            )
        if len(vectors) > 1:
            raise DataError(
                "give one polygon layer", vectors[1], hint="merge the layers in one file"
            )
        if field is None:
            raise DataError(
                "a polygon layer needs the name of its class attribute",
                vectors[0],
                hint=f"pass --label-field NAME (fields: {', '.join(_vector_fields(vectors[0]))})",
            )
        if nodata != FILE_NODATA:
            raise DataError(
                "--label-nodata applies to label rasters and images, not to polygons",
                vectors[0],
                hint="give polygons that mean no data an ignored class value or no value",
            )
        return VectorLabels(vectors[0], field, classes, unknown=unknown)
    if grid == "pixel":
        if len(paths) != 1:
            raise DataError(
                f"{len(paths)} pixel-grid label images: one product's grid has one",
                paths[1],
                hint="open one PixelLabels per product",
            )
        return PixelLabels(paths[0], classes, unknown=unknown, nodata=nodata)
    images = [p for p in paths if p.suffix.lower() in IMAGE_SUFFIXES]
    if images:
        raise DataError(
            "a label image has no georeference",
            images[0],
            hint="if it is on the product's own pixel grid, pass --labels-grid pixel",
        )
    return LabelMap(paths, classes, unknown=unknown, nodata=nodata)
