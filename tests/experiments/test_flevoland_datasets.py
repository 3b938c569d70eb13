"""The Flevoland study's datasets, made by ``alos2fm prepare``, carry exactly the study's
labels: every labelled pixel of each split, in that split only, none lost at the edges.
Without the scene, the study's preparation (``third.py``) stops before writing anything,
naming the files it needs and where they come from."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "experiments" / "flevoland"))

import third  # noqa: E402
from scene import (  # noqa: E402
    GT_FILE,
    missing_scene,
    prepare_finetuning,
    prepare_pretraining,
    read_ground_truth,
    scene_files,
)
from splits import SPLITS, make_split  # noqa: E402

from alos2fm.data import store  # noqa: E402


def _union_of_patches(out: Path, split: str, shape: tuple[int, int]) -> np.ndarray:
    """The labels of one split's patches pasted back onto the scene (255 where none);
    overlapping patches must agree."""
    index = store.read_index(out)
    labels = store.open_patch_arrays(out).labels
    scene = np.full(shape, 255, np.uint8)
    for i, entry in enumerate(index.itertuples()):
        if entry.split != split:
            continue
        inside = np.s_[entry.row : entry.row + 64, entry.col : entry.col + 64]
        patch = labels[i]
        known = (scene[inside] != 255) & (patch != 255)
        assert (scene[inside][known] == patch[known]).all()
        scene[inside] = np.where(patch != 255, patch, scene[inside])
    return scene


def test_finetuning_dataset_holds_every_label_of_each_split_and_nothing_else(
    flevoland_dir, tmp_path
):
    gt = read_ground_truth(flevoland_dir)
    split = make_split(gt, seed=0)
    labels = split.labels
    out = prepare_finetuning(
        tmp_path / "ft", flevoland_dir, ["HH"], labels, split.block_split, split.scored, 64, 32
    )
    for name in SPLITS:
        np.testing.assert_array_equal(_union_of_patches(out, name, gt.shape), labels[name])
    stats = store.read_stats(out)
    assert len(stats["class_names"]) == len(split.scored) == 14  # Buildings too rare to score
    assert "Buildings" not in stats["class_names"]


def test_pretraining_dataset_covers_the_whole_scene_unlabelled(flevoland_dir, tmp_path):
    out = prepare_pretraining(tmp_path / "pre", flevoland_dir, ["HH", "HV", "VV"], 64, 16)
    index = store.read_index(out)
    assert set(index["split"]) == {"train"}
    assert store.open_patch_arrays(out).labels is None
    # 750 x 1024 at stride 16, edges covered: rows 0..672 and 686, cols 0..960.
    assert sorted(set(index["row"]))[-2:] == [672, 686] and index["col"].max() == 960
    assert len(index) == 44 * 61


def test_without_the_scene_third_names_its_files_and_writes_nothing(tmp_path, monkeypatch):
    data, root = tmp_path / "nowhere", tmp_path / "runs" / "third"
    monkeypatch.setattr(sys, "argv", ["third.py", "--data", str(data), "--root", str(root)])
    with pytest.raises(SystemExit) as stop:
        third.main()
    message = str(stop.value.code)
    # HH (the default): the three T3 elements HH needs, their headers, the labels
    for name in ("T3/T11.bin", "T3/T22.bin.hdr", "T3/T12_real.bin", GT_FILE):
        assert name in message
    assert "T33" not in message  # HV's element, which HH does not read
    assert "AIRSAR" in message and "CV-ASDF2Net" in message and "--data" in message
    assert not (tmp_path / "runs").exists()


def test_only_the_missing_files_are_named(tmp_path):
    bands = ["HH", "HV", "VV"]
    files = scene_files(tmp_path, bands)
    assert len(files) == 4 * 2 + 1  # T11, T12_real, T22, T33 (+ .hdr), ground truth
    for path in files[1:]:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch()
    problem = missing_scene(tmp_path, bands)
    assert problem is not None and "missing T3/T11.bin." in problem
    files[0].touch()
    assert missing_scene(tmp_path, bands) is None
