"""Digital numbers to backscatter in dB, and the operations that must happen in linear power.

JAXA's formulas (``ALOS2_FACTS.md`` §2, ALOS-2 cal/val 2014):

* L1.5 / L2.1 / mosaic:  sigma0 (or gamma0) [dB] = 10·log10(DN²) + CF,  CF = −83.0 dB;
* L1.1 SLC:              sigma0 [dB] = 10·log10(I² + Q²) + CF − A,     A = 32.0 dB.

DN = 0 (or I = Q = 0) marks no data and becomes NaN before the log. Averaging of any
kind (multilooking, speckle filters) is done on linear power ``10^(dB/10)``, never on dB:
the mean of logarithms underestimates the mean power (by ~2.5 dB for single-look speckle).
All functions accept arrays of any leading shape and work on the last two axes (rows,
columns); NaN is no data everywhere.
"""

from __future__ import annotations

import functools
from typing import Literal

import numpy as np
import numpy.typing as npt

DEFAULT_CF_DB = -83.0
SLC_ADJUSTMENT_DB = 32.0  # "A" of the L1.1 formula


def dn_to_db(
    dn: np.ndarray, cf: float = DEFAULT_CF_DB, out: np.ndarray | None = None
) -> np.ndarray:
    """Amplitude DN (uint16, L1.5/L2.1/mosaic) -> float32 dB = 10·log10(DN²) + CF; DN 0 -> NaN.

    ``out``: an array of ``dn``'s shape to fill (and return) instead of a new float32
    one: float32, or float16 for the float32 values rounded to float16 (as the patch
    store keeps them, without a float32 array in between).
    """
    dn = np.asarray(dn)
    db = np.empty(dn.shape, np.float32) if out is None else out
    if dn.dtype.kind == "u" and dn.dtype.itemsize <= 2:
        # A table of all 65536 values: one lookup per pixel costs less than the logarithm
        # and, for float16, the float32 -> float16 conversion (both emulated per pixel).
        # "clip" skips numpy's index check (no uint16 is out of the table's range).
        return np.take(dn_table(cf, db.dtype), dn, out=db, mode="clip")
    if db.dtype == np.float32:
        return _dn_to_db(dn, cf, db)
    db[...] = _dn_to_db(dn, cf, np.empty(dn.shape, np.float32))
    return db


@functools.lru_cache(maxsize=16)
def dn_table(cf: float = DEFAULT_CF_DB, dtype: npt.DTypeLike = np.float32) -> np.ndarray:
    """The dB of every uint16 DN (index = DN) as :func:`dn_to_db` gives it, float32 or
    those values rounded to ``dtype`` (float16); cached and read-only."""
    table = _dn_to_db(np.arange(2**16, dtype=np.uint16), cf, np.empty(2**16, np.float32))
    table = table.astype(dtype, copy=False)
    table.flags.writeable = False
    return table


def _dn_to_db(dn: np.ndarray, cf: float, db: np.ndarray) -> np.ndarray:
    """10·log10(DN²) + CF of ``dn`` in float32, computed into ``db``; DN 0 -> NaN."""
    # Computed in place in float32: each temporary array would cost a pass over memory
    # as long as the arithmetic itself.
    np.copyto(db, dn, casting="unsafe")
    with np.errstate(divide="ignore", invalid="ignore"):  # DN 0 -> -inf, DN < 0 -> NaN
        np.log10(db, out=db)
    # 20·log10(DN) is 10·log10(DN²) without forming DN² (up to 4.3e9 for uint16).
    db *= np.float32(20.0)
    db += np.float32(cf)
    np.copyto(db, np.float32(np.nan), where=db == -np.inf)  # DN 0: no data
    return db


def slc_to_db(samples: np.ndarray, cf: float = DEFAULT_CF_DB) -> np.ndarray:
    """Complex L1.1 samples (I + jQ) -> float32 dB = 10·log10(I² + Q²) + CF − 32; 0 -> NaN."""
    samples = np.asarray(samples)
    power = samples.real.astype(np.float32) ** 2 + samples.imag.astype(np.float32) ** 2
    return power_to_db(power, offset_db=cf - SLC_ADJUSTMENT_DB)


def power_to_db(power: np.ndarray, offset_db: float = 0.0) -> np.ndarray:
    """Linear power -> float32 dB (10·log10(power) + offset); power <= 0 or NaN -> NaN."""
    power = np.asarray(power, dtype=np.float32)
    positive = np.where(power > 0, power, np.float32(np.nan))
    return (10.0 * np.log10(positive) + np.float32(offset_db)).astype(np.float32)


def db_to_power(db: np.ndarray) -> np.ndarray:
    """dB -> float32 linear power 10^(dB/10); NaN stays NaN."""
    return np.power(np.float32(10.0), np.asarray(db, dtype=np.float32) / np.float32(10.0))


def multilook(power: np.ndarray, looks: tuple[int, int]) -> np.ndarray:
    """Average linear power over blocks of ``looks = (rows, cols)`` pixels, NaN excluded.

    Shape (..., H, W) -> (..., H // rows, W // cols); partial blocks at the bottom and right
    edges are dropped so that every output pixel covers the same ground area. A block with
    no valid pixel is NaN. Input and output are linear power (not dB).
    """
    rows, cols = looks
    if rows < 1 or cols < 1:
        raise ValueError(f"looks must be >= 1, got {looks}")
    power = np.asarray(power, dtype=np.float32)
    height, width = power.shape[-2] // rows, power.shape[-1] // cols
    blocks = power[..., : height * rows, : width * cols].reshape(
        *power.shape[:-2], height, rows, width, cols
    )
    valid = np.isfinite(blocks)
    total = np.where(valid, blocks, 0.0).sum(axis=(-3, -1), dtype=np.float64)
    count = valid.sum(axis=(-3, -1))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, total / count, np.nan).astype(np.float32)


def boxcar(power: np.ndarray, size: int = 5) -> np.ndarray:
    """Local mean of linear power over a ``size`` x ``size`` window, NaN excluded.

    Pixels outside the array count as missing (not as zeros or mirrored values), so a
    window cut from a larger image with a halo of ``size // 2`` gives the same result as
    filtering the whole image. NaN input pixels stay NaN. Shape (..., H, W) is kept.
    """
    mean, _ = _local_moments(power, size, with_variance=False)
    return np.where(np.isfinite(power), mean, np.nan).astype(np.float32)


def lee(power: np.ndarray, size: int = 5, looks: float = 1.0) -> np.ndarray:
    """Lee (1980) filter for multiplicative speckle on linear power, NaN excluded.

    With local mean m and variance v of the observed intensity z over the window, and the
    speckle's squared coefficient of variation Cu² = 1 / looks (intensity, ``looks`` =
    equivalent number of looks), the estimate is m + k·(z − m), where
    k = clip((v − m²·Cu²) / (v·(1 + Cu²)), 0, 1): homogeneous areas (v ≈ m²·Cu²) get the
    local mean, edges and point targets (v ≫ m²·Cu²) keep their value. Borders and NaN are
    handled as in :func:`boxcar`. Shape (..., H, W) is kept.
    """
    if looks <= 0:
        raise ValueError(f"looks must be > 0, got {looks}")
    power = np.asarray(power, dtype=np.float32)
    mean, variance = _local_moments(power, size, with_variance=True)
    cu2 = 1.0 / looks
    with np.errstate(invalid="ignore", divide="ignore"):
        weight = (variance - mean**2 * cu2) / (variance * (1.0 + cu2))
    weight = np.clip(np.nan_to_num(weight, nan=0.0), 0.0, 1.0)
    filtered = mean + weight * (power - mean)
    return np.where(np.isfinite(power), filtered, np.nan).astype(np.float32)


SpeckleFilter = Literal["boxcar", "lee"]


def speckle_filter(
    power: np.ndarray, method: SpeckleFilter, size: int = 5, looks: float = 1.0
) -> np.ndarray:
    """Dispatch to :func:`boxcar` or :func:`lee` (linear power in, linear power out)."""
    if method == "boxcar":
        return boxcar(power, size)
    if method == "lee":
        return lee(power, size, looks)
    raise ValueError(f"unknown speckle filter {method!r}: use 'boxcar' or 'lee'")


def _local_moments(
    power: np.ndarray, size: int, *, with_variance: bool
) -> tuple[np.ndarray, np.ndarray | None]:
    """NaN-aware local mean (and variance) over size x size windows of the last two axes.

    Sums run in float64 so that a window and the whole image agree to float32 precision
    even though scipy's running sums start at different places.
    """
    from scipy.ndimage import uniform_filter

    if size < 1 or size % 2 == 0:
        raise ValueError(f"filter size must be odd and >= 1, got {size}")
    power = np.asarray(power, dtype=np.float64)
    valid = np.isfinite(power)
    values = np.where(valid, power, 0.0)
    # Filter only the last two axes; mode="constant" (cval 0) counts outside as missing.
    window = (1,) * (power.ndim - 2) + (size, size)
    count = uniform_filter(valid.astype(np.float64), window, mode="constant")
    # A window with no valid pixel has count 0 up to rounding: make it exactly 0 (-> NaN).
    count[count < 0.5 / size**2] = 0.0
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = uniform_filter(values, window, mode="constant") / count
        if not with_variance:
            return mean, None
        mean_sq = uniform_filter(values**2, window, mode="constant") / count
        # Empty windows hold inf/NaN (count 0): their variance is NaN, as it should be.
        variance = np.maximum(mean_sq - mean**2, 0.0)
    return mean, variance
