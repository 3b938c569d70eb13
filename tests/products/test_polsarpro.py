"""PolSARpro T3 reader on the real AIRSAR Flevoland scene and on hand-made elements."""

from __future__ import annotations

import numpy as np
import pytest

from alos2fm.errors import ProductError
from alos2fm.products.base import Window
from alos2fm.products.polsarpro import T3Product


def _write_t3(folder, t11, t22, t12, t33):
    folder.mkdir()
    h, w = t11.shape
    for name, arr in {"T11": t11, "T22": t22, "T12_real": t12, "T33": t33}.items():
        arr.astype("<f4").tofile(folder / f"{name}.bin")
        (folder / f"{name}.bin.hdr").write_text(
            f"ENVI\nsamples = {w}\nlines   = {h}\nbands   = 1\ndata type = 4\nbyte order = 0\n"
        )
    return folder


def test_intensities_follow_the_pauli_formulas(tmp_path):
    ones = np.ones((2, 3), np.float32)
    folder = _write_t3(tmp_path / "T3", 3 * ones, 1 * ones, 0.5 * ones, 0.2 * ones)
    db = T3Product(folder).read_db(Window(0, 0, 2, 3))
    # HH = (3 + 1 + 1) / 2 = 2.5, HV = 0.2 / 2 = 0.1, VV = (3 + 1 - 1) / 2 = 1.5
    np.testing.assert_allclose(db[:, 0, 0], 10 * np.log10([2.5, 0.1, 1.5]), rtol=1e-6)


def test_non_positive_power_is_no_data(tmp_path):
    t33 = np.array([[0.2, 0.0, -1e-9]], np.float32)
    folder = _write_t3(tmp_path / "T3", *(np.ones((1, 3), np.float32),) * 3, t33)
    hv = T3Product(folder, bands=("HV",)).read_db(Window(0, 0, 1, 3))[0, 0]
    assert np.isfinite(hv[0]) and np.isnan(hv[1]) and np.isnan(hv[2])


def test_truncated_element_is_reported(tmp_path):
    folder = _write_t3(tmp_path / "T3", *(np.ones((4, 4), np.float32),) * 4)
    (folder / "T22.bin").write_bytes(b"\0" * 10)
    with pytest.raises(ProductError, match="T22.bin.*truncated"):
        T3Product(folder)


def test_real_flevoland_statistics(flevoland_dir):
    product = T3Product(flevoland_dir / "T3")
    assert (product.grid.height, product.grid.width) == (750, 1024)
    db = product.read_db(Window(0, 0, 750, 1024))
    gt = np.load(flevoland_dir / "Flevoland_gt_uint8_750x1024.npy")
    hh, hv = db[0], db[1]
    # Figures from the data's README: HH median about -24.5 dB, water darkest (-29.6 dB HH),
    # buildings brightest in HH (about -10 dB), 2915 HV values <= 0.
    assert np.nanmedian(hh) == pytest.approx(-24.5, abs=0.3)
    assert np.nanmedian(hh[gt == 1]) == pytest.approx(-29.6, abs=0.3)
    assert np.nanmedian(hh[gt == 15]) == pytest.approx(-10.0, abs=1.0)
    assert int(np.isnan(hv).sum()) == 2915
