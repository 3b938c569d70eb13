"""open_product dispatch, describe_product, and the ``alos2fm info`` command."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from alos2fm.cli import app
from alos2fm.errors import ProductError
from alos2fm.products import Product, describe_product, detect_kind, open_product
from alos2fm.products.base import Window
from alos2fm.products.ceos import CeosProduct
from alos2fm.products.geotiff import DbRasterProduct, DnGeoTiffProduct, MosaicTileProduct
from tests.products.rasters import dn_scene, write_tif

SCENE = "ALOS2015976960-140909-FBDR1.5GUA"


def test_dispatch_on_names_and_content(tmp_path: Path) -> None:
    dn = write_tif(tmp_path / "IMG-HH-ALOS2458503210-221119-UBSR2.1GUD.tif", dn_scene())
    mosaic = write_tif(tmp_path / "N32E119_2022_sl_HH_F02DAR.tif", dn_scene())
    write_tif(tmp_path / "N32E119_2022_mask_F02DAR.tif", np.full((40, 48), 255, np.uint8))
    generic = write_tif(tmp_path / "sentinel1_vv_db.tif", np.full((8, 8), -11.5, np.float32))
    for path, cls in [
        (dn, DnGeoTiffProduct),
        (mosaic, MosaicTileProduct),
        (generic, DbRasterProduct),
    ]:
        product = open_product(path)
        assert isinstance(product, cls) and isinstance(product, Product)
    assert open_product(generic).read_db(Window(0, 0, 1, 1))[0, 0, 0] == -11.5


def test_ceos_dispatch_from_folder_vol_and_img(ceos_l15_dir: Path) -> None:
    assert detect_kind(ceos_l15_dir) == "ceos"
    assert detect_kind(ceos_l15_dir / f"VOL-{SCENE}") == "ceos"
    assert detect_kind(ceos_l15_dir / f"IMG-HV-{SCENE}") == "ceos"
    product = open_product(ceos_l15_dir / f"IMG-HV-{SCENE}", headers_only=True)
    assert isinstance(product, CeosProduct) and product.bands == ("HV",)
    with pytest.raises(ProductError, match="truncated"):  # strict by default
        open_product(ceos_l15_dir / f"VOL-{SCENE}")


def test_explicit_kind_skips_detection_and_the_db_check(tmp_path: Path) -> None:
    odd = write_tif(tmp_path / "scaled.tif", np.full((8, 8), 500.0, np.float32))
    with pytest.raises(ProductError, match="not backscatter in dB"):
        open_product(odd)
    assert open_product(odd, kind="db").read_db(Window(0, 0, 1, 1))[0, 0, 0] == 500.0
    unnamed_dn = write_tif(tmp_path / "my_scene.tif", dn_scene())
    product = open_product(unnamed_dn, kind="dn", polarisation="HV")
    assert product.bands == ("HV",) and product.date is None
    with pytest.raises(ProductError, match="unknown product kind 'jpeg'"):
        open_product(odd, kind="jpeg")  # type: ignore[arg-type]


def test_missing_path_and_foreign_folder(tmp_path: Path) -> None:
    with pytest.raises(ProductError, match="no such file or folder"):
        open_product(tmp_path / "nothing.tif")
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(ProductError, match="neither a CEOS product"):
        open_product(tmp_path)


def test_describe_product_on_a_dn_geotiff(tmp_path: Path) -> None:
    path = write_tif(tmp_path / "IMG-HH-ALOS2458503210-221119-UBSR2.1GUD.tif", dn_scene())
    info = describe_product(path)
    assert info["scene_id"] == "ALOS2458503210-221119" and info["date"] == "2022-11-19"
    assert info["size"] == "48 x 40 (pixels x lines)" and info["crs"] == "EPSG:32654"
    assert info["calibration factor"] == "-83.0 dB"


def test_info_command_on_the_real_vol_file(ceos_l15_dir: Path) -> None:
    result = CliRunner().invoke(app, ["info", str(ceos_l15_dir / f"VOL-{SCENE}")])
    assert result.exit_code == 0, result.output
    for expected in (
        "ALOS2015976960-140909",
        "2014-09-09",
        "FBD",
        "Stripmap Fine, dual polarisation",
        "12870 x 13161",
        "EPSG:32720",
        "-83.0 dB",
        "25932 B (prefix 192 B)",
        "6.25, 0, 510875.9589, 0, -6.25, 8819466.118",
    ):
        assert expected in result.output, expected


def test_info_error_is_one_line_on_stderr(tmp_path: Path, ceos_l15_dir: Path) -> None:
    bad = tmp_path / f"IMG-HH-{SCENE}"
    shutil.copy(ceos_l15_dir / "summary.txt", bad)  # text wearing a CEOS name
    run = subprocess.run(
        [sys.executable, "-m", "alos2fm.cli", "info", str(bad)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert run.returncode == 2
    assert run.stderr.startswith("alos2fm: error: ") and str(bad) in run.stderr
    assert "not a CEOS VOL/LED/IMG/TRL file" in run.stderr
    assert "Traceback" not in run.stderr


def test_bands_open_the_sibling_polarisation_files(tmp_path: Path) -> None:
    name = "IMG-{pol}-ALOS2458503210-221119-UBSR2.1GUD.tif"
    hh, hv = dn_scene(seed=1), dn_scene(seed=2)
    hh_path = write_tif(tmp_path / name.format(pol="HH"), hh)
    write_tif(tmp_path / name.format(pol="HV"), hv)
    assert open_product(hh_path).bands == ("HH",)  # alone, a file is its own polarisation
    product = open_product(hh_path, bands=["HH", "HV"])
    assert product.bands == ("HH", "HV")
    db = product.read_db(Window(0, 0, 40, 48))
    with np.errstate(divide="ignore"):
        for band, dn in enumerate((hh, hv)):  # sigma0 = 20·log10(DN) − 83, DN 0 = no data
            expected = np.where(dn > 0, 20 * np.log10(dn.astype(np.float64)) - 83.0, np.nan)
            np.testing.assert_allclose(db[band], expected, atol=1e-4)
    missing = name.format(pol="VV")
    with pytest.raises(ProductError, match=f"polarisation VV requested but {missing} is missing"):
        open_product(hh_path, bands=["HH", "VV"])


def test_bands_leave_single_file_rasters_whole(tmp_path: Path) -> None:
    # A dB GeoTIFF holds its bands in one file: bands= gathers nothing, and choosing
    # among its bands stays with processing.process (and predict's band matching).
    data = np.stack([np.full((8, 8), -11.5, np.float32), np.full((8, 8), -18.0, np.float32)])
    path = write_tif(tmp_path / "s1_db.tif", data)
    assert open_product(path, bands=["VV", "VH"]).bands == ("DB1", "DB2")
