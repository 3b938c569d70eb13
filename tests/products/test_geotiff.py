"""GeoTIFF readers: ALOS-2 DN products, mosaic tiles with their mask, generic dB rasters."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest

from alos2fm.errors import ProductError
from alos2fm.products.base import Window
from alos2fm.products.geotiff import DbRasterProduct, DnGeoTiffProduct, MosaicTileProduct
from tests.products.rasters import TRANSFORM, UTM54N, dn_scene, write_tif

L21 = "IMG-{pol}-ALOS2458503210-221119-UBSR2.1GUD.tif"


def _expected_db(dn: np.ndarray, cf: float = -83.0) -> np.ndarray:
    with np.errstate(divide="ignore"):
        return np.where(dn > 0, 20 * np.log10(dn.astype(np.float64)) + cf, np.nan)


def test_dn_product_windowed_read_and_georeference(tmp_path: Path) -> None:
    dn = dn_scene()
    path = write_tif(tmp_path / L21.format(pol="HH"), dn)
    product = DnGeoTiffProduct(path)
    assert product.bands == ("HH",) and product.date == "2022-11-19"
    assert product.grid.crs == UTM54N and product.grid.transform == TRANSFORM
    assert (product.grid.height, product.grid.width) == (40, 48)
    db = product.read_db(Window(4, 1, 3, 12))
    assert db.shape == (1, 3, 12) and db.dtype == np.float32
    np.testing.assert_allclose(db[0], _expected_db(dn[4:7, 1:13]), atol=1e-4)
    assert db[0, 1, 9] == pytest.approx(-0.00023, abs=1e-4)  # DN 14125 at (5, 10)
    assert db[0, 1, 10] == pytest.approx(-19.99715, abs=1e-4)  # DN 1413 at (5, 11)
    assert np.isnan(db[0, :, :2]).all()  # DN 0 border
    info = product.describe()
    assert info["level"] == "2.1" and info["mode"] == "UBS" and info["crs"] == UTM54N
    assert info["pixel size"] == "3 x 3 m"


def test_dn_product_gathers_polarisations_and_custom_cf(tmp_path: Path) -> None:
    hh, hv = dn_scene(seed=1), dn_scene(seed=2)
    write_tif(tmp_path / L21.format(pol="HH"), hh)
    write_tif(tmp_path / L21.format(pol="HV"), hv)
    product = DnGeoTiffProduct(
        tmp_path / L21.format(pol="HH"), polarisations=("HH", "HV"), calibration_factor=-80.0
    )
    db = product.read_db(Window(10, 10, 2, 2))
    np.testing.assert_allclose(db[1], _expected_db(hv[10:12, 10:12], -80.0), atol=1e-4)
    np.testing.assert_allclose(db[0], _expected_db(hh[10:12, 10:12], -80.0), atol=1e-4)
    with pytest.raises(ProductError, match="IMG-VV-.* is missing"):
        DnGeoTiffProduct(tmp_path / L21.format(pol="HH"), polarisations=("HH", "VV"))


def test_dn_product_survives_pickling_for_worker_processes(tmp_path: Path) -> None:
    product = DnGeoTiffProduct(write_tif(tmp_path / L21.format(pol="HH"), dn_scene()))
    before = product.read_db(Window(0, 0, 8, 8))
    clone = pickle.loads(pickle.dumps(product))
    np.testing.assert_array_equal(clone.read_db(Window(0, 0, 8, 8)), before)
    handle = product._rasters[product.path]
    product.close()  # what preparation calls once a scene's grid is known
    assert handle.closed
    np.testing.assert_array_equal(product.read_db(Window(0, 0, 8, 8)), before)  # reopens


@pytest.mark.parametrize(
    "data,match",
    [
        (np.zeros((3, 8, 8), np.uint8), "3 band\\(s\\) of uint8"),  # RGB image
        (np.zeros((8, 8), np.float32), "1 band\\(s\\) of float32"),
    ],
)
def test_dn_product_refuses_non_dn_rasters(tmp_path: Path, data: np.ndarray, match: str) -> None:
    path = write_tif(tmp_path / L21.format(pol="HH"), data)
    with pytest.raises(ProductError, match=match):
        DnGeoTiffProduct(path)


def test_png_and_truncated_tiff_are_product_errors(tmp_path: Path) -> None:
    import rasterio

    png = tmp_path / L21.format(pol="HH")
    with rasterio.open(
        png.with_suffix(".png"), "w", driver="PNG", width=8, height=8, count=1, dtype="uint8"
    ) as dst:
        dst.write(np.zeros((1, 8, 8), np.uint8))
    png.with_suffix(".png").rename(png)  # a PNG wearing an ALOS-2 GeoTIFF name
    with pytest.raises(ProductError, match="a PNG file, not a GeoTIFF"):
        DnGeoTiffProduct(png)

    full = write_tif(tmp_path / "full.tif", dn_scene(64, 64))
    cut = tmp_path / L21.format(pol="HV")
    cut.write_bytes(full.read_bytes()[: full.stat().st_size // 2])
    with pytest.raises(ProductError, match=r"IMG-HV-.*(cannot|not a readable)"):
        DnGeoTiffProduct(cut)

    junk = tmp_path / "junk.tif"
    junk.write_bytes(b"II*\x00 this is not a tiff")
    with pytest.raises(ProductError, match="junk.tif: not a readable raster"):
        DbRasterProduct(junk)


def _mosaic(tmp_path: Path, year: str = "2022", ext: str = ".tif") -> tuple[Path, np.ndarray]:
    dn = np.full((6, 5), 14125, np.uint16)
    dn[0, 0] = 0
    mask = np.full((6, 5), 255, np.uint8)
    mask[1, :] = [0, 50, 100, 150, 255]  # no data, water, layover, shadow, land
    tile_transform = TRANSFORM  # any real grid will do for the reader
    path = write_tif(tmp_path / f"N32E119_{year}_sl_HH_F02DAR{ext}", dn, transform=tile_transform)
    write_tif(tmp_path / f"N32E119_{year}_sl_HV_F02DAR{ext}", dn // 10, transform=tile_transform)
    write_tif(tmp_path / f"N32E119_{year}_mask_F02DAR{ext}", mask, transform=tile_transform)
    return path, mask


def test_mosaic_gamma0_with_mask(tmp_path: Path) -> None:
    path, _ = _mosaic(tmp_path)
    product = MosaicTileProduct(path, polarisations=("HH", "HV"))
    assert product.quantity == "gamma0" and product.bands == ("HH", "HV")
    db = product.read_db(Window(0, 0, 3, 5))
    row = db[0, 1]
    assert np.isnan(row[0]) and np.isnan(row[2]) and np.isnan(row[3])  # no data/layover/shadow
    assert row[1] == pytest.approx(-0.00023, abs=1e-4)  # water kept
    assert row[4] == pytest.approx(-0.00023, abs=1e-4)  # land kept
    assert np.isnan(db[0, 0, 0])  # DN 0 even where the mask says land
    assert db[1, 2, 2] == pytest.approx(20 * np.log10(1412) - 83, abs=1e-4)  # HV = DN // 10
    assert "mask" in product.describe()["mask"]


def test_mosaic_without_mask_warns_and_keeps_layover(tmp_path: Path) -> None:
    path, _ = _mosaic(tmp_path, year="15", ext="")
    (tmp_path / "N32E119_15_mask_F02DAR").unlink()
    with pytest.warns(UserWarning, match="no mask layer"):
        product = MosaicTileProduct(path)
    assert np.isfinite(product.read_db(Window(1, 2, 1, 1))).all()
    with pytest.raises(ProductError, match="a mask layer, not backscatter"):
        MosaicTileProduct(tmp_path / "N32E119_15_sl_HH_F02DAR".replace("sl_HH", "mask"))


def test_generic_db_raster_bands_nodata_and_nan(tmp_path: Path) -> None:
    db = np.random.default_rng(0).normal(-12, 4, (2, 20, 24)).astype(np.float32)
    db[0, 0, 0] = -9999.0
    db[1, 3, 4] = np.nan
    path = write_tif(tmp_path / "s1.tif", db, nodata=-9999.0, descriptions=("VV", "VH"))
    product = DbRasterProduct(path)
    assert product.bands == ("VV", "VH") and product.quantity == "db"
    out = product.read_db(Window(0, 0, 5, 6))
    assert np.isnan(out[0, 0, 0]) and np.isnan(out[1, 3, 4])
    np.testing.assert_array_equal(out[0, 1:], db[0, 1:5, :6])
    undescribed = DbRasterProduct(write_tif(tmp_path / "plain.tif", db[:1] + 0))
    assert undescribed.bands == ("DB1",)


def test_generic_linear_power_is_converted_or_refused(tmp_path: Path) -> None:
    power = np.random.default_rng(1).gamma(1.0, 0.05, (16, 16)).astype(np.float32)
    path = write_tif(tmp_path / "power.tif", power)
    with pytest.raises(ProductError, match="look like linear power"):
        DbRasterProduct(path)
    product = DbRasterProduct(path, kind="power")
    np.testing.assert_allclose(
        product.read_db(Window(0, 0, 4, 4))[0], 10 * np.log10(power[:4, :4]), atol=1e-5
    )


@pytest.mark.parametrize(
    "data,match",
    [
        (np.full((3, 8, 8), 200, np.uint8), "uint8 pixels: not calibrated"),  # an RGB photo
        (dn_scene(16, 16), "uint16 pixels"),  # an unnamed DN product
        (np.full((8, 8), 5000.0, np.float32), "not backscatter in dB"),
        (np.full((8, 8), np.nan, np.float32), "no valid pixels"),
    ],
)
def test_generic_raster_that_is_not_db_is_refused(
    tmp_path: Path, data: np.ndarray, match: str
) -> None:
    with pytest.raises(ProductError, match=match):
        DbRasterProduct(write_tif(tmp_path / "x.tif", data))


def test_generic_raster_without_crs_has_a_pixel_grid(tmp_path: Path) -> None:
    from affine import Affine

    path = write_tif(
        tmp_path / "nocrs.tif",
        np.full((4, 4), -10.0, np.float32),
        crs=None,
        transform=Affine.identity(),
    )
    product = DbRasterProduct(path)
    assert product.grid.crs is None and product.describe()["crs"] == "none"
