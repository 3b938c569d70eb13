"""What every product reader provides: a georeferenced raster of calibrated dB bands.

Readers differ in how they find pixels (CEOS records, GeoTIFF blocks, ...) and in the
formula that turns them into backscatter; everything downstream only sees ``Product``:
its grid (``RasterGrid``) and ``read_db(window)``, which returns float32 dB with NaN
where there is no data. Windows keep memory independent of scene size.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple, Protocol, runtime_checkable

import numpy as np
from affine import Affine


class Window(NamedTuple):
    """A pixel window: first row, first column, height, width."""

    row: int
    col: int
    height: int
    width: int


@dataclass(frozen=True)
class RasterGrid:
    """The pixel grid of a scene: size, CRS (EPSG code, PROJ or WKT string), affine transform.

    ``crs`` is ``None`` for rasters without a geocoding (e.g. slant-range L1.1, or a
    PolSARpro pixel grid): those get an identity transform and pixel-unit bounds.
    """

    height: int
    width: int
    crs: str | None
    transform: Affine = field(default_factory=Affine.identity)

    def window_transform(self, window: Window) -> Affine:
        return self.transform @ Affine.translation(window.col, window.row)

    def window_bounds(self, window: Window) -> tuple[float, float, float, float]:
        """(minx, miny, maxx, maxy) of the window in the grid's CRS.

        Taken over all four transformed corners: on a rotated grid (georeferenced L1.5,
        along track rather than map north) the corners of the first and last pixels alone
        would give a box that cuts off parts of the footprint.
        """
        t = self.window_transform(window)
        corners = [(0, 0), (window.width, 0), (window.width, window.height), (0, window.height)]
        xs, ys = zip(*(t @ corner for corner in corners), strict=True)
        return min(xs), min(ys), max(xs), max(ys)


@runtime_checkable
class Product(Protocol):
    """A readable scene: calibrated backscatter in dB, one band per polarisation."""

    path: Path
    grid: RasterGrid
    bands: tuple[str, ...]  # e.g. ("HH",) or ("HH", "HV"); "DB1".. for generic rasters
    quantity: str  # "sigma0", "gamma0" or "db" (already calibrated upstream)
    date: str | None  # ISO date of acquisition when known

    def read_db(self, window: Window) -> np.ndarray:
        """float32 array (bands, height, width) in dB; NaN where there is no data."""
        ...

    def describe(self) -> dict[str, Any]:
        """What was parsed, for ``alos2fm info`` (mode, level, date, size, CRS, CF, ...)."""
        ...
