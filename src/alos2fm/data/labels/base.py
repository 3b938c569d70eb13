"""What every label source is: the ``LabelSource`` interface and the options' types."""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal

import numpy as np

from alos2fm.data.classes import (
    ClassTable,
)
from alos2fm.products.base import RasterGrid, Window

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


@contextmanager
def _open_unreferenced(path: Path) -> Iterator[Any]:
    """rasterio.open for images that have no georeference on purpose (no warning)."""
    import rasterio
    from rasterio.errors import NotGeoreferencedWarning

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        with rasterio.open(path) as src:
            yield src
