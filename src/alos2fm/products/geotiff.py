"""GeoTIFF products: ALOS-2 L1.5/L2.1 DN files, PALSAR mosaic tiles, rasters already in dB.

* ``DnGeoTiffProduct``: JAXA GeoTIFF products (``IMG-HH-ALOS2…-UBSR2.1GUD.tif``), one
  uint16 amplitude DN band per file, DN 0 = no data; sigma0 [dB] = 10·log10(DN²) + CF.
* ``MosaicTileProduct``: PALSAR/PALSAR-2 25 m mosaic tiles (``N32E119_2022_sl_HH_F02DAR``),
  gamma0 [dB] = 10·log10(DN²) − 83, with the tile's ``_mask_`` layer applied: no data (0),
  layover (100) and shadow (150) become NaN; water (50) and land (255) are kept.
* ``DbRasterProduct``: any GeoTIFF already calibrated (other sensors, one or more bands),
  in dB or, with ``kind="power"``, in linear power; nodata from the file's metadata and
  from ``nodata=`` (``--nodata``). ``alos2fm.products.validation`` checks its raw values.

Every read is a rasterio window: memory follows the window, never the scene. Datasets
are opened lazily once per process and reopened after a fork, so a product object can
be handed to worker processes.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any, Literal

import numpy as np

from alos2fm.errors import ProductError
from alos2fm.products.base import RasterGrid, Window
from alos2fm.products.calibration import DEFAULT_CF_DB, dn_to_db, power_to_db
from alos2fm.products.naming import parse_mosaic_name, parse_product_name

# Mosaic mask codes (JAXA, via DE Africa docs): which pixels hold usable backscatter.
MASK_NO_DATA, MASK_WATER, MASK_LAYOVER, MASK_SHADOW, MASK_LAND = 0, 50, 100, 150, 255
MASK_INVALID = (MASK_NO_DATA, MASK_LAYOVER, MASK_SHADOW)

# Plausible range of backscatter in dB; used to tell dB rasters from DN or linear power.
_DB_RANGE = (-80.0, 60.0)


class _Rasters:
    """rasterio datasets opened on first use in each process (GDAL handles do not fork)."""

    def __init__(self, drivers: tuple[str, ...]):
        self.drivers = drivers
        self._open: dict[Path, Any] = {}
        self._pid = os.getpid()

    def __getitem__(self, path: Path) -> Any:
        if self._pid != os.getpid():
            self._open, self._pid = {}, os.getpid()
        if path not in self._open:
            self._open[path] = open_raster(path, self.drivers)
        return self._open[path]

    def __getstate__(self) -> dict[str, Any]:
        return {"drivers": self.drivers, "_open": {}, "_pid": -1}

    def close(self) -> None:
        for src in self._open.values():
            src.close()
        self._open = {}

    def read(self, path: Path, window: Window, band: int = 1) -> np.ndarray:
        """One band of ``window`` as stored (dtype of the file); ProductError if unreadable."""
        from rasterio.errors import RasterioError
        from rasterio.windows import Window as RioWindow

        rio_window = RioWindow(window.col, window.row, window.width, window.height)
        try:
            return self[path].read(band, window=rio_window)
        except RasterioError as err:
            raise ProductError(f"cannot read pixels ({err})", path, "the file is corrupt") from err


def open_raster(path: Path, drivers: tuple[str, ...] = ("GTiff",)) -> Any:
    """Open ``path`` with rasterio, as one of ``drivers``, and probe its last pixel.

    A TIFF cut short usually keeps a valid header: reading the last block catches it now
    rather than halfway through a dataset. Raises ProductError naming the file.
    """
    import rasterio
    from rasterio.errors import RasterioError
    from rasterio.windows import Window as RioWindow

    if not path.is_file():
        raise ProductError("no such file", path)
    try:
        src = rasterio.open(path)
    except RasterioError as err:
        raise ProductError(
            f"not a readable raster ({err})",
            path,
            "expected a CEOS product, an ALOS-2 or mosaic GeoTIFF, or a GeoTIFF in dB; "
            "is the file corrupt?",
        ) from err
    if src.driver not in drivers:
        src.close()
        raise ProductError(f"a {src.driver} file, not a GeoTIFF", path, "convert it to GeoTIFF")
    try:
        src.read(window=RioWindow(src.width - 1, src.height - 1, 1, 1))
    except RasterioError as err:
        src.close()
        raise ProductError(f"pixels cannot be read ({err})", path, "truncated or corrupt") from err
    return src


def _grid(src: Any) -> RasterGrid:
    crs = src.crs.to_string() if src.crs else None
    return RasterGrid(src.height, src.width, crs, src.transform)


def _describe_grid(grid: RasterGrid, src: Any) -> dict[str, Any]:
    t = grid.transform
    # Lengths of the column and row steps, so that rotated grids report their true size.
    return {
        "size": f"{grid.width} x {grid.height} (pixels x lines)",
        "crs": grid.crs or "none",
        "pixel size": f"{np.hypot(t.a, t.d):g} x {np.hypot(t.b, t.e):g}"
        + (" m" if src.crs and src.crs.is_projected else ""),
        "transform": tuple(round(v, 6) for v in t[:6]),
        "bounds": tuple(
            round(v, 6) for v in grid.window_bounds(Window(0, 0, grid.height, grid.width))
        ),
        "dtype": src.dtypes[0],
    }


def _check_same_grid(paths: list[Path], rasters: _Rasters) -> RasterGrid:
    grid = _grid(rasters[paths[0]])
    for path in paths[1:]:
        other = _grid(rasters[path])
        if other != grid:
            raise ProductError(f"grid differs from {paths[0].name}", path, "bands must align")
    return grid


class DnGeoTiffProduct:
    """ALOS-2 L1.5/L2.1 GeoTIFF products: uint16 amplitude DN, one polarisation per file.

    ``polarisations`` (e.g. ``("HH", "HV")``) gathers the sibling files of the same
    product (``IMG-HV-…`` beside ``IMG-HH-…``); by default only ``path``'s own. Files
    without a JAXA name need ``polarisation=``. ``calibration_factor`` is CF in dB.
    """

    # Integer DN calibrated here: no fill value, no infinity, nothing to scan for them.
    calibrated_from_dn = True

    quantity = "sigma0"

    def __init__(
        self,
        path: str | Path,
        *,
        polarisations: tuple[str, ...] | None = None,
        polarisation: str | None = None,
        calibration_factor: float = DEFAULT_CF_DB,
    ):
        self.path = Path(path)
        try:
            self.name = parse_product_name(self.path)
        except ProductError:
            self.name = None
        if polarisation is None and polarisations is not None and len(polarisations) == 1:
            polarisation = polarisations[0]  # an unnamed file read as the one band asked for
        own = polarisation or (self.name.polarisation if self.name else None)
        if own is None:
            raise ProductError(
                "the file name does not say the polarisation"
                + ("" if self.name else " (not a JAXA name IMG-HH-ALOS2…)"),
                self.path,
                "give it with --bands HH (or the right one; polarisation= in Python), "
                "or restore the JAXA file name",
            )
        self.bands = tuple(polarisations or (own,))
        self.paths = [self._polarisation_path(pol, own) for pol in self.bands]
        self.calibration_factor = float(calibration_factor)
        self.date = self.name.date if self.name else None
        self._rasters = _Rasters(("GTiff",))
        for p in self.paths:
            src = self._rasters[p]
            if src.count != 1 or src.dtypes[0] != "uint16":
                raise ProductError(
                    f"{src.count} band(s) of {src.dtypes[0]}, expected 1 band of uint16 DN",
                    p,
                    "not an ALOS-2 DN product; use --kind db (or --kind power) for "
                    "calibrated rasters",
                )
        self.grid = _check_same_grid(self.paths, self._rasters)

    def _polarisation_path(self, pol: str, own: str) -> Path:
        if pol == own:
            return self.path
        if self.name is None or not self.path.name.startswith(f"IMG-{own}-"):
            raise ProductError(f"cannot find the {pol} file without a JAXA name", self.path)
        sibling = self.path.with_name(self.path.name.replace(f"IMG-{own}-", f"IMG-{pol}-", 1))
        if not sibling.exists():
            raise ProductError(
                f"polarisation {pol} requested but {sibling.name} is missing", self.path.parent
            )
        return sibling

    def read_db(self, window: Window) -> np.ndarray:
        """float32 (bands, height, width) sigma0 in dB; NaN where DN = 0 (no data)."""
        return self._read_db(window, np.float32)

    def read_db_float16(self, window: Window) -> np.ndarray:
        """``read_db`` rounded to float16 (the patch store's dtype), looked up per DN."""
        return self._read_db(window, np.float16)

    def _read_db(self, window: Window, dtype: type[np.floating]) -> np.ndarray:
        out = np.empty((len(self.paths), window.height, window.width), dtype)
        for i, path in enumerate(self.paths):
            dn_to_db(self._rasters.read(path, window), self.calibration_factor, out=out[i])
        return out

    def close(self) -> None:
        """Release the open files (reading again reopens them)."""
        self._rasters.close()

    def describe(self) -> dict[str, Any]:
        per_file = ("file_kind", "polarisation", "extension")
        fields = {
            k: v for k, v in (self.name.as_dict() if self.name else {}).items() if k not in per_file
        }
        return {
            "format": f"ALOS-2 GeoTIFF level {fields.get('level', '?')} (uint16 DN)",
            "path": str(self.path),
            **fields,
            "mode description": self.name.mode_description if self.name else None,
            "bands": list(self.bands),
            **_describe_grid(self.grid, self._rasters[self.path]),
            "no data": "DN 0",
            "quantity": "sigma0 (dB)",
            "calibration factor": f"{self.calibration_factor} dB",
        }


class MosaicTileProduct:
    """A PALSAR/PALSAR-2 25 m mosaic tile: gamma0 in dB with the tile's mask applied.

    ``polarisations`` gathers ``_sl_HV_`` beside ``_sl_HH_`` (default: ``path``'s own).
    The ``_mask_`` layer of the same tile and release is used when present (``use_mask``);
    without it only DN 0 counts as no data, and a warning says so.
    """

    # Integer DN calibrated here: no fill value, no infinity, nothing to scan for them.
    calibrated_from_dn = True

    quantity = "gamma0"
    date = None  # tiles mix acquisitions; the per-pixel ``_date_`` layer is not read

    def __init__(
        self,
        path: str | Path,
        *,
        polarisations: tuple[str, ...] | None = None,
        use_mask: bool = True,
    ):
        self.path = Path(path)
        self.name = parse_mosaic_name(self.path)
        if self.name.polarisation is None:
            raise ProductError(
                f"a {self.name.layer} layer, not backscatter",
                self.path,
                "open the _sl_HH_ or _sl_HV_ file of the tile",
            )
        self.bands = tuple(polarisations or (self.name.polarisation,))
        self.paths = [self.path.with_name(self.name.sibling(f"sl_{pol}")) for pol in self.bands]
        mask = self.path.with_name(self.name.sibling("mask"))
        self.mask_path = mask if use_mask and mask.exists() else None
        if use_mask and self.mask_path is None:
            warnings.warn(
                f"{self.path}: no mask layer {mask.name}; layover and shadow stay in", stacklevel=2
            )
        drivers = ("GTiff", "ENVI")  # older releases are ENVI files without extension
        all_paths = self.paths + ([self.mask_path] if self.mask_path else [])
        for p in all_paths:
            if not p.exists():
                raise ProductError(f"mosaic layer {p.name} is missing", p.parent)
        self._rasters = _Rasters(drivers)
        for p in self.paths:
            src = self._rasters[p]
            if src.count != 1 or src.dtypes[0] != "uint16":
                raise ProductError(f"{src.count} band(s) of {src.dtypes[0]}, expected uint16 DN", p)
        self.grid = _check_same_grid(all_paths, self._rasters)

    def read_db(self, window: Window) -> np.ndarray:
        """float32 (bands, height, width) gamma0 in dB; NaN for no data, layover, shadow."""
        return self._read_db(window, np.float32)

    def read_db_float16(self, window: Window) -> np.ndarray:
        """``read_db`` rounded to float16 (the patch store's dtype), looked up per DN."""
        return self._read_db(window, np.float16)

    def _read_db(self, window: Window, dtype: type[np.floating]) -> np.ndarray:
        out = np.empty((len(self.paths), window.height, window.width), dtype)
        for i, path in enumerate(self.paths):
            dn_to_db(self._rasters.read(path, window), DEFAULT_CF_DB, out=out[i])
        if self.mask_path is not None:
            mask = self._rasters.read(self.mask_path, window)
            out[:, np.isin(mask, MASK_INVALID)] = np.nan
        return out

    def close(self) -> None:
        """Release the open files (reading again reopens them)."""
        self._rasters.close()

    def describe(self) -> dict[str, Any]:
        return {
            "format": "PALSAR/PALSAR-2 25 m mosaic tile (uint16 DN)",
            "path": str(self.path),
            **self.name.as_dict(),
            "bands": list(self.bands),
            **_describe_grid(self.grid, self._rasters[self.paths[0]]),
            "quantity": "gamma0 (dB), 10·log10(DN²) − 83",
            "mask": (
                f"{self.mask_path.name} (no data, layover, shadow -> NaN; water kept)"
                if self.mask_path
                else "none"
            ),
        }


class DbRasterProduct:
    """Any GeoTIFF already calibrated: dB (``kind="db"``) or linear power (``"power"``).

    All bands are read; names come from the band descriptions when every band has a
    distinct one (e.g. ``VV``, ``VH``), else ``DB1``, ``DB2``, … The nodata value of each
    band, ``nodata`` (a value the user declares, in the file's unit, for every band) and
    NaN mark no data. With ``check`` a decimated sample must look like ``kind``: a DN
    product, an RGB image or linear power handed as dB is refused. Fill values too rare
    for a sample are found by ``alos2fm.products.validation`` on ``read_raw``.
    """

    quantity = "db"
    date = None

    def __init__(
        self,
        path: str | Path,
        *,
        kind: Literal["db", "power"] = "db",
        check: bool = True,
        nodata: float | None = None,
    ):
        if kind not in ("db", "power"):
            raise ProductError(f"unknown raster kind {kind!r}", path, "use --kind db or power")
        self.path = Path(path)
        self.kind = kind
        self._rasters = _Rasters(("GTiff",))
        src = self._rasters[self.path]
        self.grid = _grid(src)
        self.nodata = tuple(src.nodatavals)
        self.user_nodata = None if nodata is None else float(nodata)
        names = tuple(d.strip() if d else "" for d in src.descriptions)
        distinct = all(names) and len(set(names)) == len(names)
        self.bands = names if distinct else tuple(f"DB{i + 1}" for i in range(src.count))
        if check:
            _check_calibrated(src, self.path, kind, self.user_nodata)

    @property
    def raw_unit(self) -> str:
        """The unit of ``read_raw``: ``"dB"`` or ``"linear power"``."""
        return "linear power" if self.kind == "power" else "dB"

    def declare_nodata(self, nodata: float | None) -> None:
        """Mask ``nodata`` (in the file's unit) from now on, as ``nodata=`` does."""
        self.user_nodata = None if nodata is None else float(nodata)

    def read_raw(self, window: Window) -> np.ndarray:
        """float32 (bands, height, width) as stored (dB or linear power); NaN at the
        file's nodata, at ``nodata=`` and where the file has NaN."""
        from alos2fm.products.validation import nodata_mask

        out = np.empty((len(self.bands), window.height, window.width), np.float32)
        for i, nodata in enumerate(self.nodata):
            values = self._rasters.read(self.path, window, band=i + 1)
            out[i] = values  # float32 as every reader returns (float64 files are rounded)
            for declared in (nodata, self.user_nodata):
                if declared is not None:
                    # Compared in the file's own dtype: a float64 fill stays exact.
                    out[i][nodata_mask(values, declared)] = np.nan
        return out

    def read_db(self, window: Window) -> np.ndarray:
        """float32 (bands, height, width) in dB; NaN at nodata and where the file has NaN."""
        values = self.read_raw(window)
        return power_to_db(values) if self.kind == "power" else values

    def close(self) -> None:
        """Release the open files (reading again reopens them)."""
        self._rasters.close()

    def describe(self) -> dict[str, Any]:
        src = self._rasters[self.path]
        return {
            "format": "GeoTIFF already calibrated"
            + (" (dB)" if self.kind == "db" else " (linear power)"),
            "path": str(self.path),
            "bands": list(self.bands),
            **_describe_grid(self.grid, src),
            "no data": [None if v is None else float(v) for v in self.nodata],
            **({} if self.user_nodata is None else {"no data (--nodata)": self.user_nodata}),
            "quantity": "backscatter (dB)" if self.kind == "db" else "linear power -> dB",
        }


def _check_calibrated(src: Any, path: Path, kind: str, nodata: float | None = None) -> None:
    """Refuse rasters whose values cannot be ``kind`` (dB or linear power).

    Looks at a decimated sample (at most 256 x 256 per band, read through overviews or
    nearest-neighbour decimation, so memory stays small). Rare fill values escape a
    sample: ``alos2fm.products.validation`` reads every pixel.
    """
    from alos2fm.products.validation import nodata_mask

    if not np.issubdtype(np.dtype(src.dtypes[0]), np.floating):
        raise ProductError(
            f"{src.dtypes[0]} pixels: not calibrated backscatter",
            path,
            "ALOS-2 DN files must keep their JAXA name (IMG-HH-ALOS2…tif); use --kind dn "
            "(with --bands HH or the file's polarisation) for an unnamed DN product",
        )
    shape = (src.count, min(src.height, 256), min(src.width, 256))
    sample = src.read(out_shape=shape, masked=True).astype(np.float64).filled(np.nan)
    sample[nodata_mask(sample, nodata)] = np.nan
    values = sample[np.isfinite(sample)]
    if values.size == 0:
        raise ProductError("no valid pixels in a sample of the raster", path, "all no data?")
    low, high = np.percentile(values, [1, 99])
    if kind == "power":
        if low < 0:
            raise ProductError(
                f"negative values ({low:.3g}): not linear power",
                path,
                "use --kind db if it is in dB",
            )
        return
    if low >= 0 and high <= 10:
        raise ProductError(
            f"values in [{low:.3g}, {high:.3g}] look like linear power, not dB",
            path,
            "use --kind power to convert it to dB, or --kind db to read it as is",
        )
    if low < _DB_RANGE[0] or high > _DB_RANGE[1]:
        raise ProductError(
            f"values in [{low:.3g}, {high:.3g}] (1st-99th percentile) are not backscatter in dB",
            path,
            "use --kind db to read it anyway",
        )
