"""The Flevoland scene, and its datasets made with ``alos2fm prepare`` as a user makes them.

The scene (AIRSAR L-band, 750 x 1024, see the data folder's README) is the PolSARpro T3
folder, read by the package's T3 reader (σ0 in dB, NaN where an intensity is <= 0); its
ground truth is a label image on the scene's own pixel grid, named by the shipped
``flevoland`` class table. Both kinds of dataset go through ``run_prepare`` (the public
function behind ``alos2fm prepare``) with the T3 folder as the product:

- the **pretraining dataset**: every ``patch``-px window on a ``stride`` grid of the
  whole scene (edges covered), unlabelled, all in the ``train`` split. All of the scene's
  imagery is used, including the pixels of validation and test blocks (a transductive
  setting: mapping a scene with partial ground truth); no label is read.
- a **fine-tuning dataset** per (bands, split seed, label fraction): a pixel-grid label
  image with the training labels thinned to the fraction and all validation and test
  labels, and the seed's block split as a split map (``--split-map``): every window on
  a ``stride`` grid is stored once per split whose labels it holds, carrying only those.

The study's own inputs to prepare (label images, split maps, the class table without the
classes too rare to score) are written next to the datasets, so that each dataset can be
remade with the ``alos2fm prepare`` command recorded in its ``config.yaml``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import yaml

from alos2fm.atomic import atomic_path
from alos2fm.data.classes import ClassTable, load_class_table
from alos2fm.data.prepare import prepare_config, run_prepare
from alos2fm.products.polsarpro import _ELEMENTS as T3_ELEMENTS  # the T3 files of each band

GT_FILE = "Flevoland_gt_uint8_750x1024.npy"
# Where the scene comes from, for a user who does not have it (see the data folder's README).
SOURCE = (
    "the AIRSAR L-band Flevoland scene (NASA/JPL, an ESA PolSARpro sample data set) as a "
    "PolSARpro T3 folder with its 15-class ground truth; the copy used here is "
    "github.com/mqalkhatib/CV-ASDF2Net, Datasets/Flevoland/ (experiments/flevoland/README.md)"
)
CLASSES = load_class_table("flevoland")
# Ground-truth ids 1..15 (0 = unlabelled): the shipped table's classes, in its order.
CLASS_NAMES = {cls.values[0]: cls.name for cls in CLASSES.classes}
UNLABELLED = 0


def scene_files(data_dir: Path, bands: Sequence[str]) -> list[Path]:
    """Every file the study reads for ``bands``: the T3 elements (ENVI ``.bin`` + ``.hdr``)
    their intensities need, and the ground truth."""
    elements = sorted({element for band in bands for element in T3_ELEMENTS[band]})
    t3 = [data_dir / "T3" / f"{e}.bin{suffix}" for e in elements for suffix in ("", ".hdr")]
    return [*t3, data_dir / GT_FILE]


def missing_scene(data_dir: Path, bands: Sequence[str]) -> str | None:
    """Why the study cannot start on ``data_dir`` (the files it lacks, where they come
    from), or None when every file is there."""
    missing = [p for p in scene_files(data_dir, bands) if not p.is_file()]
    if not missing:
        return None
    names = ", ".join(str(p.relative_to(data_dir)) for p in missing)
    return (
        f"the Flevoland scene is not in {data_dir}: missing {names}. It is {SOURCE}. "
        "Put it there, or pass --data FOLDER (or set ALOS2FM_SHARED_DATA to the folder "
        "holding flevoland_airsar_lband_t3)."
    )


def read_ground_truth(data_dir: Path) -> np.ndarray:
    """(750, 1024) uint8 ground-truth ids, 0 = unlabelled."""
    return np.load(data_dir / GT_FILE)


def scored_table(scored: Sequence[int]) -> ClassTable:
    """The flevoland table with the classes not in ``scored`` moved to ``exclude``: their
    pixels are ignored in training and scoring, and class ids follow ``scored``."""
    kept = [cls for cls in CLASSES.classes if cls.values[0] in scored]
    left_out = [cls.values[0] for cls in CLASSES.classes if cls.values[0] not in scored]
    return CLASSES.model_copy(
        update={"name": "flevoland_scored", "classes": kept, "exclude": left_out}
    )


def _save(path: Path, array: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp, open(tmp, "wb") as handle:  # np.save would add ".npy"
        np.save(handle, array)
    return path


def _prepare(out: Path, data_dir: Path, bands: Sequence[str], **options) -> Path:
    cfg = prepare_config(
        products=[str(data_dir / "T3")],
        out=str(out),
        bands=list(bands),
        progress=False,
        **options,
    )
    run_prepare(cfg)
    return out


def prepare_pretraining(
    out: Path, data_dir: Path, bands: Sequence[str], patch: int, stride: int
) -> Path:
    """Every window of the scene, unlabelled, as the ``train`` split."""
    return _prepare(
        out,
        data_dir,
        bands,
        patch_size=patch,
        stride=stride,
        cover_edges=True,
        max_nodata=1.0,  # a few HV pixels are <= 0: keep every window, as predicted
        split_fractions="1,0,0",
    )


def label_image(
    shape: tuple[int, int], scored: Sequence[int], labels: dict[str, np.ndarray]
) -> np.ndarray:
    """Ground-truth ids (0 = unlabelled) of every split's labels in one image; ``labels``:
    split -> (H, W) compact class index (255 ignore), the training map already thinned."""
    ids = np.asarray(scored, dtype=np.uint8)
    image = np.full(shape, UNLABELLED, dtype=np.uint8)
    for compact in labels.values():
        labelled = compact != 255
        image[labelled] = ids[compact[labelled]]
    return image


def prepare_finetuning(
    out: Path,
    data_dir: Path,
    bands: Sequence[str],
    labels: dict[str, np.ndarray],
    block_split: np.ndarray,
    scored: Sequence[int],
    patch: int,
    stride: int,
) -> Path:
    """A fine-tuning dataset: the given labels of each split, the block split as the split
    map. ``block_split``: (H, W) split code per pixel (0 train, 1 val, 2 test)."""
    inputs = out.parent / f"{out.name}_inputs"
    gt = _save(inputs / "labels.npy", label_image(block_split.shape, scored, labels))
    split_map = _save(inputs / "split_map.npy", (block_split + 1).astype(np.uint8))
    table = inputs / "classes.yaml"
    with atomic_path(table) as tmp:
        tmp.write_text(
            yaml.safe_dump(scored_table(scored).model_dump(mode="json"), sort_keys=False)
        )
    return _prepare(
        out,
        data_dir,
        bands,
        labels=[str(gt)],
        labels_grid="pixel",
        classes=str(table),
        split_map=[str(split_map)],
        patch_size=patch,
        stride=stride,
        cover_edges=True,
        max_nodata=1.0,
    )
