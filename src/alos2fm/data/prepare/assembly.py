"""prepare, phase 3: assemble the staged candidates of all scenes into the dataset:
balance by land-cover category, split spatially, lay the kept patches out in the final
store (staged shards taken whole where all their patches are kept, the rest copied: see
``commit.py``), sum the train statistics from the moments staged per patch, and write the
index, statistics, class distribution and resolved config into the partial folder."""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

from alos2fm.data import store
from alos2fm.data.prepare.commit import Layout, Previous, plan
from alos2fm.data.prepare.config import SPLIT_NAMES, PrepareConfig, progress_disabled
from alos2fm.data.prepare.execution import execute
from alos2fm.data.prepare.inputs import Scene
from alos2fm.data.prepare.tasks import CANDIDATES, TaskResult
from alos2fm.data.split import BUFFER, split_patches
from alos2fm.errors import DataError

CLASS_PIXELS = "class_pixels.csv"


@dataclass(frozen=True)
class PrepareResult:
    out: Path
    patches: int
    splits: dict[str, int]
    candidates: int
    resumed_tasks: int
    # Labelled pixels per class (rows, by name) and split (columns); None without labels.
    class_pixels: pd.DataFrame | None = None

    def empty_classes(self) -> list[tuple[str, str]]:
        """(class, split) pairs without a single pixel: a class the model cannot learn
        (train) or a score that cannot be measured (val, test)."""
        if self.class_pixels is None:
            return []
        table = self.class_pixels
        return [(c, s) for s in table.columns for c in table.index if table.at[c, s] == 0]


def assemble(
    cfg: PrepareConfig,
    scenes: Sequence[Scene],
    results: Sequence[TaskResult],
    partial: Path,
    previous: Previous,
) -> tuple[PrepareResult, Layout]:
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
    kept = {str(r.staging): r.kept for r in results}
    layout = plan(chosen[chosen["split"] != BUFFER], previous, kept)
    chosen = layout.chosen

    partial.mkdir(parents=True)
    distribution = class_distribution(categories, chosen["category"], names, targets)
    distribution.to_csv(partial / "class_distribution.csv", index=False)
    if with_labels:
        # The figure (~2 s of matplotlib whatever the dataset's size) is drawn in a thread
        # while the shards of the store are written.
        with ThreadPoolExecutor(max_workers=1) as figure:
            png = partial / "class_distribution.png"
            drawn = figure.submit(plot_distribution, distribution, png, colors)
            stats = _write_store(layout, partial, scenes[0], cfg, num_classes)
            drawn.result()
    else:  # every patch "unlabelled": one bar says nothing the CSV does not
        stats = _write_store(layout, partial, scenes[0], cfg, num_classes)
    stats["class_names"] = [names[i] for i in range(num_classes)] if num_classes else None
    # Colours travel with the dataset so that maps and figures downstream use the remap's.
    stats["class_colours"] = [list(colors[i]) for i in range(num_classes)] if num_classes else None
    store.write_stats(partial, stats)
    (partial / "config.yaml").write_text(
        yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False)
    )
    class_pixels = None
    if num_classes:
        class_pixels = class_pixel_table(chosen, [names[i] for i in range(num_classes)])
        class_pixels.to_csv(partial / CLASS_PIXELS, index_label="class")
    index = chosen.drop(
        columns=[
            "staged_at",
            "staging",
            "source",
            "band_count",
            "band_sum",
            "band_sumsq",
            "class_counts",
        ]
    )
    store.write_index(partial, index)
    splits = {s: int((index["split"] == s).sum()) for s in ("train", "val", "test")}
    result = PrepareResult(
        out=cfg.out,
        patches=len(index),
        splits=splits,
        candidates=len(candidates),
        resumed_tasks=sum(r.resumed for r in results),
        class_pixels=class_pixels,
    )
    return result, layout


def class_pixel_table(chosen: pd.DataFrame, names: Sequence[str]) -> pd.DataFrame:
    """Labelled pixels of each class in each split, summed from the patches' counts."""
    table = pd.DataFrame(0, index=list(names), columns=list(SPLIT_NAMES), dtype="int64")
    for split, patches in chosen.groupby("split"):
        if split in table.columns and len(patches):
            counts = np.sum(np.stack(patches["class_counts"].map(np.asarray).to_list()), axis=0)
            table[split] = counts[: len(names)]
    return table


def _gather_candidates(results: Sequence[TaskResult]) -> pd.DataFrame:
    tables = []
    for result in results:
        table = pd.read_parquet(result.staging / CANDIDATES)
        table["staging"] = str(result.staging)
        tables.append(table)
    return pd.concat(tables, ignore_index=True)


def _class_table(cfg: PrepareConfig) -> tuple[dict[int, str], dict[int, Any], int]:
    from alos2fm.data.classes import load_class_table

    table = load_class_table(cfg.class_table)
    return table.names, table.colors, table.num_classes


def _write_store(
    layout: Layout,
    root: Path,
    scene: Scene,
    cfg: PrepareConfig,
    num_classes: int | None,
) -> dict[str, Any]:
    """Make the final arrays from the staged shards; return the train statistics.

    A shard taken whole is linked here (no bytes move); each copied shard is one task (in
    the pool or on Dask, like the cutting), so that no two writers ever share a file.

    Statistics are summed from the moments each task recorded, over the train split
    (the normalisation must not see val/test pixels), or over every patch if the train
    split is empty: the patches are not read again.
    """
    from tqdm.auto import tqdm

    chosen = layout.chosen
    store.create_patch_arrays(
        root,
        len(chosen),
        scene.bands,
        cfg.patch_size,
        with_labels=num_classes is not None,
        quantity=scene.quantity,
    )
    for shard, (folder, source_shard) in layout.moves.items():
        store.link_shard(folder, source_shard, root, shard)
    copies = [_ShardTask(root, k, sources) for k, sources in layout.copies.items()]
    bar = tqdm(
        total=len(copies), desc="writing store", unit="shard", disable=progress_disabled(cfg)
    )
    for _ in execute(cfg, _write_shard, copies):
        bar.update()
    bar.close()

    train_only = bool((chosen["split"] == "train").any())
    counted = chosen[chosen["split"] == "train"] if train_only else chosen
    stats = store.StatsAccumulator(scene.bands, num_classes)
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
    sources: list[tuple[str, int]]  # (store folder: task staging or earlier dataset, position)


def _write_shard(task: _ShardTask) -> None:
    store.write_shard_from_staging(task.root, task.shard, task.sources)
