from __future__ import annotations

import shutil

import numpy as np
import pandas as pd
import pytest
import torch
from torch.utils.data import DataLoader

from alos2fm.data import store
from alos2fm.data.dataset import PatchDataset
from alos2fm.errors import DataError

SPLITS = ["train", "val", "train", "test", "train"]


def _make_store(root, with_labels=True):
    """5 patches of 2 bands, 4 x 4 px; patch i holds -i dB (HH) and -10 - i dB (HV)."""
    arrays = store.create_patch_arrays(root, len(SPLITS), ["HH", "HV"], 4, with_labels)
    for i in range(len(SPLITS)):
        image = np.stack([np.full((4, 4), -float(i)), np.full((4, 4), -10.0 - i)])
        image[1, 0, 0] = np.nan  # HV missing at one pixel
        arrays.images[i] = image
        if with_labels:
            arrays.labels[i] = np.full((4, 4), i, dtype=np.uint8)
    index = pd.DataFrame(
        {c: [0] * len(SPLITS) for c in store.INDEX_COLUMNS}
        | {"patch_id": [f"p{i}" for i in range(len(SPLITS))], "split": SPLITS}
    )
    store.write_index(root, index)
    store.write_stats(root, {"bands": ["HH", "HV"], "mean_db": [-2.0, -12.5], "std_db": [1, 1]})


def test_item_fills_nodata_with_band_mean_and_masks_it(tmp_path):
    _make_store(tmp_path)
    dataset = PatchDataset(tmp_path, split="train")
    assert len(dataset) == 3
    item = dataset[1]  # the second train patch = store position 2
    assert item["index"] == 2
    image = item["image"]
    assert image.dtype == torch.float32 and image.shape == (2, 4, 4)
    assert image[0].eq(-2.0).all()
    assert image[1, 0, 0] == -12.5  # HV mean from stats.json
    assert image[1, 1, 1] == -12.0
    assert item["valid"].dtype == torch.bool
    assert not item["valid"][0, 0] and int(item["valid"].sum()) == 15
    label = item["label"]
    assert label.dtype == torch.int64
    assert label[0, 0] == 255 and label[1, 1] == 2  # ignore where the image has no data


def test_band_subset_changes_validity_and_fill(tmp_path):
    _make_store(tmp_path)
    item = PatchDataset(tmp_path, split="test", bands=["HH"])[0]
    assert item["index"] == 3
    assert item["image"].shape == (1, 4, 4) and item["image"].eq(-3.0).all()
    assert item["valid"].all() and item["label"].eq(3).all()
    with pytest.raises(DataError, match="VV"):
        PatchDataset(tmp_path, bands=["VV"])


def test_split_none_is_every_patch_and_labels_follow_the_store(tmp_path):
    _make_store(tmp_path / "a")
    _make_store(tmp_path / "b", with_labels=False)
    assert [PatchDataset(tmp_path / "a", split=None)[i]["index"] for i in range(5)] == list(
        range(5)
    )
    assert "label" not in PatchDataset(tmp_path / "b", split=None)[0]
    assert "label" not in PatchDataset(tmp_path / "a", with_labels=False)[0]
    with pytest.raises(DataError, match="labels"):
        PatchDataset(tmp_path / "b", with_labels=True)


def test_label_fraction_is_a_seeded_subset(tmp_path):
    _make_store(tmp_path)
    full = PatchDataset(tmp_path, split=None)
    a = PatchDataset(tmp_path, split=None, label_fraction=0.4, seed=1)
    b = PatchDataset(tmp_path, split=None, label_fraction=0.4, seed=1)
    assert len(a) == 2 and list(a.positions) == list(b.positions)
    assert set(a.positions) <= set(full.positions)
    assert len(PatchDataset(tmp_path, split="test", label_fraction=0.01)) == 1  # at least one
    with pytest.raises(ValueError):
        PatchDataset(tmp_path, label_fraction=0.0)


def test_label_fractions_are_nested(tmp_path):
    _make_store(tmp_path)
    kept = [
        set(PatchDataset(tmp_path, split=None, label_fraction=f, seed=3).positions)
        for f in (0.2, 0.4, 0.6, 1.0)
    ]
    assert [len(k) for k in kept] == [1, 2, 3, 5]
    assert kept[0] <= kept[1] <= kept[2] <= kept[3]


def test_dataloader_with_worker_processes(tmp_path):
    _make_store(tmp_path)
    dataset = PatchDataset(tmp_path, split="train")
    dataset[0]  # arrays opened in the parent: workers must not inherit the handles
    loader = DataLoader(dataset, batch_size=3, num_workers=2)
    (batch,) = list(loader)
    assert batch["image"].shape == (3, 2, 4, 4)
    assert batch["label"].shape == (3, 4, 4)
    assert batch["index"].tolist() == [0, 2, 4]
    assert batch["image"][:, 0, 0, 0].tolist() == [0.0, -2.0, -4.0]


def test_in_memory_dataset_gives_the_same_items_without_the_files(tmp_path):
    _make_store(tmp_path)
    dataset = PatchDataset(tmp_path, split="train")
    on_disk = [dataset[i] for i in range(len(dataset))]
    in_memory = PatchDataset(tmp_path, split="train", in_memory=True)
    shutil.rmtree(tmp_path / "images")  # everything is in RAM already
    shutil.rmtree(tmp_path / "labels")
    assert len(in_memory) == len(on_disk) == 3
    for i, item in enumerate(on_disk):
        for key in ("image", "valid", "label"):
            assert torch.equal(item[key], in_memory[i][key]), (i, key)
        assert item["index"] == in_memory[i]["index"]
