"""Spatial block split: proportions, determinism, and no contact between splits."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from pydantic import ValidationError

from alos2fm.data.split import BUFFER, SplitConfig, block_split, split_patches


def _index(scenes: dict[str, tuple[int, int]], patch: int, stride: int, drop: float, seed: int):
    """A patch index over scenes of (height, width) px, a random share of patches removed."""
    rng = np.random.default_rng(seed)
    rows = []
    for scene, (height, width) in scenes.items():
        for r in range(0, height - patch + 1, stride):
            for c in range(0, width - patch + 1, stride):
                if rng.random() >= drop:
                    rows.append(
                        {"patch_id": f"{scene}_{r}_{c}", "scene": scene, "row": r, "col": c}
                    )
    return pd.DataFrame(rows).set_index("patch_id", drop=False)


def _min_gap_violations(index: pd.DataFrame, split: pd.Series, patch: int, buffer: float) -> int:
    """Pairs of kept patches of different splits in one scene closer than ``buffer``."""
    bad = 0
    for _, group in index.assign(split=split).groupby("scene"):
        group = group[group["split"] != BUFFER]
        r = group["row"].to_numpy()[:, None]
        c = group["col"].to_numpy()[:, None]
        gap_r = np.maximum(r.T - (r + patch), r - (r.T + patch))
        gap_c = np.maximum(c.T - (c + patch), c - (c.T + patch))
        s = group["split"].to_numpy()
        bad += int(((s[:, None] != s[None, :]) & (gap_r < buffer) & (gap_c < buffer)).sum())
    return bad


@pytest.mark.parametrize("seed", range(6))
def test_no_two_splits_overlap_or_come_within_the_buffer(seed):
    """Random layouts: overlapping strides, holes, several scenes, random block and buffer."""
    rng = np.random.default_rng(seed)
    patch = 32
    stride = int(rng.choice([16, 24, 32, 40]))
    scenes = {f"S{k}": tuple(rng.integers(200, 400, size=2)) for k in range(3)}
    index = _index(scenes, patch, stride, drop=0.2, seed=seed)
    config = SplitConfig(
        block_size=float(rng.choice([48, 64, 100])),
        buffer=float(rng.choice([0, 7, 32])),
        frame="scene",
    )
    split = split_patches(index, config, patch_size=patch, seed=seed)
    assert _min_gap_violations(index, split, patch, config.buffer) == 0
    assert {"train", "val", "test"} <= set(split)
    # Not vacuous: where neighbouring patches are closer than the buffer (or overlap),
    # block edges between splits do force some patches out.
    if stride - patch < config.buffer:
        assert (split == BUFFER).any()


def test_only_the_lower_priority_split_loses_patches():
    index = _index({"S": (1024, 1024)}, 64, 32, drop=0.0, seed=0)
    config = SplitConfig(block_size=256, buffer=64, frame="scene")
    split = split_patches(index, config, patch_size=64, seed=1)
    centres = index[["row", "col"]].to_numpy() + 32
    blocks = centres // 256
    block_split_of = {}
    for (br, bc), s in zip(map(tuple, blocks), split, strict=True):
        if s != BUFFER:
            block_split_of.setdefault((br, bc), set()).add(s)
    assert all(len(s) == 1 for s in block_split_of.values())  # one split per block
    buffered_blocks = {tuple(b) for b, s in zip(blocks, split, strict=True) if s == BUFFER}
    test_blocks = {b for b, s in block_split_of.items() if s == {"test"}}
    assert not buffered_blocks & test_blocks  # test patches are never dropped


def test_aligned_grid_without_buffer_drops_nothing_and_blocks_follow_the_fractions():
    """Blocks of 2 x 2 aligned patches, 10 x 10 = 100 blocks: exactly 80 / 10 / 10."""
    index = _index({"S": (2560, 2560)}, 128, 128, drop=0.0, seed=0)
    config = SplitConfig(block_size=256, buffer=0, frame="scene")
    split = split_patches(index, config, patch_size=128, seed=5)
    assert (split != BUFFER).all()
    assert split.value_counts().to_dict() == {"train": 320, "val": 40, "test": 40}


def test_few_blocks_still_give_val_and_test():
    rects = np.array([[0, 0, 1, 1], [10, 0, 11, 1], [20, 0, 21, 1]], dtype=float)
    labels = block_split(
        ["S"] * 3, rects, block_size=10, buffer=0, fractions={"train": 0.8, "val": 0.1, "test": 0.1}
    )
    assert sorted(labels) == ["test", "train", "val"]


def test_split_is_deterministic_and_independent_of_row_order():
    index = _index({"A": (600, 600), "B": (600, 600)}, 64, 48, drop=0.1, seed=2)
    config = SplitConfig(block_size=128, buffer=16, frame="scene")
    first = split_patches(index, config, patch_size=64, seed=11)
    shuffled = index.sample(frac=1.0, random_state=3)
    again = split_patches(shuffled, config, patch_size=64, seed=11)
    pd.testing.assert_series_equal(first, again.loc[first.index])
    assert not first.equals(split_patches(index, config, patch_size=64, seed=12))


def _utm_index(scene: str, x0: float, y0: float, n: int, size: float) -> pd.DataFrame:
    rows = []
    for i in range(n):
        for j in range(n):
            minx, maxy = x0 + j * size, y0 - i * size
            rows.append(
                {"patch_id": f"{scene}_{i}_{j}", "scene": scene, "crs": "EPSG:32654",
                 "minx": minx, "miny": maxy - size, "maxx": minx + size, "maxy": maxy}
            )  # fmt: skip
    return pd.DataFrame(rows)


def test_crs_frame_keeps_overlapping_scenes_consistent():
    """Two dates of one frame (shifted by 300 m) share a CRS: same ground, same split."""
    index = pd.concat(
        [
            _utm_index("date1", 380000, 3950000, 12, 768.0),
            _utm_index("date2", 380300, 3950000, 12, 768.0),
        ],
        ignore_index=True,
    )
    config = SplitConfig(block_size=3000, buffer=500, frame="crs")
    split = split_patches(index, config, seed=0)
    kept = index[split != BUFFER].assign(split=split[split != BUFFER])
    # Across both scenes, kept patches of different splits are >= 500 m apart.
    r = kept[["minx", "miny", "maxx", "maxy"]].to_numpy()
    gap_x = np.maximum(r[None, :, 0] - r[:, None, 2], r[:, None, 0] - r[None, :, 2])
    gap_y = np.maximum(r[None, :, 1] - r[:, None, 3], r[:, None, 1] - r[None, :, 3])
    s = kept["split"].to_numpy()
    assert not ((s[:, None] != s[None, :]) & (gap_x < 500) & (gap_y < 500)).any()
    assert set(kept["split"]) == {"train", "val", "test"}
    # Split per scene instead, the two dates put the same ground in different splits.
    pixels = index.assign(
        row=((3950000 - index["maxy"]) / 768).round().astype(int),
        col=((index["minx"] - index.groupby("scene")["minx"].transform("min")) / 768)
        .round()
        .astype(int),
    )
    config = SplitConfig(block_size=4, buffer=0, frame="scene")
    per_scene = split_patches(pixels, config, patch_size=1, seed=0)
    one, two = per_scene[index["scene"] == "date1"], per_scene[index["scene"] == "date2"]
    # patch (i, j) of date2 lies 300 m east of patch (i, j) of date1: they overlap.
    assert (one.to_numpy() != two.to_numpy()).any()


def test_bad_settings_fail_clearly():
    with pytest.raises(ValidationError, match="sum to 1"):
        SplitConfig(fractions={"train": 0.8, "val": 0.3})
    with pytest.raises(ValidationError):
        SplitConfig(fractions={"train": 0.9, "holdout": 0.1})
    with pytest.raises(ValueError, match="patch_size"):
        split_patches(_index({"S": (64, 64)}, 32, 32, 0.0, 0), SplitConfig())
