"""prepare, phase 2: the scene tasks. Each task cuts some patch windows of one scene
into its own staging folder; a task whose ``done.json`` holds the same fingerprint is
skipped, so that running again resumes."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from alos2fm.atomic import atomic_path
from alos2fm.data import store
from alos2fm.data.balance import UNLABELLED, patch_category
from alos2fm.data.prepare.config import SPLIT_NAMES, PrepareConfig, progress_disabled
from alos2fm.data.prepare.inputs import Scene, open_scene
from alos2fm.errors import DataError
from alos2fm.identity import digest, files_fingerprint, reader_files
from alos2fm.products.base import Window

if TYPE_CHECKING:
    from alos2fm.data.labels import LabelSource

DONE = "done.json"
CANDIDATES = "candidates.parquet"
# Bump when the staged files change meaning (3: every file read; 4: staged as shards of
# the store's format, which a run may move into its dataset).
_STAGING_FORMAT = 4


@dataclass(frozen=True)
class SceneTask:
    """One unit of work: some patch windows of one scene, staged in ``staging``."""

    product: Path
    scene: str
    windows: tuple[Window, ...]
    staging: Path
    fingerprint: str
    config: PrepareConfig
    labels: LabelSource | None  # the scene's label source (picklable, no open files)
    splits: LabelSource | None = None  # the scene's split map, if the user gave one


@dataclass(frozen=True)
class TaskResult:
    staging: Path
    scene: str
    windows: int
    kept: int
    resumed: bool


# --- phase 2: one task ----------------------------------------------------------------------


def run_scene_task(task: SceneTask) -> TaskResult:
    """Cut one task's windows into staged patches; skip the work if already done.

    Runs in a pool or Dask worker as well as in the main process. Windows are processed
    in small batches of neighbours along a patch row (one read, one label reprojection
    and one array write per batch instead of per patch), so memory holds at most
    ``batch_patches`` patches plus GDAL's block cache (``gdal_cache_mb``), whatever the
    scene size.
    """
    import rasterio
    from tqdm.auto import tqdm

    from alos2fm.data.tiling import patch_georefs, patch_id
    from alos2fm.products.validation import calibrated_from_dn

    done = read_done(task.staging)
    if done is not None and done["fingerprint"] == task.fingerprint:
        return TaskResult(task.staging, task.scene, len(task.windows), done["kept"], True)
    if task.staging.exists():  # left by an interrupted run or older settings
        shutil.rmtree(task.staging)

    cfg = task.config
    rows: list[dict[str, Any]] = []
    with rasterio.Env(GDAL_CACHEMAX=cfg.gdal_cache_mb * 2**20):
        product = open_scene(task.product, cfg)
        labels, splits = task.labels, task.splits
        for source in (labels, splits):
            if source is not None:
                source.attach(product, task.product)
        num_classes = labels.table.num_classes if labels is not None else 0
        # A reader that calibrates 16-bit DN itself gives dB within ~100 dB of CF, far inside
        # float16's +-65504: the scan for values it would store as infinite (a pass over
        # every pixel, float16 having no fast test) is kept for the other readers only.
        check = not calibrated_from_dn(product)
        staged = store.StagedPatches(
            task.staging,
            product.bands,
            cfg.patch_size,
            with_labels=labels is not None,
            checked=True,  # by to_patch_dtype below
        )
        bar = tqdm(
            total=len(task.windows),
            desc=task.scene,
            unit="patch",
            leave=False,
            disable=progress_disabled(cfg),
        )
        for batch in _row_batches(task.windows, cfg.batch_patches):
            box = _bounding_window(batch)
            stored, finite = _read_stored(product, box, task.product, check)
            moments = store.BandMoments(stored)
            label_box = split_box = None
            if labels is not None:
                label_box = labels.read_on_grid(product.grid, box, cfg.label_resampling)
                label_box[~finite] = store.IGNORE_INDEX
            if splits is not None:
                split_box = splits.read_on_grid(product.grid, box, "nearest")
            images, patch_labels = [], []
            for window in batch:
                inside = (
                    slice(window.row - box.row, window.row - box.row + window.height),
                    slice(window.col - box.col, window.col - box.col + window.width),
                )
                valid = finite[inside]
                fraction = np.count_nonzero(valid) / valid.size  # mean() would sum floats
                if 1.0 - fraction > cfg.max_nodata:
                    continue
                image = stored[(slice(None), *inside)]
                count, total, total_sq = moments.of(*inside)
                entries = [(None, label_box[inside] if label_box is not None else None)]
                if split_box is not None:
                    entries = _split_entries(label_box[inside], split_box[inside])
                for split, label in entries:
                    row = {
                        "window": window,
                        "split": split,
                        "category": UNLABELLED,
                        "valid_fraction": fraction,
                        "band_count": count.tolist(),
                        "band_sum": total.tolist(),
                        "band_sumsq": total_sq.tolist(),
                        "class_counts": None,
                    }
                    if label is not None:
                        row["category"] = patch_category(label, cfg.balance.category_rule)
                        counts = store.class_pixel_counts(label, num_classes)
                        row["class_counts"] = counts.tolist()
                        patch_labels.append(label)
                    images.append(image)
                    rows.append(row)
            if images:
                staged.append(np.stack(images), np.stack(patch_labels) if patch_labels else None)
            bar.update(len(batch))
        bar.close()
        staged.close()
        for source in (labels, splits):
            if source is not None:
                source.close()

    windows = [row.pop("window") for row in rows]
    georefs = patch_georefs(product.grid, windows)
    table = pd.DataFrame(
        [
            {
                # A window cut once per split (split map) gets the split in its id.
                "patch_id": patch_id(task.scene, window)
                + (f"_{row['split']}" if row["split"] else ""),
                "scene": task.scene,
                "file": str(task.product),
                "date": product.date,
                "row": window.row,
                "col": window.col,
                "height": window.height,
                "width": window.width,
                **georef,
                **row,
                "staged_at": position,
            }
            for position, (window, georef, row) in enumerate(
                zip(windows, georefs, rows, strict=True)
            )
        ],
        columns=_CANDIDATE_COLUMNS,
    )
    table.to_parquet(task.staging / CANDIDATES)
    _write_json(task.staging / DONE, {"fingerprint": task.fingerprint, "kept": len(rows)})
    return TaskResult(task.staging, task.scene, len(task.windows), len(rows), False)


def _read_stored(
    product: Any, box: Window, where: Path, check: bool
) -> tuple[np.ndarray, np.ndarray]:
    """The values of ``box`` as stored (bands, h, w) and where all bands are finite (h, w).

    A reader that calibrates DN itself (``read_db_float16``) looks the stored values up
    per DN: no float32 array and no float32 -> float16 conversion per pixel, and its
    values are bounded (nothing to check). Others are read as float32 dB and converted,
    an overflow being refused where ``check``.
    """
    read_float16 = getattr(product, "read_db_float16", None)
    if read_float16 is not None and store.PATCH_DTYPE is np.float16:
        stored = read_float16(box)
        # Finite where the exponent bits are not all ones (infinity, NaN): an integer test
        # costs half of np.isfinite, which numpy emulates for float16 value by value.
        exponent = stored.view(np.uint16) & np.uint16(0x7C00)
        return stored, (exponent != 0x7C00).all(axis=0)
    db = product.read_db(box)
    stored = store.to_patch_dtype(db, where=where, check=check)
    return stored, np.isfinite(db).all(axis=0)


def _split_entries(label: np.ndarray, split_codes: np.ndarray) -> list[tuple[str, np.ndarray]]:
    """(split, labels of that split only) for each split holding labelled pixels of the
    window: a window across a split map's boundary gives one patch per split."""
    entries = []
    for code, name in enumerate(SPLIT_NAMES):
        only = np.where(split_codes == code, label, store.IGNORE_INDEX).astype(np.uint8)
        if (only != store.IGNORE_INDEX).any():
            entries.append((name, only))
    return entries


def _row_batches(windows: Sequence[Window], size: int) -> Iterable[list[Window]]:
    """Consecutive windows of one patch row, at most ``size`` per batch."""
    batch: list[Window] = []
    for window in windows:
        if batch and (len(batch) == size or window.row != batch[0].row):
            yield batch
            batch = []
        batch.append(window)
    if batch:
        yield batch


def _bounding_window(windows: Sequence[Window]) -> Window:
    row0 = min(w.row for w in windows)
    col0 = min(w.col for w in windows)
    row1 = max(w.row + w.height for w in windows)
    col1 = max(w.col + w.width for w in windows)
    return Window(row0, col0, row1 - row0, col1 - col0)


# The index columns (``split`` None unless a split map set it), the source file and patch size, the
# patch's statistics (band moments, class pixel counts: train statistics are summed from
# them) and where the patch sits in its task's staged arrays.
_CANDIDATE_COLUMNS = [
    *store.INDEX_COLUMNS,
    "file",
    "height",
    "width",
    "band_count",
    "band_sum",
    "band_sumsq",
    "class_counts",
    "staged_at",
]


def read_done(staging: Path) -> dict[str, Any] | None:
    try:
        return json.loads((staging / DONE).read_text())
    except (OSError, ValueError):
        return None


def _write_json(path: Path, content: dict[str, Any]) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(content, indent=2) + "\n")


def make_tasks(cfg: PrepareConfig, scenes: Sequence[Scene], staging_root: Path) -> list[SceneTask]:
    from alos2fm.data.tiling import grid_windows

    tasks = []
    for scene in scenes:
        windows = grid_windows(scene.grid, cfg.patch_size, cfg.stride, cfg.cover_edges)
        if not windows:
            raise DataError(
                f"scene of {scene.grid.height} x {scene.grid.width} px is smaller than one "
                f"{cfg.patch_size} px patch",
                scene.product,
                hint="use a smaller --patch-size",
            )
        key = f"{scene.name}-{digest(str(scene.product.resolve()))[:8]}"
        size = cfg.patches_per_task or default_task_size(len(windows))
        for part, chunk in enumerate(_task_windows(windows, size)):
            tasks.append(
                SceneTask(
                    product=scene.product,
                    scene=scene.name,
                    windows=chunk,
                    staging=staging_root / key / f"part-{part:04d}",
                    fingerprint=_fingerprint(cfg, scene, chunk),
                    config=cfg,
                    labels=scene.labels,
                    splits=scene.splits,
                )
            )
    return tasks


def default_task_size(windows: int) -> int:
    """Windows per task of a scene of ``windows``: whole shards (see ``_task_windows``),
    as many as four where the scene still gives six tasks or more.

    Each task decodes the product's tile rows it touches, and a tile row that a task
    boundary cuts is decoded by both tasks: at one shard a task, 1.55 times the scene's
    tiles (a 20000 px scene in 512-px tiles), at three 1.15 times, 0.35 s less wall time
    for that scene on two workers. Six tasks still keep a few workers busy on one scene;
    the size depends on nothing but the scene, so that a run resumed with other workers
    finds the same tasks.
    """
    return store.SHARD_PATCHES * min(4, max(1, windows // store.SHARD_PATCHES // 6))


# Rows of windows that small tasks keep together: products are commonly stored in tiles of
# 512 rows (or in strips), and a tile row cut by a task boundary is read and decompressed
# by both tasks (1.6x the reading of a 20000 px scene with 256-window tasks).
_TILE_ROWS = 512


def _task_windows(windows: Sequence[Window], size: int) -> list[tuple[Window, ...]]:
    """The windows in tasks of at most ``size``.

    A task that can hold a shard (``size >= SHARD_PATCHES``) takes whole shards of
    consecutive windows: its staged shards are then full (where no window is dropped) and
    can become shards of the dataset unchanged, which saves writing every patch a second
    time; that is worth more than the part of a tile row that two tasks both read where
    a boundary falls inside one (none where a row is a divisor of a shard, e.g. 32
    windows of 256 px in an 8192 px scene). Smaller tasks (tests, tiny scenes) take whole
    patch rows, in groups that fill whole ``_TILE_ROWS`` where a task can hold them; a
    row longer than ``size`` is split into pieces of ``size``."""
    if size >= store.SHARD_PATCHES:
        step = size - size % store.SHARD_PATCHES
        return [tuple(windows[i : i + step]) for i in range(0, len(windows), step)]
    rows: dict[int, list[Window]] = {}
    for window in windows:
        rows.setdefault(window.row, []).append(window)
    per_row = max(len(row) for row in rows.values())
    if per_row > size:
        return [tuple(windows[i : i + size]) for i in range(0, len(windows), size)]
    rows_per_task = size // per_row
    group = max(1, _TILE_ROWS // windows[0].height)
    if rows_per_task >= group:
        rows_per_task -= rows_per_task % group
    ordered = list(rows.values())
    return [
        tuple(w for row in ordered[i : i + rows_per_task] for w in row)
        for i in range(0, len(ordered), rows_per_task)
    ]


# Settings that do not change what a task stages: its files are fingerprinted on their
# own, balancing and splitting happen after staging, the rest is how the work is run.
# Every other setting, present or future, is part of the fingerprint.
_NOT_STAGED = {
    "products",
    "out",
    "labels",
    "split_map",
    "classes",
    "balance",
    "split",
    "seed",
    "workers",
    "dask_scheduler",
    "patches_per_task",
    "batch_patches",
    "gdal_cache_mb",
    "progress",
    "overwrite",
}


def _fingerprint(cfg: PrepareConfig, scene: Scene, windows: Sequence[Window]) -> str:
    """What a staged task depends on (``alos2fm.identity``): every file a reader opens
    for the product and its labels (sidecars, VRT sources, a GeoPackage's write-ahead
    log), the class table's content and every cutting setting."""
    from alos2fm.data.classes import load_class_table

    files = reader_files(scene.product)
    for source in (scene.labels, scene.splits):
        if source is not None:
            files += [f for path in source.files for f in reader_files(Path(path))]
    content = {
        "format": _STAGING_FORMAT,
        "files": files_fingerprint(files),
        "windows": [windows[0], windows[-1], len(windows)],
        "classes": load_class_table(cfg.class_table).model_dump(mode="json")
        if cfg.labels
        else None,
        "settings": cfg.model_dump(mode="json", exclude=_NOT_STAGED),
        "category_rule": cfg.balance.category_rule,
    }
    return digest(content)
