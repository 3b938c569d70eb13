"""A class map and its reference data, read for ``alos2fm assess``; stratified samples drawn.

The map is a class GeoTIFF as ``alos2fm predict`` writes it: one uint8 band of class ids,
255 = no data, class names in the tags ``CLASS_0``, ``CLASS_1``, ... and colours in its
colour table. Everything is read window by window (``WINDOW`` pixels a side), so memory
stays flat whatever the map's size.

The reference is one of:

- **points** (GeoPackage, Shapefile, GeoJSON, ...): each point is one sample unit; it takes
  the map pixel under it (reprojected to the map's CRS).
- **polygons**: each pixel whose centre lies inside a polygon is one sample unit (counted
  per pixel, as the map is; where polygons overlap the smallest wins, as in ``prepare``).
  Pixels of one polygon are not independent samples: their confidence intervals are too
  narrow, and the report says so.
- **a class raster** on any grid, reprojected (nearest) onto the map grid: every map pixel
  it covers is a unit, so pixel-count metrics are reported besides the estimates.

The reference attribute (``--label-field``) or raster values become class ids through a
class table (``--classes``); without one, the map's own classes are the table: a class is
named by its id or its name, so a sample filled in QGIS with either reads back. Reference
values that are ignore or no data, samples outside the map and samples on map no data are
dropped and counted.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from alos2fm.data.classes import (
    IGNORE_INDEX,
    ClassTable,
    TrainingClass,
    attribute_key,
    load_class_table,
)
from alos2fm.errors import DataError

WINDOW = 1024
MAP_NODATA = 255
VECTOR_SUFFIXES = {".gpkg", ".shp", ".geojson", ".json", ".fgb", ".gml", ".kml", ".sqlite"}
SAMPLE_LAYER = "samples"
_PALETTE = [
    (31, 119, 180),
    (255, 127, 14),
    (44, 160, 44),
    (214, 39, 40),
    (148, 103, 189),
    (140, 86, 75),
    (227, 119, 194),
    (127, 127, 127),
    (188, 189, 34),
    (23, 190, 207),
]


# --- the map --------------------------------------------------------------------------------


@dataclass(frozen=True)
class ClassMap:
    """What assess needs to know about a class map, read once."""

    path: Path
    class_names: list[str]
    colors: list[tuple[int, int, int]]
    crs: Any  # rasterio CRS
    transform: Any  # affine.Affine
    width: int
    height: int
    nodata: int
    pixel_area_m2: float

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def windows(self) -> Iterator[Any]:
        """rasterio windows tiling the map, row-major (the order sampling depends on)."""
        from rasterio.windows import Window

        for row in range(0, self.height, WINDOW):
            for col in range(0, self.width, WINDOW):
                yield Window(
                    col, row, min(WINDOW, self.width - col), min(WINDOW, self.height - row)
                )


def open_class_map(path: str | Path, classes: str | Path | None = None) -> ClassMap:
    """The map's grid, classes and colours; ``DataError`` for a file that is not a class map
    of a projected grid. ``classes`` names the classes of a map without ``CLASS_k`` tags."""
    import rasterio
    from rasterio.errors import RasterioIOError

    path = Path(path)
    try:
        src = rasterio.open(path)
    except RasterioIOError as err:
        raise DataError(f"cannot open the map: {err}", path, hint="give the map GeoTIFF") from None
    with src:
        if src.count != 1 or src.dtypes[0] != "uint8":
            raise DataError(
                f"is not a class map ({src.count} band(s) of {src.dtypes[0]}, not one uint8)",
                path,
                hint="give the map written by alos2fm predict",
            )
        if src.crs is None or not src.crs.is_projected:
            raise DataError(
                "the map has no projected CRS, so its pixels have no area in m²",
                path,
                hint="reproject it to a projected CRS (e.g. its UTM zone) with gdalwarp",
            )
        tags = src.tags()
        names = _tag_names(tags)
        table = load_class_table(classes) if classes is not None else None
        if not names and table is None:
            raise DataError(
                "the map names no classes (no CLASS_0 tag)",
                path,
                hint="give the map written by alos2fm predict, or name its classes with "
                "--classes TABLE",
            )
        if not names:
            names = [c.name for c in table.classes]  # type: ignore[union-attr]
        elif table is not None:
            _check_table(table, names, path)
        colors = _map_colors(src, len(names), table)
        unit = src.crs.linear_units_factor[1] if src.crs.linear_units else 1.0
        transform = src.transform
        area = abs(transform.a * transform.e - transform.b * transform.d) * unit**2
        nodata = MAP_NODATA if src.nodata is None else int(src.nodata)
        return ClassMap(
            path, names, colors, src.crs, transform, src.width, src.height, nodata, area
        )


def _tag_names(tags: dict[str, str]) -> list[str]:
    names = []
    while f"CLASS_{len(names)}" in tags:
        names.append(tags[f"CLASS_{len(names)}"])
    return names


def _check_table(table: ClassTable, names: list[str], path: Path) -> None:
    theirs = [c.name for c in table.classes]
    if [n.lower() for n in theirs] != [n.lower() for n in names]:
        raise DataError(
            f"class table {table.name!r} names the classes {theirs}, the map {names}",
            path,
            hint="give the class table the map was made with, or omit --classes to use the "
            "map's own classes",
        )


def _map_colors(src: Any, k: int, table: ClassTable | None) -> list[tuple[int, int, int]]:
    try:
        table_colors = src.colormap(1)
        return [tuple(int(c) for c in table_colors[i][:3]) for i in range(k)]  # type: ignore
    except ValueError:  # no colour table
        if table is not None:
            return [tuple(c.color) for c in table.classes]  # type: ignore[misc]
        return [_PALETTE[i % len(_PALETTE)] for i in range(k)]


def mapped_pixels(cmap: ClassMap) -> np.ndarray:
    """Pixels per class (int64, length k), window by window; a class id the map does not
    name is an error."""
    import rasterio

    totals = np.zeros(256, dtype=np.int64)
    with rasterio.open(cmap.path) as src:
        for window in cmap.windows():
            totals += np.bincount(src.read(1, window=window).ravel(), minlength=256)
    totals[cmap.nodata] = 0
    unnamed = np.flatnonzero(totals[cmap.num_classes :]) + cmap.num_classes
    if len(unnamed):
        raise DataError(
            f"the map holds class ids {unnamed.tolist()[:8]} but names only "
            f"{cmap.num_classes} classes",
            cmap.path,
            hint="give the map written by alos2fm predict, or a class table naming every id",
        )
    return totals[: cmap.num_classes]


def reference_table(cmap: ClassMap, classes: str | Path | None = None) -> ClassTable:
    """The class table that reads reference labels: ``classes``, or the map's own classes,
    each named by its id or its name (255 = no data)."""
    if classes is not None:
        table = load_class_table(classes)
        _check_table(table, cmap.class_names, Path(str(classes)))
        return table
    rows = []
    for k, (name, color) in enumerate(zip(cmap.class_names, cmap.colors, strict=True)):
        values: list[int | str] = [k]
        if isinstance(attribute_key(name), str):  # a name like "3" would be another id
            values.append(name)
        rows.append(TrainingClass(name=name, color=color, values=values))
    return ClassTable(name="the map's classes", classes=rows, ignore=[IGNORE_INDEX])


# --- the reference --------------------------------------------------------------------------


@dataclass
class ReferenceCounts:
    """Sample counts, rows = map class, columns = reference class, and what was dropped."""

    counts: np.ndarray  # (k, k) int64
    kind: str  # "points", "polygons" or "raster"
    unit: str  # "point" or "pixel"
    dropped: dict[str, int] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    @property
    def samples(self) -> int:
        return int(self.counts.sum())


def count_reference(
    cmap: ClassMap,
    reference: str | Path,
    label_field: str | None = None,
    classes: str | Path | None = None,
) -> ReferenceCounts:
    """The map-by-reference counts of a point, polygon or raster reference (module docs)."""
    reference = Path(reference)
    if not reference.exists():
        raise DataError("no such reference file", reference, hint="check the path")
    table = reference_table(cmap, classes)
    if reference.suffix.lower() in VECTOR_SUFFIXES:
        if not label_field:
            raise DataError(
                "a vector reference needs the attribute holding the reference class",
                reference,
                hint="pass --label-field NAME (for a sample from --sample: reference)",
            )
        return _count_vector(cmap, reference, label_field, table)
    return _count_raster(cmap, reference, table)


def _count_vector(
    cmap: ClassMap, path: Path, label_field: str, table: ClassTable
) -> ReferenceCounts:
    import pyogrio
    import shapely
    from rasterio.crs import CRS

    from alos2fm.data.labels.vectors import _to_crs, _vector_info

    info = _vector_info(path)
    if label_field not in info["fields"]:
        raise DataError(
            f"layer has no attribute {label_field!r}",
            path,
            hint=f"fields: {', '.join(info['fields']) or 'none'}",
        )
    if not info["crs"]:
        raise DataError("reference layer has no CRS", path, hint="assign one in QGIS")
    _, _, wkb, (values,) = pyogrio.raw.read(path, columns=[label_field])
    labels = [None if _blank(v) else v for v in values.tolist()]
    encoder = table.encoder()
    ref_ids = encoder.decode[encoder.encode_values(labels, path)]
    geometries = _to_crs(shapely.from_wkb(wkb), info["crs"], CRS.from_user_input(cmap.crs))
    kinds = set(shapely.get_type_id(geometries[~shapely.is_missing(geometries)]).tolist())
    if kinds <= {0, 4}:  # Point, MultiPoint
        parts, index = shapely.get_parts(geometries, return_index=True)
        xy = shapely.get_coordinates(parts)
        return _count_points(cmap, xy[:, 0], xy[:, 1], ref_ids[index])
    if kinds <= {3, 6}:  # Polygon, MultiPolygon
        return _count_polygons(cmap, geometries, ref_ids)
    raise DataError(
        f"reference layer holds {info['geometry_type']} geometries",
        path,
        hint="give points (one per sample) or polygons",
    )


def _blank(value: Any) -> bool:
    return value is None or (isinstance(value, str) and not value.strip())


def _count_points(
    cmap: ClassMap, xs: np.ndarray, ys: np.ndarray, ref_ids: np.ndarray
) -> ReferenceCounts:
    import rasterio

    k = cmap.num_classes
    labelled = ref_ids != IGNORE_INDEX
    cols, rows = ~cmap.transform @ (xs, ys)
    rows, cols = np.floor(rows).astype(np.int64), np.floor(cols).astype(np.int64)
    on_map = (rows >= 0) & (rows < cmap.height) & (cols >= 0) & (cols < cmap.width)
    keep = labelled & on_map
    rows, cols, refs = rows[keep], cols[keep], ref_ids[keep].astype(np.int64)
    map_ids = np.empty(len(rows), dtype=np.int64)
    cell = (rows // WINDOW) * (cmap.width // WINDOW + 1) + cols // WINDOW
    with rasterio.open(cmap.path) as src:
        for window in cmap.windows():
            ids = (window.row_off // WINDOW) * (cmap.width // WINDOW + 1) + window.col_off // WINDOW
            here = np.flatnonzero(cell == ids)
            if len(here):
                block = src.read(1, window=window)
                map_ids[here] = block[rows[here] - window.row_off, cols[here] - window.col_off]
    valid = map_ids != cmap.nodata
    counts = np.bincount(map_ids[valid] * k + refs[valid], minlength=k * k).reshape(k, k)
    dropped = {
        "reference_nodata": int((~labelled).sum()),
        "outside_map": int((labelled & ~on_map).sum()),
        "map_nodata": int((~valid).sum()),
    }
    return ReferenceCounts(counts, "points", "point", dropped)


def _count_polygons(cmap: ClassMap, geometries: np.ndarray, ref_ids: np.ndarray) -> ReferenceCounts:
    import rasterio
    import shapely
    from rasterio.features import rasterize
    from rasterio.windows import bounds as window_bounds

    k = cmap.num_classes
    keep = np.flatnonzero(~shapely.is_missing(geometries) & ~shapely.is_empty(geometries))
    # Largest first, so that smaller polygons are burnt over them (as prepare does).
    keep = keep[np.argsort(-shapely.area(geometries[keep]), kind="stable")]
    tree = shapely.STRtree(geometries[keep])
    counts = np.zeros(k * k, dtype=np.int64)
    touched = np.zeros(len(geometries), dtype=bool)
    ignored = map_nodata = 0
    with rasterio.open(cmap.path) as src:
        for window in cmap.windows():
            box = shapely.box(*window_bounds(window, cmap.transform))
            hits = np.sort(tree.query(box))  # positions in `keep`: largest first
            if not len(hits):
                continue
            shapes = [(geometries[keep[h]], int(keep[h]) + 1) for h in hits]
            burnt = rasterize(
                shapes,
                out_shape=(window.height, window.width),
                transform=src.window_transform(window),
                fill=0,
                dtype="int32",
            ).ravel()
            inside = burnt > 0
            if not inside.any():
                continue
            feature = burnt[inside] - 1
            touched[np.unique(feature)] = True
            refs = ref_ids[feature].astype(np.int64)
            maps = src.read(1, window=window).ravel()[inside].astype(np.int64)
            labelled = refs != IGNORE_INDEX
            valid = labelled & (maps != cmap.nodata)
            ignored += int((~labelled).sum())
            map_nodata += int((labelled & ~valid).sum())
            counts += np.bincount(maps[valid] * k + refs[valid], minlength=k * k)
    dropped = {
        "reference_nodata_pixels": ignored,
        "map_nodata_pixels": map_nodata,
        "polygons_off_map": int(len(keep) - touched[keep].sum()),
    }
    note = (
        "polygons are counted per pixel (each pixel centre inside a polygon is a sample "
        "unit); pixels of one polygon are not independent, so the confidence intervals "
        "are narrower than they should be"
    )
    return ReferenceCounts(counts.reshape(k, k), "polygons", "pixel", dropped, [note])


def _count_raster(cmap: ClassMap, path: Path, table: ClassTable) -> ReferenceCounts:
    import rasterio
    from rasterio.enums import Resampling
    from rasterio.errors import RasterioIOError
    from rasterio.vrt import WarpedVRT

    k = cmap.num_classes
    encoder = table.encoder()
    try:
        ref_src = rasterio.open(path)
    except RasterioIOError as err:
        raise DataError(
            f"cannot open the reference as a raster: {err}",
            path,
            hint="give a class raster, or points / polygons (GeoPackage, Shapefile, GeoJSON)",
        ) from None
    counts = np.zeros(k * k, dtype=np.int64)
    ignored = map_nodata = uncovered = 0
    with ref_src, rasterio.open(cmap.path) as src:
        if ref_src.count != 1:
            raise DataError(
                f"the reference raster has {ref_src.count} bands, not one band of classes",
                path,
                hint="give a single-band class raster",
            )
        if ref_src.crs is None:
            raise DataError("the reference raster has no CRS", path, hint="assign one")
        on_map_grid = dict(
            crs=cmap.crs,
            transform=cmap.transform,
            width=cmap.width,
            height=cmap.height,
            resampling=Resampling.nearest,
            add_alpha=True,  # alpha: covered by the reference at all
            src_nodata=None,  # its no data read as values (encoded as no data below)
        )
        with WarpedVRT(ref_src, **on_map_grid) as vrt:
            for window in cmap.windows():
                covered = vrt.read(vrt.count, window=window).ravel() > 0
                values = vrt.read(1, window=window).ravel()[covered]
                refs = encoder.decode[encoder.encode(values, ref_src.nodata, path)]
                maps = src.read(1, window=window).ravel()
                uncovered += int((~covered & (maps != cmap.nodata)).sum())
                maps = maps[covered].astype(np.int64)
                labelled = refs != IGNORE_INDEX
                valid = labelled & (maps != cmap.nodata)
                ignored += int((~labelled).sum())
                map_nodata += int((labelled & ~valid).sum())
                counts += np.bincount(
                    maps[valid] * k + refs[valid].astype(np.int64), minlength=k * k
                )
    dropped = {
        "reference_nodata_pixels": ignored,
        "map_nodata_pixels": map_nodata,
        "map_pixels_without_reference": uncovered,
    }
    return ReferenceCounts(counts.reshape(k, k), "raster", "pixel", dropped)


# --- stratified random sampling ----------------------------------------------------------------


@dataclass(frozen=True)
class Sample:
    """Sampled pixels (row, col) of the map, with their map class, in sample-id order."""

    rows: np.ndarray
    cols: np.ndarray
    classes: np.ndarray
    allocation: np.ndarray  # samples per class


def allocate(
    mapped: np.ndarray, total: int, min_per_class: int = 50, allocation: str = "proportional"
) -> np.ndarray:
    """Samples per class: at least ``min_per_class`` (all the pixels of a smaller class),
    the rest in proportion to mapped area (``proportional``) or equally (``equal``),
    never more than a class's pixels; the counts add up to ``total``."""
    if allocation not in ("proportional", "equal"):
        raise DataError(f"--allocation {allocation!r}", hint="use proportional or equal")
    mapped = np.asarray(mapped, dtype=np.int64)
    if total > mapped.sum():
        raise DataError(
            f"--sample {total} is more than the map's {int(mapped.sum())} classified pixels",
            hint="draw fewer samples",
        )
    floor = np.minimum(min_per_class, mapped)
    if floor.sum() > total:
        raise DataError(
            f"--sample {total} cannot give {int((mapped > 0).sum())} mapped classes "
            f"--min-per-class {min_per_class} each",
            hint=f"draw at least {int(floor.sum())} samples, or lower --min-per-class",
        )
    shares = mapped.astype(np.float64) if allocation == "proportional" else (mapped > 0) * 1.0
    out = np.zeros(len(mapped), dtype=np.int64)
    free = mapped > 0
    while free.any():  # fix classes at their floor or their size until the rest fits
        remaining = int(total - out[~free].sum())
        ideal = remaining * shares[free] / shares[free].sum()
        low, high = ideal < floor[free], ideal > mapped[free]
        if not (low.any() or high.any()):
            whole = np.floor(ideal).astype(np.int64)
            extra = remaining - int(whole.sum())  # to the largest remainders
            whole[np.argsort(-(ideal - whole), kind="stable")[:extra]] += 1
            out[free] = whole
            break
        index = np.flatnonzero(free)
        out[index[low]], out[index[high]] = floor[index[low]], mapped[index[high]]
        free[index[low | high]] = False
    return out


def draw_sample(
    cmap: ClassMap,
    total: int,
    min_per_class: int = 50,
    allocation: str = "proportional",
    seed: int = 0,
) -> Sample:
    """A stratified random sample of map pixels (strata = map classes), in two passes over
    the map's windows: count the pixels per class, draw ranks within each class, then
    find the pixels of those ranks. Memory grows with the sample only."""
    import rasterio

    mapped = mapped_pixels(cmap)
    per_class = allocate(mapped, total, min_per_class, allocation)
    rng = np.random.default_rng(seed)
    chosen = [
        np.sort(rng.choice(int(mapped[c]), size=int(per_class[c]), replace=False))
        for c in range(cmap.num_classes)
    ]
    seen = np.zeros(cmap.num_classes, dtype=np.int64)
    found: list[list[np.ndarray]] = [[] for _ in range(cmap.num_classes)]
    with rasterio.open(cmap.path) as src:
        for window in cmap.windows():
            block = src.read(1, window=window).ravel()
            for c in np.flatnonzero(per_class):
                flat = np.flatnonzero(block == c)
                lo, hi = np.searchsorted(chosen[c], [seen[c], seen[c] + len(flat)])
                picked = flat[chosen[c][lo:hi] - seen[c]]
                seen[c] += len(flat)
                found[c].append(
                    np.column_stack(
                        [
                            window.row_off + picked // window.width,
                            window.col_off + picked % window.width,
                        ]
                    )
                )
    cells = [np.concatenate(f) if f else np.zeros((0, 2), np.int64) for f in found]
    classes = np.concatenate([np.full(len(x), c, dtype=np.int64) for c, x in enumerate(cells)])
    rc = np.concatenate(cells)
    return Sample(rc[:, 0], rc[:, 1], classes, per_class)


def write_sample(cmap: ClassMap, sample: Sample, out: Path) -> None:
    """The sample as points at pixel centres in a GeoPackage: ``sample_id``, ``map_class``,
    ``map_class_name`` and an empty ``reference`` to fill in; written atomically."""
    import pyogrio
    import shapely

    from alos2fm.atomic import atomic_path

    xs, ys = cmap.transform @ (sample.cols + 0.5, sample.rows + 0.5)
    geometry = shapely.to_wkb(shapely.points(np.column_stack([xs, ys])))
    n = len(sample.classes)
    fields = {
        "sample_id": np.arange(1, n + 1, dtype=np.int32),
        "map_class": sample.classes.astype(np.int32),
        "map_class_name": np.array([cmap.class_names[c] for c in sample.classes], dtype=object),
        "reference": np.full(n, None, dtype=object),
    }
    with atomic_path(out) as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # the temporary name's extension
        pyogrio.raw.write(
            tmp,
            geometry,
            list(fields.values()),
            list(fields),
            layer=SAMPLE_LAYER,
            driver="GPKG",
            geometry_type="Point",
            crs=cmap.crs.to_wkt(),
        )
