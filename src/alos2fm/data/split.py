"""Spatial train/val/test split by blocks, with a buffer, so that splits never touch.

Neighbouring patches of one scene share speckle statistics and land-cover parcels, so a
random split per patch leaks. Here the plane is cut into square blocks; each block (not
each patch) goes to one split, drawn with a seed in the requested proportions; a patch
belongs to the block holding its centre. Patches near a block of another split would
still overlap or touch across the block edge, so every pair of patches from different
splits closer than ``buffer`` is resolved by marking one of them ``"buffer"``: the one
of lower priority (train < val < test), so the evaluation sets stay whole and the loss
falls on train. Afterwards no two patches of different splits overlap, and their gap
is at least ``buffer`` along x or y.

Frames: blocks and distances are measured within one frame.
- ``frame="scene"`` (default): each scene is its own frame, in pixels. Scenes are split
  independently, so two scenes that cover the same ground (e.g. repeat passes of one
  frame) can put it in different splits.
- ``frame="crs"``: patches of all scenes sharing a CRS are one frame, in CRS units
  (metres for UTM), using the patch bounds: overlapping scenes then share blocks and
  the buffer holds across them. Scenes in different CRSs (e.g. UTM zones) stay apart.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from typing import Literal

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, model_validator

from alos2fm.errors import DataError

SplitName = Literal["train", "val", "test"]
PRIORITY: tuple[SplitName, ...] = ("train", "val", "test")  # later = kept in a conflict
BUFFER = "buffer"  # label of patches dropped to keep the splits apart


class SplitConfig(BaseModel):
    """Block split settings; ``block_size`` and ``buffer`` are in pixels for ``frame="scene"``
    and in CRS units (metres for UTM) for ``frame="crs"``."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    fractions: dict[SplitName, float] = Field(
        default_factory=lambda: {"train": 0.8, "val": 0.1, "test": 0.1}
    )
    block_size: float = Field(default=4096, gt=0)
    buffer: float = Field(default=256, ge=0)
    frame: Literal["scene", "crs"] = "scene"

    @model_validator(mode="after")
    def _fractions_sum_to_one(self) -> SplitConfig:
        if any(f < 0 for f in self.fractions.values()):
            raise ValueError(f"split fractions must be >= 0, got {self.fractions}")
        if abs(sum(self.fractions.values()) - 1.0) > 1e-6:
            raise ValueError(f"split fractions must sum to 1, got {self.fractions}")
        return self


def split_patches(
    index: pd.DataFrame,
    config: SplitConfig | None = None,
    *,
    patch_size: int | None = None,
    seed: int = 0,
) -> pd.Series:
    """Split label ("train", "val", "test" or "buffer") of each row of a patch index.

    ``frame="scene"`` uses columns ``scene``, ``row``, ``col`` and needs ``patch_size``;
    ``frame="crs"`` uses ``crs``, ``minx``, ``miny``, ``maxx``, ``maxy``.
    """
    config = config or SplitConfig()
    if config.frame == "scene":
        if patch_size is None:
            raise ValueError("patch_size is needed to split in scene pixels")
        x0 = index["col"].to_numpy(dtype=np.float64)
        y0 = index["row"].to_numpy(dtype=np.float64)
        rects = np.column_stack([x0, y0, x0 + patch_size, y0 + patch_size])
        frames = index["scene"].astype(str).tolist()
    else:
        if index["crs"].isna().any():
            raise DataError(
                "some patches have no CRS, so they cannot be split in map coordinates",
                hint="use the scene frame for pixel-grid products",
            )
        rects = index[["minx", "miny", "maxx", "maxy"]].to_numpy(dtype=np.float64)
        frames = index["crs"].astype(str).tolist()
    labels = block_split(
        frames,
        rects,
        block_size=config.block_size,
        buffer=config.buffer,
        fractions=config.fractions,
        seed=seed,
    )
    return pd.Series(labels, index=index.index, name="split")


def block_split(
    frames: Sequence[Hashable],
    rects: np.ndarray,
    *,
    block_size: float,
    buffer: float,
    fractions: Mapping[str, float],
    seed: int = 0,
) -> np.ndarray:
    """Split labels (object array of str) for rectangles ``rects`` (N, 4) = x0, y0, x1, y1.

    Rectangles are half-open pixel or map boxes; ``frames[i]`` names the coordinate frame
    of rectangle i (only rectangles of one frame can conflict).
    """
    rects = np.asarray(rects, dtype=np.float64).reshape(-1, 4)
    n = len(rects)
    if n == 0:
        return np.array([], dtype=object)
    frame_ids = pd.factorize(pd.Series([str(f) for f in frames]), sort=True)[0]
    centres = (rects[:, :2] + rects[:, 2:]) / 2
    blocks = np.floor(centres / block_size).astype(np.int64)

    # One split per block: blocks in a canonical order, shuffled with the seed, then cut
    # in the requested proportions.
    keys = pd.DataFrame({"frame": frame_ids, "bx": blocks[:, 0], "by": blocks[:, 1]})
    unique = keys.drop_duplicates().sort_values(["frame", "bx", "by"]).reset_index(drop=True)
    order = np.random.default_rng(seed).permutation(len(unique))
    block_code = np.empty(len(unique), dtype=np.int64)
    block_code[order] = np.repeat(
        np.arange(len(PRIORITY)), _blocks_per_split(len(unique), fractions)
    )
    unique["code"] = block_code
    codes = keys.merge(unique, on=["frame", "bx", "by"], how="left")["code"].to_numpy()

    kept = _drop_conflicts(frame_ids, rects, codes, buffer)
    labels = np.array(PRIORITY, dtype=object)[codes]
    labels[~kept] = BUFFER
    return labels


def _blocks_per_split(n_blocks: int, fractions: Mapping[str, float]) -> list[int]:
    """Block counts per split in ``PRIORITY`` order, by largest remainder.

    Every split with a positive fraction gets at least one block when there are enough
    blocks (taken from the split with most), so val and test are never silently empty.
    """
    wanted = np.array([fractions.get(name, 0.0) for name in PRIORITY]) * n_blocks
    counts = np.floor(wanted).astype(int)
    remainder_order = np.argsort(-(wanted - counts), kind="stable")
    counts[remainder_order[: n_blocks - counts.sum()]] += 1
    for i in reversed(range(len(PRIORITY))):  # test first, then val
        if wanted[i] > 0 and counts[i] == 0 and counts.max() > 1:
            counts[np.argmax(counts)] -= 1
            counts[i] += 1
    return counts.tolist()


def _drop_conflicts(
    frame_ids: np.ndarray, rects: np.ndarray, codes: np.ndarray, buffer: float
) -> np.ndarray:
    """Keep-mask after removing, from each too-close pair of different splits, the lower one.

    Two rectangles conflict when their gap is below ``buffer`` along both axes (with
    ``buffer=0``: when they share area; touching edges is fine). Conflicts are resolved
    from the highest split down (test beats val and train, then val beats train), so a
    patch is never dropped for a neighbour that is dropped.
    """
    from scipy.spatial import cKDTree

    kept = np.ones(len(rects), dtype=bool)
    sizes = rects[:, 2:] - rects[:, :2]
    centres = (rects[:, :2] + rects[:, 2:]) / 2
    for frame in np.unique(frame_ids):
        members = np.flatnonzero(frame_ids == frame)
        if len(np.unique(codes[members])) < 2:
            continue
        # Candidates: centres within (largest size + buffer) in Chebyshev distance.
        reach = sizes[members].max() + buffer
        pairs = cKDTree(centres[members]).query_pairs(reach, p=np.inf, output_type="ndarray")
        a, b = members[pairs[:, 0]], members[pairs[:, 1]]
        gap_x = np.maximum(rects[b, 0] - rects[a, 2], rects[a, 0] - rects[b, 2])
        gap_y = np.maximum(rects[b, 1] - rects[a, 3], rects[a, 1] - rects[b, 3])
        clash = (codes[a] != codes[b]) & (gap_x < buffer) & (gap_y < buffer)
        a, b = a[clash], b[clash]
        high = np.where(codes[a] > codes[b], a, b)
        low = np.where(codes[a] > codes[b], b, a)
        for level in range(len(PRIORITY) - 1, 0, -1):
            resolve = (codes[high] == level) & kept[high] & kept[low]
            kept[low[resolve]] = False
    return kept
