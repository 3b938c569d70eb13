from __future__ import annotations

import numpy as np
import pytest
import rasterio

from alos2fm.data.labels import LabelMap, identity_remap
from alos2fm.data.synth import (
    CALIBRATION_FACTOR_DB,
    CLASS_MEAN_DB,
    write_synthetic_scene,
)
from alos2fm.products import open_product
from alos2fm.products.base import RasterGrid, Window
from alos2fm.products.naming import parse_product_name

SIZE = 640


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    return write_synthetic_scene(tmp_path_factory.mktemp("synth"), size=SIZE, seed=3)


def _power_and_classes(scene, size=SIZE):
    """Calibrated linear sigma0 and HRLULC class id (1-14) per product pixel."""
    with rasterio.open(scene.product) as src:
        dn = src.read(1).astype(np.float64)
        grid = RasterGrid(size, size, src.crs.to_wkt(), src.transform)
    with LabelMap(scene.landcover, identity_remap("23.12")) as labels:
        classes = labels.read_on_grid(grid, Window(0, 0, size, size)).astype(int) + 1
    power = dn**2 * 10.0 ** (CALIBRATION_FACTOR_DB / 10.0)  # sigma0 = 10 log10(DN^2) + CF
    return power, classes, dn > 0


def test_calibrated_dn_reproduce_the_class_means(scene):
    power, classes, valid = _power_and_classes(scene)
    checked = 0
    for k, mean_db in CLASS_MEAN_DB.items():
        in_class = valid & (classes == k)
        if in_class.sum() < 8000:  # single-look speckle: 8000 px give ~0.05 dB noise
            continue
        assert 10 * np.log10(power[in_class].mean()) == pytest.approx(mean_db, abs=0.2), k
        checked += 1
    assert checked >= 4  # the scene holds several large regions of distinct classes
    # Water is dark and built-up bright: the contrast the demo relies on.
    assert CLASS_MEAN_DB[1] < -20 and CLASS_MEAN_DB[2] > -2


def test_speckle_has_the_gamma_statistics_of_l_looks(tmp_path):
    scene = write_synthetic_scene(tmp_path, size=512, seed=5, looks=4.0)
    power, classes, valid = _power_and_classes(scene, 512)
    biggest = np.bincount(classes[valid]).argmax()
    values = power[valid & (classes == biggest)]
    # Gamma(L, 1/L) multiplicative speckle: coefficient of variation 1/sqrt(L) = 0.5.
    assert values.std() / values.mean() == pytest.approx(0.5, abs=0.03)


def test_nodata_border_is_the_tilted_swath(scene):
    _, _, valid = _power_and_classes(scene)
    assert not valid[0, 0] and not valid[-1, -1] and not valid[0, -1] and not valid[-1, 0]
    assert valid[SIZE // 2, SIZE // 2]
    # Inside: a square tilted by 10 degrees that just fits, area 1 / (cos + sin)^2 of the scene.
    theta = np.deg2rad(10.0)
    assert valid.mean() == pytest.approx(1.0 / (np.cos(theta) + np.sin(theta)) ** 2, abs=0.005)


def test_product_looks_like_an_l21_geotiff_and_says_synthetic(scene):
    name = parse_product_name(scene.product.name)
    assert (name.level, name.mode, name.polarisation) == ("2.1", "UBS", "HH")
    assert (name.date, name.projection, name.orbit_direction) == ("2022-11-19", "UTM", "descending")
    assert open_product(scene.product).date == "2022-11-19"
    with rasterio.open(scene.product) as src:
        assert src.dtypes == ("uint16",) and src.nodata == 0
        assert src.crs.to_epsg() == 32654
        assert src.profile["tiled"] and src.compression is not None
        assert src.tags()["SYNTHETIC"] == "true"
    with rasterio.open(scene.landcover) as lc:
        assert lc.crs.to_epsg() == 4326 and lc.dtypes == ("uint8",)
        assert lc.res == pytest.approx((1 / 12000, 1 / 12000))
        assert set(np.unique(lc.read(1))) <= set(CLASS_MEAN_DB)
        assert lc.colormap(1)[1][:3] == (0, 0, 100)  # HRLULC water colour
        assert lc.tags()["SYNTHETIC"] == "true"
    assert "SYNTHETIC" in scene.readme.read_text()


def test_same_seed_same_scene_other_seed_other_scene(tmp_path):
    a = write_synthetic_scene(tmp_path / "a", size=64, seed=1)
    b = write_synthetic_scene(tmp_path / "b", size=64, seed=1)
    c = write_synthetic_scene(tmp_path / "c", size=64, seed=2)
    read = [rasterio.open(s.product).read(1) for s in (a, b, c)]
    assert np.array_equal(read[0], read[1])
    assert not np.array_equal(read[0], read[2])


def test_own_labels_example_is_the_scene_in_db_and_its_water_as_a_signed_mask(scene):
    from alos2fm.data.synth import write_own_labels_example

    example = write_own_labels_example(scene)
    product = open_product(scene.product)
    whole = Window(0, 0, SIZE, SIZE)
    with rasterio.open(example.image) as src:
        assert src.dtypes[0] == "float32" and src.descriptions == ("HH",)
        np.testing.assert_array_equal(src.read(1), product.read_db(whole)[0])
    with rasterio.open(example.mask) as src, rasterio.open(scene.landcover) as lc:
        assert src.dtypes[0] == "int16" and src.nodata is None and src.crs == lc.crs
        mask, classes = src.read(1), lc.read(1)
    np.testing.assert_array_equal(mask == 1, classes == 1)  # HRLULC water bodies
    np.testing.assert_array_equal(mask == -1, classes == 13)  # wetland: left undecided
    assert set(np.unique(mask)) <= {-1, 0, 1} and (mask == 1).any()
