"""SYNTHETIC CEOS products for reader tests, written with made-up bytes to a test's tmp_path.

Unlike the hybrid files of ``test_ceos.py`` (real descriptor bytes, patched), nothing here
comes from a JAXA file, so the tests that use it run without ``../shared/data``. Only the
fields that ``alos2fm.products.ceos`` reads are filled; every other byte is an ASCII
blank, as in unused CEOS fields. Layout: ALOS2_FACTS.md §2 and the byte ranges in ceos.py.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

RECORD_HEADER = struct.Struct(">IBBBBI")  # seq, subtype1, type, subtype2, subtype3, length
IMG_DESCRIPTOR = (50, 192, 18, 18)
LED_DESCRIPTOR = (11, 192, 18, 18)
MAP_PROJECTION = (18, 20, 18, 20)
RADIOMETRIC = (18, 50, 18, 20)
PREFIX = 192  # L1.5 line-record prefix

Fields = Mapping[int, str | float]  # record byte offset -> text (left-aligned) or number


def record(sequence: int, type_codes: tuple[int, ...], length: int, fields: Fields) -> bytes:
    """One record: header, then each field at its byte offset; numbers right-aligned in 16
    characters (F16.7) as CEOS writes them, text as given."""
    data = bytearray(b" " * length)
    data[:12] = RECORD_HEADER.pack(sequence, *type_codes, length)
    for start, value in fields.items():
        text = value if isinstance(value, str) else f"{value:16.7f}"
        data[start : start + len(text)] = text.encode("ascii")
    return bytes(data)


def write_image(path: Path, dn: np.ndarray) -> Path:
    """An ``IMG-`` file of uint16 DN lines (lines, pixels): descriptor, then one record per
    line (12-byte header, zero prefix, big-endian samples)."""
    lines, pixels = dn.shape
    record_length = PREFIX + 2 * pixels
    descriptor = record(
        1,
        IMG_DESCRIPTOR,
        720,
        {
            180: f"{lines:6d}",
            186: f"{record_length:6d}",
            216: f"{16:4d}",
            236: f"{lines:8d}",
            248: f"{pixels:8d}",
            276: f"{PREFIX:4d}",
            400: "UNSIGNED INTEGER*2          IU2 ",
        },
    )
    body = bytearray()
    for i in range(lines):
        line = bytearray(record_length)
        line[:12] = RECORD_HEADER.pack(i + 2, 50, 11, 18, 20, record_length)
        line[PREFIX:] = dn[i].astype(">u2").tobytes()
        body += line
    path.write_bytes(descriptor + bytes(body))
    return path


def map_projection_fields(
    designator: str,
    corners: Sequence[tuple[float, float]],
    geographic_corners: Sequence[tuple[float, float]] | None,
    *,
    n_pixels: int,
    n_lines: int,
    spacing: float,
    extra: Fields | None = None,
) -> dict[int, str | float]:
    """Map-projection record fields: ``corners`` (easting, northing) m and
    ``geographic_corners`` (lon, lat) of the top-left, top-right, bottom-right and
    bottom-left pixel centres; ``extra`` adds the projection's own section."""
    fields: dict[int, str | float] = {
        28: "GEOCODED",
        60: float(n_pixels),
        76: float(n_lines),
        92: spacing,
        108: spacing,
        412: designator,
        **(extra or {}),
    }
    for i, (easting, northing) in enumerate(corners):
        fields[944 + 32 * i] = northing / 1000.0  # km, northing first
        fields[960 + 32 * i] = easting / 1000.0
    for i, (lon, lat) in enumerate(geographic_corners or ()):
        fields[1072 + 32 * i] = lat
        fields[1088 + 32 * i] = lon
    return fields


def write_leader(path: Path, map_projection: Fields, cf: float = -83.0) -> Path:
    """A ``LED-`` file: file descriptor, map-projection record, radiometric record (CF)."""
    path.write_bytes(
        record(1, LED_DESCRIPTOR, 720, {})
        + record(2, MAP_PROJECTION, 1620, map_projection)
        + record(3, RADIOMETRIC, 9860, {20: cf})
    )
    return path


def write_product(
    folder: Path, product: str, dn: Mapping[str, np.ndarray], map_projection: Fields
) -> Path:
    """``IMG-<pol>-<product>`` per entry of ``dn`` and ``LED-<product>`` in ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    for pol, values in dn.items():
        write_image(folder / f"IMG-{pol}-{product}", values)
    write_leader(folder / f"LED-{product}", map_projection)
    return folder
