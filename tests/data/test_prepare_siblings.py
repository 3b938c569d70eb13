"""``prepare --bands HH,HV`` on products stored one file per polarisation.

Dual- and quad-pol ALOS-2 products come as ``IMG-HH-…`` and ``IMG-HV-…`` side by side;
naming the HH file and both bands prepares one two-band dataset. All inputs SYNTHETIC.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from alos2fm.data import store
from alos2fm.data.prepare import prepare_config, run_prepare
from tests.products.ceos_records import map_projection_fields, write_product
from tests.products.rasters import dn_scene, write_tif

PATCH = 64
GEOTIFF = "IMG-{pol}-ALOS2458503210-221119-UBSR2.1GUD.tif"
CEOS = "ALOS2123451230-200105-FBDR1.5GLD"  # L: a projection the reader cannot build


def _expected_db(dn: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore"):
        return np.where(dn > 0, 20 * np.log10(dn.astype(np.float64)) - 83.0, np.nan)


def _prepare(product: Path, out: Path) -> store.PatchArrays:
    cfg = prepare_config(
        None,
        products=[product],
        out=out,
        bands=["HH", "HV"],
        patch_size=PATCH,
        stride=PATCH,
        split_fractions="1,0,0",  # every patch in train: the split is not under test
        progress=False,
    )
    run_prepare(cfg)
    return store.open_patch_arrays(out)


def _check_two_bands(arrays: store.PatchArrays, out: Path, hh: np.ndarray, hv: np.ndarray):
    assert arrays.bands == ("HH", "HV") and arrays.labels is None
    assert store.read_stats(out)["bands"] == ["HH", "HV"]
    index = store.read_index(out)
    assert len(index) == 4  # 128 x 128 px in 64 px patches
    for i, entry in index.iterrows():
        rows = slice(int(entry["row"]), int(entry["row"]) + PATCH)
        cols = slice(int(entry["col"]), int(entry["col"]) + PATCH)
        image = np.asarray(arrays.images[i], dtype=np.float64)
        for band, dn in enumerate((hh, hv)):
            np.testing.assert_allclose(image[band], _expected_db(dn[rows, cols]), atol=0.02)


def test_geotiff_siblings_prepare_a_two_band_store(tmp_path: Path) -> None:
    hh, hv = dn_scene(128, 128, seed=1), dn_scene(128, 128, seed=2)
    hh_path = write_tif(tmp_path / GEOTIFF.format(pol="HH"), hh)
    write_tif(tmp_path / GEOTIFF.format(pol="HV"), hv)
    out = tmp_path / "ds"
    _check_two_bands(_prepare(hh_path, out), out, hh, hv)


def test_ceos_img_siblings_prepare_without_a_crs(tmp_path: Path) -> None:
    # A CEOS product whose projection gives no CRS still prepares (unlabelled), from its
    # IMG-HH file with the HV file beside it.
    spacing, size = 10.0, 128
    x0, y0, x1, y1 = 500_000.0, 4_000_000.0, 500_000.0 + 127 * spacing, 4_000_000.0 - 127 * spacing
    record = map_projection_fields(
        "LCC-PROJECTION",
        [(x0, y0), (x1, y0), (x1, y1), (x0, y1)],
        None,
        n_pixels=size,
        n_lines=size,
        spacing=spacing,
    )
    hh, hv = dn_scene(size, size, seed=3), dn_scene(size, size, seed=4)
    folder = write_product(tmp_path / "ceos", CEOS, {"HH": hh, "HV": hv}, record)
    out = tmp_path / "ds"
    with pytest.warns(UserWarning, match="'LCC-PROJECTION' is not supported"):
        arrays = _prepare(folder / f"IMG-HH-{CEOS}", out)
    _check_two_bands(arrays, out, hh, hv)
    assert store.read_index(out)["crs"].isna().all()
