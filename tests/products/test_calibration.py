"""DN -> dB formulas (with regressions against published mistakes), multilook, filters."""

from __future__ import annotations

import numpy as np
import pytest

from alos2fm.products.calibration import (
    boxcar,
    db_to_power,
    dn_to_db,
    lee,
    multilook,
    power_to_db,
    slc_to_db,
    speckle_filter,
)


def test_dn_to_db_hand_computed_values() -> None:
    db = dn_to_db(np.array([14125, 1413, 1, 0], dtype=np.uint16))
    assert db.dtype == np.float32
    # 10·log10(14125²) = 82.99977 -> -0.00023 dB; 10·log10(1413²) = 63.00285 -> -19.99715 dB
    assert db[0] == pytest.approx(-0.00023, abs=1e-4)
    assert db[1] == pytest.approx(-19.99715, abs=1e-4)
    assert db[2] == pytest.approx(-83.0)  # DN 1: the log term vanishes, only CF remains
    assert np.isnan(db[3])  # DN 0 is no data, masked before the log


def test_dn_to_db_uses_the_given_calibration_factor() -> None:
    assert dn_to_db(np.array([1000]), cf=-80.0)[0] == pytest.approx(60.0 - 80.0, abs=1e-5)


def test_dn_to_db_is_not_the_formula_without_the_square() -> None:
    # ESA charter documents print 10·log10(DN) + CF: DN 14125 would give -41.5 dB.
    wrong = 10 * np.log10(14125.0) - 83.0
    assert wrong == pytest.approx(-41.5, abs=0.01)
    assert abs(dn_to_db(np.array([14125]))[0] - wrong) > 40


def test_slc_to_db_applies_the_32_db_adjustment() -> None:
    # I = 3000, Q = 4000 -> I² + Q² = 25e6 -> 73.9794 dB; -83 - 32 -> -41.0206 dB.
    db = slc_to_db(np.array([3000 + 4000j, 0j], dtype=np.complex64))
    assert db[0] == pytest.approx(10 * np.log10(25e6) - 115.0, abs=1e-4)
    assert db[0] == pytest.approx(-41.0206, abs=1e-4)
    assert np.isnan(db[1])
    # An ALOS-1 reader used A = 0: that result is 32 dB too bright.
    assert db[0] == pytest.approx((10 * np.log10(25e6) - 83.0) - 32.0, abs=1e-4)


def test_slc_intensity_equals_amplitude_dn_formula_minus_32() -> None:
    amplitude = np.array([14125.0], dtype=np.float32)
    assert slc_to_db(amplitude.astype(np.complex64))[0] == pytest.approx(
        dn_to_db(amplitude)[0] - 32.0, abs=1e-4
    )


def test_power_db_round_trip_and_invalid_power() -> None:
    power = np.array([1.0, 0.1, 0.01, 0.0, -1.0, np.nan], dtype=np.float32)
    db = power_to_db(power)
    np.testing.assert_allclose(db[:3], [0.0, -10.0, -20.0], atol=1e-5)
    assert np.isnan(db[3:]).all()
    np.testing.assert_allclose(db_to_power(db[:3]), power[:3], rtol=1e-6)
    assert power_to_db(np.array([2.0]), offset_db=-3.0)[0] == pytest.approx(
        10 * np.log10(2) - 3, abs=1e-5
    )


def test_multilook_averages_linear_power_and_skips_no_data() -> None:
    power = np.array(
        [
            [1.0, 3.0, 10.0, np.nan, 7.0],
            [5.0, 7.0, np.nan, np.nan, 7.0],
            [9.0, 9.0, 9.0, 9.0, 9.0],  # dropped: a partial block row
        ],
        dtype=np.float32,
    )
    out = multilook(power, (2, 2))
    assert out.shape == (1, 2)
    assert out[0, 0] == pytest.approx(4.0)  # (1 + 3 + 5 + 7) / 4
    assert out[0, 1] == pytest.approx(10.0)  # only one valid pixel in the block
    assert np.isnan(multilook(np.full((2, 2), np.nan, np.float32), (2, 2))[0, 0])
    # Through dB: 10·log10(mean power 4) = 6.0206 dB; the mean of the dB values would be
    # 10·log10(1·3·5·7) / 4 = 5.0530 dB, 1 dB too dark.
    db = power_to_db(power[:2, :2])
    assert power_to_db(multilook(db_to_power(db), (2, 2)))[0, 0] == pytest.approx(6.0206, abs=1e-4)
    assert db.mean() == pytest.approx(5.0530, abs=1e-4)


def test_multilook_keeps_leading_axes() -> None:
    power = np.arange(2 * 4 * 6, dtype=np.float32).reshape(2, 4, 6)
    out = multilook(power, (2, 3))
    assert out.shape == (2, 2, 2)
    assert out[1, 1, 1] == pytest.approx(power[1, 2:4, 3:6].mean())


def test_boxcar_is_the_nan_aware_local_mean_with_missing_outside() -> None:
    power = np.array([[1.0, 2.0, 3.0], [4.0, np.nan, 6.0], [7.0, 8.0, 9.0]], np.float32)
    out = boxcar(power, 3)
    assert out[0, 0] == pytest.approx((1 + 2 + 4) / 3)  # corner: 3 valid of 4 inside
    assert out[1, 0] == pytest.approx((1 + 2 + 4 + 7 + 8) / 5)
    assert np.isnan(out[1, 1])  # no-data stays no-data
    assert out[2, 2] == pytest.approx((6 + 8 + 9) / 3)


def test_lee_smooths_flat_speckle_and_keeps_a_strong_edge() -> None:
    rng = np.random.default_rng(0)
    flat = rng.gamma(4.0, 1.0 / 4.0, (64, 64)).astype(np.float32)  # 4-look speckle, mean 1
    filtered = lee(flat, 7, looks=4.0)
    # In a homogeneous area the Lee estimate approaches the local mean: variance drops.
    assert filtered[8:-8, 8:-8].var() < 0.25 * flat[8:-8, 8:-8].var()
    assert filtered.mean() == pytest.approx(flat.mean(), rel=0.02)
    edge = np.where(np.arange(32)[None, :] < 16, 1.0, 100.0).repeat(32, 0).astype(np.float32)
    out = lee(edge, 5, looks=4.0)
    # Noise-free: zero variance away from the edge -> local mean = value.
    np.testing.assert_allclose(out[:, :13], 1.0, rtol=1e-5)
    # Next to the edge (window 1,1,1,100,100): m = 40.6, v = 4000.6 - 40.6² = 2352.24,
    # k = (v - m²/4) / (1.25 v) = 0.65985 -> 40.6 + k (1 - 40.6) = 14.470, far from the
    # boxcar's 40.6: the edge is kept much sharper.
    assert out[10, 15] == pytest.approx(14.470, abs=1e-3)
    assert boxcar(edge, 5)[10, 15] == pytest.approx(40.6, abs=1e-4)


def test_lee_with_nan_and_hand_computed_weight() -> None:
    # 3x3 window at the centre: values 1..9 (mean 5, var 60/9), z = 5 -> estimate = 5.
    power = np.arange(1, 10, dtype=np.float32).reshape(3, 3)
    assert lee(power, 3)[1, 1] == pytest.approx(5.0, abs=1e-5)
    # Corner (0,0): window {1,2,4,5}: m = 3, v = 2.5; Cu² = 1 -> k = (2.5 - 9)/(5) < 0 -> 0.
    assert lee(power, 3)[0, 0] == pytest.approx(3.0, abs=1e-5)
    power[1, 1] = np.nan
    assert np.isnan(lee(power, 3)[1, 1])
    assert np.isfinite(lee(power, 3)[0, 0])


def test_speckle_filter_dispatch_and_bad_arguments() -> None:
    power = np.ones((5, 5), np.float32)
    np.testing.assert_array_equal(speckle_filter(power, "boxcar", 3), boxcar(power, 3))
    with pytest.raises(ValueError, match="unknown speckle filter"):
        speckle_filter(power, "median", 3)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="odd"):
        boxcar(power, 4)
    with pytest.raises(ValueError, match="looks"):
        multilook(power, (0, 1))


def test_dn_to_db_table_gives_the_formula_bit_for_bit() -> None:
    """The uint16 lookup table (see dn_to_db) holds exactly the formula's float32 values,
    and a float16 ``out`` gets them rounded as float32 -> float16 rounds them."""
    dn = np.arange(2**16, dtype=np.uint16)
    formula = np.float32(20.0) * np.log10(np.where(dn > 0, dn, 1).astype(np.float32))
    formula = np.where(dn > 0, formula + np.float32(-83.0), np.float32(np.nan))
    db = dn_to_db(np.roll(dn, 7).reshape(256, 256))
    np.testing.assert_array_equal(db.ravel(), np.roll(formula, 7))
    half = dn_to_db(dn, out=np.empty(dn.shape, np.float16))
    assert half.dtype == np.float16
    np.testing.assert_array_equal(half, formula.astype(np.float16))
    signed = dn_to_db(np.array([0, 1000, -1]), out=np.empty(3, np.float16))  # not uint: arithmetic
    np.testing.assert_array_equal(signed, [np.nan, np.float16(60.0 - 83.0), np.nan])
