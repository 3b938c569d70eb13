"""CEOS reader on the real ALOS-2 L1.5 header set, on hybrid files built from it, and on
synthetic header sets.

The real set (``ceos_l15_dir``) holds complete VOL/LED/TRL files and the 720-byte IMG
descriptors without image lines. Hybrid files keep the real descriptor bytes, patch its
line count (and, where said, other fields) and append made-up line records of known DN:
they are PARTLY SYNTHETIC and only ever written to ``tmp_path``. The synthetic sets
(``ceos_records.py``, no JAXA bytes) cover what the real set cannot: other projections.
"""

from __future__ import annotations

import shutil
import struct
import warnings
from pathlib import Path

import numpy as np
import pytest
from affine import Affine

from alos2fm.errors import ProductError
from alos2fm.products import describe_product, open_product
from alos2fm.products.base import Window
from alos2fm.products.ceos import (
    CeosProduct,
    _calibration_factor_ceos_alos2,
    ceos_file_kind,
    iter_records,
    read_calibration_factor,
    read_calibration_factor_from_records,
    read_image_descriptor,
    read_map_projection,
)
from tests.products.ceos_records import map_projection_fields, write_product

SCENE = "ALOS2015976960-140909-FBDR1.5GUA"
REAL_PIXELS, REAL_LINES, REAL_RECORD, REAL_PREFIX = 12870, 13161, 25932, 192


def _patch(descriptor: bytearray, start: int, end: int, value: int | str) -> None:
    """Write an ASCII field right-aligned over bytes start..end-1, as CEOS does."""
    text = str(value).rjust(end - start).encode("ascii")
    assert len(text) == end - start
    descriptor[start:end] = text


def _hybrid_img(
    real_dir: Path,
    out: Path,
    samples: np.ndarray,
    *,
    prefix: int = REAL_PREFIX,
    record_length: int = REAL_RECORD,
    lines_written: int | None = None,
    slc: bool = False,
) -> Path:
    """PARTLY SYNTHETIC: the real IMG descriptor, patched, plus made-up line records.

    ``samples`` is (lines, pixels) uint16 DN (or complex64 for ``slc``); each record is a
    12-byte CEOS header, a zero prefix, the big-endian samples and zero padding.
    """
    descriptor = bytearray((real_dir / f"IMG-HH-{SCENE}").read_bytes())
    lines, pixels = samples.shape
    _patch(descriptor, 180, 186, lines)  # number of records
    _patch(descriptor, 186, 192, record_length)
    _patch(descriptor, 236, 244, lines)
    _patch(descriptor, 248, 256, pixels)
    _patch(descriptor, 276, 280, prefix)
    if slc:
        _patch(descriptor, 216, 220, 32)
        descriptor[400:432] = b"COMPLEX REAL*4              C*8 "
    body = bytearray()
    dtype = ">c8" if slc else ">u2"
    for i in range(lines if lines_written is None else lines_written):
        record = bytearray(record_length)
        record[:12] = struct.pack(">IBBBBI", i + 2, 50, 11, 18, 20, record_length)
        data = samples[i].astype(dtype).tobytes()
        record[prefix : prefix + len(data)] = data
        body += record
    out.write_bytes(bytes(descriptor) + bytes(body))
    return out


@pytest.fixture
def hybrid_dir(ceos_l15_dir: Path, tmp_path: Path) -> Path:
    """Real VOL + LED, and a PARTLY SYNTHETIC IMG-HH of 4 lines x 12870 known DN."""
    folder = tmp_path / "ALOS2015976960-140909"
    folder.mkdir()
    for kind in ("VOL", "LED"):
        shutil.copy(ceos_l15_dir / f"{kind}-{SCENE}", folder)
    _hybrid_img(ceos_l15_dir, folder / f"IMG-HH-{SCENE}", _known_dn(4, REAL_PIXELS))
    return folder


def _known_dn(lines: int, pixels: int) -> np.ndarray:
    """Distinct DN per position (1 + column + 1000·line), with a few hand-checked values."""
    dn = (1 + np.arange(pixels)[None, :] + 1000 * np.arange(lines)[:, None]) % 65535
    dn = dn.astype(np.uint16)
    if lines > 1 and pixels > 102:
        dn[1, 100:103] = [14125, 1413, 0]
    return dn


# --- the real header set -------------------------------------------------------------------


def test_file_kinds_from_record_type_bytes(ceos_l15_dir: Path) -> None:
    for kind in ("VOL", "LED", "TRL"):
        assert ceos_file_kind(ceos_l15_dir / f"{kind}-{SCENE}") == kind
    assert ceos_file_kind(ceos_l15_dir / f"IMG-HV-{SCENE}") == "IMG"
    with pytest.raises(ProductError, match="not a CEOS"):
        ceos_file_kind(ceos_l15_dir / "summary.txt")


def test_leader_record_walk_covers_the_whole_file(ceos_l15_dir: Path) -> None:
    leader = ceos_l15_dir / f"LED-{SCENE}"
    records = list(iter_records(leader))
    assert [r.length for r in records[:7]] == [720, 4096, 1620, 4680, 16384, 9860, 1620]
    assert [r.record_type for r in records[1:7]] == [10, 20, 30, 40, 50, 60]
    assert [r.sequence for r in records] == list(range(1, 13))
    assert records[-1].offset + records[-1].length == leader.stat().st_size
    assert records[5].offset == 27500  # the radiometric record; CF at LED byte 27520


def test_volume_directory_records(ceos_l15_dir: Path) -> None:
    records = list(iter_records(ceos_l15_dir / f"VOL-{SCENE}"))
    # Descriptor, 4 file pointers (LED, IMG-HH, IMG-HV, TRL), text record: 360 B each.
    assert [r.length for r in records] == [360] * 6
    assert [r.type_codes[0] for r in records] == [192, 219, 219, 219, 219, 18]


def test_walk_stops_with_an_error_on_a_blank_header(ceos_l15_dir: Path) -> None:
    # After its descriptor the real TRL holds zero bytes where a header would be: a
    # naive walk loops forever on length 0.
    walk = iter_records(ceos_l15_dir / f"TRL-{SCENE}")
    assert next(walk).length == 720
    with pytest.raises(ProductError, match="invalid CEOS record at byte 720 \\(length 0"):
        next(walk)


def test_real_image_descriptor_fields(ceos_l15_dir: Path) -> None:
    d = read_image_descriptor(ceos_l15_dir / f"IMG-HH-{SCENE}")
    assert (d.n_pixels, d.n_lines, d.n_records) == (REAL_PIXELS, REAL_LINES, REAL_LINES)
    assert (d.record_length, d.prefix_bytes, d.bits_per_sample) == (REAL_RECORD, 192, 16)
    assert d.sample_type == "IU2" and d.dtype == np.dtype(">u2")
    assert d.record_length == d.prefix_bytes + 2 * d.n_pixels
    assert d.expected_size == 720 + REAL_LINES * REAL_RECORD


def test_calibration_factor_from_the_leader_both_parsers(ceos_l15_dir: Path) -> None:
    leader = ceos_l15_dir / f"LED-{SCENE}"
    assert read_calibration_factor(leader) == -83.0  # via xarray-ceos-alos2
    assert read_calibration_factor_from_records(leader) == -83.0  # our own walk


def test_calibration_factor_falls_back_to_our_walk(ceos_l15_dir: Path, tmp_path: Path) -> None:
    # A leader that xarray-ceos-alos2 cannot parse (the data-set summary record cut to
    # its header) still yields the CF written, here patched to -80.5, in record type 50.
    data = bytearray((ceos_l15_dir / f"LED-{SCENE}").read_bytes())
    data[27520:27536] = b"     -80.5000000"
    leader = tmp_path / f"LED-{SCENE}"
    leader.write_bytes(bytes(data))
    assert read_calibration_factor(leader) == -80.5
    broken = bytearray(data[:720]) + struct.pack(">IBBBBI", 2, 18, 10, 18, 20, 12) + data[4816:]
    broken_leader = tmp_path / "broken" / f"LED-{SCENE}"
    broken_leader.parent.mkdir()
    broken_leader.write_bytes(bytes(broken))
    with pytest.raises(ValueError):  # xarray-ceos-alos2 gives up on this leader...
        _calibration_factor_ceos_alos2(broken_leader)
    assert read_calibration_factor(broken_leader) == -80.5  # ...our walk still finds the CF


def test_map_projection_record_and_utm_south_georeference(ceos_l15_dir: Path) -> None:
    mp = read_map_projection(ceos_l15_dir / f"LED-{SCENE}")
    assert mp is not None
    assert (mp.kind, mp.utm_zone, mp.south) == ("GEOCODED", 20, True)
    assert (mp.pixel_spacing, mp.line_spacing) == (6.25, 6.25)
    assert mp.corners[0] == pytest.approx((510879.0839, 8819462.993))
    assert mp.corners[2] == pytest.approx((591310.3339, 8737212.993))
    product = CeosProduct(ceos_l15_dir, headers_only=True)
    assert product.grid.crs == "EPSG:32720"
    t = product.grid.transform
    # Corner pixel centres minus half a 6.25 m pixel.
    assert (t.a, t.b, t.d, t.e) == pytest.approx((6.25, 0.0, 0.0, -6.25))
    assert (t.c, t.f) == pytest.approx((510875.9589, 8819466.118), abs=1e-6)


def test_georeference_agrees_with_the_leader_geographic_corners(ceos_l15_dir: Path) -> None:
    from rasterio.warp import transform as warp

    product = CeosProduct(ceos_l15_dir, headers_only=True)
    h, w, t = product.grid.height, product.grid.width, product.grid.transform
    centres = [t @ (0.5, 0.5), t @ (w - 0.5, 0.5), t @ (w - 0.5, h - 0.5), t @ (0.5, h - 0.5)]
    lon, lat = warp(product.grid.crs, "EPSG:4326", *zip(*centres, strict=True))
    # Geographic corners written by JAXA in the same record (independent of our maths).
    np.testing.assert_allclose(lat, [-10.6794393, -10.6783401, -11.4221274, -11.4233051], atol=2e-5)
    np.testing.assert_allclose(lon, [-62.9005207, -62.1650802, -62.1629744, -62.9002697], atol=2e-5)


def test_ceos_alos2_reads_the_same_corners(ceos_l15_dir: Path) -> None:
    import fsspec
    from ceos_alos2.sar_leader import open_sar_leader

    tree = open_sar_leader(fsspec.get_mapper(str(ceos_l15_dir)), f"LED-{SCENE}")
    projected = tree["map_projection"]["corner_points"]["projected"]
    ours = read_map_projection(ceos_l15_dir / f"LED-{SCENE}")
    np.testing.assert_allclose(
        np.asarray(projected["easting"].data) * 1000, [c[0] for c in ours.corners]
    )
    np.testing.assert_allclose(
        np.asarray(projected["northing"].data) * 1000, [c[1] for c in ours.corners]
    )


def test_real_product_without_lines_is_reported_truncated(ceos_l15_dir: Path) -> None:
    with pytest.raises(ProductError, match=r"IMG-HH-.*truncated: 720 B, expected 341291772 B"):
        CeosProduct(ceos_l15_dir / f"VOL-{SCENE}")


def test_headers_only_product_from_vol_folder_or_img(ceos_l15_dir: Path) -> None:
    from_vol = CeosProduct(ceos_l15_dir / f"VOL-{SCENE}", headers_only=True)
    from_folder = CeosProduct(ceos_l15_dir, headers_only=True)
    from_img = CeosProduct(ceos_l15_dir / f"IMG-HV-{SCENE}", headers_only=True)
    assert from_vol.bands == from_folder.bands == ("HH", "HV")
    assert from_img.bands == ("HV",)
    assert (from_vol.grid.height, from_vol.grid.width) == (REAL_LINES, REAL_PIXELS)
    assert from_vol.date == "2014-09-09" and from_vol.calibration_factor == -83.0
    info = from_vol.describe()
    assert info["size"] == "12870 x 13161 (pixels x lines)"
    assert info["record length"] == "25932 B (prefix 192 B)"
    assert info["crs"] == "EPSG:32720" and info["mode"] == "FBD" and info["level"] == "1.5"
    assert info["image lines"].startswith("missing: IMG-HH-")
    with pytest.raises(ProductError, match="truncated"):
        from_vol.read_db(Window(0, 0, 1, 1))


# --- hybrid files: real descriptor + made-up lines -------------------------------------


def test_read_db_of_hybrid_lines_is_exact(hybrid_dir: Path) -> None:
    product = CeosProduct(hybrid_dir)
    assert product.bands == ("HH",) and product.grid.height == 4
    assert product.grid.crs == "EPSG:32720"
    db = product.read_db(Window(1, 98, 2, 6))
    assert db.shape == (1, 2, 6) and db.dtype == np.float32
    # Line 1, columns 98..103: DN 1099, 1100, 14125, 1413, 0, 1104.
    assert db[0, 0, 2] == pytest.approx(-0.00023, abs=1e-4)
    assert db[0, 0, 3] == pytest.approx(-19.99715, abs=1e-4)
    assert np.isnan(db[0, 0, 4])
    assert db[0, 0, 0] == pytest.approx(20 * np.log10(1099) - 83, abs=1e-4)
    assert db[0, 1, 5] == pytest.approx(20 * np.log10(2104) - 83, abs=1e-4)  # line 2, col 103
    # Last column of the last line: the prefix and record length are right all the way.
    last = product.read_db(Window(3, REAL_PIXELS - 1, 1, 1))[0, 0, 0]
    assert last == pytest.approx(20 * np.log10(3000 + REAL_PIXELS) - 83, abs=1e-4)


@pytest.mark.parametrize("prefix,record_length", [(180, REAL_RECORD), (200, 25980)])
def test_prefix_and_record_length_come_from_the_descriptor(
    ceos_l15_dir: Path, tmp_path: Path, prefix: int, record_length: int
) -> None:
    # PARTLY SYNTHETIC: descriptor patched to another prefix / record length.
    dn = _known_dn(3, 50)
    path = _hybrid_img(
        ceos_l15_dir, tmp_path / f"IMG-HH-{SCENE}", dn, prefix=prefix, record_length=record_length
    )
    with pytest.warns(UserWarning, match="no LED- leader"):
        product = CeosProduct(path)
    assert product.grid.crs is None
    expected = 20 * np.log10(dn[2, :].astype(np.float64)) - 83.0
    np.testing.assert_allclose(product.read_db(Window(2, 0, 1, 50))[0, 0], expected, atol=1e-4)


def test_truncated_hybrid_names_file_and_sizes(ceos_l15_dir: Path, tmp_path: Path) -> None:
    path = _hybrid_img(
        ceos_l15_dir, tmp_path / f"IMG-HH-{SCENE}", _known_dn(4, 50), lines_written=3
    )
    expected = 720 + 4 * REAL_RECORD
    with pytest.raises(ProductError) as err:
        CeosProduct(path)
    message = str(err.value)
    assert path.name in message
    assert f"{expected - REAL_RECORD} B, expected {expected} B" in message


def test_slc_hybrid_uses_intensity_and_minus_32_db(ceos_l15_dir: Path, tmp_path: Path) -> None:
    # PARTLY SYNTHETIC L1.1: the real descriptor patched to C*8 samples and a 544 B prefix.
    samples = np.array([[3000 + 4000j, 0j, 1 + 0j], [0 + 10j, 6 + 8j, 0j]], dtype=np.complex64)
    path = tmp_path / "IMG-HH-ALOS2015976960-140909-HBQR1.1__A"
    _hybrid_img(ceos_l15_dir, path, samples, prefix=544, record_length=544 + 3 * 8, slc=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # no leader here: default CF
        product = CeosProduct(path)
    assert product.grid.crs is None and product.describe()["level"] == "1.1"
    db = product.read_db(Window(0, 0, 2, 3))[0]
    assert db[0, 0] == pytest.approx(10 * np.log10(25e6) - 115.0, abs=1e-4)  # -41.0206
    assert db[1, 1] == pytest.approx(10 * np.log10(100.0) - 115.0, abs=1e-4)  # -95
    assert np.isnan(db[0, 1]) and np.isnan(db[1, 2])


def test_scansar_subswath_must_be_chosen(ceos_l15_dir: Path, tmp_path: Path) -> None:
    samples = np.ones((2, 3), np.complex64)
    for swath in ("F1", "F2"):
        name = f"IMG-HH-ALOS2015976960-140909-WBDR1.1__D-{swath}"
        _hybrid_img(ceos_l15_dir, tmp_path / name, samples, prefix=544, record_length=568, slc=True)
    with pytest.raises(ProductError, match=r"sub-swaths \['F1', 'F2'\]"):
        CeosProduct(tmp_path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert CeosProduct(tmp_path, subswath="F2").images[0].path.name.endswith("-F2")


def test_misnamed_or_foreign_files_are_rejected(ceos_l15_dir: Path, tmp_path: Path) -> None:
    fake = tmp_path / f"IMG-HH-{SCENE}"
    shutil.copy(ceos_l15_dir / f"LED-{SCENE}", fake)
    with pytest.raises(ProductError, match="named IMG- but its records are a LED file"):
        CeosProduct(fake)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ProductError, match="no CEOS IMG"):
        CeosProduct(empty)


# --- SYNTHETIC header sets (tests/products/ceos_records.py): projections, siblings -------

PS_PRODUCT = "ALOS2123451230-200105-FBDR1.5GPD"
PS_SPACING = 25.0


def _ps_product(
    folder: Path,
    designator: str,
    section: dict[int, str | float],
    top_left: tuple[float, float],
    corners_crs: str,
    pols: tuple[str, ...] = ("HH",),
) -> Path:
    """SYNTHETIC: a 6 x 5 px product, map-north, whose top-left pixel centre is at
    ``top_left`` (m); its geographic corners are those points in ``corners_crs``."""
    from rasterio.warp import transform as warp

    lines, pixels = 5, 6
    x0, y0 = top_left
    x1, y1 = x0 + (pixels - 1) * PS_SPACING, y0 - (lines - 1) * PS_SPACING
    corners = [(x0, y0), (x1, y0), (x1, y1), (x0, y1)]
    lon, lat = warp(corners_crs, "EPSG:4326", *zip(*corners, strict=True))
    record = map_projection_fields(
        designator,
        corners,
        list(zip(lon, lat, strict=True)),
        n_pixels=pixels,
        n_lines=lines,
        spacing=PS_SPACING,
        extra=section,
    )
    dn = {pol: _known_dn(lines, pixels) + 100 * i for i, pol in enumerate(pols)}
    return write_product(folder, PS_PRODUCT, dn, record)


def _ups_section(longitude: float, latitude: float, scale: float) -> dict[int, str | float]:
    return {592: "POLAR STEREOGRAPHIC", 624: longitude, 640: latitude, 656: scale}


# Worked examples of EPSG Guidance Note 7-2 (EPSG:3032 and EPSG:32661), false origins
# removed: the map-projection record puts the map origin at the pole.
# Variant B, latitude of true scale 71°S, central meridian 70°E: 75°S 120°E is at
# E 7 255 380.79, N 7 053 389.56 with a 6 000 000 m false easting and northing.
ANTARCTIC_B = "+proj=stere +lat_0=-90 +lat_ts=-71 +lon_0=70 +x_0=0 +y_0=0 +datum=WGS84"
# Variant A, scale 0.994 at the North Pole, central meridian 0: 73°N 44°E is at
# E 3 320 416.75, N 632 668.43 with a 2 000 000 m false easting and northing.
ARCTIC_A = "+proj=stere +lat_0=90 +k_0=0.994 +lon_0=0 +x_0=0 +y_0=0 +datum=WGS84"


@pytest.mark.parametrize(
    "section,top_left,corners_crs,lonlat",
    [
        (_ups_section(70.0, -71.0, 1.0), (1_255_380.79, 1_053_389.56), ANTARCTIC_B, (120, -75)),
        (_ups_section(0.0, 90.0, 0.994), (1_320_416.75, -1_367_331.57), ARCTIC_A, (44, 73)),
    ],
    ids=["variant-B-true-scale-latitude", "variant-A-scale-at-pole"],
)
def test_polar_stereographic_puts_pixels_where_the_epsg_examples_say(
    tmp_path: Path, section, top_left, corners_crs, lonlat
) -> None:
    from rasterio.warp import transform as warp

    folder = _ps_product(tmp_path, "UPS-PROJECTION", section, top_left, corners_crs)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a supported projection opens without warnings
        product = CeosProduct(folder)
    grid = product.grid
    assert grid.crs is not None
    assert (grid.transform.a, grid.transform.e) == pytest.approx((PS_SPACING, -PS_SPACING))
    lon, lat = warp(grid.crs, "EPSG:4326", *zip(grid.transform @ (0.5, 0.5), strict=True))
    assert (lon[0], lat[0]) == pytest.approx(lonlat, abs=1e-6)  # EPSG values are to 1 cm


def test_polar_stereographic_info_reads_and_names_the_epsg_code(tmp_path: Path) -> None:
    # Centre 71°S on the Greenwich meridian is EPSG:3031 (Antarctic Polar Stereographic).
    polar_3031 = ANTARCTIC_B.replace("+lon_0=70", "+lon_0=0")
    folder = _ps_product(
        tmp_path,
        "UPS-PROJECTION",
        _ups_section(0.0, -71.0, 1.0),
        (-400_000.0, 1_200_000.0),
        polar_3031,
    )
    info = describe_product(folder)
    assert info["crs"] == "EPSG:3031"
    assert info["map projection"] == "UPS-PROJECTION (GEOCODED)"
    assert info["projection"] == "polar stereographic"  # from the P in the product id
    # Outer pixel edges: half a 25 m pixel beyond the corner pixel centres.
    assert info["bounds"] == pytest.approx((-400_012.5, 1_199_887.5, -399_862.5, 1_200_012.5))
    db = CeosProduct(folder).read_db(Window(1, 0, 1, 6))[0, 0]
    expected = 20 * np.log10(_known_dn(5, 6)[1].astype(np.float64)) - 83.0
    np.testing.assert_allclose(db, expected, atol=1e-4)


def test_misread_polar_parameters_open_without_crs_and_warn(tmp_path: Path) -> None:
    # The record says true scale at 71°S, but its geographic corners follow another
    # projection (scale 0.994 at the pole): trusting the CRS would misplace every label.
    folder = _ps_product(
        tmp_path,
        "UPS-PROJECTION",
        _ups_section(70.0, -71.0, 1.0),
        (1_255_380.79, 1_053_389.56),
        ANTARCTIC_B.replace("+lat_ts=-71", "+k_0=0.994"),
    )
    with pytest.warns(UserWarning, match="geographic corners .* m from its map corners"):
        product = CeosProduct(folder)
    assert product.grid.crs is None and product.grid.transform == Affine.identity()
    assert product.describe()["crs"] == "none (see the warning)"
    assert product.read_db(Window(0, 0, 5, 6)).shape == (1, 5, 6)


def test_unsupported_projection_opens_without_crs_for_info_and_reading(tmp_path: Path) -> None:
    folder = _ps_product(
        tmp_path, "LCC-PROJECTION", {}, (500_000.0, 4_000_000.0), "EPSG:32654", ("HH", "HV")
    )
    with pytest.warns(UserWarning, match="'LCC-PROJECTION' is not supported"):
        info = describe_product(folder)
    assert info["crs"] == "none (see the warning)" and "bounds" not in info
    with pytest.warns(UserWarning, match="not supported"):
        product = CeosProduct(folder)
    assert product.grid.crs is None and product.bands == ("HH", "HV")
    assert np.isfinite(product.read_db(Window(0, 1, 5, 5))).all()


def test_img_file_with_polarisations_reads_its_siblings(tmp_path: Path) -> None:
    folder = _ps_product(
        tmp_path,
        "UPS-PROJECTION",
        _ups_section(70.0, -71.0, 1.0),
        (1_255_380.79, 1_053_389.56),
        ANTARCTIC_B,
        ("HH", "HV"),
    )
    hh = folder / f"IMG-HH-{PS_PRODUCT}"
    assert CeosProduct(hh).bands == ("HH",)  # an IMG file alone is that polarisation
    product = open_product(hh, bands=["HV", "HH"])
    assert product.bands == ("HV", "HH")
    db = product.read_db(Window(2, 0, 1, 6))[:, 0]
    for band, offset in ((0, 100), (1, 0)):  # HV holds the HH DN + 100
        dn = _known_dn(5, 6)[2].astype(np.float64) + offset
        np.testing.assert_allclose(db[band], 20 * np.log10(dn) - 83.0, atol=1e-4)
    with pytest.raises(ProductError, match=f"IMG-VV-{PS_PRODUCT} is missing"):
        open_product(hh, bands=["HH", "VV"])
    with pytest.raises(ProductError, match=f"IMG-VV-{PS_PRODUCT} is missing"):
        open_product(folder, bands=["VV"])
