"""Synthetic ALOS-2-like Level 2.1 scenes with a matching land-cover map (demo and tests).

What is written (every file says it is synthetic, in its tags and in ``README.txt``):

- ``IMG-HH-ALOS2999990010-221119-UBSR2.1GUD.tif``: a UTM (EPSG:32654 by default) uint16
  DN GeoTIFF, tiled and compressed, named like a real Stripmap Ultra-fine HH L2.1 product.
  Pixels outside a tilted swath footprint hold DN 0 (no data), as in ortho-rectified
  products whose swath is not north-up.
- ``LC_SYNTHETIC_v23.12.tif``: a land-cover map in EPSG:4326 at the HRLULC resolution
  (1/12000 degree), uint8 HRLULC v23.12 class ids (1-14) in smooth, blobby regions.

The radiometry follows the multiplicative speckle model: for a pixel of class ``k`` the
intensity is ``sigma0_k * G`` with ``G ~ Gamma(L, 1/L)`` (mean 1, L looks), and the DN is
chosen so that the documented calibration ``sigma0 [dB] = 10 log10(DN^2) + CF`` with
``CF = -83.0`` gives that intensity back (up to rounding DN to an integer). The mean
linear power of each class therefore equals ``10^(CLASS_MEAN_DB[k] / 10)``.

The scene is written window by window, so the size is limited by disk, not memory.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from alos2fm.data.classes import hrlulc_classes

CALIBRATION_FACTOR_DB = -83.0
PRODUCT_NAME = "IMG-HH-ALOS2999990010-221119-UBSR2.1GUD.tif"
LANDCOVER_NAME = "LC_SYNTHETIC_v23.12.tif"
ACQUISITION_DATE = "2022-11-19"
SYNTHETIC_NOTE = "SYNTHETIC data made by alos2fm synth: not a real ALOS-2 acquisition"

# Typical L-band HH sigma0 (dB) per HRLULC v23.12 class: dark smooth water, bright
# double-bounce built-up areas, volume-scattering forests in between.
CLASS_MEAN_DB: dict[int, float] = {
    1: -22.0,  # water bodies
    2: 0.0,  # built-up
    3: -14.0,  # paddy field (harvested in November)
    4: -11.0,  # cropland
    5: -13.0,  # grassland
    6: -8.0,  # deciduous broad-leaf forest
    7: -8.5,  # deciduous needle-leaf forest
    8: -7.5,  # evergreen broad-leaf forest
    9: -7.0,  # evergreen needle-leaf forest
    10: -17.0,  # bare land
    11: -8.0,  # bamboo forest
    12: -18.0,  # solar panel (tilted panels reflect the pulse away)
    13: -16.0,  # wetland
    14: -3.0,  # greenhouse
}

# Relative area of each class, roughly a Japanese landscape: forest first, then paddy,
# water and built-up; rare classes stay rare (as in the real map).
CLASS_AREA_WEIGHT: dict[int, float] = {
    1: 0.10,
    2: 0.10,
    3: 0.10,
    4: 0.06,
    5: 0.06,
    6: 0.14,
    7: 0.06,
    8: 0.05,
    9: 0.14,
    10: 0.04,
    11: 0.04,
    12: 0.03,
    13: 0.04,
    14: 0.04,
}

_LABEL_DEGREES = 1.0 / 12000.0  # HRLULC pixel size
_BLOCK = 512  # GeoTIFF tile size; write windows are multiples of it
_WINDOW = 1024
_SWATH_TILT_DEG = 10.0  # angle between the swath and north in the ortho-rectified grid


@dataclass(frozen=True)
class SyntheticScene:
    """Paths of one synthetic scene."""

    product: Path
    landcover: Path
    readme: Path


def write_synthetic_scene(
    out_dir: str | Path,
    size: int = 2048,
    seed: int = 0,
    *,
    pixel_size_m: float = 3.0,
    looks: float = 1.0,
    blob_size_m: float = 500.0,
    epsg: int = 32654,
    origin_xy: tuple[float, float] = (364000.0, 3930000.0),
) -> SyntheticScene:
    """Write a ``size`` x ``size`` synthetic L2.1 HH product and its land-cover map.

    ``origin_xy`` is the upper-left corner in the UTM CRS (default near 139.5 E, 35.5 N);
    ``looks`` is the number of looks L of the gamma speckle; ``blob_size_m`` the typical
    width of a land-cover region. The same arguments always give the same files.
    """
    import rasterio
    from rasterio.transform import from_origin
    from rasterio.warp import transform_bounds

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if size < 16:
        raise ValueError(f"size must be at least 16 pixels, got {size}")
    crs = f"EPSG:{epsg}"
    transform = from_origin(origin_xy[0], origin_xy[1], pixel_size_m, pixel_size_m)
    scene_bounds = rasterio.transform.array_bounds(size, size, transform)  # w, s, e, n order
    west, south, east, north = transform_bounds(
        crs, "EPSG:4326", scene_bounds[0], scene_bounds[1], scene_bounds[2], scene_bounds[3]
    )

    landcover = out_dir / LANDCOVER_NAME
    margin = 20 * _LABEL_DEGREES
    _write_landcover(
        landcover,
        (west - margin, south - margin, east + margin, north + margin),
        blob_degrees=blob_size_m / 111_000.0,
        seed=seed,
    )
    product = out_dir / PRODUCT_NAME
    _write_product(product, landcover, size, crs, transform, looks=looks, seed=seed)
    readme = out_dir / "README.txt"
    readme.write_text(_readme_text(size, seed, pixel_size_m, looks, crs))
    return SyntheticScene(product=product, landcover=landcover, readme=readme)


def _windows(height: int, width: int, step: int) -> Iterator[tuple[int, int, int, int]]:
    for row in range(0, height, step):
        for col in range(0, width, step):
            yield row, col, min(step, height - row), min(step, width - col)


def _write_landcover(
    path: Path, bounds: tuple[float, float, float, float], blob_degrees: float, seed: int
) -> None:
    """Blobby class map: argmax over classes of smooth random fields plus a log-area prior.

    Each class has a coarse grid of random values (one knot per ``blob_degrees``); cubic
    spline interpolation between knots gives smooth fields, so the argmax forms regions
    with rounded borders. Computed window by window from the small knot grids.
    """
    import rasterio
    from rasterio.transform import from_origin
    from scipy import ndimage

    west, south, east, north = bounds
    width = int(np.ceil((east - west) / _LABEL_DEGREES))
    height = int(np.ceil((north - south) / _LABEL_DEGREES))
    transform = from_origin(west, north, _LABEL_DEGREES, _LABEL_DEGREES)
    pixels_per_knot = max(blob_degrees / _LABEL_DEGREES, 2.0)

    classes = np.array(sorted(CLASS_MEAN_DB), dtype=np.uint8)
    prior = np.log([CLASS_AREA_WEIGHT[int(k)] for k in classes]).astype(np.float32)
    rng = np.random.default_rng([seed, 1])
    knots_shape = (int(height / pixels_per_knot) + 4, int(width / pixels_per_knot) + 4)
    knots = [ndimage.spline_filter(rng.standard_normal(knots_shape), order=3) for _ in classes]

    profile = _tiled_profile(height, width, "uint8", "EPSG:4326", transform)
    with rasterio.open(path, "w", nodata=0, **profile) as dst:
        dst.update_tags(SYNTHETIC="true", DESCRIPTION=SYNTHETIC_NOTE, CLASSES="HRLULC v23.12")
        dst.write_colormap(1, {c.id: (*c.color, 255) for c in hrlulc_classes("23.12")})
        for row, col, h, w in _windows(height, width, _WINDOW):
            rr, cc = np.meshgrid(
                (np.arange(row, row + h) + 0.5) / pixels_per_knot + 1.0,
                (np.arange(col, col + w) + 0.5) / pixels_per_knot + 1.0,
                indexing="ij",
            )
            scores = np.stack(
                [ndimage.map_coordinates(k, [rr, cc], order=3, prefilter=False) for k in knots]
            )
            scores += prior[:, None, None]
            labels = classes[np.argmax(scores, axis=0)]
            dst.write(labels, 1, window=rasterio.windows.Window(col, row, w, h))


def _write_product(
    path: Path,
    landcover: Path,
    size: int,
    crs: str,
    transform,
    *,
    looks: float,
    seed: int,
) -> None:
    """uint16 DN = sqrt(sigma0_linear * speckle / 10^(CF/10)), DN 0 outside the swath."""
    import rasterio
    from rasterio.enums import Resampling
    from rasterio.warp import reproject
    from rasterio.windows import Window

    mean_power = np.zeros(256, dtype=np.float64)  # lookup table: class id -> linear sigma0
    for k, db in CLASS_MEAN_DB.items():
        mean_power[k] = 10.0 ** (db / 10.0)
    dn2_per_power = 10.0 ** (-CALIBRATION_FACTOR_DB / 10.0)

    profile = _tiled_profile(size, size, "uint16", crs, transform)
    with (
        rasterio.open(landcover) as lc,
        rasterio.open(path, "w", nodata=0, **profile) as dst,
    ):
        dst.update_tags(
            SYNTHETIC="true",
            DESCRIPTION=SYNTHETIC_NOTE,
            CALIBRATION_FACTOR_DB=str(CALIBRATION_FACTOR_DB),
            CALIBRATION="sigma0_dB = 10*log10(DN^2) + CALIBRATION_FACTOR_DB",
            LOOKS=str(looks),
            SEED=str(seed),
            ACQUISITION_DATE=ACQUISITION_DATE,
            LANDCOVER=landcover.name,
        )
        dst.set_band_description(1, "HH")
        for row, col, h, w in _windows(size, size, _WINDOW):
            window = Window(col, row, w, h)
            labels = np.zeros((h, w), dtype=np.uint8)
            reproject(
                source=rasterio.band(lc, 1),
                destination=labels,
                dst_transform=rasterio.windows.transform(window, transform),
                dst_crs=crs,
                resampling=Resampling.nearest,
            )
            rng = np.random.default_rng([seed, 2, row, col])
            speckle = rng.standard_gamma(looks, size=(h, w)) / looks
            dn = np.sqrt(mean_power[labels] * speckle * dn2_per_power)
            # DN 0 means "no data": speckle troughs are clipped to 1, not to 0.
            dn = np.clip(np.rint(dn), 1, np.iinfo(np.uint16).max).astype(np.uint16)
            dn[~_inside_swath(row, col, h, w, size)] = 0
            dst.write(dn, 1, window=window)


def _inside_swath(row: int, col: int, height: int, width: int, size: int) -> np.ndarray:
    """Boolean (height, width): inside a square swath tilted by _SWATH_TILT_DEG.

    The half-side is chosen so that the tilted square just fits in the scene, which
    leaves a no-data border of about a quarter of the pixels.
    """
    theta = np.deg2rad(_SWATH_TILT_DEG)
    half = 0.5 * size / (np.cos(theta) + np.sin(theta))
    centre = 0.5 * size
    y = np.arange(row, row + height, dtype=np.float64)[:, None] + 0.5 - centre
    x = np.arange(col, col + width, dtype=np.float64)[None, :] + 0.5 - centre
    along = x * np.cos(theta) + y * np.sin(theta)
    across = -x * np.sin(theta) + y * np.cos(theta)
    return (np.abs(along) <= half) & (np.abs(across) <= half)


def _tiled_profile(height: int, width: int, dtype: str, crs: str, transform) -> dict:
    block = _BLOCK if min(height, width) >= _BLOCK else 16 * max(1, min(height, width) // 16)
    return {
        "driver": "GTiff",
        "height": height,
        "width": width,
        "count": 1,
        "dtype": dtype,
        "crs": crs,
        "transform": transform,
        "tiled": True,
        "blockxsize": block,
        "blockysize": block,
        "compress": "zstd",
        "predictor": 2,
    }


def _readme_text(size: int, seed: int, pixel_size_m: float, looks: float, crs: str) -> str:
    rows = "\n".join(f"  {k:2d}  {db:6.1f} dB" for k, db in sorted(CLASS_MEAN_DB.items()))
    return f"""SYNTHETIC DATA - NOT A REAL ALOS-2 ACQUISITION

Made by `alos2fm synth` for demos and tests.

{PRODUCT_NAME}
  ALOS-2-like Level 2.1 HH product: {size} x {size} px, {pixel_size_m} m pixels, {crs},
  uint16 DN, DN 0 = no data (outside a tilted swath footprint).
  Calibration: sigma0 [dB] = 10 log10(DN^2) {CALIBRATION_FACTOR_DB:+.1f}
  Speckle: multiplicative, Gamma(L, 1/L) with L = {looks} looks. Seed {seed}.

{LANDCOVER_NAME}
  Land-cover map in EPSG:4326 at 1/12000 degree, HRLULC v23.12 class ids 1-14.

Mean sigma0 per class (mean of linear power, shown in dB):
{rows}
"""


# --- "your own labels": a calibrated dB GeoTIFF and a binary water mask ----------------------

DB_NAME = "SIGMA0_SYNTHETIC_dB.tif"
WATER_MASK_NAME = "WATER_MASK_SYNTHETIC.tif"
WATER_CLASS = 1  # HRLULC water bodies
UNCERTAIN_CLASS = 13  # HRLULC wetland: marked invalid (-1) in the mask, as a hand-drawn mask
# leaves out what its author could not decide


@dataclass(frozen=True)
class OwnLabelsExample:
    """Paths of the "your own labels" example made from a synthetic scene."""

    image: Path
    mask: Path


def write_own_labels_example(scene: SyntheticScene) -> OwnLabelsExample:
    """From a synthetic scene, the inputs of a user who labels with their own mask: the
    product as float32 σ0 dB (NaN = no data, as any processor's dB GeoTIFF) and an int16
    water mask in EPSG:4326 (0 land, 1 water, -1 invalid) with nodata unset, so that only
    the class table says what -1 means."""
    import rasterio

    from alos2fm.products import open_product
    from alos2fm.products.base import Window as ProductWindow

    image = scene.product.parent / DB_NAME
    product = open_product(scene.product)
    grid = product.grid
    profile = _tiled_profile(grid.height, grid.width, "float32", grid.crs, grid.transform)
    with rasterio.open(image, "w", **profile, nodata=float("nan")) as dst:
        for row, col, height, width in _windows(grid.height, grid.width, _WINDOW):
            db = product.read_db(ProductWindow(row, col, height, width))[0]
            dst.write(db, 1, window=rasterio.windows.Window(col, row, width, height))
        dst.set_band_description(1, "HH")
        dst.update_tags(SYNTHETIC="true", DESCRIPTION=SYNTHETIC_NOTE, UNITS="sigma0 dB")

    mask = scene.product.parent / WATER_MASK_NAME
    with rasterio.open(scene.landcover) as src:
        classes = src.read(1)
        mask_profile = _tiled_profile(src.height, src.width, "int16", src.crs, src.transform)
    water = np.where(classes == WATER_CLASS, 1, 0).astype(np.int16)
    water[classes == UNCERTAIN_CLASS] = -1
    with rasterio.open(mask, "w", **mask_profile) as dst:
        dst.write(water, 1)
        dst.update_tags(
            SYNTHETIC="true", DESCRIPTION=SYNTHETIC_NOTE, VALUES="0 land, 1 water, -1 invalid"
        )
    return OwnLabelsExample(image=image, mask=mask)
