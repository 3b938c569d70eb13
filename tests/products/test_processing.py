"""Multilook and speckle-filter wrappers: new grid, linear-power maths, halo-exact windows."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from affine import Affine

from alos2fm.errors import ProductError
from alos2fm.products.base import Window
from alos2fm.products.calibration import boxcar, db_to_power, lee, power_to_db
from alos2fm.products.geotiff import DbRasterProduct, DnGeoTiffProduct
from alos2fm.products.processing import Multilooked, SpeckleFiltered, process
from tests.products.rasters import TRANSFORM, UTM54N, dn_scene, write_tif


@pytest.fixture
def db_product(tmp_path: Path) -> DbRasterProduct:
    rng = np.random.default_rng(3)
    db = power_to_db(rng.gamma(1.0, 0.1, (2, 37, 43)))  # single-look speckle, 2 bands
    db[0, 10:13, 20:22] = np.nan  # a no-data hole
    db[:, :, :2] = np.nan  # and a no-data border
    return DbRasterProduct(write_tif(tmp_path / "speckle_db.tif", db))


def _whole(product) -> np.ndarray:
    return product.read_db(Window(0, 0, product.grid.height, product.grid.width))


def test_multilook_grid_is_coarser_with_the_same_origin(db_product: DbRasterProduct) -> None:
    ml = Multilooked(db_product, (3, 4))
    assert (ml.grid.height, ml.grid.width) == (37 // 3, 43 // 4)
    assert ml.grid.crs == UTM54N
    assert ml.grid.transform == Affine(12.0, 0.0, TRANSFORM.c, 0.0, -9.0, TRANSFORM.f)
    assert ml.bands == db_product.bands and ml.quantity == db_product.quantity


def test_multilook_averages_linear_power_per_block(db_product: DbRasterProduct) -> None:
    ml = Multilooked(db_product, (3, 4))
    source = db_to_power(_whole(db_product)).astype(np.float64)
    out = ml.read_db(Window(2, 1, 3, 5))
    for r in range(3):
        for c in range(5):
            block = source[:, (2 + r) * 3 : (3 + r) * 3, (1 + c) * 4 : (2 + c) * 4]
            expected = 10 * np.log10(np.nanmean(block, axis=(1, 2)))
            np.testing.assert_allclose(out[:, r, c], expected, atol=1e-4)
    # Column 0 of the output covers source columns 0..3, two of which are no data.
    first = ml.read_db(Window(0, 0, 1, 1))[0, 0, 0]
    assert first == pytest.approx(10 * np.log10(np.nanmean(source[0, 0:3, 0:4])), abs=1e-4)


@pytest.mark.parametrize("method", ["boxcar", "lee"])
def test_windowed_filtering_equals_whole_image_filtering(
    db_product: DbRasterProduct, method: str
) -> None:
    filtered = SpeckleFiltered(db_product, method, size=7, looks=1.0)
    whole_power = db_to_power(_whole(db_product))
    reference = boxcar(whole_power, 7) if method == "boxcar" else lee(whole_power, 7, 1.0)
    reference_db = power_to_db(reference)
    np.testing.assert_allclose(_whole(filtered), reference_db, rtol=1e-5, equal_nan=True)
    for window in [
        Window(0, 0, 5, 6),
        Window(9, 18, 6, 7),
        Window(30, 36, 7, 7),
        Window(0, 40, 37, 3),
    ]:
        rows = slice(window.row, window.row + window.height)
        cols = slice(window.col, window.col + window.width)
        np.testing.assert_allclose(
            filtered.read_db(window),
            reference_db[:, rows, cols],
            rtol=1e-5,
            atol=1e-5,
            equal_nan=True,
        )
    # Without the halo the window's edge pixels would differ: the halo matters here.
    naive = power_to_db(boxcar(db_to_power(db_product.read_db(Window(9, 18, 6, 7))), 7))
    if method == "boxcar":
        assert not np.allclose(naive, reference_db[:, 9:15, 18:25], equal_nan=True)


def test_filtering_reduces_speckle_on_a_dn_product(tmp_path: Path) -> None:
    rng = np.random.default_rng(5)
    amplitude = np.sqrt(rng.gamma(1.0, 1.0, (32, 32))) * 5000  # flat area, single look
    path = write_tif(
        tmp_path / "IMG-HH-ALOS2458503210-221119-UBSR2.1GUD.tif",
        np.clip(amplitude, 1, 65535).astype(np.uint16),
    )
    raw = DnGeoTiffProduct(path)
    smooth = SpeckleFiltered(raw, "boxcar", size=5)
    var_raw = np.nanvar(db_to_power(_whole(raw)))
    var_smooth = np.nanvar(db_to_power(_whole(smooth))[:, 4:-4, 4:-4])
    assert var_smooth < 0.2 * var_raw  # a 5x5 box cuts single-look variance ~25x in theory


def test_process_multilooks_then_filters_with_the_looks(tmp_path: Path) -> None:
    product = DnGeoTiffProduct(
        write_tif(tmp_path / "IMG-HH-ALOS2458503210-221119-UBSR2.1GUD.tif", dn_scene())
    )
    assert process(product) is product
    chained = process(product, looks=(2, 2), speckle="lee", filter_size=3)
    assert isinstance(chained, SpeckleFiltered) and isinstance(chained.product, Multilooked)
    assert chained.looks == 4.0 and chained.grid.height == 20
    info = chained.describe()
    assert info["multilook"].startswith("2 x 2") and info["speckle filter"] == (
        "lee 3 x 3, linear power, 4 looks"
    )
    with pytest.raises(ValueError, match="odd"):
        SpeckleFiltered(product, "boxcar", size=4)


def test_selected_bands_reorder_and_reject_unknown_bands(db_product: DbRasterProduct) -> None:
    first, second = db_product.bands
    picked = process(db_product, bands=[second, first])
    assert picked.bands == (second, first) and picked.grid == db_product.grid
    window = Window(5, 7, 4, 6)
    np.testing.assert_array_equal(
        picked.read_db(window), db_product.read_db(window)[::-1], strict=True
    )
    assert process(db_product, bands=list(db_product.bands)) is db_product  # nothing to do
    with pytest.raises(ProductError, match="VV"):
        process(db_product, bands=["VV"])
