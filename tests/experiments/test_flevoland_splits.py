"""The Flevoland study's split rule and label-fraction sampling (experiments/flevoland/splits.py).

Split properties are checked on the real ground truth for the study's three seeds, with
independent computations (a chessboard distance transform for the buffer, the raw
ground truth for the labels), and on small synthetic layouts.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
from scipy.ndimage import distance_transform_cdt

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "experiments" / "flevoland"))

from splits import (  # noqa: E402
    IGNORE,
    SPLITS,
    SplitError,
    SplitRule,
    block_ids,
    make_split,
)

RULE = SplitRule()


@pytest.fixture(scope="module")
def gt(flevoland_dir: Path) -> np.ndarray:
    return np.load(flevoland_dir / "Flevoland_gt_uint8_750x1024.npy")


@pytest.fixture(scope="module")
def splits(gt: np.ndarray) -> dict:
    return {seed: make_split(gt, seed, RULE) for seed in (0, 1, 2)}


def test_buildings_too_rare_to_score_the_rest_scored(splits):
    for split in splits.values():
        assert split.excluded == (15,)  # Buildings: 578 px < 1000
        assert split.scored == tuple(range(1, 15))


def test_every_scored_class_has_enough_pixels_in_every_split(splits):
    for split in splits.values():
        for name in SPLITS:
            counts = np.bincount(split.labels[name].ravel(), minlength=256)
            assert counts[:14].min() >= RULE.min_split_pixels, (split.seed, name)
            assert counts[14:IGNORE].sum() == 0  # no index beyond the scored classes


def test_blocks_are_whole_and_seeds_differ(gt, splits):
    blocks = block_ids(gt.shape, RULE.block_size)
    assert blocks.max() + 1 == 12 * 16  # 750 x 1024 in 64-px blocks
    for split in splits.values():
        per_block = np.zeros(blocks.max() + 1, dtype=np.int64) - 1
        per_block[blocks.ravel()] = split.block_split.ravel()
        assert np.array_equal(per_block[blocks], split.block_split)  # one split per block
    assert not np.array_equal(splits[0].block_split, splits[1].block_split)
    assert np.array_equal(make_split(gt, 1, RULE).block_split, splits[1].block_split)


def test_evaluation_labels_are_the_ground_truth_of_their_blocks(gt, splits):
    for split in splits.values():
        for code, name in ((1, "val"), (2, "test")):
            inside = (split.block_split == code) & (gt >= 1) & (gt <= 14)
            assert np.array_equal(split.labels[name][inside], gt[inside] - 1)
            assert (split.labels[name][~inside] == IGNORE).all()


def test_training_labels_keep_the_buffer_and_nothing_more(gt, splits):
    for split in splits.values():
        # Chessboard distance of each pixel to the nearest val/test block pixel.
        distance = distance_transform_cdt(split.block_split == 0, metric="chessboard")
        train_block = (split.block_split == 0) & (gt >= 1) & (gt <= 14)
        kept = split.labels["train"] != IGNORE
        assert np.array_equal(kept, train_block & (distance > RULE.buffer))
        assert np.array_equal(split.labels["train"][kept], gt[kept] - 1)


def test_layout_that_cannot_be_split_raises():
    gt = np.zeros((128, 128), dtype=np.uint8)
    gt[:64, :64] = 1  # class 1 lives in a single block: it cannot reach val and test
    gt[64:, :] = 2
    gt[:64, 64:] = 2
    with pytest.raises(SplitError, match="no block split"):
        make_split(gt, 0, SplitRule(min_class_pixels=100, min_split_pixels=10, max_attempts=5))


def test_class_in_three_blocks_reaches_every_split():
    gt = np.zeros((64, 192), dtype=np.uint8)
    gt[:, :] = 1
    gt[:32, :] = 2  # class 2 in the top half of each of the three 64-px blocks
    rule = SplitRule(buffer=0, fractions=(1 / 3, 1 / 3, 1 / 3), min_class_pixels=1)
    split = make_split(gt, 3, rule)
    assert sorted(np.unique(split.block_split)) == [0, 1, 2]
