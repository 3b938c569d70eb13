"""Readers for ALOS-2 products and other SAR rasters, and DN -> dB calibration.

``open_product(path)`` picks the reader from the name and the content:

=====================================================  =============================
path                                                   reader (``kind=``)
=====================================================  =============================
CEOS folder, ``VOL-``/``LED-``/``TRL-``/``IMG-`` file  ``CeosProduct`` (``ceos``)
``IMG-HH-ALOS2…-UBSR2.1GUD.tif``                       ``DnGeoTiffProduct`` (``dn``)
``N32E119_2022_sl_HH_F02DAR.tif``                      ``MosaicTileProduct`` (``mosaic``)
PolSARpro T3 folder (``T11.bin`` …)                    ``T3Product`` (``t3``)
any other GeoTIFF                                      ``DbRasterProduct`` (``db``/``power``)
=====================================================  =============================

Every reader implements :class:`~alos2fm.products.base.Product`: a grid and
``read_db(window)`` giving float32 dB with NaN for no data.

ALOS-2 products and mosaic tiles come one file per polarisation
(``IMG-HH-…``/``IMG-HV-…``, ``_sl_HH_``/``_sl_HV_``); ``open_product(path, bands=[…])``
reads the sibling files of ``path`` as one multi-band scene.

``open_product(path, nodata=VALUE)`` (``--nodata``) declares a fill value of a dB or
linear-power raster that its file does not tag; :func:`validate_product` (from
``alos2fm.products.validation``) reads every pixel and refuses fill values, infinities
and values outside the physical range that nothing declared.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

from alos2fm.errors import ProductError
from alos2fm.products.base import Product, RasterGrid, Window
from alos2fm.products.naming import is_mosaic_name, is_product_name, parse_product_name
from alos2fm.products.validation import BackscatterCheck, check_backscatter, validate_product

ProductKind = Literal["ceos", "dn", "mosaic", "t3", "db", "power"]
KINDS: tuple[str, ...] = ("ceos", "dn", "mosaic", "t3", "db", "power")

__all__ = [
    "KINDS",
    "BackscatterCheck",
    "Product",
    "RasterGrid",
    "Window",
    "check_backscatter",
    "describe_product",
    "open_product",
    "validate_product",
]


# The reader option that takes the bands to read, for readers that can choose them: one
# file per polarisation (CEOS, DN GeoTIFF, mosaic) or bands derived from T3 elements.
_BANDS_OPTION = {
    "ceos": "polarisations",
    "dn": "polarisations",
    "mosaic": "polarisations",
    "t3": "bands",
}


def open_product(
    path: str | Path,
    *,
    kind: ProductKind | None = None,
    bands: Sequence[str] | None = None,
    nodata: float | None = None,
    **options: Any,
) -> Product:
    """Open a product for reading calibrated dB; ``options`` go to the reader.

    ``kind`` skips detection (and, for ``db``/``power``, the check that the values look
    like that quantity). ``bands`` (e.g. ``["HH", "HV"]``) are the polarisations to read
    where the reader chooses them: for products stored one file per polarisation the
    sibling files of ``path`` are opened with it, in that order (a missing one raises
    ``ProductError`` naming it); T3 folders derive just those. Rasters that hold all
    their bands in one file are opened whole, and choosing among their bands is left to
    ``processing.process`` (or the caller). Raises ``ProductError`` naming the file when
    nothing fits.

    ``nodata``: a value (in the file's unit: dB, or linear power) that marks no data in a
    ``db``/``power`` raster besides its own nodata tag; it reads as NaN. Other products
    mark no data in their format (DN 0, mosaic mask), and refuse it.
    """
    path = Path(path)
    if not path.exists():
        raise ProductError("no such file or folder", path)
    explicit = kind is not None
    kind = kind or detect_kind(path)
    if nodata is not None:
        if kind not in ("db", "power"):
            raise ProductError(
                f"--nodata applies to dB or linear-power rasters, not to a {kind} product "
                "(its format marks no data itself)",
                path,
                "leave --nodata out, or give --kind db / --kind power if the file is one",
            )
        options["nodata"] = nodata
    if bands is not None and kind in _BANDS_OPTION:
        name = _BANDS_OPTION[kind]
        if name in options:
            raise TypeError(f"give bands= or {name}=, not both")
        options[name] = tuple(bands)
    if kind == "ceos":
        from alos2fm.products.ceos import CeosProduct

        return CeosProduct(path, **options)
    if kind == "dn":
        from alos2fm.products.geotiff import DnGeoTiffProduct

        return DnGeoTiffProduct(path, **options)
    if kind == "mosaic":
        from alos2fm.products.geotiff import MosaicTileProduct

        return MosaicTileProduct(path, **options)
    if kind == "t3":
        from alos2fm.products.polsarpro import T3Product

        return T3Product(path, **options)
    if kind in ("db", "power"):
        from alos2fm.products.geotiff import DbRasterProduct

        # Detected rasters must look like dB; a kind the caller names is taken on trust.
        options.setdefault("check", not explicit)
        return DbRasterProduct(path, kind=kind, **options)
    raise ProductError(
        f"unknown product kind {kind!r}", path, f"use --kind with one of {', '.join(KINDS)}"
    )


def detect_kind(path: Path) -> ProductKind:
    """The reader for ``path``, from its name and (for CEOS and T3) its content."""
    from alos2fm.products.polsarpro import is_t3_folder

    if path.is_dir():
        if is_t3_folder(path):
            return "t3"
        if any(_is_ceos_name(p) for p in path.glob("IMG-*")):
            return "ceos"
        raise ProductError(
            "folder holds neither a CEOS product (IMG-<pol>-ALOS2…) nor a PolSARpro T3 set",
            path,
            "pass a product file instead",
        )
    if is_product_name(path):
        return "ceos" if _is_ceos_name(path) else "dn"
    if is_mosaic_name(path):
        return "mosaic"
    if path.suffix == ".bin" and is_t3_folder(path):
        return "t3"
    return "db"  # anything else must be calibrated already; open_product checks the values


def _is_ceos_name(path: Path) -> bool:
    # Not Path.suffix: the level in "…-FBDR1.5GUA" looks like a ".5GUA" extension.
    return is_product_name(path) and parse_product_name(path).extension == ""


def describe_product(path: str | Path, **options: Any) -> dict[str, Any]:
    """What ``alos2fm info`` prints: the reader's ``describe()``.

    CEOS products open with ``headers_only`` so that header-only sample products (and
    truncated downloads) can still be inspected; the image-lines entry says what is missing.
    """
    path = Path(path)
    kind = options.get("kind") or detect_kind(path)
    if kind == "ceos":
        options.setdefault("headers_only", True)
    if kind == "dn" and not is_product_name(path) and not options.get("bands"):
        options.setdefault("polarisation", "unknown")  # a renamed file: describe it anyway
    return open_product(path, **options).describe()
