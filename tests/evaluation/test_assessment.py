"""`alos2fm assess`: the estimators of Olofsson et al. (2014) on their worked example and a
hand-computed case, the reference readers on a synthetic map whose answers we planted, the
stratified sample, and the command end to end."""

from __future__ import annotations

import json
import math

import numpy as np
import pyogrio
import pytest
import rasterio
import shapely
from rasterio.transform import from_origin
from rasterio.warp import transform as warp_transform

from alos2fm.errors import DataError
from alos2fm.evaluation import reference as reference_module
from alos2fm.evaluation.assessment import assess_counts, run_assess, run_sample
from alos2fm.evaluation.reference import (
    allocate,
    count_reference,
    draw_sample,
    mapped_pixels,
    open_class_map,
)
from tests.test_cli import run_cli

# --- the estimator ------------------------------------------------------------------------

NAMES = ["Deforestation", "Forest gain", "Stable forest", "Stable non-forest"]
# Olofsson et al. (2014), section 5, Table 8: rows = map class, columns = reference class.
# (Listed column by column, this is [[66,0,1,2],[0,55,0,1],[5,8,153,9],[4,12,11,313]].)
PAPER_COUNTS = np.array([[66, 0, 5, 4], [0, 55, 8, 12], [1, 0, 153, 11], [2, 1, 9, 313]])
PAPER_MAPPED = [200_000, 150_000, 3_200_000, 6_450_000]  # 30 m pixels


def test_the_worked_example_of_olofsson_2014_is_reproduced():
    a = assess_counts(PAPER_COUNTS, PAPER_MAPPED, 900.0, NAMES)
    # Areas and their 95 % CIs (ha), as published (section 5).
    published = [(21_158, 6_158), (11_686, 3_756), (285_770, 15_510), (581_386, 16_282)]
    for area, (value, ci) in zip(a.area_ha, published, strict=True):
        assert round(area.value) == value and round(area.ci95) == ci
    assert round(a.overall.value, 2) == 0.95 and round(a.overall.ci95, 2) == 0.02
    users = [(0.88, 0.07), (0.73, 0.10), (0.93, 0.04), (0.96, 0.02)]
    for u, (value, ci) in zip(a.users, users, strict=True):
        assert (round(u.value, 2), round(u.ci95, 2)) == (value, ci)
    # Producer's accuracies as published; their CIs by eq. 7: 0.21, 0.25, 0.03, 0.02 (the
    # paper prints 0.23 and 0.01 for the second and the fourth, which eq. 7 does not give).
    producers = [(0.75, 0.21), (0.85, 0.25), (0.93, 0.03), (0.96, 0.02)]
    for p, (value, ci) in zip(a.producers, producers, strict=True):
        assert (round(p.value, 2), round(p.ci95, 2)) == (value, ci)
    table9 = [
        [0.0176, 0.0000, 0.0013, 0.0011],
        [0.0000, 0.0110, 0.0016, 0.0024],
        [0.0019, 0.0000, 0.2967, 0.0213],
        [0.0040, 0.0020, 0.0179, 0.6212],
    ]
    np.testing.assert_array_equal(np.round(a.proportions, 4), table9)
    assert a.sample_sizes.tolist() == [75, 75, 165, 325]
    assert round(a.area_proportion[0].value, 4) == 0.0235
    record = a.to_json()
    assert record["per_class"]["Deforestation"]["area_ha"]["estimate"] == pytest.approx(
        21_157.76, abs=0.01
    )
    assert "21,158 ± 6,158" in a.summary_markdown()


def test_a_two_class_case_computed_by_hand():
    a = assess_counts(np.array([[8, 2], [1, 9]]), [300, 700], 100.0, ["a", "b"])
    # W = (0.3, 0.7); q = n_ij / n_i. = [[0.8, 0.2], [0.1, 0.9]]; p_ij = W_i q_ij
    np.testing.assert_allclose(a.proportions, [[0.24, 0.06], [0.07, 0.63]])
    assert a.overall.value == pytest.approx(0.87)
    assert a.overall.se == pytest.approx(math.sqrt(0.09 * 0.16 / 9 + 0.49 * 0.09 / 9))
    assert [u.value for u in a.users] == pytest.approx([0.8, 0.9])
    assert a.users[0].se == pytest.approx(math.sqrt(0.16 / 9))
    p0 = 0.24 / 0.31
    assert a.producers[0].value == pytest.approx(p0)
    assert a.producers[1].value == pytest.approx(0.63 / 0.69)
    v0 = (0.09 * (1 - p0) ** 2 * 0.16 / 9 + p0**2 * 0.49 * 0.09 / 9) / 0.31**2
    assert a.producers[0].se == pytest.approx(math.sqrt(v0))
    # total area 1000 px x 100 m² = 10 ha
    assert [x.value for x in a.area_ha] == pytest.approx([3.1, 6.9])
    se = math.sqrt(0.09 * 0.8 * 0.2 / 9 + 0.49 * 0.1 * 0.9 / 9)
    assert a.area_proportion[0].se == pytest.approx(se)
    assert a.area_ha[1].ci95 == pytest.approx(1.96 * se * 10)


def test_a_stratum_with_one_sample_has_nan_variances_and_a_note():
    a = assess_counts(np.array([[5, 1], [0, 1]]), [90, 10], 100.0, ["a", "b"])
    assert a.users[1].value == 1.0 and math.isnan(a.users[1].se)
    assert math.isnan(a.overall.se) and math.isfinite(a.overall.value)
    assert any("'b' has one sample" in note for note in a.notes)
    json.dumps(a.to_json())  # NaN written as null
    assert a.to_json()["per_class"]["b"]["users_accuracy"]["se"] is None
    unsampled = assess_counts(np.array([[5, 1], [0, 0]]), [90, 10], 100.0, ["a", "b"])
    assert math.isnan(unsampled.overall.value)
    assert any("no sample" in note for note in unsampled.notes)
    assert "n/a" in unsampled.summary_markdown()


# --- a synthetic map ------------------------------------------------------------------------

H, W, PIXEL = 40, 50, 30.0
ORIGIN = (500_000.0, 4_000_000.0)
CLASSES = ["Forest", "Water", "Urban"]
COLOURS = {0: (0, 120, 0, 255), 1: (0, 60, 200, 255), 2: (200, 0, 0, 255)}


def _map_array() -> np.ndarray:
    a = np.zeros((H, W), dtype=np.uint8)
    a[:, 20:35] = 1
    a[:, 35:] = 2
    a[:4, 45:] = 255  # no data
    return a


@pytest.fixture
def class_map(tmp_path, monkeypatch):
    """A 40 x 50 class map (UTM 54N, 30 m) as predict writes it; small windows, so that
    every reader crosses window edges."""
    monkeypatch.setattr(reference_module, "WINDOW", 16)
    path = tmp_path / "map.tif"
    profile = dict(
        driver="GTiff", height=H, width=W, count=1, dtype="uint8", crs="EPSG:32654",
        transform=from_origin(*ORIGIN, PIXEL, PIXEL), nodata=255,
    )  # fmt: skip
    with rasterio.open(path, "w", **profile) as ds:
        ds.write(_map_array(), 1)
        ds.write_colormap(1, COLOURS)
        ds.update_tags(**{f"CLASS_{k}": n for k, n in enumerate(CLASSES)})
    return path


def _centres(rows, cols):
    xs = ORIGIN[0] + (np.asarray(cols) + 0.5) * PIXEL
    ys = ORIGIN[1] - (np.asarray(rows) + 0.5) * PIXEL
    return xs, ys


def _write_points(path, xs, ys, labels, crs="EPSG:32654", field="truth"):
    geometry = shapely.to_wkb(shapely.points(np.column_stack([xs, ys])))
    values = np.array(labels, dtype=object)
    pyogrio.raw.write(path, geometry, [values], [field], geometry_type="Point", crs=crs)
    return path


def test_the_map_is_read_with_its_classes_colours_and_pixels(class_map):
    cmap = open_class_map(class_map)
    assert cmap.class_names == CLASSES and cmap.pixel_area_m2 == 900.0
    assert cmap.colors[1] == (0, 60, 200)
    assert mapped_pixels(cmap).tolist() == [800, 600, 580]


def test_points_give_exactly_the_planted_counts(class_map, tmp_path):
    # (row, col, reference label): map classes from _map_array; labels by name or by id.
    planted = [
        (0, 0, "Forest"), (10, 5, "Forest"), (39, 19, "Water"), (20, 17, 0),  # map 0
        (5, 20, "Water"), (30, 34, 1), (17, 25, "Urban"),  # map 1
        (10, 40, "Urban"), (39, 49, 2), (8, 45, "Forest"), (20, 36, "Water"),  # map 2
    ]  # fmt: skip
    rows, cols, labels = zip(*planted, strict=True)
    xs, ys = _centres(rows, cols)
    # one unlabelled point, one outside the map, one on the map's no data
    xs = np.append(xs, [_centres([3], [3])[0][0], ORIGIN[0] - 100, _centres([1], [47])[0][0]])
    ys = np.append(ys, [_centres([3], [3])[1][0], ORIGIN[1] + 50, _centres([1], [47])[1][0]])
    labels = [*labels, None, "Water", "Urban"]
    lon, lat = warp_transform("EPSG:32654", "EPSG:4326", xs, ys)  # read back reprojected
    path = _write_points(tmp_path / "ref.gpkg", lon, lat, labels, crs="EPSG:4326")
    counts = count_reference(open_class_map(class_map), path, "truth")
    assert counts.kind == "points"
    assert counts.counts.tolist() == [[3, 1, 0], [0, 2, 1], [1, 1, 2]]
    assert counts.dropped == {"reference_nodata": 1, "outside_map": 1, "map_nodata": 1}


def test_a_label_not_in_the_classes_is_refused_naming_it(class_map, tmp_path):
    xs, ys = _centres([1], [1])
    path = _write_points(tmp_path / "ref.gpkg", xs, ys, ["Glacier"])
    with pytest.raises(DataError, match="Glacier"):
        count_reference(open_class_map(class_map), path, "truth")
    with pytest.raises(DataError, match="no attribute 'label'"):
        count_reference(open_class_map(class_map), path, "label")


def test_polygons_count_each_pixel_inside_and_their_ignore_masks(class_map, tmp_path):
    def block(row0, row1, col0, col1):  # pixels rows row0..row1-1, cols col0..col1-1
        x0, y0 = ORIGIN[0] + col0 * PIXEL, ORIGIN[1] - row0 * PIXEL
        return shapely.box(x0, y0 - (row1 - row0) * PIXEL, x0 + (col1 - col0) * PIXEL, y0)

    polygons = [
        (block(0, 10, 15, 25), "Water"),  # 50 px of map 0 and 50 px of map 1
        (block(2, 4, 16, 18), 255),  # 4 px of the map 0 part: ignored, masks the above
        (block(30, 40, 40, 50), "Urban"),  # 100 px of map 2
        (block(0, 4, 44, 46), "Forest"),  # 4 px of map 2 and 4 px of map no data
        (shapely.box(0, 0, 10, 10), "Forest"),  # far off the map
    ]
    geoms, labels = zip(*polygons, strict=True)
    path = tmp_path / "ref.gpkg"
    pyogrio.raw.write(
        path, shapely.to_wkb(np.array(geoms)), [np.array(labels, dtype=object)], ["truth"],
        geometry_type="Polygon", crs="EPSG:32654",
    )  # fmt: skip
    counts = count_reference(open_class_map(class_map), path, "truth")
    assert counts.kind == "polygons" and counts.unit == "pixel"
    assert counts.counts.tolist() == [[0, 46, 0], [0, 50, 0], [4, 0, 100]]
    assert counts.dropped == {
        "reference_nodata_pixels": 4,
        "map_nodata_pixels": 4,
        "polygons_off_map": 1,
    }
    assert "per pixel" in counts.notes[0]


def test_a_raster_reference_on_another_grid_gives_pixel_counts(class_map, tmp_path):
    truth = _map_array().copy()
    truth[truth == 255] = 0
    truth[10:20, 0:10] = 1  # 100 map-0 pixels are water in the reference
    truth[0:2, 0:50] = 7  # reference no data (its nodata tag): 2 rows dropped
    fine = np.repeat(np.repeat(truth, 2, axis=0), 2, axis=1)  # 15 m pixels, same area
    ref = tmp_path / "truth.tif"
    profile = dict(
        driver="GTiff", height=2 * H, width=2 * W, count=1, dtype="uint8", crs="EPSG:32654",
        transform=from_origin(*ORIGIN, PIXEL / 2, PIXEL / 2), nodata=7,
    )  # fmt: skip
    with rasterio.open(ref, "w", **profile) as ds:
        ds.write(fine, 1)
    out = tmp_path / "report"
    result = run_assess(class_map, ref, out)
    record = json.loads((out / "assessment.json").read_text())
    # rows 2..39 of the map: 38 x 20 forest (100 of them water), 38 x 15 water, 38 x 15
    # urban less the 2 rows of no data left (cols 45..49, rows 2..3)
    expected = [[660, 100, 0], [0, 570, 0], [0, 0, 560]]
    assert result.record["stratified_estimates"]["error_matrix_counts"] == expected
    pixel = record["pixel_counts"]
    assert (
        "not estimates" in pixel["kind"] and "stratified" in record["stratified_estimates"]["kind"]
    )
    assert pixel["confusion_matrix"] == np.array(expected).T.tolist()
    assert pixel["overall_accuracy"] == pytest.approx(1790 / 1890)
    assert pixel["per_class"]["Forest"]["iou"] == pytest.approx(660 / 760)
    # reference no data counts first (also where the map has none), then map no data
    assert record["dropped"] == {
        "reference_nodata_pixels": 2 * W,
        "map_nodata_pixels": 10,
        "map_pixels_without_reference": 0,
    }
    md = (out / "assessment.md").read_text()
    assert "Pixel counts" in md and "Stratified estimates" in md and "Olofsson" in md


# --- sampling --------------------------------------------------------------------------------


def test_allocation_gives_the_minimum_and_the_rest_in_proportion():
    mapped = np.array([100_000, 30_000, 400, 20, 0])
    n = allocate(mapped, 700, min_per_class=50)
    assert n.sum() == 700 and n[2] == 50 and n[3] == 20 and n[4] == 0  # 20: all it has
    # the rest (630) in proportion to area among the classes above the minimum
    assert n[0] == pytest.approx(630 * 100 / 130, abs=1) and n[1] == pytest.approx(
        630 * 30 / 130, abs=1
    )
    equal = allocate(mapped, 700, min_per_class=50, allocation="equal")
    assert equal.tolist() == [227, 227, 226, 20, 0]
    with pytest.raises(DataError, match="--min-per-class"):
        allocate(mapped, 100, min_per_class=50)


def test_the_sample_is_stratified_seeded_and_on_its_map_classes(class_map, tmp_path):
    cmap = open_class_map(class_map)
    sample = draw_sample(cmap, 200, min_per_class=60, seed=3)
    # mapped 800 / 600 / 580: proportional gives 81 / 61 / 58 -> urban raised to 60
    assert sample.allocation.tolist() == [80, 60, 60]
    assert np.bincount(sample.classes).tolist() == [80, 60, 60]
    truth = _map_array()
    assert (truth[sample.rows, sample.cols] == sample.classes).all()
    assert len({(r, c) for r, c in zip(sample.rows, sample.cols, strict=True)}) == 200
    again = draw_sample(cmap, 200, min_per_class=60, seed=3)
    other = draw_sample(cmap, 200, min_per_class=60, seed=4)
    assert np.array_equal(again.rows, sample.rows) and np.array_equal(again.cols, sample.cols)
    assert not np.array_equal(other.rows, sample.rows)

    out = tmp_path / "samples.gpkg"
    run_sample(class_map, out, 200, min_per_class=60, seed=3)
    meta, _, wkb, fields = pyogrio.raw.read(out)
    columns = dict(zip(meta["fields"], fields, strict=True))
    xy = shapely.get_coordinates(shapely.from_wkb(wkb))
    with rasterio.open(class_map) as ds:
        on_map = np.array([v[0] for v in ds.sample(xy)])
    assert (on_map == columns["map_class"]).all()
    assert [CLASSES[c] for c in columns["map_class"]] == columns["map_class_name"].tolist()
    assert columns["sample_id"].tolist() == list(range(1, 201))
    assert all(v is None for v in columns["reference"])
    assert not list(tmp_path.glob(".samples.gpkg*"))  # no temporary left


# --- the command ---------------------------------------------------------------------------


_run = run_cli  # ``alos2fm ARGS`` through the console entry point


def test_assess_end_to_end_sample_label_assess_and_refuse_a_rerun(
    class_map, tmp_path, monkeypatch, capsys
):
    samples = tmp_path / "samples.gpkg"
    code = _run(monkeypatch, "assess", str(class_map), "--sample", "90", "--min-per-class",
                "20", "--out", str(samples))  # fmt: skip
    assert code == 0 and samples.exists()
    # "Label" it: the reference is the map class, except urban points called water.
    meta, _, wkb, fields = pyogrio.raw.read(samples)
    columns = dict(zip(meta["fields"], fields, strict=True))
    names = columns["map_class_name"].astype(object)
    names[names == "Urban"] = "Water"
    pyogrio.raw.write(
        samples, wkb, [columns["map_class"], names], ["map_class", "reference"],
        geometry_type="Point", crs=meta["crs"],
    )  # fmt: skip
    out = tmp_path / "assessment"
    args = ["assess", str(class_map), "--reference", str(samples), "--label-field",
            "reference", "--out", str(out)]  # fmt: skip
    assert _run(monkeypatch, *args) == 0
    assert {p.name for p in out.iterdir()} >= {"assessment.json", "assessment.md", "areas.png"}
    record = json.loads((out / "assessment.json").read_text())
    per_class = record["stratified_estimates"]["per_class"]
    assert per_class["Urban"]["users_accuracy"]["estimate"] == 0.0
    assert per_class["Forest"]["users_accuracy"]["estimate"] == 1.0
    # all urban area is estimated to be water
    assert per_class["Urban"]["area_ha"]["estimate"] == 0.0
    assert per_class["Water"]["area_ha"]["estimate"] == pytest.approx((600 + 580) * 0.09)
    capsys.readouterr()
    assert _run(monkeypatch, *args) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert _run(monkeypatch, *args, "--overwrite") == 0
    assert _run(monkeypatch, "assess", str(class_map), "--out", str(out)) == 2
