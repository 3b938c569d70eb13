"""One check of SAR backscatter rasters: no fill values, infinities or impossible values.

A raster whose no-data pixels hold a fill value without saying so (no nodata tag) reads
as backscatter: ``-3.4e38`` overflows the float16 patch store to ``-inf`` and turns the
dataset statistics and the training loss into NaN; ``-9999`` skews the statistics to a
mean of -64 dB and a std of 700. A decimated sample or percentiles miss such values when
they are rare, so :func:`check_backscatter` reads the whole raster, window by window
(memory follows ``block``, never the scene), and counts:

* ``masked``: no data, NaN in ``read_db`` (the file's nodata tag, ``nodata=`` of the
  reader or of the check, DN 0, NaN in the file), fine;
* ``non_finite``: +-inf;
* ``out_of_range``: finite values outside :data:`SIGMA0_DB_RANGE`;
* ``likely_fill``: pixels holding a usual fill value (:data:`FILL_VALUES`).

Readers of values calibrated upstream (``DbRasterProduct``) are checked on their raw
values (``read_raw``) in the file's own unit, so that a fill value is reported as
written in the file (``0`` in a linear-power raster, not ``-inf dB``). Every other reader
is checked on ``read_db``. :func:`validate_product` raises a ``ProductError`` naming the
file, the counts, the offending values and the option that masks them (``--nodata``).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from alos2fm.errors import ProductError
from alos2fm.products.base import Product, Window

# Range of values a backscatter raster can hold, in dB. Not the range of physical
# backscatter: a single-look pixel is its mean times an exponential variable (over the
# 4e8 pixels of a scene the smallest lies ~86 dB below the mean: calm water reaches -110
# dB), and products derived in linear power reach far lower (a polarimetric T3 element of
# an almost empty channel: -180 dB in the AIRSAR Flevoland scene). At the top, a corner
# reflector reaches +30 dB, its single-look peaks some +15 dB more. What lies beyond
# [-300, +100] dB is no measurement: fill values (-9999, -32768, -3.4e38), DN or power
# handed in as dB, corruption.
SIGMA0_DB_RANGE: tuple[float, float] = (-300.0, 100.0)
SIGMA0_POWER_RANGE: tuple[float, float] = (1e-30, 1e10)

# Fill values processors write for no data: float32 lowest/highest (GDAL, SNAP), -9999
# (GIS), -32768/-32767 (int16), -999, 0 (linear power, DN) and 0 dB rasters of masks.
FILL_VALUES: tuple[float, ...] = (
    float(np.finfo(np.float32).min),
    float(np.finfo(np.float32).max),
    -9999.0,
    -32768.0,
    -32767.0,
    -999.0,
    9999.0,
    0.0,
)

# Values of magnitude beyond this are the float32 limits (+-3.4028235e38): a nodata of
# "-3.4e38" as a user types it matches them although float32(-3.4e38) is not that value.
_FLOAT_LIMIT = 1e37
_MAX_DISTINCT = 4096  # offending values remembered per check (memory stays flat)
DEFAULT_BLOCK = 1024


def nodata_mask(values: np.ndarray, nodata: float | None) -> np.ndarray:
    """Where ``values`` equal ``nodata`` (NaN matches NaN, +-3.4e38 any float32 limit)."""
    if nodata is None:
        return np.zeros(values.shape, bool)
    nodata = float(nodata)
    if np.isnan(nodata):
        return np.isnan(values)
    if abs(nodata) >= _FLOAT_LIMIT and np.isfinite(nodata):
        return (np.sign(values) == np.sign(nodata)) & (np.abs(values) >= _FLOAT_LIMIT)
    with np.errstate(over="ignore"):
        return values == np.asarray(nodata, dtype=values.dtype)


def format_value(value: float) -> str:
    """A value as a user types it back: ``-9999``, ``0``, ``-3.402823e+38``, ``inf``."""
    if np.isnan(value):
        return "nan"
    if np.isinf(value):
        return "inf" if value > 0 else "-inf"
    return f"{value:.7g}"


@dataclass
class BackscatterCheck:
    """What :func:`check_backscatter` counted; ``ok`` when nothing is out of place."""

    path: Path
    unit: str  # "dB" or "linear power": the unit of ``valid_range`` and of the values below
    valid_range: tuple[float, float]
    pixels: int = 0  # per band, summed over bands
    masked: int = 0  # no data (NaN) after the declared nodata values
    non_finite: int = 0  # +-inf
    out_of_range: int = 0  # finite, outside valid_range
    likely_fill: int = 0  # among the offending pixels: a usual fill value
    low: float | None = None  # smallest offending value
    high: float | None = None  # largest offending value
    values: Counter = field(default_factory=Counter)  # offending value -> pixels (capped)

    @property
    def bad(self) -> int:
        return self.non_finite + self.out_of_range

    @property
    def ok(self) -> bool:
        return self.bad == 0

    def most_common(self) -> tuple[float, int] | None:
        return self.values.most_common(1)[0] if self.values else None

    def raise_if_bad(self) -> BackscatterCheck:
        """``self`` if ``ok``; else a ``ProductError`` with counts, values and the way out."""
        if self.ok:
            return self
        share = 100.0 * self.bad / max(self.pixels, 1)
        parts = []
        if self.non_finite:
            parts.append(f"{self.non_finite} infinite")
        if self.out_of_range:
            lo, hi = (format_value(v) for v in self.valid_range)
            parts.append(f"{self.out_of_range} outside [{lo}, {hi}] {self.unit}")
        value, count = self.most_common() or (self.low, 0)
        if self.low == self.high:
            values = f"all {format_value(value)}"
        else:
            values = (
                f"values {format_value(self.low)} to {format_value(self.high)}, "
                f"most often {format_value(value)} ({count} pixels)"
            )
        problem = (
            f"{self.bad} pixels ({share:.2g} %) are not backscatter ({', '.join(parts)}): "
            + values
            + (f"; {self.likely_fill} hold a usual fill value" if self.likely_fill else "")
        )
        hint = (
            f"if {format_value(value)} marks no data, pass --nodata {format_value(value)} "
            "(nodata= in Python) or set the file's nodata tag"
        )
        if len(self.values) > 1:
            hint += "; other values are no fill value: is this the right --kind?"
        raise ProductError(problem, self.path, hint)

    def _add(self, values: np.ndarray, masked: np.ndarray) -> None:
        self.pixels += values.size
        self.masked += int(np.count_nonzero(masked))
        low, high = self.valid_range
        with np.errstate(invalid="ignore"):
            bad = ~masked & ~((values >= low) & (values <= high))
        if not bad.any():
            return
        offending = values[bad]
        infinite = np.isinf(offending)
        self.non_finite += int(np.count_nonzero(infinite))
        self.out_of_range += int(offending.size - np.count_nonzero(infinite))
        self.likely_fill += int(np.count_nonzero(np.isin(offending, _fill_values(offending))))
        self.low = float(offending.min()) if self.low is None else min(self.low, offending.min())
        self.high = float(offending.max()) if self.high is None else max(self.high, offending.max())
        self.low, self.high = float(self.low), float(self.high)
        distinct, counts = np.unique(offending, return_counts=True)
        for value, count in zip(distinct.tolist(), counts.tolist(), strict=True):
            if value in self.values or len(self.values) < _MAX_DISTINCT:
                self.values[value] += count


def _fill_values(values: np.ndarray) -> np.ndarray:
    fills = np.asarray(FILL_VALUES + (np.inf, -np.inf), dtype=np.float64)
    return fills.astype(values.dtype) if values.dtype.kind == "f" else fills


def _source(product: Any) -> Any:
    """The reader under processing wrappers (band selection, multilook, speckle filter):
    averaging would hide a fill value among its neighbours, so the check reads the source."""
    while hasattr(product, "product") and not hasattr(product, "read_raw"):
        product = product.product
    return product


def calibrated_from_dn(product: Product) -> bool:
    """Whether the reader under ``product`` calibrates integer DN itself (DN 0 = no data):
    its dB values are then the logarithm of 16-bit integers plus CF, finite and within
    about 100 dB of CF (processing wrappers average them, which stays within that range)."""
    return bool(getattr(_source(product), "calibrated_from_dn", False))


def check_backscatter(
    product: Product,
    nodata: float | None = None,
    *,
    block: int = DEFAULT_BLOCK,
) -> BackscatterCheck:
    """Count no data, infinities, out-of-range values and fill values over the whole raster.

    ``product``: any reader of :func:`~alos2fm.products.open_product` (processing wrappers
    are looked through). ``nodata``: a value to treat as no data on top of what the reader
    masks (its file's tag, its own ``nodata=``). Reads ``block`` x ``block`` windows, so
    memory is bands x block² x 4 B (4 MiB per band) whatever the scene's size.
    """
    source = _source(product)
    check_needed = not calibrated_from_dn(source)
    raw = getattr(source, "read_raw", None)
    if raw is not None:
        unit = getattr(source, "raw_unit", "dB")
        valid_range = SIGMA0_POWER_RANGE if unit == "linear power" else SIGMA0_DB_RANGE
        read = raw
    else:
        unit, valid_range, read = "dB", SIGMA0_DB_RANGE, source.read_db
    check = BackscatterCheck(Path(source.path), unit, valid_range)
    grid = source.grid
    # A reader that calibrates integer DN itself (DN 0 = no data) reads finite values in
    # [-83, +15] dB: the whole-scene scan would cost a read of the scene for nothing.
    rows = range(0, grid.height, block) if check_needed else range(0)
    for row in rows:
        for col in range(0, grid.width, block):
            window = Window(row, col, min(block, grid.height - row), min(block, grid.width - col))
            values = read(window)
            check._add(values, np.isnan(values) | nodata_mask(values, nodata))
    return check


def validate_product(product: Product, nodata: float | None = None) -> BackscatterCheck:
    """:func:`check_backscatter`, raising ``ProductError`` (file, counts, values, the
    ``--nodata`` option) unless every pixel is backscatter or declared no data.

    ``nodata`` is also declared to the reader (as ``open_product(..., nodata=)`` does), so
    that the pixels the check let through as no data read as NaN afterwards; readers
    whose format marks no data itself (DN, CEOS, mosaic, T3) refuse it.
    """
    if nodata is not None:
        source = _source(product)
        if not hasattr(source, "declare_nodata"):
            raise ProductError(
                "--nodata applies to dB or linear-power rasters, not to this product "
                "(its format marks no data itself)",
                Path(source.path),
                "leave --nodata out",
            )
        source.declare_nodata(nodata)
    return check_backscatter(product).raise_if_bad()
