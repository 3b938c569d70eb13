"""Label budgets: train on a scarce, seeded subset of a split's labels, not of its patches.

A budget is a fraction of the labelled pixels (``"1%"``, ``0.01``) or ``k`` parcels per
class (``"k3"``). It is drawn in scene coordinates: the split's patches of a scene are
pasted into one label mosaic (the bounding box of those patches, 255 = ignore), so a pixel
that overlapping patches share (stride < patch size) is counted, and drawn, once. Each
patch then gets the crop of its scene's keep mosaic as a keep-mask.

- fraction f: one seeded permutation of all labelled mosaic pixels (scenes in sorted
  order, row-major within a scene); the first ``max(1, round(f * N))`` are kept.
- k parcels: a parcel is a 4-connected region of one class with at least
  ``min_parcel_pixels`` pixels; per class one seeded order of its parcels, the first k
  kept. A class with no parcel that large keeps its largest one, with a warning: a class
  is never dropped silently.

Both are prefixes of one seeded order, so budgets are nested for one seed (the pixels of
1 % are among those of 5 %; k1 within k2), and label-efficiency curves compare like with
like. Each draw has its own random stream (``default_rng([seed, stream, class])``), so
the result depends on neither the order in which classes or scenes are processed nor on
which other draws were made.

Memory: labels are read one patch at a time; held are the scenes' uint8 mosaics, one
boolean keep mosaic per scene and the patches' keep-masks; for a fraction also a
permutation of 4 bytes and the positions (8 bytes) of each labelled pixel, for parcels
one scene's region numbers (4 bytes a pixel) at a time.
"""

from __future__ import annotations

import logging
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd

from alos2fm.data.classes import IGNORE_INDEX
from alos2fm.data.store import open_patch_arrays, read_index, read_stats
from alos2fm.errors import DataError

log = logging.getLogger(__name__)

# Keys of the random streams (the second entry of the seed sequence); never reuse one.
_FRACTION_STREAM = 1
_PARCEL_STREAM = 2

_HINT = "give a fraction of the labelled pixels ('1%', '0.5pct', 0.01) or parcels per class ('k1')"
SUMMARY_COLUMNS = ("class_index", "name", "parcels_kept", "pixels_kept", "pixels_available")


@dataclass(frozen=True)
class LabelBudget:
    """How many training labels to keep: a ``fraction`` of the labelled pixels, in (0, 1],
    or ``parcels`` per class (an int >= 1)."""

    kind: Literal["fraction", "parcels"]
    value: float

    def __post_init__(self) -> None:
        if self.kind == "parcels":
            if isinstance(self.value, bool) or int(self.value) != self.value or self.value < 1:
                raise ValueError(f"parcels per class must be an integer >= 1, got {self.value}")
            object.__setattr__(self, "value", int(self.value))
        elif self.kind == "fraction":
            if not (math.isfinite(self.value) and 0.0 < self.value <= 1.0):
                raise ValueError(f"a label fraction must be in (0, 1], got {self.value}")
        else:
            raise ValueError(f"a label budget is a fraction or parcels, not {self.kind!r}")

    @classmethod
    def parse(cls, text: str | float) -> LabelBudget:
        """``"k3"`` (3 parcels per class), ``"0.1%"`` or ``"0.1pct"`` (0.001), ``"0.25"``
        or ``0.25`` (a fraction); ``ValueError`` saying what is accepted otherwise."""
        spelled = str(text).strip().lower()
        if isinstance(text, (int, float)) and not isinstance(text, bool):
            kind, number = "fraction", float(text)
        elif match := re.fullmatch(r"k(\d+)", spelled):
            kind, number = "parcels", int(match.group(1))
        else:
            match = re.fullmatch(r"([0-9.e+-]+)\s*(%|pct)?", spelled)
            try:
                number = float(match.group(1)) if match else math.nan
            except ValueError:
                number = math.nan
            if math.isnan(number):
                raise ValueError(f"label budget {text!r} is not understood; {_HINT}")
            kind, number = "fraction", number / (100.0 if match.group(2) else 1.0)
        try:
            return cls(kind, number)
        except ValueError as err:
            raise ValueError(f"label budget {text!r}: {err}; {_HINT}") from None

    @property
    def tag(self) -> str:
        """A short name for folders and tables: ``k3``, ``0.1pct``, ``100pct``."""
        if self.kind == "parcels":
            return f"k{self.value}"
        # Rounded so that 0.05 * 100 = 5.000000000000001 reads 5; never in exponent form.
        percent = np.format_float_positional(round(self.value * 100.0, 10), trim="-")
        return f"{percent}pct"

    @property
    def is_everything(self) -> bool:
        """True for the fraction 1.0: every label is kept (no masking needed)."""
        return self.kind == "fraction" and self.value == 1.0


@dataclass(frozen=True)
class BudgetSelection:
    """The labels a budget keeps.

    ``masks``: patch position (row of index.parquet) -> bool (H, W) keep-mask; a patch
    with no kept labelled pixel is absent. ``summary``: one row per class, columns
    ``SUMMARY_COLUMNS``; pixels are unique scene pixels (not patch duplicates);
    ``parcels_kept`` is missing (<NA>) for a fraction budget.
    """

    masks: dict[int, np.ndarray]
    summary: pd.DataFrame


@dataclass
class _Scene:
    """One scene's label mosaic: the bounding box of the split's patches in it."""

    top: int
    left: int
    labels: np.ndarray  # (H, W) uint8, 255 = ignore
    positions: list[int]  # the patches, as positions in index.parquet


def budget_masks(
    root: Path | str,
    budget: LabelBudget,
    seed: int,
    min_parcel_pixels: int = 200,
    split: str = "train",
) -> BudgetSelection:
    """The keep-masks of ``budget`` over ``split`` of the patch store at ``root``, drawn
    with ``seed`` (see the module docstring for the rules)."""
    root = Path(root)
    index = read_index(root)
    labels = open_patch_arrays(root).labels
    if labels is None:
        raise DataError("a label budget needs labels; this dataset has none", root)
    patch = labels.shape[-1]
    scenes = _scene_mosaics(root, index, labels, split)
    names = _class_names(root, scenes)
    if budget.kind == "fraction":
        keep = _keep_fraction(scenes, float(budget.value), seed)
        parcels: list[int | None] = [None] * len(names)
    else:
        keep, parcels = _keep_parcels(scenes, int(budget.value), seed, min_parcel_pixels, names)

    masks: dict[int, np.ndarray] = {}
    kept = np.zeros(len(names), dtype=np.int64)
    available = np.zeros(len(names), dtype=np.int64)
    for name, scene in scenes.items():
        kept += _class_counts(scene.labels[keep[name]], len(names))
        available += _class_counts(scene.labels, len(names))
        for position in scene.positions:
            r = int(index["row"].iat[position]) - scene.top
            c = int(index["col"].iat[position]) - scene.left
            mask = keep[name][r : r + patch, c : c + patch]
            if mask.any():
                masks[position] = mask.copy()
    summary = pd.DataFrame(
        {
            "class_index": np.arange(len(names)),
            "name": names,
            "parcels_kept": pd.array(parcels, dtype="Int64"),
            "pixels_kept": kept,
            "pixels_available": available,
        }
    )
    return BudgetSelection(masks=masks, summary=summary)


# --- scene mosaics ------------------------------------------------------------------------


def _scene_mosaics(root: Path, index: pd.DataFrame, labels: Any, split: str) -> dict[str, _Scene]:
    """The split's labels pasted per scene, scenes in sorted order; read patch by patch."""
    patch = labels.shape[-1]
    positions = np.flatnonzero(index["split"].to_numpy() == split)
    if len(positions) == 0:
        raise DataError(f"the {split} split has no patches to draw a label budget from", root)
    rows = index["row"].to_numpy(dtype=np.int64)
    cols = index["col"].to_numpy(dtype=np.int64)
    scene_of = index["scene"].astype(str).to_numpy()

    scenes: dict[str, _Scene] = {}
    for name in sorted(set(scene_of[positions])):
        mine = positions[scene_of[positions] == name]
        top, left = int(rows[mine].min()), int(cols[mine].min())
        height = int(rows[mine].max()) - top + patch
        width = int(cols[mine].max()) - left + patch
        mosaic = np.full((height, width), IGNORE_INDEX, dtype=np.uint8)
        for position in mine:
            label = np.asarray(labels[int(position)], dtype=np.uint8)
            r, c = rows[position] - top, cols[position] - left
            window = mosaic[r : r + patch, c : c + patch]
            # Overlapping patches agree where both are labelled; an ignored pixel of one
            # must not erase the label the other gave it.
            labelled = label != IGNORE_INDEX
            window[labelled] = label[labelled]
        scenes[name] = _Scene(top, left, mosaic, [int(p) for p in mine])
    return scenes


def _class_names(root: Path, scenes: dict[str, _Scene]) -> list[str]:
    """Class names from stats.json (``class_names``/``num_classes``), extended to any class
    index the labels hold beyond them."""
    stats = read_stats(root)
    names = list(stats.get("class_names") or [])
    count = max(len(names), int(stats.get("num_classes") or 0))
    for scene in scenes.values():
        present = scene.labels[scene.labels != IGNORE_INDEX]
        if present.size:
            count = max(count, int(present.max()) + 1)
    return names + [f"class_{i}" for i in range(len(names), count)]


def _class_counts(values: np.ndarray, num_classes: int) -> np.ndarray:
    values = values[values != IGNORE_INDEX]
    return np.bincount(values, minlength=num_classes)[:num_classes]


# --- fraction of pixels -------------------------------------------------------------------


def _keep_fraction(scenes: dict[str, _Scene], fraction: float, seed: int) -> dict[str, np.ndarray]:
    """Keep mosaics with the first ``max(1, round(fraction * N))`` of one seeded permutation
    of the N labelled pixels (scenes in sorted order, row-major in each)."""
    labelled = {name: np.flatnonzero(s.labels != IGNORE_INDEX) for name, s in scenes.items()}
    total = sum(len(flat) for flat in labelled.values())
    keep = {name: np.zeros(s.labels.shape, dtype=bool) for name, s in scenes.items()}
    if total == 0:
        return keep
    # A uint32 permutation (half of int64's memory) where it fits: shuffling an arange of
    # either dtype draws the same random numbers, so the order is the same.
    order = np.arange(total, dtype=np.uint32 if total < 2**32 else np.int64)
    np.random.default_rng([seed, _FRACTION_STREAM]).shuffle(order)
    chosen = np.sort(order[: max(1, round(fraction * total))]).astype(np.int64)
    start = 0
    for name, flat in labelled.items():
        mine = chosen[(chosen >= start) & (chosen < start + len(flat))] - start
        keep[name].ravel()[flat[mine]] = True
        start += len(flat)
    return keep


# --- k parcels per class ------------------------------------------------------------------


def _keep_parcels(
    scenes: dict[str, _Scene], k: int, seed: int, min_pixels: int, names: list[str]
) -> tuple[dict[str, np.ndarray], list[int | None]]:
    """Keep mosaics with k seeded parcels per class, and the parcels kept per class."""
    from scipy import ndimage  # only parcel budgets need it

    keep = {name: np.zeros(s.labels.shape, dtype=bool) for name, s in scenes.items()}
    kept: list[int | None] = []
    for c, class_name in enumerate(names):
        # Parcels in a fixed order: scenes sorted, then scipy's raster-scan numbering.
        parcels: list[tuple[str, int, int]] = []  # (scene, region id, pixels)
        for name, scene in scenes.items():
            regions, count = ndimage.label(scene.labels == c)  # 4-connected by default
            sizes = np.bincount(regions.ravel(), minlength=count + 1)
            parcels += [(name, i, int(sizes[i])) for i in range(1, count + 1)]
        eligible = [p for p in parcels if p[2] >= min_pixels]
        if eligible:
            order = np.random.default_rng([seed, _PARCEL_STREAM, c]).permutation(len(eligible))
            chosen = [eligible[i] for i in order[:k]]
        elif parcels:
            largest = max(parcels, key=lambda p: p[2])  # the first of equals: fixed order
            log.warning(
                "class %d (%s) has no parcel of %d px or more; keeping its largest, of %d px",
                c,
                class_name,
                min_pixels,
                largest[2],
            )
            chosen = [largest]
        else:
            chosen = []  # the class is absent from the split: nothing to keep
        # Labelled again (the same numbering) rather than held: one scene's regions at a time.
        for name in sorted({scene for scene, _, _ in chosen}):
            regions, _ = ndimage.label(scenes[name].labels == c)
            keep[name] |= np.isin(regions, [i for scene, i, _ in chosen if scene == name])
        kept.append(len(chosen))
    return keep, kept
