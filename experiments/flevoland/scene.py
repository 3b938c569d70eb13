"""The Flevoland scene as alos2fm patch stores: imagery through ``T3Product``, labels per split.

The scene (AIRSAR L-band, 750 x 1024, see the data folder's README) is read once through
the package's PolSARpro reader, σ0 in dB with NaN where an intensity is <= 0. Two kinds of
store are written with the package's store writer, so that ``alos2fm pretrain`` and
``alos2fm finetune`` (``run_pretrain`` / ``run_finetune``) read them like any prepared
dataset:

- the **pretraining store**: every ``patch``-px window on a ``stride`` grid of the whole
  scene, unlabelled, all in the ``train`` split. All of the scene's imagery is used,
  including the pixels of validation and test blocks (a transductive setting: mapping a
  scene with partial ground truth); no label is read.
- a **fine-tuning store** per (bands, split seed, label fraction): ``train`` patches on a
  ``stride`` grid that hold at least one kept training label, each carrying only training
  labels; ``val`` and ``test`` patches, one per block of that split, carrying only that
  block's labels, so every evaluated pixel is scored exactly once.

Normalisation statistics (per-band dB mean/std) come from the whole scene in both kinds,
so a pretrained encoder and its fine-tuning see the same standardisation; class counts and
median-frequency weights come from the training labels of the store.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from alos2fm.data import store
from alos2fm.data.tiling import patch_georefs, patch_id
from alos2fm.evaluation.predict import tile_origins
from alos2fm.products.base import RasterGrid, Window
from alos2fm.products.polsarpro import T3Product

SCENE = "flevoland_airsar_l"
GT_FILE = "Flevoland_gt_uint8_750x1024.npy"
# Ground-truth ids 1..15 (0 = unlabelled), in the order of the dataset's display script.
CLASS_NAMES = {
    1: "Water",
    2: "Forest",
    3: "Lucerne",
    4: "Grass",
    5: "Rapeseed",
    6: "Beet",
    7: "Potatoes",
    8: "Peas",
    9: "Stem beans",
    10: "Bare soil",
    11: "Wheat",
    12: "Wheat 2",
    13: "Wheat 3",
    14: "Barley",
    15: "Buildings",
}


def class_colours() -> dict[int, tuple[int, int, int]]:
    """A fixed RGB colour per ground-truth id (matplotlib's tab20), the same in every figure."""
    import matplotlib

    palette = matplotlib.colormaps["tab20"].colors
    return {i: tuple(round(255 * v) for v in palette[i - 1]) for i in CLASS_NAMES}


def open_scene(data_dir: Path, bands: Sequence[str]) -> T3Product:
    """The scene's T3 folder as a product giving σ0 dB for ``bands`` (e.g. ("HH",))."""
    return T3Product(data_dir / "T3", bands=tuple(bands))


def read_ground_truth(data_dir: Path) -> np.ndarray:
    """(750, 1024) uint8 ground-truth ids, 0 = unlabelled."""
    return np.load(data_dir / GT_FILE)


def read_scene_db(product: T3Product) -> np.ndarray:
    """The whole scene, float32 (bands, H, W) σ0 dB with NaN no data (the scene is small)."""
    return product.read_db(Window(0, 0, product.grid.height, product.grid.width))


def grid_patches(grid: RasterGrid, patch: int, stride: int) -> list[Window]:
    """``patch``-px windows every ``stride`` px, the last row and column moved back to end
    on the scene's edge (the same cover as full-scene prediction)."""
    rows = tile_origins(grid.height, patch, patch - stride)
    cols = tile_origins(grid.width, patch, patch - stride)
    return [Window(r, c, patch, patch) for r in rows for c in cols]


def block_patches(grid: RasterGrid, block_size: int, patch: int) -> list[tuple[Window, Window]]:
    """(patch window, block window) per block: a ``patch``-px window holding the block,
    moved back inside the scene where the block touches the edge."""
    out = []
    for row in range(0, grid.height, block_size):
        for col in range(0, grid.width, block_size):
            block = Window(
                row, col, min(block_size, grid.height - row), min(block_size, grid.width - col)
            )
            window = Window(
                min(row, grid.height - patch), min(col, grid.width - patch), patch, patch
            )
            out.append((window, block))
    return out


def scene_stats(image_db: np.ndarray, bands: Sequence[str]) -> dict:
    """Per-band dB mean/std over the whole scene's valid pixels (stats.json layout)."""
    stats = store.StatsAccumulator(bands)
    stats.add(image_db)
    return stats.result() | {"computed_on": "whole scene (transductive)"}


def _crop(array: np.ndarray, window: Window) -> np.ndarray:
    return array[
        ..., window.row : window.row + window.height, window.col : window.col + window.width
    ]


def _write_store(
    root: Path,
    grid: RasterGrid,
    image_db: np.ndarray,
    bands: Sequence[str],
    patches: list[tuple[Window, str, np.ndarray | None]],
    stats: dict,
) -> Path:
    """Write (window, split, labels or None) patches as a complete store under ``root``."""
    with_labels = patches[0][2] is not None
    size = patches[0][0].height
    arrays = store.create_patch_arrays(root, len(patches), bands, size, with_labels)
    for i, (window, _, label) in enumerate(patches):
        arrays.images[i] = _crop(image_db, window).astype(store.PATCH_DTYPE)
        if with_labels:
            arrays.labels[i] = label
    windows = [w for w, _, _ in patches]
    index = pd.DataFrame(
        [
            {
                "patch_id": patch_id(SCENE, w),
                "scene": SCENE,
                "date": None,  # the sample's acquisition date is not documented
                "row": w.row,
                "col": w.col,
                "split": split,
                "category": -1,
                "valid_fraction": float(np.isfinite(_crop(image_db, w)).all(axis=0).mean()),
                **georef,
            }
            for (w, split, _), georef in zip(patches, patch_georefs(grid, windows), strict=True)
        ]
    )
    store.write_stats(root, stats)
    store.write_index(root, index)  # last: a folder with an index holds a complete store
    return root


def write_pretrain_store(
    root: Path, product: T3Product, image_db: np.ndarray, patch: int, stride: int
) -> Path:
    """Every window of the scene, unlabelled, as the ``train`` split."""
    patches = [(w, "train", None) for w in grid_patches(product.grid, patch, stride)]
    return _write_store(
        root, product.grid, image_db, product.bands, patches, scene_stats(image_db, product.bands)
    )


def write_finetune_store(
    root: Path,
    product: T3Product,
    image_db: np.ndarray,
    labels: dict[str, np.ndarray],
    class_ids: Sequence[int],
    patch: int,
    stride: int,
    block_size: int,
) -> Path:
    """Train patches with the given training labels; one val/test patch per block.

    ``labels``: split -> (H, W) uint8 compact class index (255 ignore), the training map
    already thinned to its label fraction; ``class_ids``: ground-truth id of each index.
    """
    grid = product.grid
    patches: list[tuple[Window, str, np.ndarray | None]] = []
    for window in grid_patches(grid, patch, stride):
        label = _crop(labels["train"], window)
        if (label != store.IGNORE_INDEX).any():
            patches.append((window, "train", label))
    for split in ("val", "test"):
        for window, block in block_patches(grid, block_size, patch):
            label = np.full((patch, patch), store.IGNORE_INDEX, dtype=np.uint8)
            top, left = block.row - window.row, block.col - window.col
            label[top : top + block.height, left : left + block.width] = _crop(labels[split], block)
            if (label != store.IGNORE_INDEX).any():
                patches.append((window, split, label))

    counts = np.bincount(labels["train"].ravel(), minlength=256)[: len(class_ids)]
    colours = class_colours()
    stats = scene_stats(image_db, product.bands) | {
        "num_classes": len(class_ids),
        "class_names": [CLASS_NAMES[c] for c in class_ids],
        "class_colours": [list(colours[c]) for c in class_ids],
        "class_pixel_counts": [int(c) for c in counts],
        "class_weights": [float(w) for w in store.median_frequency_weights(counts)],
        "class_weight_formula": "median frequency: w_c = median(f) / f_c",
    }
    return _write_store(root, grid, image_db, product.bands, patches, stats)
