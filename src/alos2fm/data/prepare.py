"""``alos2fm prepare``: products -> balanced, split, georeferenced patch dataset.

The run has three phases:

1. **Check** every input before writing anything: each product opens, every scene is
   covered by the land-cover map(s) when given, the output folder is writable. A bad
   input stops the run here with one ``Alos2fmError`` that names the file.
2. **Cut** each scene into patches, as independent tasks of at most
   ``patches_per_task`` windows (a scene is one or more tasks), run in this process, in a
   process pool (``workers``) or on a Dask cluster (``dask_scheduler``). A task streams
   its windows one patch at a time (read dB, drop patches with too much no data, read
   the labels on the patch's grid, categorise) into its own folder of the staging area
   ``<out>/.staging``, so memory does not grow with scene size. A task whose folder holds
   a ``done.json`` with the same settings is skipped: re-running resumes.
3. **Assemble** in this process: balance the candidates of all scenes by land-cover
   category, split them spatially, copy the kept patches into the final store while
   accumulating the train statistics, and write ``index.parquet``, ``stats.json``, the
   class distribution (CSV and PNG) and the resolved ``config.yaml``. Everything is built
   in ``<out>/.partial`` and moved to the root of ``<out>`` at the end, ``index.parquet``
   last: a folder with an ``index.parquet`` holds a complete dataset.

If the run fails, what it created is removed (a dataset from an earlier run stays as it
was); scenes cut by earlier, interrupted runs stay staged. After a successful run the
staging area is kept, so that preparing again with other balancing or split settings
reuses the cut scenes; delete ``<out>/.staging`` to reclaim the space.

With Dask, ``<out>`` must be on a file system that the workers share.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import uuid
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import pandas as pd
import yaml
from pydantic import AliasChoices, BaseModel, ConfigDict, Field

from alos2fm.atomic import atomic_path
from alos2fm.data import store
from alos2fm.data.balance import UNLABELLED, BalanceConfig, patch_category
from alos2fm.data.classes import DEFAULT_CLASSES
from alos2fm.data.split import BUFFER, SplitConfig, split_patches
from alos2fm.errors import DataError, validation_problems
from alos2fm.products.base import RasterGrid, Window

if TYPE_CHECKING:
    from alos2fm.data.labels import LabelSource

STAGING = ".staging"
PARTIAL = ".partial"
# Marks a folder as an alos2fm dataset and lists what prepare wrote at its root: only
# those paths are ever replaced or removed, whatever else the folder holds.
MANIFEST = ".alos2fm-dataset.json"
DONE = "done.json"
CANDIDATES = "candidates.parquet"
_STAGING_FORMAT = 2  # bump when the staged files change meaning (2: flat files)
# Everything a run writes at the root of the output folder.
OUTPUTS = {
    store.IMAGES,
    store.LABELS,
    store.INDEX,
    store.STATS,
    "class_distribution.csv",
    "class_distribution.png",
    "config.yaml",
}


class PrepareConfig(BaseModel):
    """Everything ``run_prepare`` needs; written back, resolved, as ``<out>/config.yaml``."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    products: list[Path] = Field(min_length=1)
    out: Path
    # Label sources (see alos2fm.data.labels): class rasters, one pixel-grid image per
    # product (labels_grid="pixel"), or one polygon layer (label_field = its class
    # attribute). `landcover` and `remap` are the names of earlier releases.
    labels: list[Path] = Field(
        default_factory=list, validation_alias=AliasChoices("labels", "landcover")
    )
    classes: str = Field(DEFAULT_CLASSES, validation_alias=AliasChoices("classes", "remap"))
    labels_grid: Literal["map", "pixel"] = "map"
    label_field: str | None = None
    unknown_values: Literal["error", "ignore"] = "error"
    label_resampling: Literal["nearest", "mode"] = "nearest"
    patch_size: int = Field(256, gt=0)
    stride: int = Field(256, gt=0)
    max_nodata: float = Field(0.1, ge=0.0, le=1.0)
    # Pre-processing of every product, window by window (None / (1, 1) = as read).
    bands: list[str] | None = None
    multilook: tuple[int, int] = (1, 1)
    speckle: Literal["boxcar", "lee"] | None = None
    filter_size: int = Field(5, ge=3)
    balance: BalanceConfig = Field(default_factory=BalanceConfig)
    split: SplitConfig = Field(default_factory=SplitConfig)
    # A split decided by the user instead of the block split: rasters of split codes
    # (1 train, 2 val, 3 test, 0 none), on the same grid as the labels (`labels_grid`),
    # one per product for pixel-grid maps. Each window gives one patch per split whose
    # labelled pixels it holds, carrying only that split's labels.
    split_map: list[Path] = Field(default_factory=list)
    # Also cut a last row and column of windows moved back to end on the scene's edge
    # (as full-scene prediction tiles it), so that no labelled edge pixel is left out.
    cover_edges: bool = False
    seed: int = 0
    workers: int = Field(1, ge=1)
    dask_scheduler: str | None = None
    patches_per_task: int = Field(256, gt=0)
    batch_patches: int = Field(32, gt=0)
    gdal_cache_mb: int = Field(64, ge=8)
    progress: bool = True
    # Write into a non-empty folder that is not an alos2fm dataset (its files are kept).
    overwrite: bool = False


def prepare_config(
    config_file: str | Path | None = None,
    *,
    balance_preset: str | None = None,
    caps: Sequence[str] | None = None,
    exclude: Sequence[str] | None = None,
    block_size: float | None = None,
    buffer: float | None = None,
    split_fractions: str | None = None,
    **options: Any,
) -> PrepareConfig:
    """Defaults <- YAML ``config_file`` <- command-line values (None = not given).

    ``caps`` items are ``N`` or ``median`` (a cap for every class) or ``CLASS=N``;
    ``exclude`` items and ``CLASS`` are class ids or names of the remap's classes;
    ``split_fractions`` is ``"train,val,test"``; ``balance_preset`` replaces the file's
    ``balance`` section before caps and exclusions apply.
    """
    from pydantic import ValidationError

    from alos2fm.data.balance import load_balance_preset

    source = Path(config_file) if config_file is not None else None
    raw: dict[str, Any] = {}
    if source is not None:
        try:
            raw = yaml.safe_load(source.read_text()) or {}
        except (OSError, yaml.YAMLError) as err:
            raise DataError(f"cannot read config: {err}", source) from err
        if not isinstance(raw, dict):
            raise DataError("config must be a YAML mapping", source)
    raw.update({key: value for key, value in options.items() if value is not None})

    balance = dict(raw.get("balance") or {})
    if balance_preset is not None:
        balance = load_balance_preset(balance_preset).model_dump(mode="json")
    for item in caps or []:
        key, _, value = item.rpartition("=")
        limit = value if value == "median" else _integer(value, "--cap")
        if key:
            balance["caps"] = {**balance.get("caps", {}), _class_key(key): limit}
        else:
            balance["default_cap"] = limit
    if exclude:
        balance["exclude"] = [_class_key(key) for key in exclude]
    raw["balance"] = balance

    split = dict(raw.get("split") or {})
    if block_size is not None:
        split["block_size"] = block_size
    if buffer is not None:
        split["buffer"] = buffer
    if split_fractions is not None:
        parts = split_fractions.split(",")
        if len(parts) != 3:
            raise DataError(f"--split-fractions needs train,val,test, got {split_fractions!r}")
        split["fractions"] = dict(zip(("train", "val", "test"), parts, strict=True))
    raw["split"] = split

    try:
        return PrepareConfig.model_validate(raw)
    except ValidationError as err:
        problems = validation_problems(err, "config")
        raise DataError(f"invalid prepare settings: {problems}", source) from None


def _class_key(text: str) -> int | str:
    return int(text) if text.strip().isdigit() else text.strip()


def _integer(text: str, option: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise DataError(f"{option} expects a whole number or 'median', got {text!r}") from None


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


@dataclass(frozen=True)
class PrepareResult:
    out: Path
    patches: int
    splits: dict[str, int]
    candidates: int
    resumed_tasks: int


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

    done = _read_done(task.staging)
    if done is not None and done["fingerprint"] == task.fingerprint:
        return TaskResult(task.staging, task.scene, len(task.windows), done["kept"], True)
    if task.staging.exists():  # left by an interrupted run or older settings
        shutil.rmtree(task.staging)

    cfg = task.config
    rows: list[dict[str, Any]] = []
    with rasterio.Env(GDAL_CACHEMAX=cfg.gdal_cache_mb * 2**20):
        product = _open_scene(task.product, cfg)
        labels, splits = task.labels, task.splits
        for source in (labels, splits):
            if source is not None:
                source.attach(product, task.product)
        num_classes = labels.table.num_classes if labels is not None else 0
        staged = store.StagedPatches(task.staging, with_labels=labels is not None)
        bar = tqdm(
            total=len(task.windows),
            desc=task.scene,
            unit="patch",
            leave=False,
            disable=_no_bar(cfg),
        )
        for batch in _row_batches(task.windows, cfg.batch_patches):
            box = _bounding_window(batch)
            db = product.read_db(box)
            stored = db.astype(store.PATCH_DTYPE)  # validity and statistics of stored values
            finite = np.isfinite(db).all(axis=0)
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
                fraction = float(finite[inside].mean())
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


SPLIT_NAMES = ("train", "val", "test")


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


def _no_bar(cfg: PrepareConfig) -> bool | None:
    """tqdm's ``disable``: off when asked, else None = shown only on a terminal."""
    return True if not cfg.progress else None


def _read_done(staging: Path) -> dict[str, Any] | None:
    try:
        return json.loads((staging / DONE).read_text())
    except (OSError, ValueError):
        return None


def _write_json(path: Path, content: dict[str, Any]) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(content, indent=2) + "\n")


# --- the whole run --------------------------------------------------------------------------


def run_prepare(cfg: PrepareConfig) -> PrepareResult:
    """Prepare the dataset described by ``cfg`` at the root of ``cfg.out``."""
    out = cfg.out
    created_out = not out.exists()
    created: list[Path] = []
    try:
        scenes = _check_inputs(cfg)
        _check_writable(out)
        ours = _claim_output_folder(out, cfg.overwrite)
        if not (out / MANIFEST).exists():
            created.append(out / MANIFEST)
        _write_json(out / MANIFEST, {"written_by": "alos2fm prepare", "outputs": sorted(ours)})
        staging_root = out / STAGING
        if not staging_root.exists():
            created.append(staging_root)
        tasks = _make_tasks(cfg, scenes, staging_root)
        created += [t.staging for t in tasks if _read_done(t.staging) is None]
        results = _run_tasks(cfg, tasks)
        partial = out / PARTIAL
        shutil.rmtree(partial, ignore_errors=True)
        created.append(partial)
        result = _assemble(cfg, scenes, results, partial)
        _commit(partial, out, ours)
        return result
    except BaseException as err:
        # A user error or crash must not leave a half-made dataset; an interruption keeps
        # the finished tasks staged so that running again resumes.
        interrupted = isinstance(err, KeyboardInterrupt)
        for path in created:
            if not interrupted or path.name == PARTIAL:
                _remove(path)
        if created_out and out.exists() and not any(out.iterdir()):
            out.rmdir()
        raise


@dataclass(frozen=True)
class _Scene:
    product: Path
    name: str
    grid: RasterGrid
    bands: tuple[str, ...]
    quantity: str
    labels: LabelSource | None
    splits: LabelSource | None = None


def _open_scene(path: Path, cfg: PrepareConfig) -> Any:
    """The product as prepare cuts it: chosen bands, multilooked, speckle-filtered."""
    from alos2fm.products import open_product
    from alos2fm.products.processing import process

    return process(
        open_product(path, bands=cfg.bands),
        bands=cfg.bands,
        looks=cfg.multilook,
        speckle=cfg.speckle,
        filter_size=cfg.filter_size,
    )


def _check_inputs(cfg: PrepareConfig) -> list[_Scene]:
    """Open every product (and its labels and split map) before any output is written."""
    sources = _label_sources(cfg, cfg.labels, cfg.classes)
    split_maps = _label_sources(cfg, cfg.split_map, split_map_table())
    if cfg.split_map and not cfg.labels:
        raise DataError("a split map needs labels", cfg.split_map[0], hint="pass --labels")
    scenes: list[_Scene] = []
    for path, labels, splits in zip(cfg.products, sources, split_maps, strict=True):
        product = _open_scene(path, cfg)
        for source in (labels, splits):
            if source is not None:
                source.check_scene(product, path)
        name = _scene_name(Path(path))
        if any(s.name == name for s in scenes):
            raise DataError(f"product given twice (scene {name})", path)
        if scenes and product.bands != scenes[0].bands:
            raise DataError(
                f"bands {list(product.bands)} differ from {list(scenes[0].bands)} of "
                f"{scenes[0].product}",
                path,
                hint="prepare products with the same polarisations together",
            )
        if scenes and product.quantity != scenes[0].quantity:
            raise DataError(
                f"holds {product.quantity} while {scenes[0].product} holds {scenes[0].quantity}",
                path,
                hint="prepare products of one backscatter quantity together",
            )
        scenes.append(
            _Scene(
                Path(path),
                name,
                product.grid,
                tuple(product.bands),
                product.quantity,
                labels,
                splits,
            )
        )
        if hasattr(product, "close"):
            product.close()
    return scenes


def _label_sources(cfg: PrepareConfig, paths: list[Path], classes: Any) -> list[Any]:
    """The source of ``paths`` for each product: one shared source of rasters or polygons,
    or one pixel-grid image per product (in product order); None without ``paths``."""
    from alos2fm.data.labels import open_labels

    if not paths:
        return [None] * len(cfg.products)
    options = {"field": cfg.label_field, "unknown": cfg.unknown_values}
    if cfg.labels_grid == "pixel":
        if len(paths) != len(cfg.products):
            raise DataError(
                f"{len(paths)} pixel-grid image(s) for {len(cfg.products)} product(s)",
                paths[0],
                hint="give one image per product, in the same order",
            )
        return [open_labels(p, classes, grid="pixel", **options) for p in paths]
    shared = open_labels(paths, classes, **options)
    return [shared] * len(cfg.products)


def split_map_table() -> Any:
    """The class table of split maps: 1 train, 2 val, 3 test (ids 0-2), 0 in no split."""
    from alos2fm.data.classes import ClassTable, TrainingClass

    colours = ((0, 120, 0), (240, 160, 0), (200, 0, 0))
    return ClassTable(
        name="split_map",
        classes=[
            TrainingClass(name=name, color=colour, values=[code + 1])
            for code, (name, colour) in enumerate(zip(SPLIT_NAMES, colours, strict=True))
        ],
        ignore=[0],
    )


def _scene_name(path: Path) -> str:
    name = path.name
    for suffix in (".tif", ".tiff", ".TIF", ".TIFF"):
        name = name.removesuffix(suffix)
    return name


def _check_writable(out: Path) -> None:
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / f".write-test-{uuid.uuid4().hex}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as err:
        raise DataError(
            f"output folder is not writable ({err.strerror or err})",
            out,
            hint="choose another --out",
        ) from None


def _make_tasks(
    cfg: PrepareConfig, scenes: Sequence[_Scene], staging_root: Path
) -> list[SceneTask]:
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
        key = f"{scene.name}-{_digest(str(scene.product.resolve()))[:8]}"
        for part, chunk in enumerate(_task_windows(windows, cfg.patches_per_task)):
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


# Rows of windows that tasks keep together: products are commonly stored in tiles of
# 512 rows (or in strips), and a tile row cut by a task boundary is read and decompressed
# by both tasks (1.6x the reading of a 20000 px scene with 256-window tasks).
_TILE_ROWS = 512


def _task_windows(windows: Sequence[Window], size: int) -> list[tuple[Window, ...]]:
    """The windows in tasks of at most ``size``, each of whole patch rows (in groups that
    fill whole ``_TILE_ROWS`` where a task can hold them); a row longer than ``size`` is
    split into pieces of ``size``."""
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


def _fingerprint(cfg: PrepareConfig, scene: _Scene, windows: Sequence[Window]) -> str:
    """What a staged task depends on: every file read (the product's own files, not only
    the path given, and the label files), the class table's content and the cutting
    settings. A file replaced in place changes its size or modification time."""
    from alos2fm.data.classes import load_class_table

    files = product_files(scene.product)
    for source in (scene.labels, scene.splits):
        if source is not None:
            files += source.files
    content = {
        "format": _STAGING_FORMAT,
        "files": [(str(p.resolve()), p.stat().st_size, p.stat().st_mtime_ns) for p in files],
        "windows": [windows[0], windows[-1], len(windows)],
        "classes": load_class_table(cfg.classes).model_dump(mode="json") if cfg.labels else None,
        "settings": cfg.model_dump(
            mode="json",
            include={
                "labels_grid",
                "label_field",
                "unknown_values",
                "label_resampling",
                "cover_edges",
                "patch_size",
                "stride",
                "max_nodata",
                "bands",
                "multilook",
                "speckle",
                "filter_size",
            },
        ),
        "category_rule": cfg.balance.category_rule,
    }
    return _digest(json.dumps(content, sort_keys=True, default=str))


def product_files(path: Path) -> list[Path]:
    """The files a reader opens for ``path``: a product folder's files; for a file named
    like an ALOS-2 product, every file of that product beside it (VOL/LED/IMG/TRL, the
    other polarisations); else the file itself."""
    from alos2fm.products.naming import is_product_name, parse_product_name

    path = Path(path)
    if path.is_dir():
        return sorted(p for p in path.iterdir() if p.is_file() and not p.name.startswith("."))
    if path.suffix.lower() == ".bin":  # one band of a PolSARpro folder: the folder is read
        return product_files(path.parent)
    if not is_product_name(path):
        return [path]
    wanted = parse_product_name(path)
    same = []
    for p in path.parent.iterdir():
        if not (p.is_file() and is_product_name(p)):
            continue
        name = parse_product_name(p)
        same_product = (name.scene_id, name.product_id) == (wanted.scene_id, wanted.product_id)
        if same_product and name.file_kind != "BRS":  # quicklooks are not read
            same.append(p)
    return sorted(same)


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def _run_tasks(cfg: PrepareConfig, tasks: Sequence[SceneTask]) -> list[TaskResult]:
    """Run the tasks here, in a process pool or on a Dask cluster, with a progress bar."""
    from tqdm.auto import tqdm

    bar = tqdm(total=len(tasks), desc="scene parts", unit="part", disable=_no_bar(cfg))
    results: list[TaskResult] = []
    try:
        for result in _execute(cfg, run_scene_task, tasks):
            results.append(result)
            bar.update()
    finally:
        bar.close()
    return sorted(results, key=lambda r: str(r.staging))


def _execute(cfg: PrepareConfig, run: Callable[[Any], Any], tasks: Sequence[Any]) -> Iterable[Any]:
    """``run(task)`` for each task here, in the process pool or on Dask, as they finish."""
    if cfg.dask_scheduler:
        from distributed import Client, as_completed

        with Client(cfg.dask_scheduler) as client:
            futures = client.map(run, tasks, pure=False)
            for future in as_completed(futures):
                yield future.result()
    elif cfg.workers > 1 and len(tasks) > 1:
        import concurrent.futures as cf

        with cf.ProcessPoolExecutor(max_workers=min(cfg.workers, len(tasks))) as pool:
            futures = [pool.submit(run, t) for t in tasks]
            try:
                for future in cf.as_completed(futures):
                    yield future.result()
            except BaseException:
                for future in futures:
                    future.cancel()
                raise
    else:
        for task in tasks:
            yield run(task)


# --- phase 3: assemble ----------------------------------------------------------------------


def _assemble(
    cfg: PrepareConfig, scenes: Sequence[_Scene], results: Sequence[TaskResult], partial: Path
) -> PrepareResult:
    from alos2fm.data.balance import (
        balance_targets,
        class_distribution,
        plot_distribution,
        select_balanced,
    )

    candidates = _gather_candidates(results)
    for scene in scenes:
        if not (candidates["scene"] == scene.name).any():
            raise DataError(
                f"no patch has at most {cfg.max_nodata:.0%} no data: the scene is empty "
                f"(all no data?)",
                scene.product,
                hint="check the product, or raise --max-nodata",
            )

    with_labels = bool(cfg.labels)
    names, colors, num_classes = _class_table(cfg) if with_labels else ({}, {}, None)
    categories = candidates.set_index("patch_id")["category"]
    if with_labels:
        keep = select_balanced(categories, cfg.balance, class_names=names, seed=cfg.seed)
        targets = balance_targets(categories, cfg.balance, names)
    else:  # nothing to balance on: every patch is kept
        keep = pd.Series(True, index=categories.index)
        targets = None
    chosen = candidates[keep.to_numpy()].copy()
    if chosen.empty:
        raise DataError(
            "balancing kept no patch (every category excluded or capped at 0)",
            cfg.products[0],
            hint="check --exclude-class and --cap",
        )
    # Patches in the buffer between splits are left out of the dataset; a split map, when
    # given, has already said where each patch goes.
    if not cfg.split_map:
        chosen["split"] = split_patches(chosen, cfg.split, patch_size=cfg.patch_size, seed=cfg.seed)
    chosen = chosen[chosen["split"] != BUFFER].sort_values(["scene", "row", "col"])
    chosen = chosen.reset_index(drop=True)

    partial.mkdir(parents=True)
    distribution = class_distribution(categories, chosen["category"], names, targets)
    distribution.to_csv(partial / "class_distribution.csv", index=False)
    # The figure (~2 s of matplotlib whatever the dataset's size) is drawn in a thread
    # while the shards of the store are written.
    with ThreadPoolExecutor(max_workers=1) as figure:
        png = partial / "class_distribution.png"
        drawn = figure.submit(plot_distribution, distribution, png, colors)
        stats = _copy_patches(chosen, partial, scenes[0], cfg, num_classes)
        drawn.result()
    stats["class_names"] = [names[i] for i in range(num_classes)] if num_classes else None
    # Colours travel with the dataset so that maps and figures downstream use the remap's.
    stats["class_colours"] = [list(colors[i]) for i in range(num_classes)] if num_classes else None
    store.write_stats(partial, stats)
    (partial / "config.yaml").write_text(
        yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False)
    )
    index = chosen.drop(
        columns=["staged_at", "staging", "band_count", "band_sum", "band_sumsq", "class_counts"]
    )
    store.write_index(partial, index)
    splits = {s: int((index["split"] == s).sum()) for s in ("train", "val", "test")}
    return PrepareResult(
        out=cfg.out,
        patches=len(index),
        splits=splits,
        candidates=len(candidates),
        resumed_tasks=sum(r.resumed for r in results),
    )


def _gather_candidates(results: Sequence[TaskResult]) -> pd.DataFrame:
    tables = []
    for result in results:
        table = pd.read_parquet(result.staging / CANDIDATES)
        table["staging"] = str(result.staging)
        tables.append(table)
    return pd.concat(tables, ignore_index=True)


def _class_table(cfg: PrepareConfig) -> tuple[dict[int, str], dict[int, Any], int]:
    from alos2fm.data.classes import load_class_table

    table = load_class_table(cfg.classes)
    return table.names, table.colors, table.num_classes


def _copy_patches(
    chosen: pd.DataFrame,
    root: Path,
    scene: _Scene,
    cfg: PrepareConfig,
    num_classes: int | None,
) -> dict[str, Any]:
    """Write the chosen staged patches into the final arrays; return the train statistics.

    Each shard of the store is one task (in the pool or on Dask, like the cutting), so
    that no two writers ever share a file.

    Statistics are summed from the moments each task recorded, over the train split
    (the normalisation must not see val/test pixels), or over every patch if the train
    split is empty.
    """
    from tqdm.auto import tqdm

    bands = scene.bands
    store.create_patch_arrays(
        root,
        len(chosen),
        bands,
        cfg.patch_size,
        with_labels=num_classes is not None,
        quantity=scene.quantity,
    )
    sources = list(zip(chosen["staging"], chosen["staged_at"].astype(int), strict=True))
    shards = [
        _ShardTask(root, k, sources[start : start + store.SHARD_PATCHES])
        for k, start in enumerate(range(0, len(sources), store.SHARD_PATCHES))
    ]
    bar = tqdm(total=len(shards), desc="writing store", unit="shard", disable=_no_bar(cfg))
    for _ in _execute(cfg, _write_shard, shards):
        bar.update()
    bar.close()

    train_only = bool((chosen["split"] == "train").any())
    counted = chosen[chosen["split"] == "train"] if train_only else chosen
    stats = store.StatsAccumulator(bands, num_classes)
    for entry in counted.itertuples():
        stats.add_moments(
            entry.band_count,
            entry.band_sum,
            entry.band_sumsq,
            entry.class_counts if num_classes is not None else None,
        )
    result = stats.result()
    result["computed_on"] = "train" if train_only else "all"
    return result


@dataclass(frozen=True)
class _ShardTask:
    root: Path
    shard: int
    sources: list[tuple[str, int]]  # (task staging folder, position in its staged files)


def _write_shard(task: _ShardTask) -> None:
    store.write_shard_from_staging(task.root, task.shard, task.sources)


def _claim_output_folder(out: Path, overwrite: bool) -> set[str]:
    """The names at the root of ``out`` that an earlier run of prepare wrote (and so may be
    replaced); refuse a folder holding someone else's files unless ``overwrite``, and even
    then any of their paths that this run would write."""
    manifest = out / MANIFEST
    if manifest.exists():
        try:
            return set(json.loads(manifest.read_text())["outputs"])
        except (OSError, ValueError, KeyError, TypeError):
            raise DataError(
                "the dataset's manifest is unreadable",
                manifest,
                hint="delete it or choose another --out",
            ) from None
    if (out / store.INDEX).exists() and (out / "config.yaml").exists():
        return set(OUTPUTS)  # a dataset written before manifests existed
    present = {p.name for p in out.iterdir() if not p.name.startswith(".write-test-")}
    if not present - {STAGING}:  # new, empty, or only our staging (an interrupted run)
        return set()
    if not overwrite:
        raise DataError(
            "output folder is not empty and is not an alos2fm dataset",
            out,
            hint="choose a new or empty --out, or pass --overwrite to write the dataset "
            "beside the folder's files (none of them is removed)",
        )
    clashes = sorted(present & (OUTPUTS | {STAGING, PARTIAL, MANIFEST}))
    if clashes:
        raise DataError(
            f"the folder's own {', '.join(clashes)} would be replaced by the dataset",
            out,
            hint="move them away or choose another --out",
        )
    return set()


def _commit(partial: Path, out: Path, ours: set[str]) -> None:
    """Move the finished outputs from ``partial`` to ``out``; ``index.parquet`` last.

    The old index goes first, so that a crash in between never pairs an old index with
    new arrays: a folder with an index.parquet always holds a complete dataset. Only
    paths an earlier run wrote (``ours``) are replaced or removed; the manifest is updated
    before anything moves, so that it always lists every output present.
    """
    new = {item.name for item in partial.iterdir()}
    foreign = sorted(name for name in new - ours if (out / name).exists())
    if foreign:  # appeared during the run
        raise DataError(
            f"{', '.join(foreign)} appeared in the output folder during the run",
            out,
            hint="move them away and run again (the cut scenes are kept)",
        )
    if store.INDEX in ours:
        (out / store.INDEX).unlink(missing_ok=True)
    _write_json(out / MANIFEST, {"written_by": "alos2fm prepare", "outputs": sorted(ours | new)})
    for stale in ours - new:  # e.g. labels/ of an earlier labelled run
        _remove(out / stale)
    for item in sorted(partial.iterdir(), key=lambda p: p.name == store.INDEX):
        _remove(out / item.name)
        os.replace(item, out / item.name)
    _write_json(out / MANIFEST, {"written_by": "alos2fm prepare", "outputs": sorted(new)})
    partial.rmdir()


def _remove(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)
