"""What ``alos2fm info`` prints for a label file, and whether a file is one."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from alos2fm.data.classes import (
    ClassTable,
    attribute_key,
    load_class_table,
)
from alos2fm.data.labels.base import FILE_NODATA, IMAGE_SUFFIXES, VECTOR_SUFFIXES, Nodata
from alos2fm.data.labels.fit import _collision_hint, _counts, fit_problems, nodata_collision
from alos2fm.data.labels.images import read_label_image
from alos2fm.data.labels.rasters import _CLASS_TYPES, _INTEGER_TYPES
from alos2fm.data.labels.vectors import _vector_info
from alos2fm.errors import DataError


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
