"""ALOS-2 CEOS products (VOL-/LED-/IMG-/TRL- files): headers, calibration, georeference, lines.

Layout (``ALOS2_FACTS.md`` §2; every number big-endian):

* every record starts with a 12-byte header: sequence number (uint32), four type bytes,
  record length (uint32). The type bytes of a file's first record name the file kind;
* ``IMG-<pol>-…``: a 720-byte descriptor whose ASCII fields give the geometry, then one
  record per image line: a prefix (192 B for L1.5, 544 B for PALSAR-2 L1.1) and the
  samples, big-endian uint16 amplitude DN (L1.5/L2.1/L3.1) or complex float32 I/Q (L1.1).
  The prefix and record length are read from the descriptor, never assumed;
* ``LED-…``: the leader. We use two of its records:
  - radiometric data (type 50): the calibration factor CF, ASCII at record bytes 20-35;
  - map projection (type 20, L1.5 and later): projection name, UTM zone, false northing
    (10 000 000 m = southern hemisphere), polar stereographic centre and scale, pixel/line
    spacing, and the projected (km) and geographic (degrees) coordinates of the four
    corner pixels.

Image lines are read through a memory map, so a window costs only its own bytes.
GDAL is not used: its ``JAXAPALSAR`` driver rejects ALOS-2 names and assumes the ALOS-1
L1.1 prefix (412 B), and ``SAR_CEOS`` fails on the real header set.
"""

from __future__ import annotations

import struct
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from affine import Affine

from alos2fm.errors import ProductError
from alos2fm.products.base import RasterGrid, Window
from alos2fm.products.calibration import DEFAULT_CF_DB, dn_to_db, slc_to_db
from alos2fm.products.naming import ProductName, parse_product_name

RECORD_HEADER = struct.Struct(">IBBBBI")  # seq, subtype1, type, subtype2, subtype3, length

# Type bytes (4-7) of the first record of each file kind.
FILE_KINDS = {
    (192, 192, 18, 18): "VOL",
    (11, 192, 18, 18): "LED",
    (50, 192, 18, 18): "IMG",
    (63, 192, 18, 18): "TRL",
}
# Leader record types (header byte 5) that we read.
RADIOMETRIC_RECORD = 50
MAP_PROJECTION_RECORD = 20


@dataclass(frozen=True)
class RecordHeader:
    """One CEOS record: where it starts in the file and what its header says."""

    offset: int
    sequence: int
    type_codes: tuple[int, int, int, int]
    length: int

    @property
    def record_type(self) -> int:
        return self.type_codes[1]


def iter_records(path: Path, max_records: int | None = None) -> Iterator[RecordHeader]:
    """Walk a CEOS file record by record (headers only), up to ``max_records``.

    Raises ``ProductError`` when a header is impossible (length under 12 bytes) or a
    record runs past the end of the file: a walk never loops or reads past the data.
    """
    size = path.stat().st_size
    offset, count = 0, 0
    with open(path, "rb") as f:
        while offset < size and (max_records is None or count < max_records):
            raw = f.read(RECORD_HEADER.size)
            if len(raw) < RECORD_HEADER.size:
                raise ProductError(f"record header cut off at byte {offset}", path)
            seq, t1, t2, t3, t4, length = RECORD_HEADER.unpack(raw)
            if length < RECORD_HEADER.size or offset + length > size:
                raise ProductError(
                    f"invalid CEOS record at byte {offset} (length {length}, file {size} B)",
                    path,
                    "the file is truncated or not a CEOS file",
                )
            yield RecordHeader(offset, seq, (t1, t2, t3, t4), length)
            offset += length
            count += 1
            f.seek(offset)


def ceos_file_kind(path: Path) -> str:
    """``VOL``, ``LED``, ``IMG`` or ``TRL`` from the first record's type bytes."""
    with open(path, "rb") as f:
        raw = f.read(RECORD_HEADER.size)
    if len(raw) == RECORD_HEADER.size:
        kind = FILE_KINDS.get(RECORD_HEADER.unpack(raw)[1:5])
        if kind is not None:
            return kind
    raise ProductError("not a CEOS VOL/LED/IMG/TRL file (unknown first record)", path)


# --- image file descriptor ----------------------------------------------------------------


@dataclass(frozen=True)
class ImageDescriptor:
    """The fields of an IMG file's descriptor record that locate the samples.

    ``prefix_bytes`` precede the samples in each line record; ``sample_type`` is JAXA's
    code: ``IU2`` (uint16 amplitude DN) or ``C*8`` (complex float32 I, Q).
    """

    descriptor_length: int
    n_records: int
    record_length: int
    bits_per_sample: int
    n_lines: int
    n_pixels: int
    prefix_bytes: int
    sample_type: str

    @property
    def dtype(self) -> np.dtype:
        return np.dtype(">u2") if self.sample_type == "IU2" else np.dtype(">c8")

    @property
    def expected_size(self) -> int:
        """Bytes of a complete IMG file: descriptor + one record per line."""
        return self.descriptor_length + self.n_lines * self.record_length


# (start, end) byte ranges of the ASCII integer fields of the IMG descriptor.
_DESCRIPTOR_FIELDS = {
    "n_records": (180, 186),
    "record_length": (186, 192),
    "bits_per_sample": (216, 220),
    "n_lines": (236, 244),
    "n_pixels": (248, 256),
    "prefix_bytes": (276, 280),
}
_SAMPLE_TYPE_TEXT = (400, 432)  # e.g. "UNSIGNED INTEGER*2          IU2 "


def read_image_descriptor(path: Path) -> ImageDescriptor:
    """Parse the descriptor of an ``IMG-`` file; ``ProductError`` if it is not one."""
    if ceos_file_kind(path) != "IMG":
        raise ProductError("not a CEOS IMG file", path)
    header = next(iter_records(path, max_records=1))
    with open(path, "rb") as f:
        record = f.read(header.length)
    values: dict[str, int] = {}
    for name, (start, end) in _DESCRIPTOR_FIELDS.items():
        text = record[start:end].decode("ascii", "replace").strip()
        if not text.isdigit():
            raise ProductError(
                f"IMG descriptor field {name} (bytes {start}-{end - 1}) is {text!r}, not a number",
                path,
            )
        values[name] = int(text)
    type_text = record[slice(*_SAMPLE_TYPE_TEXT)].decode("ascii", "replace")
    sample_type = next((code for code in ("IU2", "C*8") if code in type_text), None)
    if sample_type is None:
        raise ProductError(
            f"unsupported sample type {type_text.strip()!r}", path, "expected IU2 or C*8"
        )
    descriptor = ImageDescriptor(header.length, sample_type=sample_type, **values)
    line_bytes = descriptor.prefix_bytes + descriptor.n_pixels * descriptor.dtype.itemsize
    if line_bytes > descriptor.record_length:
        raise ProductError(
            f"descriptor is inconsistent: prefix {descriptor.prefix_bytes} B + "
            f"{descriptor.n_pixels} samples exceed the record length {descriptor.record_length} B",
            path,
        )
    return descriptor


# --- leader: calibration factor and map projection ---------------------------------------


def _leader_record(path: Path, record_type: int) -> bytes | None:
    """The bytes of the first leader record of ``record_type``, or None if absent."""
    for header in iter_records(path):
        if header.record_type == record_type:
            with open(path, "rb") as f:
                f.seek(header.offset)
                return f.read(header.length)
    return None


def _ascii_float(record: bytes, start: int, end: int) -> float | None:
    text = record[start:end].decode("ascii", "replace").strip()
    try:
        return float(text)
    except ValueError:
        return None


def read_calibration_factor(leader: Path) -> float:
    """CF [dB] from the leader's radiometric data record.

    Parsed by xarray-ceos-alos2 (``ceos_alos2``) when it reads the leader; our own record
    walk (type-50 record, ASCII F16.7 at bytes 20-35) is the fallback for leaders it
    cannot parse. Both agree on the real header set (tested).
    """
    try:
        return _calibration_factor_ceos_alos2(leader)
    except Exception:  # any parser failure: the format is simple enough to read ourselves
        return read_calibration_factor_from_records(leader)


def _calibration_factor_ceos_alos2(leader: Path) -> float:
    import fsspec
    from ceos_alos2.sar_leader import open_sar_leader

    tree = open_sar_leader(fsspec.get_mapper(str(leader.parent)), leader.name)
    value = float(tree["radiometric_data"]["calibration_factor"].data)
    if not np.isfinite(value):
        raise ValueError("calibration factor is not a number")
    return value


def read_calibration_factor_from_records(leader: Path) -> float:
    """CF [dB] by walking the leader's records ourselves (radiometric record, bytes 20-35)."""
    record = _leader_record(leader, RADIOMETRIC_RECORD)
    value = None if record is None else _ascii_float(record, 20, 36)
    if value is None:
        raise ProductError("no calibration factor in the leader's radiometric record", leader)
    return value


@dataclass(frozen=True)
class PolarStereographic:
    """The polar stereographic (``UPS-PROJECTION``) section of the map-projection record."""

    longitude: float  # centre of projection: the central meridian, degrees
    latitude: float  # ±90 (pole) or the latitude of true scale, degrees
    scale_factor: float


@dataclass(frozen=True)
class MapProjection:
    """The map-projection record fields used for georeferencing (L1.5 and later).

    ``corners`` are the projected (easting, northing) in metres of the centres of the
    top-left, top-right, bottom-right and bottom-left pixels. That they are pixel centres
    (not outer edges) is inferred: on the real scene they span exactly (n − 1) × spacing.
    ``geographic_corners`` are the same four points as (longitude, latitude) in degrees,
    written by JAXA independently of the projection parameters; None where blank.
    """

    kind: str  # GEOCODED / GEOREFERENCE
    projection: str  # e.g. UTM-PROJECTION, UPS-PROJECTION
    utm_zone: int | None
    south: bool
    polar: PolarStereographic | None
    pixel_spacing: float
    line_spacing: float
    n_pixels: int
    n_lines: int
    corners: tuple[tuple[float, float], ...]
    geographic_corners: tuple[tuple[float, float], ...] | None


def read_map_projection(leader: Path) -> MapProjection | None:
    """The leader's map-projection record (type 20), or None when absent or blank (L1.1).

    Bytes used (0-based, ASCII, 16 characters per number): 28-59 kind, 60-75 pixels,
    76-91 lines, 92-107 line spacing (m), 108-123 pixel spacing (m), 412-443 projection
    designator, 476-479 UTM zone, 496-511 false northing (m), 624-671 polar stereographic
    centre longitude, latitude and scale factor, 944-1071 corner northing/easting pairs
    (km) and 1072-1199 corner latitude/longitude pairs (degrees), both in the order
    top-left, top-right, bottom-right, bottom-left. The layout is xarray-ceos-alos2's.
    """
    record = _leader_record(leader, MAP_PROJECTION_RECORD)
    if record is None or len(record) < 1200:
        return None
    text = record.decode("ascii", "replace")
    numbers = [_ascii_float(record, s, s + 16) for s in (60, 76, 92, 108)]
    corner_values = [_ascii_float(record, s, s + 16) for s in range(944, 1072, 16)]
    if any(v is None for v in numbers + corner_values):
        return None
    n_pixels, n_lines, line_spacing, pixel_spacing = numbers
    zone_text = text[476:480].strip()
    false_northing = _ascii_float(record, 496, 512) or 0.0
    polar = [_ascii_float(record, s, s + 16) for s in (624, 640, 656)]
    geographic = [_ascii_float(record, s, s + 16) for s in range(1072, 1200, 16)]
    return MapProjection(
        kind=text[28:60].strip(),
        projection=text[412:444].strip(),
        utm_zone=int(zone_text) if zone_text.isdigit() else None,
        south=false_northing >= 5_000_000,
        polar=None if None in polar else PolarStereographic(*polar),
        pixel_spacing=pixel_spacing,
        line_spacing=line_spacing,
        n_pixels=int(n_pixels),
        n_lines=int(n_lines),
        corners=_pairs(corner_values, scale=1000.0),  # (easting, northing) m
        geographic_corners=None if None in geographic else _pairs(geographic),  # (lon, lat)
    )


def _pairs(values: list[float], scale: float = 1.0) -> tuple[tuple[float, float], ...]:
    """(second, first) of each consecutive pair: the record writes northing before easting
    and latitude before longitude; we keep (x, y) order."""
    return tuple((values[i + 1] * scale, values[i] * scale) for i in range(0, len(values), 2))


def georeference(projection: MapProjection, leader: Path) -> tuple[str | None, Affine]:
    """CRS and pixel-corner affine transform of a map-projected product.

    The CRS comes from ``map_crs``, the transform from ``_corner_transform``. The record's
    geographic corners, projected with that CRS, must land within two pixels of its map
    corners: this catches a misread zone, hemisphere or polar stereographic variant.
    When there is no CRS to build (a projection other than UTM and polar stereographic)
    or the check fails, the product opens without a CRS and a warning says why: reading,
    ``info`` and unlabelled preparation still work, placing land-cover labels refuses.
    """
    transform = _corner_transform(projection, leader)
    crs = map_crs(projection)
    if crs is None:
        problem = (
            f"map projection {projection.projection!r} is not supported "
            "(UTM and polar stereographic are)"
        )
    else:
        misfit = _corner_misfit(crs, projection)
        if misfit is None or misfit <= 2 * projection.pixel_spacing:
            return crs, transform
        problem = f"{crs} puts the leader's geographic corners {misfit:.0f} m from its map corners"
    warnings.warn(
        f"{leader}: {problem}; opening the product without a CRS, so land-cover labels "
        "cannot be placed on it",
        stacklevel=3,
    )
    return None, Affine.identity()


def map_crs(projection: MapProjection) -> str | None:
    """The CRS of the record's projection, or None for one we cannot build.

    * UTM: the WGS84 UTM codes (``EPSG:326zz``/``327zz``). GRS80 (the leader's ellipsoid)
      and WGS84 differ by under a millimetre.
    * Polar stereographic (``UPS-PROJECTION``, JAXA's "P" products): on the pole of the
      centre latitude's hemisphere, central meridian = centre longitude, map origin at
      the pole (the section has no false easting or northing). Read as GDAL reads such
      parameters: a centre latitude of ±90° takes the scale factor at the pole (EPSG
      variant A), any other latitude is the latitude of true scale (variant B). This
      reading is inferred; ``georeference`` checks it against the geographic corners.
    """
    family = projection.projection.upper().split("-", 1)[0]
    if family == "UTM" and projection.utm_zone is not None:
        return f"EPSG:{(32700 if projection.south else 32600) + projection.utm_zone}"
    ps = projection.polar
    if family != "UPS" or ps is None or ps.latitude == 0:
        return None
    from rasterio.crs import CRS

    pole = 90.0 if ps.latitude > 0 else -90.0
    if abs(ps.latitude) == 90.0:
        origin = f"+lat_0={pole!r} +k_0={ps.scale_factor!r}"
    else:
        origin = f"+lat_0={pole!r} +lat_ts={ps.latitude!r}"
    proj = f"+proj=stere {origin} +lon_0={ps.longitude!r} +x_0=0 +y_0=0 +datum=WGS84 +units=m"
    epsg = CRS.from_proj4(proj).to_epsg()  # e.g. 3031, Antarctic Polar Stereographic
    return f"EPSG:{epsg}" if epsg is not None else proj


def _corner_misfit(crs: str, projection: MapProjection) -> float | None:
    """Largest distance (m) between the map corners and the geographic corners projected
    with ``crs``; None when the record has no geographic corners."""
    from rasterio.warp import transform

    if projection.geographic_corners is None:
        return None
    lon, lat = zip(*projection.geographic_corners, strict=True)
    xs, ys = transform("EPSG:4326", crs, list(lon), list(lat))
    eastings, northings = zip(*projection.corners, strict=True)
    return float(np.max(np.hypot(np.subtract(xs, eastings), np.subtract(ys, northings))))


def _corner_transform(projection: MapProjection, leader: Path) -> Affine:
    """Pixel-corner affine transform from the record's corner pixel centres.

    Built from the top-left, top-right and bottom-left corners, so it also holds for
    georeferenced (rotated, not map-north) products. The record's pixel spacing
    cross-checks it.
    """
    (x0, y0), (x1, y1), _, (x3, y3) = projection.corners
    cols, rows = projection.n_pixels - 1, projection.n_lines - 1
    a, d = (x1 - x0) / cols, (y1 - y0) / cols  # per column
    b, e = (x3 - x0) / rows, (y3 - y0) / rows  # per line
    spacing = float(np.hypot(a, d))
    if abs(spacing - projection.pixel_spacing) > 0.01 * projection.pixel_spacing:
        raise ProductError(
            f"corner coordinates give {spacing:.4f} m pixels, the record says "
            f"{projection.pixel_spacing} m",
            leader,
            "the map-projection record is inconsistent",
        )
    # The corners are pixel centres; the transform maps pixel-corner coordinates.
    return Affine(a, b, x0 - 0.5 * (a + b), d, e, y0 - 0.5 * (d + e))


# --- image lines ---------------------------------------------------------------------------


class CeosImage:
    """One ``IMG-`` file: its descriptor and a memory map of its sample lines.

    With ``headers_only`` a file without (all of) its lines opens anyway, for inspecting
    header-only sample products; ``read`` then raises.
    """

    def __init__(self, path: Path, *, headers_only: bool = False):
        self.path = path
        self.descriptor = desc = read_image_descriptor(path)
        self.size = path.stat().st_size
        self.complete = self.size >= desc.expected_size
        self._lines: np.memmap | None = None
        if not self.complete:
            if not headers_only:
                raise self._truncated_error()
            return
        if desc.n_lines > 0:
            self._check_first_line_header()
        # A line record: prefix bytes (skipped), the samples, any spare bytes to the end.
        record = np.dtype(
            {
                "names": ["samples"],
                "formats": [(desc.dtype, (desc.n_pixels,))],
                "offsets": [desc.prefix_bytes],
                "itemsize": desc.record_length,
            }
        )
        self._lines = np.memmap(
            path, dtype=record, mode="r", offset=desc.descriptor_length, shape=(desc.n_lines,)
        )

    def _truncated_error(self) -> ProductError:
        d = self.descriptor
        return ProductError(
            f"truncated: {self.size} B, expected {d.expected_size} B ({d.descriptor_length} B "
            f"descriptor + {d.n_lines} lines x {d.record_length} B)",
            self.path,
            "download the product again",
        )

    def _check_first_line_header(self) -> None:
        with open(self.path, "rb") as f:
            f.seek(self.descriptor.descriptor_length)
            length = RECORD_HEADER.unpack(f.read(RECORD_HEADER.size))[5]
        if length != self.descriptor.record_length:
            raise ProductError(
                f"first line record is {length} B, the descriptor says "
                f"{self.descriptor.record_length} B",
                self.path,
                "the file is corrupt",
            )

    def read(self, window: Window) -> np.ndarray:
        """Raw samples of ``window``: (height, width) uint16 DN or complex64 I + jQ."""
        if self._lines is None:
            raise self._truncated_error()
        rows = self._lines[window.row : window.row + window.height]
        return np.ascontiguousarray(rows["samples"][:, window.col : window.col + window.width])


# --- the product -------------------------------------------------------------------------


class CeosProduct:
    """An ALOS-2 CEOS product (L1.1, L1.5, L2.1, L3.1): one band per ``IMG-<pol>`` file.

    ``path`` may be the product folder, its ``VOL-``/``LED-``/``TRL-`` file (all
    polarisations of that product) or one ``IMG-`` file (that polarisation only).
    ``polarisations`` (e.g. ``("HH", "HV")``) reads those ``IMG-<pol>`` files of the
    product, in that order, whichever of its files ``path`` names.
    ``subswath`` picks ``F1``..``F5`` of a ScanSAR L1.1 product. ``calibration_factor``
    overrides the leader's CF. ``headers_only`` opens products whose image lines are
    missing (``describe`` works, ``read_db`` raises).
    """

    # Integer DN calibrated here: no fill value, no infinity, nothing to scan for them.
    calibrated_from_dn = True

    quantity = "sigma0"

    def __init__(
        self,
        path: str | Path,
        *,
        polarisations: tuple[str, ...] | None = None,
        subswath: str | None = None,
        calibration_factor: float | None = None,
        headers_only: bool = False,
    ):
        self.path = Path(path)
        if not self.path.exists():
            raise ProductError("no such file or folder", self.path)
        image_paths, self.name = _find_product_files(self.path, subswath, polarisations)
        self.images = [CeosImage(p, headers_only=headers_only) for p in image_paths]
        self.bands = tuple(_polarisation(p) for p in image_paths)
        first = self.images[0].descriptor
        for image in self.images[1:]:
            d = image.descriptor
            if (d.n_lines, d.n_pixels, d.sample_type) != (
                first.n_lines,
                first.n_pixels,
                first.sample_type,
            ):
                raise ProductError(
                    f"geometry {d.n_pixels} x {d.n_lines} {d.sample_type} differs from "
                    f"{image_paths[0].name}",
                    image.path,
                )
        self.date = self.name.date
        self.leader = _sibling(image_paths[0], "LED")
        self.calibration_factor, self.cf_source = self._calibration(calibration_factor)
        self.map_projection = read_map_projection(self.leader) if self.leader else None
        crs, transform = None, Affine.identity()
        if self.map_projection is not None and first.sample_type == "IU2":
            crs, transform = georeference(self.map_projection, self.leader)
        self.grid = RasterGrid(first.n_lines, first.n_pixels, crs, transform)

    def _calibration(self, override: float | None) -> tuple[float, str]:
        if override is not None:
            return float(override), "given"
        if self.leader is None:
            warnings.warn(
                f"{self.path}: no LED- leader file beside the image; using CF "
                f"{DEFAULT_CF_DB} dB and no georeference",
                stacklevel=3,
            )
            return DEFAULT_CF_DB, "default (no leader)"
        return read_calibration_factor(self.leader), f"leader {self.leader.name}"

    def read_db(self, window: Window) -> np.ndarray:
        """float32 (bands, height, width) sigma0 in dB; NaN where DN = 0 (no data)."""
        return self._read_db(window, np.float32)

    def read_db_float16(self, window: Window) -> np.ndarray:
        """``read_db`` rounded to float16 (the patch store's dtype), DN looked up per value."""
        return self._read_db(window, np.float16)

    def _read_db(self, window: Window, dtype: type[np.floating]) -> np.ndarray:
        out = np.empty((len(self.images), window.height, window.width), dtype)
        for i, image in enumerate(self.images):
            samples = image.read(window)
            if image.descriptor.sample_type == "C*8":
                out[i] = slc_to_db(samples, self.calibration_factor)
            else:
                dn_to_db(samples, self.calibration_factor, out=out[i])
        return out

    def _lines_status(self) -> str:
        missing = [i for i in self.images if not i.complete]
        if not missing:
            return "complete"
        sizes = (f"{i.path.name} holds {i.size} of {i.descriptor.expected_size} B" for i in missing)
        return "missing: " + ", ".join(sizes)

    def describe(self) -> dict[str, Any]:
        d = self.images[0].descriptor
        mp = self.map_projection
        info: dict[str, Any] = {
            "format": f"ALOS-2 CEOS level {self.name.level}",
            "path": str(self.path),
            **{k: v for k, v in self.name.as_dict().items() if k not in _PER_FILE_FIELDS},
            "mode description": self.name.mode_description,
            "bands": list(self.bands),
            "size": f"{d.n_pixels} x {d.n_lines} (pixels x lines)",
            "sample type": f"{d.sample_type} ({d.bits_per_sample} bits)",
            "record length": f"{d.record_length} B (prefix {d.prefix_bytes} B)",
            "image lines": self._lines_status(),
            "quantity": f"{self.quantity} (dB)",
            "calibration factor": f"{self.calibration_factor} dB ({self.cf_source})",
            "map projection": f"{mp.projection} ({mp.kind})" if mp else None,
            "crs": self.grid.crs
            or ("none (see the warning)" if mp else "none (slant range / not map-projected)"),
        }
        if self.grid.crs is not None:
            info["pixel spacing"] = f"{mp.pixel_spacing} m x {mp.line_spacing} m"
            info["transform"] = tuple(round(v, 6) for v in self.grid.transform[:6])
            info["bounds"] = self.grid.window_bounds(Window(0, 0, d.n_lines, d.n_pixels))
        return {k: v for k, v in info.items() if v is not None}


_PER_FILE_FIELDS = ("file_kind", "polarisation", "subswath", "extension")


def _polarisation(image: Path) -> str:
    pol = parse_product_name(image).polarisation
    if pol is None:
        raise ProductError("IMG file name lacks the polarisation (IMG-HH-…)", image)
    return pol


def _sibling(image: Path, kind: str) -> Path | None:
    """The ``kind`` file (VOL/LED/TRL) of the same product as ``image``, if present."""
    name = parse_product_name(image)
    path = image.parent / f"{kind}-{name.scene_id}-{name.product_id}"
    return path if path.exists() else None


def _find_product_files(
    path: Path, subswath: str | None, polarisations: tuple[str, ...] | None
) -> tuple[list[Path], ProductName]:
    """The IMG files to read for ``path`` (folder, VOL/LED/TRL or IMG) and the product name.

    An IMG file stands for itself unless ``polarisations`` asks for its siblings; then,
    as for the other paths, the product's IMG files of those polarisations are returned
    in that order, and a missing one is named in the error.
    """
    if path.is_file():
        name = parse_product_name(path)
        kind = ceos_file_kind(path)
        if kind != name.file_kind:
            raise ProductError(f"named {name.file_kind}- but its records are a {kind} file", path)
        if kind == "IMG":
            if polarisations is None:
                return [path], name
            subswath = subswath or name.subswath  # siblings of the sub-swath given
        folder, wanted = path.parent, (name.scene_id, name.product_id)
    else:
        folder, wanted = path, None
    images: list[tuple[Path, ProductName]] = []
    for candidate in sorted(folder.glob("IMG-*")):
        try:
            name = parse_product_name(candidate)
        except ProductError:
            continue
        if name.extension or (wanted and (name.scene_id, name.product_id) != wanted):
            continue
        images.append((candidate, name))
    products = sorted({(n.scene_id, n.product_id) for _, n in images})
    if not images:
        raise ProductError("no CEOS IMG-<pol>-… files found", folder, "is this a CEOS product?")
    if len(products) > 1:
        raise ProductError(
            f"{len(products)} products in one folder: {[f'{s}-{p}' for s, p in products]}",
            folder,
            "open one of its VOL- files instead",
        )
    swaths = sorted({n.subswath for _, n in images if n.subswath})
    if swaths:
        if subswath not in swaths:
            raise ProductError(
                f"ScanSAR product with sub-swaths {swaths}", folder, "choose one with subswath=..."
            )
        images = [(p, n) for p, n in images if n.subswath == subswath]
    if polarisations is not None:
        by_polarisation = {n.polarisation: (p, n) for p, n in images}
        first = images[0][1]
        for pol in polarisations:
            if pol not in by_polarisation:
                swath = f"-{first.subswath}" if first.subswath else ""
                missing = f"IMG-{pol}-{first.scene_id}-{first.product_id}{swath}"
                raise ProductError(
                    f"polarisation {pol} requested but {missing} is missing",
                    folder,
                    f"the product has {', '.join(sorted(by_polarisation))}",
                )
        images = [by_polarisation[pol] for pol in polarisations]
    return [p for p, _ in images], images[0][1]
