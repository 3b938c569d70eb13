from __future__ import annotations

import concurrent.futures as cf
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import rasterio
from affine import Affine

from alos2fm.data import store
from alos2fm.errors import DataError


def _index(n: int, patch: int = 4) -> pd.DataFrame:
    rows = []
    for i in range(n):
        col = 4 * i
        t = Affine(3.0, 0.0, 364000.0 + 3.0 * col, 0.0, -3.0, 3930000.0)
        rows.append(
            {
                "patch_id": f"S_0_{col}",
                "scene": "S",
                "date": "2022-11-19",
                "row": 0,
                "col": col,
                "split": "train",
                "category": 1,
                "valid_fraction": 1.0,
                "crs": "EPSG:32654",
                "transform": list(t)[:6],
                "minx": t.c,
                "miny": t.f - 3.0 * patch,
                "maxx": t.c + 3.0 * patch,
                "maxy": t.f,
                "lon_min": 139.5,
                "lat_min": 35.5,
                "lon_max": 139.6,
                "lat_max": 35.6,
                "lon_center": 139.55,
                "lat_center": 35.55,
            }
        )
    return pd.DataFrame(rows)


def test_float16_error_over_the_db_range_is_as_documented():
    db = np.linspace(-50.0, 20.0, 2_000_001)
    error = np.abs(db.astype(store.PATCH_DTYPE).astype(np.float64) - db)
    assert error.max() == pytest.approx(2.0**-6)  # 0.0156 dB: half a step of 2^-5 at |x|>=32
    assert error[np.abs(db) < 16].max() <= 2.0**-8
    assert np.isnan(np.float16(np.nan))


def test_arrays_round_trip_with_nodata_and_unwritten_patches(tmp_path):
    arrays = store.create_patch_arrays(tmp_path, 5, ["HH", "HV"], 4, with_labels=True)
    image = np.full((2, 4, 4), -12.25, dtype=np.float32)
    image[1, 0, 0] = np.nan
    arrays.images[1] = image
    arrays.labels[1] = np.arange(16, dtype=np.uint8).reshape(4, 4)
    store.resize_patch_arrays(arrays, 3)

    assert (tmp_path / "images" / "zarr.json").exists()  # Zarr v3 metadata
    back = store.open_patch_arrays(tmp_path)
    assert back.sharded and back.images.shard_patches == store.SHARD_PATCHES
    assert back.images.shape == (3, 2, 4, 4)
    assert back.labels.shape == (3, 4, 4)
    assert back.bands == ("HH", "HV")
    got = np.asarray(back.images[1])
    assert got.dtype == np.float16
    assert np.isnan(got[1, 0, 0]) and np.all(got[0] == -12.25)
    assert np.all(np.isnan(back.images[0]))  # never written -> no data
    assert np.all(np.asarray(back.labels[2]) == 255)  # never written -> ignore
    assert np.array_equal(back.labels[1], np.arange(16).reshape(4, 4))


def test_open_missing_store_names_the_folder(tmp_path):
    with pytest.raises(DataError, match=str(tmp_path)):
        store.open_patch_arrays(tmp_path)


def test_stats_mean_std_over_valid_pixels_and_class_weights():
    acc = store.StatsAccumulator(["HH"], num_classes=4)
    a = np.array([[[-10.0, -20.0], [np.nan, np.nan]]])
    b = np.array([[[0.0, np.nan], [-30.0, np.nan]]])
    acc.add(a, np.array([[0, 1], [1, 255]], dtype=np.uint8))
    acc.add(b, np.array([[3, 3], [3, 1]], dtype=np.uint8))
    stats = acc.result()
    # Valid values: -10, -20, 0, -30 -> mean -15, population std sqrt(125).
    assert stats["mean_db"] == [pytest.approx(-15.0)]
    assert stats["std_db"] == [pytest.approx(np.sqrt(125.0))]
    assert stats["valid_pixels"] == [4]
    assert stats["class_pixel_counts"] == [1, 3, 0, 3]
    # f = [1/7, 3/7, -, 3/7], median 3/7 -> w = [3, 1, 0, 1].
    assert stats["class_weights"] == pytest.approx([3.0, 1.0, 0.0, 1.0])


def test_median_frequency_weights_hand_computed():
    weights = store.median_frequency_weights(np.array([10, 30, 0, 60]))
    assert weights == pytest.approx([3.0, 1.0, 0.0, 0.5])


def test_index_requires_documented_columns(tmp_path):
    with pytest.raises(ValueError, match="lat_center"):
        store.write_index(tmp_path, _index(2).drop(columns=["lat_center"]))


def test_index_and_stats_round_trip(tmp_path):
    store.write_index(tmp_path, _index(3))
    store.write_stats(tmp_path, {"bands": ["HH"], "mean_db": [-10.0]})
    index = store.read_index(tmp_path)
    assert list(index["patch_id"]) == ["S_0_0", "S_0_4", "S_0_8"]
    assert list(index["transform"][1]) == [3.0, 0.0, 364012.0, 0.0, -3.0, 3930000.0]
    assert json.loads((tmp_path / "stats.json").read_text())["mean_db"] == [-10.0]
    assert not list(tmp_path.glob(".*tmp"))  # temporary files renamed away


def test_export_patch_geotiff_keeps_values_and_georeference(tmp_path):
    root = tmp_path / "ds"
    arrays = store.create_patch_arrays(root, 3, ["HH"], 4, with_labels=True)
    values = np.arange(16, dtype=np.float32).reshape(1, 4, 4) - 20.0
    values[0, 3, 3] = np.nan
    arrays.images[2] = values
    arrays.labels[2] = np.full((4, 4), 7, dtype=np.uint8)
    store.write_index(root, _index(3))

    out = store.export_patch_geotiff(root, "S_0_8", tmp_path / "p.tif", tmp_path / "l.tif")
    with rasterio.open(out) as src:
        assert src.transform == Affine(3.0, 0.0, 364024.0, 0.0, -3.0, 3930000.0)
        assert src.crs.to_epsg() == 32654
        got = src.read(1)
        assert np.array_equal(got[:3], values[0, :3]) and np.isnan(got[3, 3])
        assert src.descriptions == ("HH [dB]",)
    with rasterio.open(tmp_path / "l.tif") as src:
        assert np.all(src.read(1) == 7)
    with pytest.raises(DataError, match="nope"):
        store.export_patch_geotiff(root, "nope", tmp_path / "x.tif")


def test_shards_hold_many_patches_and_zarr_reads_them(tmp_path):
    arrays = store.create_patch_arrays(tmp_path, 600, ["HH"], 8, True, shard_patches=256)
    rng = np.random.default_rng(0)
    images = rng.normal(-12, 4, (600, 1, 8, 8)).astype(np.float16)
    labels = rng.integers(0, 3, (600, 8, 8)).astype(np.uint8)
    for k in range(3):  # the last shard holds 88 patches
        arrays.images.write_shard(k, images[256 * k : 256 * (k + 1)])
        arrays.labels.write_shard(k, labels[256 * k : 256 * (k + 1)])
    shard_files = [p for p in (tmp_path / "images").rglob("*") if p.is_file()]
    assert len(shard_files) == 1 + 3  # zarr.json and one file per 256 patches
    back = store.open_patch_arrays(tmp_path)
    for i in (0, 255, 256, 599):
        assert np.array_equal(back.images[i], images[i]) and back.images[i].dtype == np.float16
        assert np.array_equal(back.labels[i], labels[i])
    # The files are Zarr v3 sharding: zarr itself reads the same values and attributes.
    zarr = pytest.importorskip("zarr", minversion="3")
    z_images = zarr.open_array(str(tmp_path / "images"), mode="r")
    assert np.array_equal(z_images[:], images) and z_images.attrs["bands"] == ["HH"]
    assert np.array_equal(zarr.open_array(str(tmp_path / "labels"), mode="r")[:], labels)


def test_parallel_shard_writers_meet_at_shard_boundaries(tmp_path):
    # Two staged tasks of 300 and 250 patches, interleaved into a store of 128-patch
    # shards: every shard takes patches of both tasks, and each is written by one process.
    rng = np.random.default_rng(1)
    tasks = {}
    for name, n in (("a", 300), ("b", 250)):
        staged = store.StagedPatches(tmp_path / name, ["HH", "HV"], 4, with_labels=True)
        tasks[name] = (rng.normal(-10, 3, (n, 2, 4, 4)), rng.integers(0, 9, (n, 4, 4)))
        for half in np.array_split(np.arange(n), 2):  # appended in batches, as prepare does
            staged.append(tasks[name][0][half], tasks[name][1][half])
        assert staged.close() == n
    order = [(str(tmp_path / name), i) for i in range(250) for name in ("a", "b")]
    order += [(str(tmp_path / "a"), i) for i in range(250, 300)]
    root = tmp_path / "store"
    store.create_patch_arrays(root, len(order), ["HH", "HV"], 4, True, shard_patches=128)
    shards = [order[start : start + 128] for start in range(0, len(order), 128)]
    with cf.ProcessPoolExecutor(max_workers=2) as pool:
        list(pool.map(store.write_shard_from_staging, [root] * 5, range(5), shards))

    back = store.open_patch_arrays(root)
    for position, (folder, at) in enumerate(order):
        images, labels = tasks[Path(folder).name]
        assert np.array_equal(back.images[position], images[at].astype(np.float16)), position
        assert np.array_equal(back.labels[position], labels[at]), position
    assert len(list((root / "images" / "c").iterdir())) == 5  # ceil(550 / 128) shard files
    assert not list(root.rglob(".*.tmp"))  # every shard renamed into place whole


def test_staged_patches_are_shards_of_the_store_format(tmp_path):
    # Batches that straddle shard boundaries; every full staged shard is a store's shard,
    # linked into a store as it is (same inode), the partial last one copied.
    rng = np.random.default_rng(2)
    images = rng.normal(-10, 3, (600, 1, 4, 4))
    labels = rng.integers(0, 9, (600, 4, 4))
    staged = store.StagedPatches(tmp_path / "task", ["HH"], 4, with_labels=True)
    for batch in np.array_split(np.arange(600), 7):
        staged.append(images[batch], labels[batch])
    assert staged.close() == 600
    back = store.open_patch_arrays(tmp_path / "task")
    assert back.images.shape == (600, 1, 4, 4) and back.images.n_shards == 3
    assert np.array_equal(back.images[:], images.astype(np.float16))
    assert np.array_equal(back.labels[:], labels)
    root = tmp_path / "store"
    store.create_patch_arrays(root, 600, ["HH"], 4, True)
    for shard in (0, 1):
        store.link_shard(tmp_path / "task", shard, root, shard)
    store.write_shard_from_staging(root, 2, [(str(tmp_path / "task"), i) for i in range(512, 600)])
    for source, linked in zip(
        store.shard_files(tmp_path / "task", 1), store.shard_files(root, 1), strict=True
    ):
        assert source.stat().st_ino == linked.stat().st_ino
    out = store.open_patch_arrays(root)
    assert np.array_equal(out.images[:], images.astype(np.float16))
    assert np.array_equal(out.labels[:], labels)
    zarr = pytest.importorskip("zarr", minversion="3")
    assert np.array_equal(zarr.open_array(str(root / "labels"), mode="r")[:], labels)


def test_assigning_one_patch_keeps_the_rest_of_its_shard(tmp_path):
    arrays = store.create_patch_arrays(tmp_path, 10, ["HH"], 4, False, shard_patches=4)
    arrays.images.write_shard(1, np.full((4, 1, 4, 4), -5.0))
    arrays.images[6] = np.full((1, 4, 4), -7.0)
    back = store.open_patch_arrays(tmp_path).images
    assert [float(back[i][0, 0, 0]) for i in (4, 5, 6, 7)] == [-5.0, -5.0, -7.0, -5.0]
    assert np.isnan(back[0]).all() and np.isnan(back[9]).all()  # shards never written


def test_stores_of_one_file_per_patch_still_read(tmp_path):
    # The layout of earlier releases: Zarr v2, one chunk file per patch, "." keys.
    zarr = pytest.importorskip("zarr")
    values = np.arange(16, dtype=np.float16).reshape(1, 1, 4, 4) - 20
    options = {"chunks": (1, 1, 4, 4), "dtype": np.float16, "fill_value": np.nan}
    options |= {"dimension_separator": ".", "zarr_format": 2, "compressor": None}
    legacy = zarr.open_array(str(tmp_path / "images"), mode="w", shape=(2, 1, 4, 4), **options)
    legacy[1] = values[0]
    legacy.attrs["bands"] = ["HH"]
    assert (tmp_path / "images" / "1.0.0.0").is_file()
    back = store.open_patch_arrays(tmp_path)
    assert not back.sharded and back.bands == ("HH",) and back.labels is None
    assert np.array_equal(back.images[1], values[0]) and np.isnan(back.images[0]).all()


def test_band_moments_and_class_counts_hand_computed():
    image = np.array([[[1.0, 2.0], [np.nan, 4.0]], [[np.nan, np.nan], [np.nan, -3.0]]])
    count, total, total_sq = store.band_moments(image)
    assert count.tolist() == [3, 1]
    assert total.tolist() == [7.0, -3.0]
    assert total_sq.tolist() == [21.0, 9.0]
    label = np.array([[0, 2], [255, 2]], dtype=np.uint8)
    assert store.class_pixel_counts(label, 3).tolist() == [1, 0, 2]


# --- R10: no inf in the store, no NaN/inf in stats.json -------------------------------------


def test_R10_staging_a_patch_that_overflows_float16_raises(tmp_path: Path) -> None:
    staged = store.StagedPatches(tmp_path / "task", ["HH", "HV"], 4, with_labels=False)
    image = np.full((1, 2, 4, 4), -12.0, np.float32)
    image[0, 1, 2, 3] = -3.4e38  # a fill value: float16 would store -inf
    with pytest.raises(DataError, match="float16"):
        staged.append(image)
    with np.errstate(over="ignore"):
        already = image.astype(np.float16)  # converted by the caller: inf still refused
    with pytest.raises(DataError, match="inf"):
        staged.append(already)
    assert staged.count == 0 and not list((tmp_path / "task" / "images").rglob("*0"))
    image[0, 1, 2, 3] = np.nan  # no data stays allowed
    staged.append(image)
    assert staged.close() == 1
    with pytest.raises(DataError, match="band 2"):
        store.to_patch_dtype(np.where(np.isnan(image), 7e4, image)[0])
    assert store.to_patch_dtype(image[0]).dtype == store.PATCH_DTYPE


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
def test_R10_write_stats_refuses_non_finite_values_naming_the_band(
    tmp_path: Path, bad: float
) -> None:
    stats = {"bands": ["HH", "HV"], "mean_db": [-10.0, bad], "std_db": [3.0, 4.0]}
    with pytest.raises(DataError, match=r"HV.*mean_db|mean_db.*HV"):
        store.write_stats(tmp_path, stats)
    assert not (tmp_path / store.STATS).exists()
    store.write_stats(tmp_path, {**stats, "mean_db": [-10.0, -17.0]})
    assert json.loads((tmp_path / store.STATS).read_text())["mean_db"] == [-10.0, -17.0]


def test_band_moments_count_no_data_only_in_the_bands_holding_it():
    image = np.arange(2 * 4 * 6, dtype=np.float16).reshape(2, 4, 6)
    image[1, 0, :2] = np.nan
    moments = store.BandMoments(image)
    count, total, total_sq = moments.of(slice(0, 2), slice(0, 3))
    expected = np.where(np.isnan(image[:, :2, :3]), 0.0, image[:, :2, :3].astype(np.float64))
    np.testing.assert_array_equal(count, [6, 4])
    np.testing.assert_array_equal(total, expected.sum(axis=(1, 2)))
    np.testing.assert_array_equal(total_sq, (expected**2).sum(axis=(1, 2)))
    count, total, _ = moments.of(slice(2, 4), slice(0, 6))  # no NaN in this region
    np.testing.assert_array_equal(count, [12, 12])
    np.testing.assert_array_equal(total, image[:, 2:, :].astype(np.float64).sum(axis=(1, 2)))
