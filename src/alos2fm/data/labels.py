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

import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from alos2fm.data.classes import (
    DEFAULT_CLASSES,
    IGNORE_INDEX,
    NODATA_CODE,
    ClassTable,
    attribute_key,
    hrlulc_classes,
    identity_remap,
    is_whole,
    load_class_table,
    nodata_mask,
)
from alos2fm.errors import DataError
from alos2fm.products.base import RasterGrid, Window

__all__ = [
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

Resampling = Literal["nearest", "mode"]
LabelsGrid = Literal["map", "pixel"]
UnknownValues = Literal["error", "ignore"]
# What no data is in a label raster or image: "file" = the file's own nodata tag; None =
# none (the file's tag is wrong: its value is read by the class table); a number = that
# value instead of the file's tag.
FILE_NODATA = "file"
Nodata = float | int | Literal["file"] | None

VECTOR_SUFFIXES = {".gpkg", ".shp", ".geojson", ".json", ".fgb", ".gml", ".kml", ".sqlite"}
IMAGE_SUFFIXES = {".npy", ".png", ".bmp"}  # label images: never georeferenced
# Files that belong to one vector layer (their content is the layer's): fingerprints.
_SHAPEFILE_PARTS = (".shp", ".shx", ".dbf", ".prj", ".cpg", ".qix")


class LabelSource:
    """What ``prepare`` needs of any label source."""

    table: ClassTable
    files: list[Path]  # every file whose content the labels depend on

    def check_scene(self, product: Any, scene: str | Path) -> None:
        """Raise ``DataError`` naming the scene if labels cannot go on the product's grid."""
        raise NotImplementedError

    def attach(self, product: Any, scene: str | Path | None = None) -> None:
        """Tell the source which product it labels (before reading; pixel-grid labels need
        the product's own grid)."""

    def read_on_grid(
        self, grid: RasterGrid, window: Window, resampling: Resampling = "nearest"
    ) -> np.ndarray:
        """uint8 (window.height, window.width) class ids, 255 = ignore."""
        raise NotImplementedError

    def close(self) -> None:
        """Release open files (sources reopen them on the next read)."""

    def __enter__(self) -> LabelSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


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


# --- class rasters with a CRS -----------------------------------------------------------------


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


# --- label images on the product's own pixel grid ---------------------------------------------


class PixelLabels(LabelSource):
    """A label image on one product's own pixel grid.

    The image must have the size of the product as read (before ``--multilook``); on a
    multilooked grid, ``nearest`` takes the label under each output pixel's centre and
    ``mode`` the most common class of the looks it averages. ``attach(product)`` tells the
    source which product grid the image is on, before any read.
    """

    def __init__(
        self,
        path: str | Path,
        classes: ClassTable | str | Path = DEFAULT_CLASSES,
        *,
        unknown: UnknownValues = "error",
        nodata: Nodata = FILE_NODATA,
    ):
        self.path = Path(path)
        self.table = load_class_table(classes)
        self.encoder = self.table.encoder(unknown)
        self.nodata = effective_nodata(read_label_image_nodata(self.path), nodata, self.table, path)
        self.files = [self.path]
        self._base: RasterGrid | None = None
        self._codes: np.ndarray | None = None  # read on first use, not pickled

    def __getstate__(self) -> dict[str, Any]:
        return self.__dict__ | {"_codes": None}

    def _image_codes(self) -> np.ndarray:
        if self._codes is None:
            values, _ = read_label_image(self.path)
            self._codes = self.encoder.encode(values, self.nodata, self.path)
        return self._codes

    def value_counts(self) -> tuple[dict[Any, int], int]:
        """({value: pixels}, sample step), nodata left out, as ``LabelMap.value_counts``."""
        if self.path.suffix.lower() == ".npy":
            values = np.load(self.path, mmap_mode="r")
            step = max(1, -(-max(values.shape) // _SAMPLE_SIDE))
            values = np.asarray(values[::step, ::step])
        else:
            values, step = _sample_raster(self.path, referenced=False)
        return _counts(values, self.nodata, step * step), step

    def attach(self, product: Any, scene: str | Path | None = None) -> None:
        base = unprocessed_grid(product)
        height, width = read_label_image_shape(self.path)
        if (height, width) != (base.height, base.width):
            raise DataError(
                f"label image is {width} x {height} px but the product "
                f"{scene or product.path} is {base.width} x {base.height} px",
                self.path,
                hint="pixel-grid labels must have the product's own size (before multilook)",
            )
        self._base = base

    def check_scene(self, product: Any, scene: str | Path) -> None:
        self.attach(product, scene)
        self._image_codes()  # unknown values fail here, before any patch is cut

    def read_on_grid(
        self, grid: RasterGrid, window: Window, resampling: Resampling = "nearest"
    ) -> np.ndarray:
        _check_resampling(resampling)
        if self._base is None:
            raise RuntimeError("PixelLabels.attach(product) must come before reading")
        # Output pixel (row, col) covers base pixels [row * ry + oy, ...): a pure scale and
        # offset (multilooking); anything else is not a pixel grid of this product.
        step = ~self._base.transform @ grid.transform
        if step.b or step.d or step.a < 1 or step.e < 1:
            raise DataError("pixel-grid labels need the product's grid or a multilook of it")
        rx, ry = round(step.a), round(step.e)
        top = round(step.f) + window.row * ry
        left = round(step.c) + window.col * rx
        block = self._image_codes()[top : top + window.height * ry, left : left + window.width * rx]
        block = block.reshape(window.height, ry, window.width, rx)
        if resampling == "nearest" or (rx, ry) == (1, 1):
            reduced = block[:, ry // 2, :, rx // 2]
        else:
            reduced = _block_mode(block, self.encoder.excluded_code + 1)
        return self.encoder.decode[reduced]


def _block_mode(block: np.ndarray, n_codes: int) -> np.ndarray:
    """Most common non-zero code of each (ry, rx) block; 0 only where all are 0."""
    h, ry, w, rx = block.shape
    flat = block.transpose(0, 2, 1, 3).reshape(h, w, ry * rx)
    counts = np.stack([(flat == code).sum(axis=-1) for code in range(1, n_codes)], axis=-1)
    best = counts.argmax(axis=-1).astype(np.uint8) + 1
    return np.where(counts.max(axis=-1) > 0, best, NODATA_CODE).astype(np.uint8)


def unprocessed_grid(product: Any) -> RasterGrid:
    """The grid of the product as read from its files (under band selection, multilook and
    speckle-filter wrappers)."""
    while hasattr(product, "product"):
        product = product.product
    return product.grid


@contextmanager
def _open_unreferenced(path: Path) -> Iterator[Any]:
    """rasterio.open for images that have no georeference on purpose (no warning)."""
    import rasterio
    from rasterio.errors import NotGeoreferencedWarning

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        with rasterio.open(path) as src:
            yield src


def read_label_image(path: Path) -> tuple[np.ndarray, float | None]:
    """A whole label image (it is on one product's grid, so it fits in memory) and its
    nodata value (from the file's metadata; None for ``.npy``)."""
    if path.suffix.lower() == ".npy":
        values = np.load(path, mmap_mode="r")
        if values.ndim != 2 or values.dtype.kind not in "iubf":
            raise DataError(
                f"a label image must be a 2-D integer array, found {values.ndim}-D {values.dtype}",
                path,
            )
        return np.asarray(values), None
    from rasterio.errors import RasterioIOError

    try:
        with _open_unreferenced(path) as src:
            if src.count != 1 or src.dtypes[0] not in _CLASS_TYPES:
                raise DataError(
                    f"a label image must be one band of integers, found {src.count} "
                    f"band(s) of {src.dtypes[0]}",
                    path,
                    hint="save the class ids as a single-band image (palette PNG, "
                    "uint8/int16 TIFF or ENVI, or .npy)",
                )
            return src.read(1), src.nodata
    except RasterioIOError as err:
        raise DataError(f"cannot open label image: {err}", path) from err


def read_label_image_nodata(path: Path) -> float | None:
    """The nodata tag of a label image (None for ``.npy``), without reading its pixels."""
    if path.suffix.lower() == ".npy":
        return None
    from rasterio.errors import RasterioIOError

    try:
        with _open_unreferenced(path) as src:
            return src.nodata
    except RasterioIOError as err:
        raise DataError(f"cannot open label image: {err}", path) from err


def read_label_image_shape(path: Path) -> tuple[int, int]:
    """(lines, pixels) of a label image, without reading it."""
    if path.suffix.lower() == ".npy":
        return tuple(np.load(path, mmap_mode="r").shape[:2])
    with _open_unreferenced(path) as src:
        return src.height, src.width


# --- polygons ---------------------------------------------------------------------------------


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
        self.files = _layer_files(self.path)
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


def _layer_files(path: Path) -> list[Path]:
    """The files of one layer: a shapefile's parts, else the file itself."""
    if path.suffix.lower() != ".shp":
        return [path]
    parts = [path.with_suffix(s) for s in _SHAPEFILE_PARTS]
    return [p for p in parts if p.exists()]


# --- nodata tags and whether a source fits its class table ------------------------------------

_SAMPLE_SIDE = 1024  # fit checks read a raster decimated to at most this many pixels a side
_DEFAULT_MIN_CLASSES = 3  # classes a source read through the default table must hold


def effective_nodata(
    file_nodata: float | None, nodata: Nodata, table: ClassTable, path: str | Path
) -> float | None:
    """The nodata value to read ``path`` with (``nodata``: see ``open_labels``); a
    ``DataError`` when it is a value that ``table`` maps to a class."""
    if nodata == FILE_NODATA:
        value, origin = file_nodata, "the file's nodata tag"
    elif nodata is None:
        return None
    else:
        if isinstance(nodata, bool) or not isinstance(nodata, (int, float, np.number)):
            raise DataError(
                f"label nodata {nodata!r} is not a number", path, hint="a number or none"
            )
        value, origin = float(nodata), "--label-nodata"
    problem = nodata_collision(value, table, origin)
    if problem:
        raise DataError(problem, path, hint=_collision_hint(value, origin))
    return value


def nodata_collision(value: float | None, table: ClassTable, origin: str) -> str | None:
    """The problem, in words, when nodata ``value`` is a class value of ``table``."""
    if not is_whole(value):
        return None
    index = table.class_index(int(value))
    if index is None:
        return None
    name = table.classes[index].name
    return (
        f"nodata value {int(value)} ({origin}) is class {index} {name!r} of class table "
        f"{table.name!r}: every {name!r} pixel would become no data"
    )


def _collision_hint(value: float | None, origin: str) -> str:
    shown = int(value) if is_whole(value) else value
    if origin == "--label-nodata":
        return f"give --label-nodata a value that is not a class, or map {shown} otherwise"
    return (
        f"if the tag is wrong, pass --label-nodata none ({shown} is then read by the class "
        f"table) or --label-nodata VALUE (the file's true nodata); if {shown} really is no "
        f"data, use a class table that does not map it (--classes TABLE.yaml)"
    )


def _sample_raster(path: Path, referenced: bool) -> tuple[np.ndarray, int]:
    """Band 1 of ``path`` decimated (nearest) to at most ``_SAMPLE_SIDE`` a side, and the
    step; GDAL reads it from overviews where the file has them."""
    import rasterio
    from rasterio.enums import Resampling as GdalResampling

    opener = rasterio.open if referenced else _open_unreferenced
    with opener(path) as src:
        step = max(1, -(-max(src.height, src.width) // _SAMPLE_SIDE))
        if step == 1:
            return src.read(1), 1
        shape = (-(-src.height // step), -(-src.width // step))
        return src.read(1, out_shape=shape, resampling=GdalResampling.nearest), step


def _counts(values: np.ndarray, nodata: float | None, weight: int = 1) -> dict[Any, int]:
    """{value: count x weight} of an array, nodata and NaN left out; whole floats as ints."""
    values = np.asarray(values).ravel()
    keep = ~nodata_mask(values, nodata)
    if values.dtype.kind == "f":
        keep &= np.isfinite(values)
    values = values[keep]
    uniques, counts = np.unique(values, return_counts=True)
    return {_plain(v): c * weight for v, c in zip(uniques.tolist(), counts.tolist(), strict=True)}


def _plain(value: Any) -> Any:
    whole = isinstance(value, float) and value.is_integer() and abs(value) < 2.0**53
    return int(value) if whole else value


def fit_problems(
    counts: dict[Any, int], table: ClassTable, table_given: bool, unit: str = "px", step: int = 1
) -> list[tuple[str, str]]:
    """(problem, way out) for each way a source's value ``counts`` (nodata left out) do not
    fit ``table``:

    - any table, rasters and images: more than half of the pixels would become no data
      through values that neither the file nor the user declares as nodata and that the
      table's own source vocabulary does not name (a 0/255 mask through ``water_mask``
      loses its 255 class). Sparse ground truth whose table names its "unlabelled" value
      (Flevoland: 78 % unlabelled) fits.
    - the default table (not chosen by the user): the source must look like HRLULC, i.e.
      hold at least 3 of the table's classes (a 0/1 water mask holds one: Water, with its
      land turned into no data).
    """
    problems = []
    total = sum(counts.values())
    if total == 0:
        return problems
    about = "about " if step > 1 else ""
    ignored = {attribute_key(v) for v in table.ignore}
    documented = table.documented_nodata()
    if unit == "px":
        dropped = {v: c for v, c in counts.items() if attribute_key(v) in ignored - documented}
        if 2 * sum(dropped.values()) > total:
            shown = ", ".join(f"{v} ({about}{c} {unit})" for v, c in sorted(dropped.items()))
            values = " ".join(str(v) for v in sorted(dropped))
            problems.append(
                (
                    f"{100 * sum(dropped.values()) / total:.0f} % of the {about}{total} labelled "
                    f"{unit} would become no data through values {shown}, which class table "
                    f"{table.name!r} ignores but the file does not declare as nodata",
                    f"if they are a class, use a table that maps them (--classes water_mask, "
                    f"--classes TABLE.yaml); if they really are no data, say so: "
                    f"--label-nodata {values}",
                )
            )
    if not table_given:
        present = sorted({table.class_index(v) for v in counts if table.class_index(v) is not None})
        needed = min(_DEFAULT_MIN_CLASSES, table.num_classes)
        if len(present) < needed:
            names = ", ".join(table.classes[i].name for i in present) or "none"
            held = ", ".join(
                f"{v} ({about}{c} {unit})" for v, c in sorted(counts.items(), key=_order)
            )
            problems.append(
                (
                    f"these labels do not look like HRLULC, which the default class table "
                    f"{table.name!r} reads them as: they hold {len(present)} of its "
                    f"{table.num_classes} classes ({names}); values {held}",
                    "name the class table of these labels: --classes water_mask (0/1 "
                    "masks), --classes worldcover, --classes TABLE.yaml; or, for HRLULC, "
                    f"--classes {table.name}",
                )
            )
    return problems


def _order(item: tuple[Any, int]) -> tuple[int, str, float]:
    value = item[0]
    return (0, "", float(value)) if isinstance(value, (int, float)) else (1, str(value), 0.0)


def check_fit(source: LabelSource, table_given: bool = True) -> None:
    """``DataError`` naming the file when ``source`` does not fit its class table (see
    ``fit_problems``). Rasters are counted on a decimated read; polygons by feature."""
    if isinstance(source, VectorLabels):
        if table_given:
            return  # a polygon's ignored value is a deliberate mask, not a wrong table
        counts, step, unit = source.value_counts(), 1, "features"
    else:
        (counts, step), unit = source.value_counts(), "px"
    fractional = sorted(v for v in counts if isinstance(v, float))
    if fractional:  # a float image (dB, reflectance), not classes saved as floats
        source.encoder.encode(np.array(fractional), source=source.files[0])
    problems = fit_problems(counts, source.table, table_given, unit=unit, step=step)
    if problems:
        problem, hint = problems[0]
        raise DataError(problem, source.files[0], hint=hint)


# --- what `alos2fm info` prints for a label file ----------------------------------------------


def is_label_source(path: str | Path) -> bool:
    """A polygon layer, a label image, or a single-band integer raster of a few distinct
    values not named like an ALOS-2 product.

    Class rasters hold tens of values (at most 256 here); a renamed uint16 DN product
    holds thousands, spread over its range: a decimated sample (at most 256 x 256,
    nearest neighbour, so class values stay class values) with more than 256 distinct
    values is an image, not labels, and goes to the product readers.
    """
    from alos2fm.products.naming import is_mosaic_name, is_product_name

    path = Path(path)
    suffix = path.suffix.lower()
    if suffix in VECTOR_SUFFIXES or suffix in IMAGE_SUFFIXES:
        return True
    if path.is_dir() or is_product_name(path) or is_mosaic_name(path):
        return False
    try:
        import rasterio

        with rasterio.open(path) as src:
            if src.count != 1 or src.dtypes[0] not in _INTEGER_TYPES:
                return False
            if src.dtypes[0] in ("uint8", "int8"):
                return True
            shape = (min(src.height, 256), min(src.width, 256))
            sample = src.read(1, out_shape=shape)
            return np.unique(sample).size <= 256  # class tables hold far fewer values
    except Exception:  # not a raster GDAL reads: the product readers will say why
        return False


def describe_labels(
    path: str | Path,
    classes: ClassTable | str | Path | None = None,
    *,
    field: str | None = None,
    nodata: Nodata = FILE_NODATA,
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """(fields, values) for ``alos2fm info``: what the source is, and each value with its
    pixel or feature count and, with a class table, its name and role. ``nodata`` as in
    ``open_labels``. What ``open_labels`` would refuse (a nodata value that is a class, a
    source that does not fit its table) is shown in the field ``problem``, not raised, so
    that the counts needed to fix it are printed."""
    path = Path(path)
    table = load_class_table(classes) if classes is not None else None
    vector = path.suffix.lower() in VECTOR_SUFFIXES
    value = None
    origin = "the file's nodata tag" if nodata == FILE_NODATA else "--label-nodata"
    if vector:
        if nodata != FILE_NODATA:
            raise DataError("--label-nodata applies to label rasters and images", path)
        fields, counts = _describe_vector(path, field)
    elif path.suffix.lower() in IMAGE_SUFFIXES:
        values, file_nodata = read_label_image(path)
        value = file_nodata if nodata == FILE_NODATA else nodata
        fields = {
            "kind": "label image on a pixel grid (no georeference: use --labels-grid pixel)",
            "size": f"{values.shape[1]} x {values.shape[0]} (pixels x lines)",
            "type": str(values.dtype),
        }
        if nodata != FILE_NODATA:
            fields["nodata used"] = value
        counts = _value_counts(values, value, unit="px")
    else:
        fields, counts, value = _describe_raster(path, nodata)
    vocabulary = table.source_vocabulary() if table is not None else {}
    ignored_as = "ignored (file's nodata)" if nodata == FILE_NODATA else "ignored (--label-nodata)"
    rows = []
    for row_value, count, unit, is_nodata in counts:
        row = {"value": row_value, unit: count}
        if table is not None:
            if vocabulary:
                row["source name"] = vocabulary.get(row_value, "")
            role = table.value_role(row_value)
            if is_nodata and role.startswith("class "):
                role = f"{ignored_as[:-1]}; the table says {role})"
            elif is_nodata:
                role = ignored_as
            row["training class"] = role
        elif is_nodata:
            row["note"] = "file's nodata" if nodata == FILE_NODATA else "--label-nodata"
        rows.append(row)
    if table is not None:
        fields["class table"] = f"{table.name} ({table.num_classes} classes)"
        missing = [r["value"] for r in rows if r["training class"] == "NOT IN TABLE"]
        if missing:
            fields["not in table"] = ", ".join(map(str, missing))
        problems = []
        collision = nodata_collision(value, table, origin) if not vector else None
        if collision:
            problems.append((collision, _collision_hint(value, origin)))
        if not vector:
            kept = {v: c for v, c, _, is_nodata in counts if not is_nodata and v != "NaN"}
            problems += fit_problems(kept, table, table_given=True)
        if problems:
            fields["problem"] = "; ".join(f"{p} ({hint})" for p, hint in problems)
    return fields, rows


def _describe_raster(
    path: Path, nodata: Nodata = FILE_NODATA
) -> tuple[dict[str, Any], list[tuple[Any, int, str, bool]], float | None]:
    import rasterio

    with rasterio.open(path) as src:
        if src.count != 1 or src.dtypes[0] not in _CLASS_TYPES:
            raise DataError(
                f"not a class raster: {src.count} band(s) of {src.dtypes[0]}",
                path,
                hint="a label raster has one band of integers",
            )
        fields = {
            "kind": "class raster" if src.crs else "class raster without CRS (pixel grid)",
            "driver": src.driver,
            "size": f"{src.width} x {src.height} (pixels x lines)",
            "type": src.dtypes[0],
            "nodata": src.nodata,
            "crs": src.crs.to_string() if src.crs else None,
            "bounds": tuple(src.bounds),
        }
        value = src.nodata if nodata == FILE_NODATA else nodata
        if nodata != FILE_NODATA:
            fields["nodata used"] = value
        # Block by block: memory stays flat for a national map.
        totals: dict[Any, int] = {}
        for _, window in src.block_windows(1):
            for key, count in _counts(src.read(1, window=window), None).items():
                totals[key] = totals.get(key, 0) + count
            if src.dtypes[0].startswith("float"):
                nan = int(np.isnan(src.read(1, window=window)).sum())
                if nan:
                    totals["NaN"] = totals.get("NaN", 0) + nan
    return fields, _rows(totals, value, unit="px"), value


def _describe_vector(
    path: Path, field: str | None
) -> tuple[dict[str, Any], list[tuple[Any, int, str]]]:
    import pyogrio

    info = _vector_info(path, bounds=True)
    fields = {
        "kind": "polygon layer" if "polygon" in str(info["geometry_type"]).lower() else "layer",
        "driver": info.get("driver"),
        "crs": info["crs"],
        "features": info["features"],
        "geometry": info["geometry_type"],
        "fields": ", ".join(info["fields"]),
        "bounds": tuple(info["total_bounds"]),
    }
    if field is None:
        fields["class attribute"] = "not given (pass --label-field NAME to count its values)"
        return fields, []
    if field not in info["fields"]:
        raise DataError(
            f"layer has no attribute {field!r}", path, hint=f"fields: {fields['fields']}"
        )

    _, _, _, (values,) = pyogrio.raw.read(path, columns=[field], read_geometry=False)
    totals: dict[Any, int] = {}
    for value in values.tolist():
        key = None if value is None else attribute_key(value)
        totals[key] = totals.get(key, 0) + 1
    fields["class attribute"] = field
    return fields, _rows(totals, None, unit="features")


def _value_counts(values: np.ndarray, nodata: float | None, unit: str) -> list:
    totals = _counts(values, None)
    if values.dtype.kind == "f" and np.isnan(values).any():
        totals["NaN"] = int(np.isnan(values).sum())
    return _rows(totals, nodata, unit)


def _rows(totals: dict[Any, int], nodata: float | None, unit: str) -> list:
    def order(item: tuple[Any, int]) -> tuple[int, str, float]:
        value = item[0]
        return (0, "", float(value)) if isinstance(value, (int, float)) else (1, str(value), 0.0)

    rows = []
    for value, count in sorted(totals.items(), key=order):
        is_nodata = value == "NaN" or (
            isinstance(nodata, (int, float))
            and np.isfinite(nodata)
            and isinstance(value, (int, float))
            and value == nodata
        )
        rows.append((value, count, unit, is_nodata))
    return rows
