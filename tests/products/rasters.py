"""Tiny GeoTIFFs for product tests, written with rasterio in a test's tmp_path.

All are synthetic; they carry a real CRS (UTM zone 54 N, Japan) and transform so that
georeference handling is tested for real.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from affine import Affine

UTM54N = "EPSG:32654"
TRANSFORM = Affine(3.0, 0.0, 380000.0, 0.0, -3.0, 3950000.0)  # 3 m pixels


def write_tif(
    path: Path,
    data: np.ndarray,
    *,
    crs: str | None = UTM54N,
    transform: Affine = TRANSFORM,
    nodata: float | None = None,
    descriptions: tuple[str, ...] | None = None,
) -> Path:
    """Write (bands, H, W) or (H, W) ``data`` as a tiled GeoTIFF (16 x 16 blocks)."""
    import rasterio

    data = data[None] if data.ndim == 2 else data
    profile = dict(
        driver="GTiff",
        count=data.shape[0],
        height=data.shape[1],
        width=data.shape[2],
        dtype=data.dtype,
        crs=crs,
        transform=transform,
        nodata=nodata,
        tiled=True,
        blockxsize=16,
        blockysize=16,
    )
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data)
        for i, text in enumerate(descriptions or ()):
            dst.set_band_description(i + 1, text)
    return path


def dn_scene(height: int = 40, width: int = 48, seed: int = 0) -> np.ndarray:
    """uint16 DN with a no-data (0) border and a few hand-checkable values."""
    rng = np.random.default_rng(seed)
    dn = rng.integers(500, 20000, (height, width)).astype(np.uint16)
    dn[:, :3] = 0
    dn[5, 10:12] = [14125, 1413]
    return dn
