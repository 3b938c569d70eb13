"""Faults in backscatter rasters: undeclared fill values, infinities, values out of range,
and the options that explain and mask them (R10, N2)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from alos2fm.errors import ProductError
from alos2fm.products import open_product
from alos2fm.products.base import Window
from alos2fm.products.validation import (
    SIGMA0_DB_RANGE,
    check_backscatter,
    validate_product,
)
from tests.products.rasters import dn_scene, write_tif

L21 = "IMG-{pol}-ALOS2458503210-221119-UBSR2.1GUD.tif"
FLOAT32_LOWEST = float(np.finfo(np.float32).min)  # -3.4028235e38, GDAL's usual float fill


def _db_scene(height: int = 64, width: int = 64, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(-12.0, 4.0, (height, width)).astype(np.float32)


def _with_fill(
    data: np.ndarray, value: float, n: int, seed: int = 1
) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    flat = rng.choice(data.size, n, replace=False)
    mask = np.zeros(data.size, bool)
    mask[flat] = True
    mask = mask.reshape(data.shape)
    out = data.copy()
    out[mask] = value
    return out, mask


# --- R10: undeclared fill values are refused with counts, declared ones are masked ----------


def test_R10_fill_value_in_db_raster_is_refused_with_counts(tmp_path: Path) -> None:
    data, _ = _with_fill(_db_scene(), -9999.0, 20)  # 0.5 % of the pixels, no nodata tag
    path = write_tif(tmp_path / "scene_db.tif", data)
    product = open_product(path)  # the decimated dB check lets it through
    check = check_backscatter(product)
    assert not check.ok and check.out_of_range == 20 and check.likely_fill == 20
    with pytest.raises(ProductError) as err:
        validate_product(product)
    message = err.value.message
    assert "scene_db.tif" in message and "20 pixels" in message
    assert "-9999" in message and "--nodata -9999" in message


def test_R10_float32_lowest_fill_is_refused_and_named(tmp_path: Path) -> None:
    data, _ = _with_fill(_db_scene(), FLOAT32_LOWEST, 7)
    path = write_tif(tmp_path / "lowest.tif", data)
    with pytest.raises(ProductError, match=r"7 pixels.*-3\.40282.*e\+38.*--nodata"):
        validate_product(open_product(path))


def test_R10_infinite_values_are_refused(tmp_path: Path) -> None:
    data, _ = _with_fill(_db_scene(), np.inf, 3)
    path = write_tif(tmp_path / "inf.tif", data)
    check = check_backscatter(open_product(path))
    assert check.non_finite == 3 and not check.ok
    with pytest.raises(ProductError, match=r"3 pixels.*inf.*--nodata inf"):
        check.raise_if_bad()


@pytest.mark.parametrize("where", ["reader", "check"])
def test_R10_declared_nodata_masks_exactly_the_fill_pixels(tmp_path: Path, where: str) -> None:
    data, mask = _with_fill(_db_scene(), -9999.0, 20)
    path = write_tif(tmp_path / "declared.tif", data)
    if where == "reader":
        product = open_product(path, nodata=-9999)
        db = product.read_db(Window(0, 0, 64, 64))[0]
        np.testing.assert_array_equal(np.isnan(db), mask)
        check = validate_product(product)
    else:
        check = validate_product(open_product(path), nodata=-9999)
    assert check.ok and check.masked == 20 and check.pixels == 64 * 64


def test_R10_nodata_tag_of_the_file_masks(tmp_path: Path) -> None:
    data, _ = _with_fill(_db_scene(), -32768.0, 9)
    path = write_tif(tmp_path / "tagged.tif", data, nodata=-32768.0)
    check = validate_product(open_product(path))
    assert check.ok and check.masked == 9


def test_R10_linear_power_zero_fill_is_refused_or_masked(tmp_path: Path) -> None:
    power = np.random.default_rng(2).gamma(1.0, 0.05, (32, 32)).astype(np.float32) + 1e-4
    data, mask = _with_fill(power, 0.0, 5)
    path = write_tif(tmp_path / "sigma0_power.tif", data)
    with pytest.raises(ProductError, match=r"5 pixels.*\b0\b.*--nodata 0"):
        validate_product(open_product(path, kind="power"))
    product = open_product(path, kind="power", nodata=0)
    assert validate_product(product).masked == 5
    np.testing.assert_array_equal(np.isnan(product.read_db(Window(0, 0, 32, 32))[0]), mask)


def test_R10_calibrated_products_pass(tmp_path: Path) -> None:
    dn = write_tif(tmp_path / L21.format(pol="HH"), dn_scene())
    assert validate_product(open_product(dn)).ok
    db = write_tif(tmp_path / "clean.tif", _db_scene())
    check = validate_product(open_product(db))
    assert check.ok and check.masked == 0 and check.pixels == 64 * 64


def test_R10_check_reads_window_by_window(tmp_path: Path) -> None:
    data, _ = _with_fill(_db_scene(100, 90), -9999.0, 11)
    product = open_product(write_tif(tmp_path / "big.tif", data))
    windows: list[Window] = []
    read = product.read_db

    def spy(window: Window) -> np.ndarray:
        windows.append(window)
        return read(window)

    product.read_db = spy  # type: ignore[method-assign]
    if hasattr(product, "read_raw"):
        raw = product.read_raw

        def raw_spy(window: Window) -> np.ndarray:
            windows.append(window)
            return raw(window)

        product.read_raw = raw_spy  # type: ignore[method-assign]
    check = check_backscatter(product, block=32)
    assert check.out_of_range == 11
    assert len(windows) >= 9 and all(w.height <= 32 and w.width <= 32 for w in windows)
    assert sum(w.height * w.width for w in windows) == 100 * 90


# --- R10: property tests ---------------------------------------------------------------------

FILLS = [FLOAT32_LOWEST, -9999.0, -32768.0, 0.0, np.inf, np.nan]


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    fill=st.sampled_from(FILLS),
    count=st.integers(1, 9),  # < 1 % of 32 x 32 pixels
    seed=st.integers(0, 2**16),
    declare=st.booleans(),
)
def test_R10_property_fill_values_are_refused_or_masked_exactly(
    tmp_path: Path, fill: float, count: int, seed: int, declare: bool
) -> None:
    power = fill == 0.0  # a zero fill only makes sense in linear power
    rng = np.random.default_rng(seed)
    if power:
        clean = rng.gamma(1.0, 0.05, (32, 32)).astype(np.float32) + 1e-4
    else:
        clean = rng.normal(-12.0, 5.0, (32, 32)).astype(np.float32)
    data, mask = _with_fill(clean, fill, count, seed)
    path = write_tif(tmp_path / f"p{seed}_{count}.tif", data)
    kind = "power" if power else "db"
    nodata = fill if declare else None
    product = open_product(path, kind=kind, nodata=nodata)
    check = check_backscatter(product)
    db = product.read_db(Window(0, 0, 32, 32))[0]
    if declare or np.isnan(fill):  # NaN is no data by definition
        assert check.ok and check.masked == count
        np.testing.assert_array_equal(np.isnan(db), mask)
    else:
        assert not check.ok and check.bad == count
        with pytest.raises(ProductError) as err:
            check.raise_if_bad()
        assert f"{count} pixel" in err.value.message and "--nodata" in err.value.message
    # Whatever passes the check is finite and in range (or NaN).
    if check.ok:
        valid = db[~np.isnan(db)]
        assert np.isfinite(valid).all()
        assert valid.min() >= SIGMA0_DB_RANGE[0] and valid.max() <= SIGMA0_DB_RANGE[1]


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    value=st.one_of(
        st.floats(max_value=SIGMA0_DB_RANGE[0], exclude_max=True, width=32),
        st.floats(min_value=SIGMA0_DB_RANGE[1], exclude_min=True, width=32),
    ),
    row=st.integers(0, 15),
    col=st.integers(0, 15),
)
def test_R10_property_no_out_of_range_value_passes(
    tmp_path: Path, value: float, row: int, col: int
) -> None:
    data = _db_scene(16, 16)
    data[row, col] = value
    path = write_tif(tmp_path / f"v{row}_{col}.tif", data)
    check = check_backscatter(open_product(path, kind="db"))
    assert not check.ok and check.bad == 1


# --- N2: the way out is a CLI option ---------------------------------------------------------


def test_N2_linear_power_error_names_the_cli_option(tmp_path: Path) -> None:
    power = np.random.default_rng(1).gamma(1.0, 0.05, (16, 16)).astype(np.float32)
    path = write_tif(tmp_path / "Sigma0_HH.tif", power)
    with pytest.raises(ProductError) as err:
        open_product(path)
    assert "--kind power" in err.value.message and "kind='" not in err.value.message


def test_N2_renamed_dn_product_error_names_kind_dn(tmp_path: Path) -> None:
    path = write_tif(tmp_path / "scene_hh.tif", dn_scene(16, 16))
    with pytest.raises(ProductError) as err:
        open_product(path)
    assert "--kind dn" in err.value.message and "kind='" not in err.value.message


def test_N2_renamed_dn_product_opens_with_kind_dn(tmp_path: Path) -> None:
    dn = dn_scene(16, 16)
    path = write_tif(tmp_path / "scene_hh.tif", dn)
    product = open_product(path, kind="dn", bands=["HH"])
    assert product.bands == ("HH",)
    assert np.isnan(product.read_db(Window(0, 0, 16, 16))[0, :, :3]).all()
    with pytest.raises(ProductError) as err:
        open_product(path, kind="dn")  # no name, no band: say how to give it
    assert "--bands HH" in err.value.message


def test_N2_info_of_a_renamed_dn_product_is_not_a_class_listing(tmp_path: Path) -> None:
    from alos2fm.data.labels import is_label_source

    full_range = np.random.default_rng(3).integers(1, 65535, (128, 128)).astype(np.uint16)
    path = write_tif(tmp_path / "renamed.tif", full_range)
    assert not is_label_source(path)
    classes = np.random.default_rng(4).choice([10, 20, 30, 40, 50, 60, 80, 90], (64, 64))
    assert is_label_source(write_tif(tmp_path / "worldcover.tif", classes.astype(np.uint16)))


def test_N2_cli_takes_kind_and_nodata(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from alos2fm.cli import app

    runner = CliRunner()
    for command in ("info", "prepare", "predict"):
        result = runner.invoke(app, [command, "--help"], terminal_width=200)
        assert result.exit_code == 0
        assert "--kind" in result.output and "--nodata" in result.output, command
    data, _ = _with_fill(_db_scene(), -9999.0, 20)
    path = write_tif(tmp_path / "s.tif", data)
    result = runner.invoke(app, ["info", str(path), "--kind", "db", "--nodata", "-9999"])
    assert result.exit_code == 0, result.output
    renamed = write_tif(tmp_path / "renamed.tif", dn_scene(64, 64))
    result = runner.invoke(app, ["info", str(renamed)])
    assert isinstance(result.exception, ProductError)
    assert "--kind dn" in result.exception.message
