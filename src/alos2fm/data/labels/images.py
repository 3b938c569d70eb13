"""Label images on the product's own pixel grid (``PixelLabels``): PolSARpro / ENVI
ground truth, PNG, ``.npy``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from alos2fm.data.classes import (
    DEFAULT_CLASSES,
    NODATA_CODE,
    ClassTable,
    load_class_table,
)
from alos2fm.data.labels.base import (
    FILE_NODATA,
    LabelSource,
    Nodata,
    Resampling,
    UnknownValues,
    _open_unreferenced,
)
from alos2fm.data.labels.fit import _SAMPLE_SIDE, _counts, _sample_raster, effective_nodata
from alos2fm.data.labels.rasters import _CLASS_TYPES, _check_resampling
from alos2fm.errors import DataError
from alos2fm.products.base import RasterGrid, Window


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
