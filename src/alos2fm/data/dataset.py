"""``PatchDataset``: the training-side reader of a prepared patch store.

Each item is a dict::

    image  float32 tensor (C, H, W), backscatter in dB; no-data pixels filled with the
           band's mean dB from stats.json, so tensors never hold NaN
    valid  bool tensor (H, W), True where every selected band had data
    label  int64 tensor (H, W), class index, 255 = ignore (only when labels are used)
    index  int, the patch's row in index.parquet (and position in the arrays)

Normalisation is left to the model side (``(dB - mean) / std`` from ``stats``), so the
dataset hands out physical values. The arrays are opened lazily, once per process, which
makes the dataset safe in ``DataLoader`` worker processes (fork or spawn). A patch of a
sharded store is one byte-range read; ``in_memory=True`` reads the split's patches once
(float16, as stored) for stores that fit in RAM: worker processes started by fork share
that copy.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch.utils.data import Dataset

from alos2fm.data.budget import BudgetSelection, LabelBudget, budget_masks
from alos2fm.data.store import (
    IGNORE_INDEX,
    LABELS,
    PatchArrays,
    open_patch_arrays,
    read_index,
    read_stats,
)
from alos2fm.errors import DataError

Split = Literal["train", "val", "test"]


class PatchDataset(Dataset):
    """Patches of one split (or all with ``split=None``) of a store written by prepare.

    ``bands`` picks bands by name (default all, in store order). ``with_labels``: None
    uses labels when the store has them, True requires them, False ignores them.
    ``label_fraction`` keeps a seeded random subset of that share of the split's patches
    (at least one), for few-label experiments. Subsets are nested: with the same ``seed``,
    the patches kept at 1 % are among those kept at 5 %, and so on (a prefix of one seeded
    permutation), so label-efficiency curves compare like with like. ``label_budget``
    instead keeps a seeded subset of the split's labels (``alos2fm.data.budget``: a
    fraction of the labelled pixels or k parcels per class, drawn with ``budget_seed``):
    only patches holding a kept label remain, and their other labels read as 255.
    ``budget`` then holds the selection (its ``summary`` per class). ``in_memory`` holds
    the selected patches in RAM (see the module docstring).
    """

    def __init__(
        self,
        root: str | Path,
        split: Split | None = "train",
        bands: Sequence[str] | None = None,
        with_labels: bool | None = None,
        label_fraction: float | None = None,
        seed: int = 0,
        in_memory: bool = False,
        label_budget: LabelBudget | None = None,
        budget_seed: int = 0,
        min_parcel_pixels: int = 200,
    ):
        self.root = Path(root)
        self.stats: dict[str, Any] = read_stats(self.root)
        index = read_index(self.root)
        positions = np.arange(len(index))
        if split is not None:
            positions = positions[index["split"].to_numpy() == split]
        if label_fraction is not None:
            if not 0.0 < label_fraction <= 1.0:
                raise ValueError(f"label_fraction must be in (0, 1], got {label_fraction}")
            keep = max(1, round(label_fraction * len(positions))) if len(positions) else 0
            order = np.random.default_rng(seed).permutation(len(positions))
            positions = positions[np.sort(order[:keep])]
        self.budget = self._draw_budget(
            label_budget, split, label_fraction, with_labels, budget_seed, min_parcel_pixels
        )
        if self.budget is not None:
            positions = positions[np.isin(positions, list(self.budget.masks))]
        self.positions = positions
        self.index = index.iloc[positions].reset_index(drop=True)

        store_bands = list(self.stats["bands"])
        names = list(bands) if bands is not None else store_bands
        unknown = [b for b in names if b not in store_bands]
        if unknown:
            raise DataError(f"bands {unknown} not in this dataset (has {store_bands})", self.root)
        self.bands = tuple(names)
        self._band_idx = np.array([store_bands.index(b) for b in names])
        self._fill_db = np.array(self.stats["mean_db"], dtype=np.float32)[self._band_idx]

        has_labels = (self.root / LABELS).exists()
        if with_labels and not has_labels:
            raise DataError("labels requested but this dataset has none", self.root)
        self.with_labels = has_labels if with_labels is None else with_labels
        self._arrays: PatchArrays | None = None
        self._cache: PatchArrays | None = self._load_all() if in_memory else None

    def __len__(self) -> int:
        return len(self.positions)

    def __getitem__(self, i: int) -> dict[str, Any]:
        position = int(self.positions[i])
        arrays, at = (self._cache, i) if self._cache is not None else (self._open(), position)
        image = np.asarray(arrays.images[at], dtype=np.float32)[self._band_idx]
        missing = np.isnan(image)
        valid = ~missing.any(axis=0)
        image = np.where(missing, self._fill_db[:, None, None], image)
        item: dict[str, Any] = {
            "image": torch.from_numpy(image),
            "valid": torch.from_numpy(valid),
            "index": position,
        }
        if self.with_labels:
            label = np.asarray(arrays.labels[at], dtype=np.int64)
            label[~valid] = IGNORE_INDEX  # a band subset may have fewer valid pixels
            if self.budget is not None:
                label[~self.budget.masks[position]] = IGNORE_INDEX
            item["label"] = torch.from_numpy(label)
        return item

    def _draw_budget(
        self,
        budget: LabelBudget | None,
        split: Split | None,
        label_fraction: float | None,
        with_labels: bool | None,
        seed: int,
        min_parcel_pixels: int,
    ) -> BudgetSelection | None:
        """The labels ``budget`` keeps, or None when it keeps them all (or there is none)."""
        if budget is None:
            return None
        if label_fraction is not None:
            raise ValueError(
                "give label_fraction (a share of patches) or label_budget (a share of "
                "labels), not both"
            )
        if split is None or with_labels is False:
            raise ValueError("a label budget needs one split and its labels")
        if budget.is_everything:
            return None
        return budget_masks(self.root, budget, seed, min_parcel_pixels, split=split)

    def _load_all(self) -> PatchArrays:
        """The selected patches, in dataset order, as in-memory arrays."""
        arrays = open_patch_arrays(self.root)
        read = [arrays.images] + ([arrays.labels] if self.with_labels else [])
        stacked = [np.stack([a[int(p)] for p in self.positions] or [a[0][:0]]) for a in read]
        return PatchArrays(images=stacked[0], labels=stacked[1] if self.with_labels else None)

    def _open(self) -> PatchArrays:
        if self._arrays is None:
            self._arrays = open_patch_arrays(self.root)
        return self._arrays

    def __getstate__(self) -> dict[str, Any]:
        # Zarr handles are not shared across processes: each worker reopens its own.
        state = self.__dict__.copy()
        state["_arrays"] = None
        return state
