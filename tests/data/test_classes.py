"""Class tables: the schema, the shipped tables, encoding of source values."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import rasterio

from alos2fm.data.classes import (
    IGNORE_INDEX,
    available_class_tables,
    hrlulc_classes,
    load_class_table,
)
from alos2fm.errors import DataError

# Pixel counts of the v23.12 crop, from its README (id: count; 0 = no data / sea).
CROP_COUNTS = {
    0: 230400, 1: 681120, 2: 196983, 3: 75590, 4: 64957, 5: 77849, 6: 296338, 7: 90633,
    8: 32860, 9: 216266, 10: 22877, 11: 47742, 12: 3801, 13: 30824, 14: 5360,
}  # fmt: skip


def test_hrlulc_vocabularies_have_documented_sizes_and_extend_each_other():
    sizes = {v: len(hrlulc_classes(v)) for v in ("21.11", "23.12", "25.04")}
    assert sizes == {"21.11": 12, "23.12": 14, "25.04": 15}
    assert hrlulc_classes("25.04")[:14] == hrlulc_classes("23.12")
    assert [c.name for c in hrlulc_classes("23.12")[12:]] == ["Wetland", "Greenhouse"]
    with pytest.raises(DataError, match="unknown HRLULC version"):
        hrlulc_classes("22.01")


def test_class_colours_match_the_colour_table_embedded_in_the_real_map(hrlulc_crop):
    with rasterio.open(hrlulc_crop) as src:
        embedded = src.colormap(1)
    for cls in hrlulc_classes("23.12"):
        assert embedded[cls.id][:3] == cls.color, cls.name


def test_real_crop_class_counts_match_its_readme(hrlulc_crop):
    with rasterio.open(hrlulc_crop) as src:
        counts = np.bincount(src.read(1).ravel(), minlength=256)
    assert {k: int(counts[k]) for k in CROP_COUNTS} == CROP_COUNTS
    assert counts[15:].sum() == 0


def test_default_table_counts_on_the_real_crop(hrlulc_crop):
    table = load_class_table()
    assert table.num_classes == 9 and table.name == "hrlulc_v23.12_to_9"
    with rasterio.open(hrlulc_crop) as src:
        remapped = table.training_ids(src.read(1))
    counts = np.bincount(remapped.ravel(), minlength=256)
    c = CROP_COUNTS
    expected = {
        "Water": c[1], "Built-up": c[2], "Paddy field": c[3], "Cropland": c[4] + c[14],
        "Grassland": c[5], "Forest": c[6] + c[7] + c[8] + c[9] + c[11], "Bare land": c[10],
        "Solar panel": c[12], "Wetland": c[13],
    }  # fmt: skip
    assert {table.names[i]: int(counts[i]) for i in range(9)} == expected
    assert counts[IGNORE_INDEX] == c[0]
    assert counts[9:IGNORE_INDEX].sum() == 0


def test_the_three_hrlulc_tables_share_the_nine_class_ids():
    tables = [load_class_table(f"hrlulc_v{v}_to_9") for v in ("21.11", "23.12", "25.04")]
    assert tables[0].names == tables[1].names == tables[2].names
    assert tables[0].names[8] == "Wetland" and tables[0].classes[8].values == []
    v25 = tables[2]
    assert v25.names[int(v25.training_ids(np.array([15]))[0])] == "Wetland"
    # v21.11 has no value 13: a v23.12 map read as v21.11 fails, naming the value.
    with pytest.raises(DataError, match="values 13 are not in class table 'hrlulc_v21.11_to_9'"):
        tables[0].training_ids(np.array([1, 13]))


def test_shipped_tables_cover_the_sources_the_docs_promise():
    assert {
        "hrlulc_v21.11_to_9",
        "hrlulc_v23.12_to_9",
        "hrlulc_v25.04_to_9",
        "worldcover",
        "water_mask",
        "flevoland",
    } <= set(available_class_tables())
    worldcover = load_class_table("worldcover")
    values = np.array([0, 10, 20, 30, 40, 50, 60, 70, 80, 90, 95, 100])
    assert worldcover.training_ids(values).tolist() == [255, *range(11)]
    assert worldcover.names[7] == "Permanent water bodies"
    flevoland = load_class_table("flevoland")
    assert flevoland.training_ids(np.arange(16)).tolist() == [255, *range(15)]
    assert flevoland.names[14] == "Buildings"


def test_a_signed_water_mask_with_minus_one_invalid():
    water = load_class_table("water_mask")
    mask = np.array([[0, 1, -1], [1, 255, 0]], dtype=np.int16)
    assert water.training_ids(mask).tolist() == [[0, 1, 255], [1, 255, 0]]
    with pytest.raises(DataError, match="values 2, 7 are not in class table 'water_mask'"):
        water.training_ids(np.array([0, 2, 7], dtype=np.int16))
    assert water.training_ids(np.array([0, 2]), unknown="ignore").tolist() == [0, 255]
    # The file's own nodata value is ignored even where the table does not list it.
    assert water.training_ids(np.array([0, -9999, 1]), nodata=-9999).tolist() == [0, 255, 1]


def _yaml(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "classes.yaml"
    path.write_text(body)
    return path


_TWO_CLASS = """
name: t
source_classes: hrlulc_v21.11
classes:
  - {name: Water, color: [0, 0, 100], values: [1]}
  - {name: Land, color: [9, 9, 9], values: [2, 3, 4, 5, 6, 7, 8, 9, 10, 11]}
ignore: [0]
exclude: [EXCLUDED]
"""


def test_the_issue_example_table_loads(tmp_path):
    table = load_class_table(
        _yaml(
            tmp_path,
            "classes:\n"
            "  - {name: Not water, color: [200, 200, 200], values: [0]}\n"
            "  - {name: Water, color: [0, 60, 200], values: [1]}\n"
            "ignore: [-1]\n",
        )
    )
    assert table.names == {0: "Not water", 1: "Water"} and table.ignore == [-1]


def test_excluded_values_are_ignored_but_known(tmp_path):
    table = load_class_table(_yaml(tmp_path, _TWO_CLASS.replace("EXCLUDED", "12")))
    assert table.training_ids(np.array([0, 1, 2, 11, 12])).tolist() == [255, 0, 1, 1, 255]
    assert table.value_role(12) == "excluded" and table.value_role(0) == "ignored (no data)"


@pytest.mark.parametrize(
    ("exclude", "message"),
    [
        ("12, 16", r"values \['16'\] are not among the source's classes"),  # unknown value
        ("", r"source values \['12'\] are neither mapped, ignored nor excluded"),  # forgotten
        ("12, 2", r"values \['2'\] are listed more than once"),
    ],
)
def test_table_validation_names_the_file_and_the_bad_values(tmp_path, exclude, message):
    path = _yaml(tmp_path, _TWO_CLASS.replace("EXCLUDED", exclude))
    with pytest.raises(DataError, match=message) as err:
        load_class_table(path)
    assert str(path) in str(err.value)


def test_string_values_for_vector_attributes(tmp_path):
    table = load_class_table(
        _yaml(
            tmp_path,
            "classes:\n"
            "  - {name: Water, color: [0, 0, 200], values: [water, 1]}\n"
            "  - {name: Land, color: [9, 9, 9], values: [land]}\n",
        )
    )
    codes = table.encoder().encode_values(["land", "water", 1.0, None])
    assert codes.tolist() == [2, 1, 1, 0]  # class + 1; None = no data


def test_old_remap_layout_gets_a_message_that_says_how_to_convert(tmp_path):
    old = "name: x\nsource_version: '23.12'\nclasses: []\n"
    with pytest.raises(DataError, match="old remap-table layout"):
        load_class_table(_yaml(tmp_path, old))


def test_unknown_table_name_lists_the_shipped_ones():
    with pytest.raises(DataError, match="hrlulc_v23.12_to_9.*worldcover"):
        load_class_table("hrlulc_v99_to_3")
