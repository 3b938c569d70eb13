"""Multilooking and speckle filtering of any ``Product``, window by window.

Both wrappers are Products themselves, so preparation and prediction use them like any
reader. They convert dB to linear power, average or filter there, and convert back.

* ``Multilooked`` changes the grid: ``looks = (rows, cols)`` source pixels per output
  pixel, partial blocks at the bottom/right edges dropped, pixel size scaled accordingly.
* ``SpeckleFiltered`` keeps the grid. It reads each window with a halo of ``size // 2``
  pixels (clipped at the scene edges, where the filter treats outside as missing), so a
  window's result equals the same pixels of the filtered whole scene.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from affine import Affine

from alos2fm.errors import ProductError
from alos2fm.products.base import Product, RasterGrid, Window
from alos2fm.products.calibration import (
    SpeckleFilter,
    db_to_power,
    multilook,
    power_to_db,
    speckle_filter,
)


class _Wrapper:
    """Passes the product's identity (path, bands, quantity, date) through."""

    def __init__(self, product: Product):
        self.product = product
        self.path = product.path
        self.bands = product.bands
        self.quantity = product.quantity
        self.date = product.date


class SelectedBands(_Wrapper):
    """Only ``bands`` of ``product``, in that order (e.g. HH from an HH+HV product)."""

    def __init__(self, product: Product, bands: Sequence[str]):
        super().__init__(product)
        missing = [b for b in bands if b not in product.bands]
        if missing or not bands:
            raise ProductError(
                f"band(s) {missing or list(bands)} not in this product (has {list(product.bands)})",
                product.path,
                hint="choose bands the product holds",
            )
        self.bands = tuple(bands)
        self._index = [product.bands.index(b) for b in bands]
        self.grid = product.grid

    def read_db(self, window: Window) -> np.ndarray:
        """float32 (len(bands), height, width) dB: the chosen bands of the product's read."""
        return self.product.read_db(window)[self._index]

    def describe(self) -> dict[str, Any]:
        return {**self.product.describe(), "bands": ", ".join(self.bands) + " (selected)"}


class Multilooked(_Wrapper):
    """``product`` averaged over ``looks = (rows, cols)`` pixels in linear power."""

    def __init__(self, product: Product, looks: tuple[int, int]):
        super().__init__(product)
        rows, cols = looks
        if rows < 1 or cols < 1:
            raise ValueError(f"looks must be >= 1, got {looks}")
        self.looks = (rows, cols)
        src = product.grid
        self.grid = RasterGrid(
            src.height // rows, src.width // cols, src.crs, src.transform @ Affine.scale(cols, rows)
        )

    def read_db(self, window: Window) -> np.ndarray:
        """float32 (bands, height, width) dB on the multilooked grid; NaN if a block is empty."""
        rows, cols = self.looks
        source = Window(
            window.row * rows, window.col * cols, window.height * rows, window.width * cols
        )
        power = db_to_power(self.product.read_db(source))
        return power_to_db(multilook(power, self.looks))

    def describe(self) -> dict[str, Any]:
        return {
            **self.product.describe(),
            "multilook": f"{self.looks[0]} x {self.looks[1]} (rows x cols), linear power",
            "size": f"{self.grid.width} x {self.grid.height} (pixels x lines) after multilook",
        }


class SpeckleFiltered(_Wrapper):
    """``product`` speckle-filtered (``boxcar`` or ``lee``) in linear power, same grid.

    ``looks`` is the equivalent number of looks used by the Lee filter.
    """

    def __init__(
        self, product: Product, method: SpeckleFilter = "lee", size: int = 5, looks: float = 1.0
    ):
        super().__init__(product)
        speckle_filter(np.ones((1, 1), np.float32), method, size, looks)  # validate arguments
        self.method, self.size, self.looks = method, size, looks
        self.grid = product.grid

    def read_db(self, window: Window) -> np.ndarray:
        """float32 (bands, height, width) filtered dB; NaN where the product has no data."""
        halo = self.size // 2
        top, left = max(0, window.row - halo), max(0, window.col - halo)
        bottom = min(self.grid.height, window.row + window.height + halo)
        right = min(self.grid.width, window.col + window.width + halo)
        padded = self.product.read_db(Window(top, left, bottom - top, right - left))
        filtered = speckle_filter(db_to_power(padded), self.method, self.size, self.looks)
        r, c = window.row - top, window.col - left
        return power_to_db(filtered[:, r : r + window.height, c : c + window.width])

    def describe(self) -> dict[str, Any]:
        return {
            **self.product.describe(),
            "speckle filter": f"{self.method} {self.size} x {self.size}, linear power"
            + (f", {self.looks:g} looks" if self.method == "lee" else ""),
        }


def process(
    product: Product,
    *,
    bands: Sequence[str] | None = None,
    looks: tuple[int, int] = (1, 1),
    speckle: SpeckleFilter | None = None,
    filter_size: int = 5,
) -> Product:
    """Select ``bands``, multilook (if ``looks`` > 1), then speckle-filter (if ``speckle``):
    the usual order.

    The Lee filter is told the looks it gets from multilooking (rows × cols; the product's
    own looks are not known in general, so a single-look input is assumed).
    """
    if bands is not None and tuple(bands) != tuple(product.bands):
        product = SelectedBands(product, bands)
    if looks != (1, 1):
        product = Multilooked(product, looks)
    if speckle is not None:
        product = SpeckleFiltered(product, speckle, filter_size, float(looks[0] * looks[1]))
    return product
