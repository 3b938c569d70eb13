"""Nothing of the user's is lost: ``prepare --out`` never removes what it did not write, and
a resumed run never reuses patches cut from files that have changed since."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from alos2fm.data.prepare import prepare_config, run_prepare
from alos2fm.data.prepare import tasks as prep
from alos2fm.data.prepare.inputs import Scene
from alos2fm.errors import DataError
from alos2fm.identity import product_files
from alos2fm.outputs import MANIFEST, OutputError
from tests.products.rasters import write_tif


def _product(tmp_path: Path) -> Path:
    db = np.random.default_rng(0).normal(-12, 2, (1, 64, 64)).astype(np.float32)
    return write_tif(tmp_path / "scene.tif", db)


def _run(product: Path, out: Path, **options):
    cfg = prepare_config(
        products=[str(product)],
        out=str(out),
        patch_size=32,
        stride=32,
        block_size=64,
        buffer=0,
        progress=False,
        **options,
    )
    return run_prepare(cfg)


def test_a_folder_of_the_users_is_refused_and_left_as_it_was(tmp_path):
    out = tmp_path / "holiday"
    (out / "images").mkdir(parents=True)
    (out / "images" / "holiday.jpg").write_bytes(b"jpeg")
    (out / "config.yaml").write_text("mine: true\n")
    with pytest.raises(
        OutputError, match="not empty and is not alos2fm prepare output.*--overwrite"
    ):
        _run(_product(tmp_path), out)
    assert (out / "images" / "holiday.jpg").read_bytes() == b"jpeg"
    assert sorted(p.name for p in out.iterdir()) == ["config.yaml", "images"]


def test_overwrite_never_replaces_a_path_prepare_did_not_write(tmp_path):
    out = tmp_path / "holiday"
    (out / "images").mkdir(parents=True)
    (out / "images" / "holiday.jpg").write_bytes(b"jpeg")
    with pytest.raises(OutputError, match="images would be replaced, but alos2fm did not write"):
        _run(_product(tmp_path), out, overwrite=True)
    assert (out / "images" / "holiday.jpg").exists()


def test_overwrite_writes_beside_unrelated_files_and_later_runs_keep_them(tmp_path):
    out = tmp_path / "shared"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    _run(_product(tmp_path), out, overwrite=True)
    manifest = json.loads((out / MANIFEST).read_text())
    assert "notes.txt" not in manifest["outputs"] and "images" in manifest["outputs"]
    # The folder is now a dataset: a second run (other settings) needs no --overwrite,
    # replaces only its own outputs, and the user's file survives both runs.
    _run(_product(tmp_path), out, max_nodata=0.5)
    assert (out / "notes.txt").read_text() == "keep me"
    assert (out / "index.parquet").exists()


def test_a_failed_run_in_a_new_folder_leaves_nothing(tmp_path):
    out = tmp_path / "new"
    db = np.full((1, 64, 64), np.nan, np.float32)
    db[0, :8, :8] = -12.0  # valid pixels, but no patch with at most 10 % no data
    with pytest.raises(DataError, match="the scene is empty"):
        _run(write_tif(tmp_path / "empty.tif", db), out)
    assert not out.exists()


def _ceos_folder(root: Path) -> Path:
    folder = root / "ALOS2015976960-140909"
    folder.mkdir()
    for name in (
        "VOL-ALOS2015976960-140909-FBDR1.5GUA",
        "LED-ALOS2015976960-140909-FBDR1.5GUA",
        "IMG-HH-ALOS2015976960-140909-FBDR1.5GUA",
        "IMG-HV-ALOS2015976960-140909-FBDR1.5GUA",
        "TRL-ALOS2015976960-140909-FBDR1.5GUA",
        "BRS-HH-ALOS2015976960-140909-FBDR1.5GUA.jpg",
    ):
        (folder / name).write_bytes(b"x" * 10)
    return folder


def test_product_files_are_the_files_a_reader_opens(tmp_path):
    folder = _ceos_folder(tmp_path)
    vol = folder / "VOL-ALOS2015976960-140909-FBDR1.5GUA"
    by_file = [p.name[:6] for p in product_files(vol)]
    assert by_file == ["IMG-HH", "IMG-HV", "LED-AL", "TRL-AL", "VOL-AL"]  # no browse JPEG
    assert len(product_files(folder)) == 6  # a folder: all its files
    (tmp_path / "other.tif").write_bytes(b"")
    assert product_files(tmp_path / "other.tif") == [tmp_path / "other.tif"]


def test_replacing_an_image_file_of_a_ceos_folder_changes_the_resume_fingerprint(tmp_path):
    """The folder's own stat does not change when a file in it is rewritten in place."""
    folder = _ceos_folder(tmp_path)
    scene = Scene(folder, "s", None, ("HH",), "sigma0", None)
    cfg = prepare_config(products=[str(folder)], out=str(tmp_path / "ds"))
    windows = [prep.Window(0, 0, 32, 32)]
    before = prep._fingerprint(cfg, scene, windows)
    folder_stat = folder.stat().st_mtime_ns
    image = folder / "IMG-HH-ALOS2015976960-140909-FBDR1.5GUA"
    with open(image, "r+b") as f:  # in place: same folder entry
        f.write(b"y" * 12)
    os.utime(folder, ns=(folder_stat, folder_stat))
    assert prep._fingerprint(cfg, scene, windows) != before


# --- the review's defects, by name -------------------------------------------------------------


def test_R1_an_edit_kept_in_a_geopackage_wal_changes_the_resume_fingerprint(tmp_path):
    """QGIS keeps edits of a GeoPackage in ``-wal`` until a checkpoint: the .gpkg itself
    does not change, so its write-ahead log must be part of what a staged task depends on."""
    product = _product(tmp_path)
    gpkg = tmp_path / "fields.gpkg"
    gpkg.write_bytes(b"gpkg")
    wal = tmp_path / "fields.gpkg-wal"
    wal.write_bytes(b"edit 1")
    scene = Scene(product, "s", None, ("DB1",), "sigma0", None)
    cfg = prepare_config(products=[str(product)], out=str(tmp_path / "ds"))

    class Labels:  # what the fingerprint reads of a label source: the paths it was given
        files = [gpkg]

    labelled = Scene(product, "s", None, ("DB1",), "sigma0", Labels())
    windows = [prep.Window(0, 0, 32, 32)]
    before = prep._fingerprint(cfg, labelled, windows)
    wal.write_bytes(b"edit 2, longer")
    assert prep._fingerprint(cfg, labelled, windows) != before
    assert prep._fingerprint(cfg, scene, windows) == prep._fingerprint(cfg, scene, windows)


def test_R1_a_vrt_source_tile_edited_in_place_changes_the_fingerprint(tmp_path):
    from alos2fm.identity import reader_files

    (tmp_path / "tiles").mkdir()
    tile = write_tif(tmp_path / "tiles" / "a.tif", np.zeros((1, 8, 8), np.float32))
    vrt = tmp_path / "labels.vrt"
    vrt.write_text(
        '<VRTDataset rasterXSize="8" rasterYSize="8"><VRTRasterBand dataType="Float32" band="1">'
        '<SimpleSource><SourceFilename relativeToVRT="1">tiles/a.tif</SourceFilename>'
        "</SimpleSource></VRTRasterBand></VRTDataset>"
    )
    assert tile in reader_files(vrt) and vrt in reader_files(vrt)


def test_R2_a_folder_with_an_index_and_a_config_is_not_taken_for_a_dataset(tmp_path):
    out = tmp_path / "project"
    (out / "images").mkdir(parents=True)
    (out / "images" / "photo.jpg").write_bytes(b"jpeg")
    (out / "labels").mkdir()
    (out / "labels" / "mine.tif").write_bytes(b"tif")
    (out / "index.parquet").write_bytes(b"mine")
    (out / "config.yaml").write_text("mine: true\n")
    with pytest.raises(OutputError, match="not alos2fm prepare output"):
        _run(_product(tmp_path), out)
    with pytest.raises(OutputError, match="did not write"):
        _run(_product(tmp_path), out, overwrite=True)
    assert (out / "images" / "photo.jpg").read_bytes() == b"jpeg"
    assert (out / "labels" / "mine.tif").read_bytes() == b"tif"


@pytest.mark.parametrize("entry", ["../victim", "/tmp", "a/b", ".."])
def test_R3_a_manifest_entry_that_leaves_the_folder_is_refused_not_followed(tmp_path, entry):
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "thesis.txt").write_text("years of work")
    out = tmp_path / "ds"
    _run(_product(tmp_path), out)
    manifest = json.loads((out / MANIFEST).read_text())
    manifest["outputs"][entry] = manifest["run_id"]
    (out / MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(OutputError, match="leaves the folder"):
        _run(_product(tmp_path), out, max_nodata=0.5)
    assert (victim / "thesis.txt").read_text() == "years of work"


def test_R3_a_legacy_dataset_manifest_is_checked_the_same_way(tmp_path):
    victim = tmp_path / "victim"
    victim.mkdir()
    out = tmp_path / "ds"
    out.mkdir()
    (out / ".alos2fm-dataset.json").write_text(json.dumps({"outputs": ["../victim"]}))
    with pytest.raises(OutputError, match="leaves the folder"):
        _run(_product(tmp_path), out)
    assert victim.is_dir()


def test_R17_products_of_the_same_name_in_two_folders_are_two_scenes(tmp_path):
    db = np.random.default_rng(0).normal(-12, 2, (1, 64, 64)).astype(np.float32)
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    a = write_tif(tmp_path / "a" / "scene.tif", db)
    b = write_tif(tmp_path / "b" / "scene.tif", db + 1)
    cfg = prepare_config(
        products=[str(a), str(b)],
        out=str(tmp_path / "ds"),
        patch_size=32,
        stride=32,
        block_size=64,
        buffer=0,
        progress=False,
    )
    result = run_prepare(cfg)
    assert result.patches == 8  # 4 patches of each 64 px scene
    import pandas as pd

    assert sorted(pd.read_parquet(tmp_path / "ds" / "index.parquet")["scene"].unique()) == [
        "b-scene",
        "scene",
    ]
    twice = cfg.model_copy(update={"products": [a, tmp_path / "b" / ".." / "a" / "scene.tif"]})
    with pytest.raises(DataError, match="given twice"):
        run_prepare(twice)
