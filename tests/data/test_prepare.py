from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import rasterio
from affine import Affine
from rasterio.transform import from_origin
from torch.utils.data import DataLoader

from alos2fm.data import store
from alos2fm.data.classes import load_class_table
from alos2fm.data.dataset import PatchDataset
from alos2fm.data.labels import LabelMap
from alos2fm.data.prepare import DONE, STAGING, prepare_config, run_prepare
from alos2fm.data.prepare.tasks import _task_windows, default_task_size
from alos2fm.data.synth import write_synthetic_scene
from alos2fm.errors import DataError
from alos2fm.products import open_product
from alos2fm.products.base import Window
from tests.products.rasters import write_tif

PATCH = 128


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    return write_synthetic_scene(tmp_path_factory.mktemp("scene"), size=768, seed=1)


def _config(scene, out, **options):
    options = {
        "landcover": [scene.landcover],
        "patch_size": PATCH,
        "stride": PATCH,
        "block_size": 256,
        "buffer": 0,
        "progress": False,
        **options,
    }
    return prepare_config(None, products=[scene.product], out=out, **options)


@pytest.fixture(scope="module")
def prepared(scene, tmp_path_factory):
    out = tmp_path_factory.mktemp("prepared") / "ds"
    return run_prepare(_config(scene, out)), out


def test_outputs_at_the_root(prepared):
    result, out = prepared
    for name in (
        "images",
        "labels",
        "index.parquet",
        "stats.json",
        "config.yaml",
        "class_distribution.csv",
        "class_distribution.png",
    ):
        assert (out / name).exists(), name
    assert not (out / ".partial").exists()
    index = store.read_index(out)
    assert set(store.INDEX_COLUMNS) <= set(index.columns)
    assert len(index) == result.patches == sum(result.splits.values())
    assert set(index["split"]) == {"train", "val", "test"}
    assert index["patch_id"].is_unique


def test_patches_equal_the_product_at_their_georeference(prepared, scene):
    _, out = prepared
    index = store.read_index(out)
    arrays = store.open_patch_arrays(out)
    product = open_product(scene.product)
    grid = product.grid
    labels = LabelMap(scene.landcover)
    for i in range(0, len(index), 5):
        entry = index.iloc[i]
        window = Window(int(entry["row"]), int(entry["col"]), PATCH, PATCH)
        assert entry["patch_id"] == f"{scene.product.stem}_{window.row}_{window.col}"
        # The patch transform is the product's transform at the patch's pixel offset.
        t = grid.transform
        expected = Affine(t.a, 0.0, t.c + window.col * t.a, 0.0, t.e, t.f + window.row * t.e)
        assert Affine(*entry["transform"]) == expected
        assert (entry["minx"], entry["maxy"]) == (expected.c, expected.f)
        assert entry["maxx"] == expected.c + PATCH * expected.a
        assert entry["miny"] == expected.f + PATCH * expected.e
        db = product.read_db(window).astype(np.float16)
        assert np.array_equal(arrays.images[i], db, equal_nan=True)
        assert entry["valid_fraction"] == pytest.approx(np.isfinite(db).mean())
        assert entry["valid_fraction"] >= 0.9  # default --max-nodata 0.1
        expected_label = labels.read_on_grid(grid, window)
        expected_label[~np.isfinite(db[0])] = 255
        assert np.mean(np.asarray(arrays.labels[i]) == expected_label) > 0.999
        assert 134 < entry["lon_center"] < 145 and 30 < entry["lat_center"] < 40


def test_stats_are_those_of_the_train_patches(prepared):
    _, out = prepared
    index = store.read_index(out)
    arrays = store.open_patch_arrays(out)
    train = np.flatnonzero(index["split"] == "train")
    values = np.concatenate([np.asarray(arrays.images[i], np.float64).ravel() for i in train])
    values = values[~np.isnan(values)]
    labels = np.concatenate([np.asarray(arrays.labels[i]).ravel() for i in train])
    stats = json.loads((out / "stats.json").read_text())
    assert stats["computed_on"] == "train"
    assert stats["mean_db"][0] == pytest.approx(values.mean(), abs=1e-9)
    assert stats["std_db"][0] == pytest.approx(values.std(), rel=1e-9)
    assert stats["valid_pixels"] == [values.size]
    counts = np.bincount(labels[labels != 255], minlength=9)
    assert stats["class_pixel_counts"] == counts.tolist()
    assert stats["class_weights"] == pytest.approx(store.median_frequency_weights(counts))
    remap = load_class_table()
    assert stats["class_names"] == [remap.names[i] for i in range(9)]
    assert stats["class_colours"] == [list(remap.colors[i]) for i in range(9)]


def test_dataset_reads_a_batch(prepared):
    _, out = prepared
    batch = next(iter(DataLoader(PatchDataset(out, split="train"), batch_size=4)))
    assert batch["image"].shape == (4, 1, PATCH, PATCH)
    assert batch["label"].shape == (4, PATCH, PATCH)
    assert not batch["image"].isnan().any()
    assert batch["label"][batch["valid"]].lt(9).all()


def test_balancing_excludes_and_caps_categories(scene, tmp_path):
    cfg = _config(scene, tmp_path / "ds", exclude=["Forest"], caps=["2"], buffer=0)
    run_prepare(cfg)
    table = pd.read_csv(tmp_path / "ds" / "class_distribution.csv")
    index = store.read_index(tmp_path / "ds")
    assert 5 not in set(index["category"])  # Forest
    assert table.set_index("category").loc[5, "after"] == 0
    assert (table["after"] <= 2).all() and table["after"].sum() == len(index)
    assert (table["before"] > table["after"]).any()  # something was capped


def test_rerun_resumes_finished_tasks(scene, tmp_path):
    out = tmp_path / "ds"
    cfg = _config(scene, out, patches_per_task=8)  # 6 rows of 6 windows -> 6 tasks
    first = run_prepare(cfg)
    before = store.read_index(out)
    assert first.resumed_tasks == 0
    parts = sorted((out / STAGING).glob("*/part-*"))
    assert len(parts) == 6
    (parts[1] / DONE).unlink()  # as if interrupted while cutting that part
    second = run_prepare(cfg)
    assert second.resumed_tasks == 5
    assert store.read_index(out).equals(before)
    assert second.patches == first.patches


def test_process_pool_and_dask_cluster_make_the_same_dataset(prepared, scene, tmp_path):
    from distributed import LocalCluster

    _, reference = prepared
    run_prepare(_config(scene, tmp_path / "pool", workers=2, patches_per_task=12))
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=False) as cluster:
        run_prepare(_config(scene, tmp_path / "dask", dask_scheduler=cluster.scheduler_address))
    expected = store.read_index(reference).drop(columns=["file"])
    for name in ("pool", "dask"):
        got = store.read_index(tmp_path / name).drop(columns=["file"])
        pd.testing.assert_frame_equal(got, expected)
        a = np.asarray(store.open_patch_arrays(tmp_path / name).images[:])
        b = np.asarray(store.open_patch_arrays(reference).images[:])
        assert np.array_equal(a, b, equal_nan=True)


def test_generic_db_geotiff_prepares_without_labels(tmp_path):
    path = tmp_path / "sentinel1_sigma0_db.tif"
    rng = np.random.default_rng(0)
    data = rng.normal(-12.0, 3.0, (2, 300, 300)).astype(np.float32)
    data[:, :, :40] = np.nan  # a no-data strip on the left
    with rasterio.open(
        path,
        "w",
        driver="GTiff",
        width=300,
        height=300,
        count=2,
        dtype="float32",
        nodata=np.nan,
        crs="EPSG:32633",
        transform=from_origin(500000.0, 5000000.0, 10.0, 10.0),
    ) as dst:
        dst.write(data)
    cfg = prepare_config(
        None, products=[path], out=tmp_path / "ds", patch_size=100, stride=100, progress=False
    )
    result = run_prepare(cfg)
    out = tmp_path / "ds"
    assert not (out / "labels").exists()
    index = store.read_index(out)
    # Columns 0-99 are 40 % no data: dropped; the 2 x 3 others are kept.
    assert result.candidates == 6 and sorted(set(index["col"])) == [100, 200]
    assert set(index["category"]) == {255}
    item = PatchDataset(out, split=None)[0]
    assert item["image"].shape == (2, 100, 100) and "label" not in item

    # The same raster, second band only, multilooked 2 x 2: 150 x 150 px of 20 m.
    cfg = prepare_config(
        None,
        products=[path],
        out=tmp_path / "ml",
        patch_size=50,
        stride=50,
        bands=[open_product(path).bands[1]],
        multilook=(2, 2),
        progress=False,
    )
    run_prepare(cfg)
    index = store.read_index(tmp_path / "ml")
    stats = json.loads((tmp_path / "ml" / "stats.json").read_text())
    assert stats["bands"] == [open_product(path).bands[1]]
    first = index.iloc[0]
    assert list(first["transform"])[:2] == [20.0, 0.0]
    patch = PatchDataset(tmp_path / "ml", split=None)[0]["image"].numpy()[0]
    block = data[
        1, 2 * first["row"] : 2 * first["row"] + 2, 2 * first["col"] : 2 * first["col"] + 2
    ]
    expected = 10 * np.log10(np.mean(10 ** (block / 10)))
    assert patch[0, 0] == pytest.approx(expected, abs=0.02)  # float16 store


def test_all_nodata_scene_fails_and_leaves_nothing(tmp_path):
    path = tmp_path / "IMG-HH-ALOS2999990010-221119-UBSR2.1GUD.tif"
    write_tif(path, np.zeros((256, 256), dtype=np.uint16), nodata=0)
    out = tmp_path / "ds"
    cfg = prepare_config(None, products=[path], out=out, patch_size=128, progress=False)
    with pytest.raises(DataError, match=str(path)):
        run_prepare(cfg)
    assert not out.exists()


def test_failed_rerun_keeps_the_earlier_dataset(prepared, scene, tmp_path):
    import shutil

    _, reference = prepared
    out = tmp_path / "ds"
    shutil.copytree(reference, out)
    before = store.read_index(out)
    missing = tmp_path / "missing.tif"
    with pytest.raises(Exception, match="missing"):
        run_prepare(_config(scene, out).model_copy(update={"products": [missing]}))
    assert store.read_index(out).equals(before)
    assert not (out / ".partial").exists()


def test_config_file_then_command_line(tmp_path, scene):
    path = tmp_path / "prepare.yaml"
    path.write_text(
        f"products: [{scene.product}]\nout: {tmp_path / 'ds'}\npatch_size: 64\n"
        "split: {block_size: 512}\nbalance: {exclude: [Water]}\n"
    )
    cfg = prepare_config(
        path, patch_size=32, caps=["median", "Built-up=7"], split_fractions="0.5,0.25,0.25"
    )
    assert cfg.patch_size == 32 and cfg.stride == 256
    assert cfg.split.block_size == 512 and cfg.split.fractions["val"] == 0.25
    assert cfg.balance.exclude == ["Water"]
    assert cfg.balance.default_cap == "median" and cfg.balance.caps == {"Built-up": 7}
    with pytest.raises(DataError, match="prepare.yaml"):
        prepare_config(path, max_nodata=2.0)


def test_tasks_keep_tile_rows_of_patches_together():
    # 78 windows of 256 px per row: a task of at most 200 windows (less than a shard) takes
    # two rows (one 512-row tile row of the product), not three; rows longer than a task
    # are split.
    windows = [Window(256 * r, 256 * c, 256, 256) for r in range(5) for c in range(78)]
    tasks = _task_windows(windows, 200)
    assert [len(t) for t in tasks] == [156, 156, 78]
    assert [sorted({w.row for w in t}) for t in tasks] == [[0, 256], [512, 768], [1024]]
    assert [len(t) for t in _task_windows(windows[:78], 50)] == [50, 28]


def test_tasks_that_hold_a_shard_take_whole_shards():
    # Then each staged shard can become a shard of the dataset as it is.
    windows = [Window(256 * r, 256 * c, 256, 256) for r in range(5) for c in range(78)]
    assert [len(t) for t in _task_windows(windows, 256)] == [256, 134]
    assert [len(t) for t in _task_windows(windows, 700)] == [390]  # 2 shards a task
    assert [t[0] for t in _task_windows(windows, 256)] == [windows[0], windows[256]]


def test_default_tasks_of_a_large_scene_take_up_to_four_shards():
    # Fewer task boundaries cutting the product's tile rows, six tasks a scene at least.
    assert default_task_size(2304) == 256  # 9 shards: one a task (9 tasks)
    assert default_task_size(78 * 78) == 768  # 20000 px in 256 px: 23.8 shards, 8 tasks
    assert default_task_size(117 * 117) == 1024  # 30000 px: 53.5 shards, 14 tasks
    assert default_task_size(100) == 256
