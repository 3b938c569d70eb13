"""prepare writes each patch once: staged shards of the store's format become the
dataset's shards unchanged where all their patches are kept, and the staging area keeps
no second copy, while reruns with other settings still reuse the cut scenes."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from alos2fm.data import store
from alos2fm.data.prepare import STAGING, prepare_config, run_prepare
from alos2fm.data.shards import ShardWriter
from alos2fm.data.synth import write_synthetic_scene
from alos2fm.products import open_product
from alos2fm.products.base import Window

PATCH = 16  # 48 x 48 = 2304 windows of a 768 px scene: 9 shards of 256


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    return write_synthetic_scene(tmp_path_factory.mktemp("scene"), size=768, seed=3)


def _config(scene, out, labelled=False, file=None, **options):
    options = {
        "patch_size": PATCH,
        "stride": PATCH,
        "patches_per_task": 512,  # two shards a task
        "block_size": 256,
        "buffer": 0,
        "max_nodata": 1.0,
        "progress": False,
        **({"landcover": [scene.landcover]} if labelled else {}),
        **options,
    }
    return prepare_config(file, products=[scene.product], out=out, **options)


@pytest.fixture
def written(monkeypatch):
    """Patches written into shard files, per array folder name (images, labels)."""
    counts = {"images": 0, "labels": 0}
    append = ShardWriter.append

    def counting(self, patches):
        name = next(p.name for p in self.path.parents if p.name in counts)
        counts[name] += len(patches)
        return append(self, patches)

    monkeypatch.setattr(ShardWriter, "append", counting)
    return counts


def _patch_files(folder):
    """Shard files (not metadata) under ``folder``."""
    return [p for p in folder.rglob("*") if p.is_file() and "c" in p.relative_to(folder).parts]


def _equal_datasets(a, b):
    index_a, index_b = store.read_index(a), store.read_index(b)
    pd.testing.assert_frame_equal(index_a, index_b)
    arrays_a, arrays_b = store.open_patch_arrays(a), store.open_patch_arrays(b)
    assert np.array_equal(arrays_a.images[:], arrays_b.images[:], equal_nan=True)
    if arrays_a.labels is not None or arrays_b.labels is not None:
        assert np.array_equal(arrays_a.labels[:], arrays_b.labels[:])
    assert json.loads((a / store.STATS).read_text()) == json.loads((b / store.STATS).read_text())


def _matches_the_product(out, scene, every=97):
    index = store.read_index(out)
    arrays = store.open_patch_arrays(out)
    product = open_product(scene.product)
    for i in range(0, len(index), every):
        entry = index.iloc[i]
        window = Window(int(entry["row"]), int(entry["col"]), PATCH, PATCH)
        db = product.read_db(window).astype(np.float16)
        assert np.array_equal(arrays.images[i], db, equal_nan=True), i


def test_unlabelled_patches_are_written_once_and_moved_whole(scene, tmp_path, written):
    # Every window kept: unlabelled, no no-data limit, one split (no patch across splits).
    out = tmp_path / "ds"
    result = run_prepare(_config(scene, out, split_fractions="1,0,0"))
    assert result.patches == 48 * 48
    # Each patch went through a shard writer once (staging); the dataset's shards are
    # the staged files themselves.
    assert written == {"images": result.patches, "labels": 0}
    staged = _patch_files(out / STAGING)
    assert staged == []  # no second copy left in staging
    final = _patch_files(out / store.IMAGES)
    assert len(final) == 9 and all(p.stat().st_nlink == 1 for p in final)
    on_disk = sum(p.stat().st_size for p in _patch_files(out))  # patches + shard indexes
    assert on_disk == result.patches * (PATCH * PATCH * 2 + 16) + 9 * 4  # float16, once
    _matches_the_product(out, scene)
    stats = json.loads((out / store.STATS).read_text())
    values = np.asarray(store.open_patch_arrays(out).images[:], np.float64)
    assert stats["mean_db"][0] == pytest.approx(np.nanmean(values), abs=1e-9)
    # Without labels, the distribution is one "unlabelled" row: a table, no figure.
    assert (out / "class_distribution.csv").exists()
    assert not (out / "class_distribution.png").exists()

    # The same settings again: every task is reused (its patches read from the dataset
    # they were moved into) and the dataset is the same.
    again = run_prepare(_config(scene, out, split_fractions="1,0,0"))
    assert again.resumed_tasks == 5 and again.patches == result.patches
    assert _patch_files(out / STAGING) == []


def test_a_last_partial_shard_is_moved_too(tmp_path_factory, tmp_path, written):
    # 45 x 45 = 2025 windows: 7 full shards and one of 233, the last task's last, which
    # becomes the dataset's last shard as it is (only the last shard may be partial).
    scene = write_synthetic_scene(tmp_path_factory.mktemp("scene720"), size=720, seed=3)
    out = tmp_path / "ds"
    result = run_prepare(_config(scene, out, split_fractions="1,0,0"))
    assert result.patches == 45 * 45
    assert written == {"images": result.patches, "labels": 0}  # none copied
    assert _patch_files(out / STAGING) == []
    final = _patch_files(out / store.IMAGES)
    assert len(final) == 8 and all(p.stat().st_nlink == 1 for p in final)
    _matches_the_product(out, scene, every=41)


def test_other_balancing_reuses_the_cut_scene_and_equals_a_fresh_run(scene, tmp_path):
    out, fresh = tmp_path / "ds", tmp_path / "fresh"
    # Every window kept at first: patches without labels too, one split.
    keep = tmp_path / "keep.yaml"
    keep.write_text("balance: {keep_unlabelled: true}\n")
    every = {"labelled": True, "file": keep, "split_fractions": "1,0,0"}
    first = run_prepare(_config(scene, out, **every))
    assert _patch_files(out / STAGING) == []  # every staged shard moved whole
    reference = tmp_path / "reference"
    run_prepare(_config(scene, reference, **every))
    # Balancing drops: a category excluded, another capped.
    other = {"exclude": ["Forest"], "caps": ["Water=100"]}
    second = run_prepare(_config(scene, out, **every, **other))
    assert second.resumed_tasks == 5 and second.patches < first.patches
    run_prepare(_config(scene, fresh, **every, **other))
    _equal_datasets(out, fresh)
    _matches_the_product(out, scene, every=31)
    # Patches the balanced dataset left out were kept in staging (read back from the
    # first dataset before it was replaced): the first settings give the first dataset.
    third = run_prepare(_config(scene, out, **every))
    assert third.resumed_tasks == 5
    _equal_datasets(out, reference)


def test_a_failed_commit_keeps_the_dataset_and_what_staging_needs(scene, tmp_path, monkeypatch):
    from alos2fm.outputs import OutputFolder

    out, fresh = tmp_path / "ds", tmp_path / "fresh"
    run_prepare(_config(scene, out, labelled=True))
    before = store.read_index(out)
    commit = OutputFolder.commit

    def failing(self, *args, **kwargs):
        raise OSError("disk full")

    other = {"exclude": ["Water"], "seed": 5}
    monkeypatch.setattr(OutputFolder, "commit", failing)
    with pytest.raises(OSError, match="disk full"):
        run_prepare(_config(scene, out, labelled=True, **other))
    pd.testing.assert_frame_equal(store.read_index(out), before)  # the dataset as it was
    monkeypatch.setattr(OutputFolder, "commit", commit)
    result = run_prepare(_config(scene, out, labelled=True, **other))
    assert result.resumed_tasks == 5
    run_prepare(_config(scene, fresh, labelled=True, **other))
    _equal_datasets(out, fresh)


def test_moved_patches_missing_from_the_root_make_their_tasks_cut_again(scene, tmp_path):
    # Staging whose moved shards are in no dataset at the root (here: removed by hand):
    # the tasks are cut again rather than read from nowhere.
    import shutil

    out = tmp_path / "ds"
    cfg = _config(scene, out, split_fractions="1,0,0")
    run_prepare(cfg)
    before = store.read_index(out)
    for name in (store.INDEX, store.IMAGES):
        path = out / name
        shutil.rmtree(path) if path.is_dir() else path.unlink()
    result = run_prepare(cfg)
    assert result.resumed_tasks == 0
    pd.testing.assert_frame_equal(store.read_index(out), before)
    _matches_the_product(out, scene)
