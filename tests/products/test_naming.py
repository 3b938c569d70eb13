"""File and folder names of ALOS-2 products and PALSAR mosaic tiles."""

from __future__ import annotations

import pytest

from alos2fm.errors import ProductError
from alos2fm.products.naming import (
    is_mosaic_name,
    is_product_name,
    parse_mosaic_name,
    parse_product_name,
)


def test_l15_image_file_name_gives_every_field() -> None:
    name = parse_product_name("/data/IMG-HH-ALOS2015976960-140909-FBDR1.5GUA")
    assert name.file_kind == "IMG"
    assert name.polarisation == "HH"
    assert name.scene_id == "ALOS2015976960-140909"
    assert (name.orbit, name.frame) == (1597, 6960)
    assert name.date == "2014-09-09"
    assert name.product_id == "FBDR1.5GUA"
    assert name.mode == "FBD"
    assert name.look_side == "right"
    assert name.level == "1.5"
    assert name.processing_option == "geocoded"
    assert name.projection == "UTM"
    assert name.orbit_direction == "ascending"
    assert name.subswath is None and name.extension == ""
    assert name.mode_description == "Stripmap Fine, dual polarisation"


def test_l21_geotiff_name() -> None:
    name = parse_product_name("IMG-HH-ALOS2458503210-221119-UBSR2.1GUD.tif")
    assert (name.orbit, name.frame, name.date) == (45850, 3210, "2022-11-19")
    assert (name.mode, name.level, name.orbit_direction) == ("UBS", "2.1", "descending")
    assert name.extension == ".tif"
    assert name.mode_description == "Stripmap Ultra-fine, single polarisation"


@pytest.mark.parametrize("kind", ["VOL", "LED", "TRL"])
def test_vol_led_trl_names_have_no_polarisation(kind: str) -> None:
    name = parse_product_name(f"{kind}-ALOS2015976960-140909-FBDR1.5GUA")
    assert name.file_kind == kind and name.polarisation is None
    assert name.product_id == "FBDR1.5GUA"


def test_scansar_l11_subswath_and_blank_letters() -> None:
    name = parse_product_name("IMG-HV-ALOS2015976960-140909-WBDL1.1__D-F3")
    assert name.subswath == "F3" and name.polarisation == "HV"
    assert name.look_side == "left" and name.level == "1.1"
    assert name.processing_option is None and name.projection is None
    assert name.mode_description == "ScanSAR nominal, dual polarisation"


def test_folder_names_with_and_without_product_id() -> None:
    bare = parse_product_name("ALOS2015976960-140909")
    assert bare.file_kind is None and bare.product_id is None and bare.level is None
    assert bare.date == "2014-09-09"
    full = parse_product_name("ALOS2015976960-140909_FBDR1.5GUA")
    assert full.product_id == "FBDR1.5GUA" and full.projection == "UTM"


@pytest.mark.parametrize(
    "bad",
    [
        "IMG-HH-ALOS2015976960-140909-FBDR1.5GUA.png",  # wrong extension
        "IMG-HH-ALOS201597696-140909-FBDR1.5GUA",  # 9 digits instead of 10
        "IMG-XX-ALOS2015976960-140909-FBDR1.5GUA",  # no such polarisation
        "IMG-HH-ALOS2015976960-140909-FBDX1.5GUA",  # look side must be R/L
        "IMG-HH-ALOS2015976960-141332-FBDR1.5GUA",  # month 13
        "S1A_IW_GRDH_1SDV_20220101T000000.tif",
    ],
)
def test_names_that_do_not_match_raise_product_error(bad: str) -> None:
    with pytest.raises(ProductError, match=r"not an ALOS-2 product name|not a calendar date"):
        parse_product_name(bad)
    assert not is_product_name(bad)


def test_mosaic_names_new_old_and_alos1() -> None:
    new = parse_mosaic_name("N32E119_2022_sl_HH_F02DAR.tif")
    assert (new.tile, new.latitude, new.longitude, new.year) == ("N32E119", 32, 119, 2022)
    assert (new.layer, new.polarisation, new.version) == ("sl_HH", "HH", "F02DAR")
    assert new.sibling("mask") == "N32E119_2022_mask_F02DAR.tif"

    old = parse_mosaic_name("S05W063_15_sl_HV_F02DAR")
    assert (old.latitude, old.longitude, old.year, old.polarisation) == (-5, -63, 2015, "HV")
    assert old.sibling("mask") == "S05W063_15_mask_F02DAR"

    alos1 = parse_mosaic_name("N35E139_10_sl_HH")
    assert alos1.year == 2010 and alos1.version is None
    assert alos1.sibling("mask") == "N35E139_10_mask"

    mask = parse_mosaic_name("N32E119_2022_mask_F02DAR.tif")
    assert mask.layer == "mask" and mask.polarisation is None


def test_non_mosaic_names_are_rejected() -> None:
    assert not is_mosaic_name("IMG-HH-ALOS2458503210-221119-UBSR2.1GUD.tif")
    with pytest.raises(ProductError, match="not a PALSAR mosaic tile name"):
        parse_mosaic_name("N32E119_2022_sl_XX_F02DAR.tif")
