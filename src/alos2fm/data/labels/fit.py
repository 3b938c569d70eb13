"""Whether a label source fits its class table: nodata tags that collide with a class,
sources whose pixels mostly become undeclared no data, the default table on labels
that are not HRLULC."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from alos2fm.data.classes import (
    ClassTable,
    attribute_key,
    is_whole,
    nodata_mask,
)
from alos2fm.data.labels.base import FILE_NODATA, LabelSource, Nodata, _open_unreferenced
from alos2fm.errors import DataError

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
    from alos2fm.data.labels.vectors import VectorLabels

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
