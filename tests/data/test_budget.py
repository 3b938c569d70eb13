"""Label budgets (alos2fm.data.budget) on hand-built stores whose parcels are known."""

from __future__ import annotations

import logging
from itertools import pairwise

import numpy as np
import pandas as pd
import pytest

from alos2fm.data import store
from alos2fm.data.budget import LabelBudget, budget_masks
from alos2fm.data.dataset import PatchDataset
from alos2fm.train.config import ConfigError, resolve_config

NAMES = ["field", "forest", "water"]


def _make_store(root, scenes, patch, stride, split_of=None, reverse=False):
    """Cut each scene's label mosaic (255 = ignore) into ``patch`` px patches every
    ``stride`` px; ``split_of`` maps a scene to its split (default train). ``reverse``
    writes the patches in the opposite order (same content, other positions)."""
    cuts = [
        (name, r, c)
        for name, labels in scenes.items()
        for r in range(0, labels.shape[0] - patch + 1, stride)
        for c in range(0, labels.shape[1] - patch + 1, stride)
    ]
    if reverse:
        cuts = cuts[::-1]
    arrays = store.create_patch_arrays(root, len(cuts), ["HH"], patch, with_labels=True)
    for i, (name, r, c) in enumerate(cuts):
        arrays.images[i] = np.zeros((1, patch, patch), dtype=np.float32)
        arrays.labels[i] = scenes[name][r : r + patch, c : c + patch]
    index = pd.DataFrame(
        {column: [0] * len(cuts) for column in store.INDEX_COLUMNS}
        | {
            "patch_id": [f"{name}_{r}_{c}" for name, r, c in cuts],
            "scene": [name for name, _, _ in cuts],
            "row": [r for _, r, _ in cuts],
            "col": [c for _, _, c in cuts],
            "split": [(split_of or {}).get(name, "train") for name, _, _ in cuts],
        }
    )
    store.write_index(root, index)
    stats = {"bands": ["HH"], "mean_db": [0.0], "std_db": [1.0]}
    store.write_stats(root, stats | {"num_classes": 3, "class_names": NAMES})
    return cuts


def _two_parcel_scenes():
    """Scene a (40 x 40, train): field parcels of 300 px (rows 0-14, cols 0-19) and 50 px
    (rows 30-34, cols 30-39); a forest parcel of 250 px (rows 20-29, cols 0-24) across two
    patches. Scene b (20 x 20, val): a field parcel of 400 px, not to be drawn from."""
    a = np.full((40, 40), 255, dtype=np.uint8)
    a[0:15, 0:20] = 0
    a[30:35, 30:40] = 0
    a[20:30, 0:25] = 1
    b = np.zeros((20, 20), dtype=np.uint8)
    return {"a": a, "b": b}


def _kept_scene_pixels(root, selection, shape=(100, 100)):
    """The union of the kept pixels, in scene coordinates: {scene: bool mosaic}."""
    index = store.read_index(root)
    union = {}
    for position, mask in selection.masks.items():
        entry = index.iloc[position]
        mosaic = union.setdefault(entry["scene"], np.zeros(shape, dtype=bool))
        h, w = mask.shape
        mosaic[entry["row"] : entry["row"] + h, entry["col"] : entry["col"] + w] |= mask
    return union


def test_parse_and_tag():
    assert LabelBudget.parse("k3") == LabelBudget("parcels", 3)
    assert LabelBudget.parse("0.1%") == LabelBudget("fraction", 0.001)
    assert LabelBudget.parse("0.25") == LabelBudget.parse(0.25) == LabelBudget("fraction", 0.25)
    assert LabelBudget.parse("100%").is_everything and not LabelBudget.parse("k1").is_everything
    assert [LabelBudget.parse(t).tag for t in ("k3", "0.1%", "5%", "100%")] == [
        "k3",
        "0.1pct",
        "5pct",
        "100pct",
    ]
    assert LabelBudget.parse("0.1pct") == LabelBudget.parse("0.1%")  # tags read back
    for bad in ("kk1", "k0", "0%", "150%", "1.5", "", "nan", "-0.1"):
        with pytest.raises(ValueError, match="label budget"):
            LabelBudget.parse(bad)


def test_k1_keeps_the_parcel_above_the_minimum(tmp_path):
    _make_store(tmp_path, _two_parcel_scenes(), patch=20, stride=20, split_of={"b": "val"})
    # Positions: a(0,0)=0, a(0,20)=1, a(20,0)=2, a(20,20)=3, b(0,0)=4.
    for seed in (0, 1, 2):
        selection = budget_masks(tmp_path, LabelBudget.parse("k1"), seed, min_parcel_pixels=200)
        assert sorted(selection.masks) == [0, 2, 3]  # position 1 holds no label
        mask = selection.masks[0]
        assert mask.shape == (20, 20) and mask[:15].all() and not mask[15:].any()
        assert selection.masks[2][:10, :].all() and int(selection.masks[2].sum()) == 200
        assert int(selection.masks[3].sum()) == 50  # the forest's cols 20-24; no small field
        summary = selection.summary
        assert list(summary["name"]) == NAMES
        assert list(summary["parcels_kept"]) == [1, 1, 0]
        assert list(summary["pixels_kept"]) == [300, 250, 0]
        assert list(summary["pixels_available"]) == [350, 250, 0]  # the val scene not counted


def test_parcel_budgets_are_nested(tmp_path):
    # Five field parcels of 10 x 20 = 200 px, separated by ignored rows.
    scene = np.full((60, 20), 255, dtype=np.uint8)
    for top in range(0, 60, 12):
        scene[top : top + 10] = 0
    _make_store(tmp_path, {"s": scene}, patch=20, stride=20)
    kept = [
        _kept_scene_pixels(tmp_path, budget_masks(tmp_path, LabelBudget("parcels", k), 5))["s"]
        for k in (1, 2, 3, 5, 9)
    ]
    assert [int(k.sum()) for k in kept] == [200, 400, 600, 1000, 1000]  # 9 > 5: all five
    for smaller, larger in pairwise(kept):
        assert not (smaller & ~larger).any()


def test_fraction_budgets_are_nested_and_seeded(tmp_path):
    scene = np.tile(np.arange(3, dtype=np.uint8), (100, 34))[:, :100]  # 10 000 labelled px
    _make_store(tmp_path, {"s": scene}, patch=20, stride=20)

    def kept(budget, seed):
        return _kept_scene_pixels(tmp_path, budget_masks(tmp_path, budget, seed))["s"]

    one, five = kept(LabelBudget.parse("1%"), 7), kept(LabelBudget.parse("5%"), 7)
    assert int(one.sum()) == 100 and int(five.sum()) == 500
    assert not (one & ~five).any()
    assert np.array_equal(one, kept(LabelBudget.parse("1%"), 7))
    assert not np.array_equal(one, kept(LabelBudget.parse("1%"), 8))
    tiny = budget_masks(tmp_path, LabelBudget("fraction", 1e-9), 7)
    assert int(tiny.summary["pixels_kept"].sum()) == 1  # at least one pixel
    assert tiny.summary["parcels_kept"].isna().all()  # parcels mean nothing here


def test_overlapping_patches_count_a_pixel_once(tmp_path):
    # 30 x 30 scene, 20 px patches every 10 px: 4 patches, 1400 labelled patch pixels but
    # 750 labelled scene pixels (cols 0-4 ignored).
    scene = np.zeros((30, 30), dtype=np.uint8)
    scene[:, :5] = 255
    _make_store(tmp_path, {"s": scene}, patch=20, stride=10)
    everything = budget_masks(tmp_path, LabelBudget.parse("100%"), 0)
    assert list(everything.summary["pixels_available"]) == [750, 0, 0]
    assert list(everything.summary["pixels_kept"]) == [750, 0, 0]
    assert sum(int(m.sum()) for m in everything.masks.values()) == 1400
    tenth = budget_masks(tmp_path, LabelBudget.parse("10%"), 3)
    assert int(tenth.summary["pixels_kept"].iloc[0]) == 75
    assert int(_kept_scene_pixels(tmp_path, tenth)["s"].sum()) == 75
    # Patches (0, 0) and (0, 10) share scene cols 10-19: their masks agree there.
    assert np.array_equal(tenth.masks[0][:, 10:], tenth.masks[1][:, :10])
    one_parcel = budget_masks(tmp_path, LabelBudget.parse("k1"), 0)  # spans all 4 patches
    assert list(one_parcel.summary["pixels_kept"]) == [750, 0, 0]


def test_results_do_not_depend_on_patch_order(tmp_path):
    scenes = {"a": np.tile(np.arange(3, dtype=np.uint8), (40, 14))[:, :40]}
    scenes["b"] = np.repeat(np.arange(3, dtype=np.uint8), 14)[:40, None].repeat(40, axis=1)
    _make_store(tmp_path / "forward", scenes, patch=20, stride=10)
    _make_store(tmp_path / "reverse", scenes, patch=20, stride=10, reverse=True)
    for budget in (LabelBudget.parse("3%"), LabelBudget.parse("k1")):
        forward, reverse = (
            _kept_scene_pixels(tmp_path / o, budget_masks(tmp_path / o, budget, 4, 10))
            for o in ("forward", "reverse")
        )
        assert forward.keys() == reverse.keys() and forward
        for name in forward:
            assert np.array_equal(forward[name], reverse[name]), (budget, name)


def test_a_class_of_small_parcels_keeps_its_largest_and_warns(tmp_path, caplog):
    scene = np.full((20, 40), 255, dtype=np.uint8)
    scene[0:20, 0:20] = 0  # 400 px
    scene[0:3, 25:35] = 2  # water: 30 px
    scene[10:16, 25:35] = 2  # water: 60 px, the largest
    _make_store(tmp_path, {"s": scene}, patch=20, stride=20)
    with caplog.at_level(logging.WARNING, logger="alos2fm.data.budget"):
        selection = budget_masks(tmp_path, LabelBudget.parse("k2"), 0, min_parcel_pixels=200)
    assert list(selection.summary["parcels_kept"]) == [1, 0, 1]
    assert list(selection.summary["pixels_kept"]) == [400, 0, 60]
    assert selection.masks[1][10:16, 5:15].all() and int(selection.masks[1].sum()) == 60
    (record,) = [r for r in caplog.records if r.name == "alos2fm.data.budget"]
    assert "water" in record.getMessage() and "60 px" in record.getMessage()


def test_dataset_with_a_budget_masks_labels_and_drops_empty_patches(tmp_path):
    _make_store(tmp_path, _two_parcel_scenes(), patch=20, stride=20, split_of={"b": "val"})
    dataset = PatchDataset(tmp_path, label_budget=LabelBudget.parse("k1"), budget_seed=1)
    assert list(dataset.positions) == [0, 2, 3] and len(dataset) == 3
    label = dataset[2]["label"].numpy()  # a(20, 20): forest cols 0-4 kept, small field not
    assert (label[:10, :5] == 1).all()
    assert (label == 255).sum() == 400 - 50
    assert list(dataset.budget.summary["pixels_kept"]) == [300, 250, 0]
    everything = PatchDataset(tmp_path, label_budget=LabelBudget.parse("100%"))
    assert list(everything.positions) == [0, 1, 2, 3]  # as without a budget
    with pytest.raises(ValueError, match="label_fraction"):
        PatchDataset(tmp_path, label_fraction=0.5, label_budget=LabelBudget.parse("k1"))


def test_a_budget_typo_fails_in_the_config():
    with pytest.raises(ConfigError, match="kk1"):
        resolve_config("finetune", "cpu-tiny-seg", ["data.label_budget=kk1"])
    cfg = resolve_config("finetune", "cpu-tiny-seg", ["data.label_budget=0.01"])
    assert LabelBudget.parse(cfg.data.label_budget) == LabelBudget("fraction", 0.01)
    with pytest.raises(ConfigError, match="fine-tuning only"):
        resolve_config("pretrain", None, ["data.label_budget=k1"])
