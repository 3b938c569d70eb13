"""Spatial block splits of the Flevoland ground truth.

The scene's classes are spatially clustered (Water and Forest only in the right quarter,
Wheat only in the third, Wheat 2 and 3 only in the second), so stripes or a plain random
draw of blocks leave classes out of a split. Here the scene is cut into square blocks and
the blocks are dealt out by iterative stratification (Sechidis et al., 2011): the class
with the fewest labelled pixels not yet dealt goes first, each of its blocks (in a seeded
random order) to the split that still wants most of that class. The draw is checked and,
if a scored class misses its minimum in some split, redrawn with the next attempt seed.

Rules (``SplitRule``):
- a class with fewer than ``min_class_pixels`` labelled pixels in the whole scene is too
  rare to score (Buildings, 578 px): it is ignored everywhere, in training and scoring;
- every other class must keep at least ``min_split_pixels`` pixels in every split, the
  training split counted after the buffer;
- training labels closer than ``buffer`` pixels (Chebyshev distance) to a validation or
  test block are ignored, so no training label touches an evaluated parcel edge;
- blocks without labels go to training (they carry no labels and cost no buffer).

Labels here are ground-truth ids (0 = unlabelled, 1..K); a ``BlockSplit`` hands out per
split a uint8 map of compact class indices over the scored classes, 255 = ignore.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from scipy.ndimage import maximum_filter

SPLITS = ("train", "val", "test")
IGNORE = 255
UNLABELLED = 0


@dataclass(frozen=True)
class SplitRule:
    """How blocks are made, dealt and checked (sizes in pixels)."""

    block_size: int = 64
    buffer: int = 16
    fractions: tuple[float, float, float] = (0.6, 0.2, 0.2)  # train, val, test
    min_class_pixels: int = 1000
    min_split_pixels: int = 200
    max_attempts: int = 500


class SplitError(RuntimeError):
    """No draw met the rule: the layout cannot give every scored class to every split."""


@dataclass(frozen=True)
class BlockSplit:
    """One seeded split of a ground-truth map.

    ``block_split``: (H, W) int8 split code of each pixel's block (0 train, 1 val, 2 test).
    ``labels``: split name -> (H, W) uint8 compact class index (0..len(scored)-1), 255 ignore.
    ``scored``: ground-truth ids scored, in compact order; ``excluded``: ids too rare.
    """

    seed: int
    attempt: int
    rule: SplitRule
    block_split: np.ndarray
    labels: dict[str, np.ndarray] = field(repr=False)
    scored: tuple[int, ...]
    excluded: tuple[int, ...]

    def pixel_counts(self, names: dict[int, str]) -> pd.DataFrame:
        """Labelled pixels per ground-truth class (rows) and split (columns)."""
        rows = []
        for index, gt_id in enumerate(self.scored):
            counts = {s: int((self.labels[s] == index).sum()) for s in SPLITS}
            rows.append({"class": names[gt_id], "scored": True, **counts})
        for gt_id in self.excluded:
            rows.append({"class": names[gt_id], "scored": False, **dict.fromkeys(SPLITS, 0)})
        return pd.DataFrame(rows)


def block_ids(shape: tuple[int, int], block_size: int) -> np.ndarray:
    """(H, W) int index of each pixel's block, row-major over the block grid."""
    rows = np.arange(shape[0]) // block_size
    cols = np.arange(shape[1]) // block_size
    blocks_per_row = -(-shape[1] // block_size)
    return rows[:, None] * blocks_per_row + cols[None, :]


def deal_blocks(
    counts: np.ndarray, fractions: tuple[float, ...], rng: np.random.Generator
) -> np.ndarray:
    """Split code per block by iterative stratification.

    ``counts``: (blocks, classes) labelled pixels. Returns int8 codes (index into
    ``fractions``); blocks without labels get 0 (training).
    """
    n_blocks, n_classes = counts.shape
    wanted = np.outer(fractions, counts.sum(axis=0)).astype(np.float64)  # (splits, classes)
    codes = np.zeros(n_blocks, dtype=np.int8)
    open_blocks = counts.sum(axis=1) > 0
    while open_blocks.any():
        remaining = counts[open_blocks].sum(axis=0)
        # The rarest class still to deal, ties broken at random.
        candidates = np.flatnonzero(remaining == remaining[remaining > 0].min())
        cls = rng.choice(candidates)
        blocks = np.flatnonzero(open_blocks & (counts[:, cls] > 0))
        for block in rng.permutation(blocks):
            # The split that wants most of this class; then most pixels overall; then chance.
            keys = np.lexsort((rng.random(len(fractions)), -wanted.sum(axis=1), -wanted[:, cls]))
            split = keys[0]
            codes[block] = split
            wanted[split] -= counts[block]
            open_blocks[block] = False
    return codes


def make_split(gt: np.ndarray, seed: int, rule: SplitRule = SplitRule()) -> BlockSplit:
    """The seeded block split of ground truth ``gt`` ((H, W) uint8, 0 = unlabelled).

    Raises ``SplitError`` when no attempt within ``rule.max_attempts`` meets the rule.
    """
    n_classes = int(gt.max())
    totals = np.bincount(gt.ravel(), minlength=n_classes + 1)
    scored = tuple(c for c in range(1, n_classes + 1) if totals[c] >= rule.min_class_pixels)
    excluded = tuple(c for c in range(1, n_classes + 1) if 0 < totals[c] < rule.min_class_pixels)
    compact = np.full(256, IGNORE, dtype=np.uint8)
    compact[list(scored)] = np.arange(len(scored), dtype=np.uint8)
    classes = compact[gt]  # compact index, 255 for unlabelled and excluded

    blocks = block_ids(gt.shape, rule.block_size)
    labelled = classes != IGNORE
    counts = np.zeros((int(blocks.max()) + 1, len(scored)), dtype=np.int64)
    np.add.at(counts, (blocks[labelled], classes[labelled]), 1)

    for attempt in range(rule.max_attempts):
        rng = np.random.default_rng([seed, attempt])
        block_split = deal_blocks(counts, rule.fractions, rng)[blocks]
        labels = _split_labels(classes, block_split, rule.buffer)
        enough = all(
            np.bincount(labels[s].ravel(), minlength=256)[: len(scored)].min()
            >= rule.min_split_pixels
            for s in SPLITS
        )
        if enough:
            return BlockSplit(seed, attempt, rule, block_split, labels, scored, excluded)
    raise SplitError(
        f"no block split in {rule.max_attempts} attempts gives every class with >= "
        f"{rule.min_class_pixels} px at least {rule.min_split_pixels} px in every split; "
        "use smaller blocks, a smaller buffer or a higher min_class_pixels"
    )


def _split_labels(
    classes: np.ndarray, block_split: np.ndarray, buffer: int
) -> dict[str, np.ndarray]:
    labels = {}
    for code, name in enumerate(SPLITS):
        labels[name] = np.where(block_split == code, classes, IGNORE).astype(np.uint8)
    if buffer > 0:
        evaluated = (block_split != 0).astype(np.uint8)
        near = maximum_filter(evaluated, size=2 * buffer + 1, mode="constant") > 0
        labels["train"][near] = IGNORE
    return labels
