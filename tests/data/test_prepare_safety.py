"""Nothing of the user's is lost: ``prepare --out`` never removes what it did not write, and
a resumed run never reuses patches cut from files that have changed since."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from alos2fm.data import prepare as prep
from alos2fm.data.prepare import MANIFEST, prepare_config, product_files, run_prepare
from alos2fm.errors import DataError
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
    with pytest.raises(DataError, match="not empty and is not an alos2fm dataset.*--overwrite"):
        _run(_product(tmp_path), out)
    assert (out / "images" / "holiday.jpg").read_bytes() == b"jpeg"
    assert sorted(p.name for p in out.iterdir()) == ["config.yaml", "images"]


def test_overwrite_never_replaces_a_path_prepare_did_not_write(tmp_path):
    out = tmp_path / "holiday"
    (out / "images").mkdir(parents=True)
    (out / "images" / "holiday.jpg").write_bytes(b"jpeg")
    with pytest.raises(DataError, match="folder's own images would be replaced"):
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
    scene = prep._Scene(folder, "s", None, ("HH",), "sigma0", None)
    cfg = prepare_config(products=[str(folder)], out=str(tmp_path / "ds"))
    windows = [prep.Window(0, 0, 32, 32)]
    before = prep._fingerprint(cfg, scene, windows)
    folder_stat = folder.stat().st_mtime_ns
    image = folder / "IMG-HH-ALOS2015976960-140909-FBDR1.5GUA"
    with open(image, "r+b") as f:  # in place: same folder entry
        f.write(b"y" * 12)
    os.utime(folder, ns=(folder_stat, folder_stat))
    assert prep._fingerprint(cfg, scene, windows) != before
