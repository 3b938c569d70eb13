"""The Flevoland study's datasets, made by ``alos2fm prepare``, carry exactly the study's
labels: every labelled pixel of each split, in that split only, none lost at the edges."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "experiments" / "flevoland"))

from scene import prepare_finetuning, prepare_pretraining, read_ground_truth  # noqa: E402
from splits import SPLITS, make_split, sample_label_fraction  # noqa: E402

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
    train = sample_label_fraction(split.labels["train"], 0.05, seed=0)
    labels = {**split.labels, "train": train}
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
