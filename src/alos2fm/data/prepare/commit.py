"""prepare: how staged shards become the dataset's, each patch written once, and how the
staging area stays reusable without a second copy of the patches.

**Layout.** A task stages its kept candidates as shards of the store's own format
(``store.StagedPatches``). :func:`plan` walks the staged shards in cutting order (scene,
task, position in the task): a staged shard whose patches are all chosen becomes the next
shard of the dataset as it is (``store.link_shard``: a hard link, no byte rewritten); the
chosen patches of any other staged shard (a task's last, partial one, or one that
balancing or the split buffer thinned) queue up, and every ``SHARD_PATCHES`` queued
patches are copied into the next shard; the remainder makes the last one. A task's last,
partial staged shard, whole and in order, is taken as it is too where it comes last with
nothing queued: the dataset's last shard. Every shard but the last is therefore full, as
the format needs, and ``index.parquet`` follows the same
order (row i describes patch i), as do the statistics (summed from the chosen rows).

**After the commit** (:func:`release_staged`), a staged shard file all of whose patches
are in the dataset is removed (a moved shard keeps its one name, in the dataset): the
patches the dataset holds are on disk once. A task folder keeps ``candidates.parquet``,
``done.json``, the shards holding a patch the dataset left out, and ``placed.json``:
the runs whose dataset holds the task's other patches. A rerun with other balancing or
split settings reads those from the dataset at the root (by ``patch_id``) when its run is
listed there, and cuts the task again otherwise (:func:`drop_unusable`). Before it
commits, a run writes back into staging each missing staged shard that holds a patch its
own dataset leaves out (:func:`keep_reusable`), since the commit replaces the old dataset.
A failed run changes nothing of this: it only added links and files.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from alos2fm.atomic import atomic_path
from alos2fm.data import store
from alos2fm.data.prepare.tasks import CANDIDATES, SceneTask, TaskResult, read_done
from alos2fm.data.shards import ShardedArray

PLACED = "placed.json"
SHARD = store.SHARD_PATCHES
Source = tuple[str, int]  # (folder of a store: a task's staging or a dataset, position)


@dataclass
class Previous:
    """The dataset at the root of ``--out`` before this run (``run``: the run that wrote
    its index, None where there is no dataset of this layout), where earlier runs left
    the staged patches they moved."""

    root: Path
    run: str | None
    _positions: pd.Series | None = field(default=None, repr=False)

    def positions(self) -> pd.Series:
        """patch_id -> position in the dataset."""
        if self._positions is None:
            ids = store.read_index(self.root)["patch_id"] if self.run else pd.Series([])
            unique = ids.is_unique  # else no patch is looked up there (the task is re-cut)
            self._positions = pd.Series(np.arange(len(ids)), index=ids if unique else None)
            if not unique:
                self._positions = self._positions.iloc[:0]
        return self._positions


def previous_dataset(root: Path, index_run: str | None) -> Previous:
    sharded = ShardedArray.is_sharded(root / store.IMAGES)
    present = (root / store.INDEX).is_file() and sharded
    return Previous(root, index_run if present else None)


# --- before cutting -------------------------------------------------------------------------


def drop_unusable(tasks: Sequence[SceneTask], previous: Previous) -> None:
    """Remove each finished task whose staged patches are neither all in staging nor the
    missing ones in the dataset at the root: it is cut again."""
    for task in tasks:
        done = read_done(task.staging)
        if done is None or done["fingerprint"] != task.fingerprint:
            continue  # the task cuts itself again
        missing = _missing_shards(task.staging, int(done["kept"]))
        if missing and not _held_by(previous, task.staging, missing):
            shutil.rmtree(task.staging)


def _missing_shards(staging: Path, kept: int) -> list[int]:
    try:
        arrays = [
            ShardedArray.open(staging / name)
            for name in (store.IMAGES, store.LABELS)
            if (staging / name).exists()
        ]
    except (OSError, ValueError):
        return list(range(-(-kept // SHARD)))
    return [
        j for j in range(-(-kept // SHARD)) if not all(a.shard_path(j).exists() for a in arrays)
    ]


def _held_by(previous: Previous, staging: Path, missing: Sequence[int]) -> bool:
    runs = _read_json(staging / PLACED).get("runs", [])
    if previous.run is None or previous.run not in runs:
        return False
    staged = pd.read_parquet(staging / CANDIDATES, columns=["patch_id", "staged_at"])
    needed = staged.loc[(staged["staged_at"] // SHARD).isin(missing), "patch_id"]
    return bool(needed.isin(previous.positions().index).all())


# --- the dataset's layout -------------------------------------------------------------------


@dataclass(frozen=True)
class Layout:
    chosen: pd.DataFrame  # the dataset's patches in order, with their "source"
    moves: dict[int, Source]  # dataset shard -> (store folder, shard) taken as it is
    copies: dict[int, list[Source]]  # dataset shard -> its patches, copied


def plan(chosen: pd.DataFrame, previous: Previous, kept: Mapping[str, int]) -> Layout:
    """The dataset's order and where each of its shards comes from (see the module);
    ``kept``: the patches each task staged, by staging folder."""
    chosen = chosen.sort_values(["scene", "staging", "staged_at"], kind="stable")
    chosen = chosen.reset_index(drop=True)
    shard_of = (chosen["staged_at"] // SHARD).to_numpy()
    in_staging = _staged_shard_presence(chosen["staging"], shard_of)
    sources = [
        (staging, int(at)) if here else (str(previous.root), int(previous.positions()[pid]))
        for staging, at, here, pid in zip(
            chosen["staging"], chosen["staged_at"], in_staging, chosen["patch_id"], strict=True
        )
    ]
    order: list[int] = []
    moves: dict[int, Source] = {}
    copies: dict[int, list[Source]] = {}
    queue: list[int] = []
    groups = chosen.groupby([chosen["staging"], shard_of], sort=False).indices
    for n, rows in enumerate(groups.values()):
        rows = list(rows)
        # Only the dataset's last shard may be partial: a staged shard of fewer patches
        # (a task's last) is taken whole where it comes last and nothing is queued.
        last = n == len(groups) - 1 and not queue
        whole = _whole_shard([sources[r] for r in rows], kept if last else {})
        if whole is not None:
            moves[len(order) // SHARD] = whole
            order += rows
            continue
        queue += rows
        while len(queue) >= SHARD:
            copies[len(order) // SHARD] = [sources[r] for r in queue[:SHARD]]
            order += queue[:SHARD]
            queue = queue[SHARD:]
    if queue:
        copies[len(order) // SHARD] = [sources[r] for r in queue]
        order += queue
    chosen = chosen.iloc[order].reset_index(drop=True)
    chosen["source"] = [sources[r] for r in order]
    return Layout(chosen, moves, copies)


def _whole_shard(sources: list[Source], kept: Mapping[str, int]) -> Source | None:
    """(store folder, shard) if ``sources`` are one whole shard of one store, in order: a
    full one, or the last of a task's staging that holds ``kept[folder]`` patches."""
    folder, first = sources[0]
    size = _shard_size(kept[folder], first // SHARD) if folder in kept else SHARD
    if len(sources) != size or first % SHARD:
        return None
    if any(f != folder or at != first + n for n, (f, at) in enumerate(sources)):
        return None
    return folder, first // SHARD


def _staged_shard_presence(stagings: pd.Series, shards: np.ndarray) -> list[bool]:
    known: dict[tuple[str, int], bool] = {}
    for staging in stagings.unique():
        paths = [
            ShardedArray.open(Path(staging) / n)
            for n in (store.IMAGES, store.LABELS)
            if (Path(staging) / n).exists()
        ]
        for j in np.unique(shards[(stagings == staging).to_numpy()]):
            known[(staging, int(j))] = all(a.shard_path(int(j)).exists() for a in paths)
    return [known[(s, int(j))] for s, j in zip(stagings, shards, strict=True)]


# --- around the commit ----------------------------------------------------------------------


def keep_reusable(
    results: Sequence[TaskResult], layout: Layout, previous: Previous, run: str
) -> None:
    """Before the commit: write back to staging each missing staged shard that holds a
    patch this dataset leaves out (from the dataset the commit replaces), and list this
    run in ``placed.json`` beside the runs that hold the missing patches."""
    chosen = _chosen_per_shard(layout.chosen)
    for result in results:
        missing = _missing_shards(result.staging, result.kept)
        if not missing:
            continue
        staged = pd.read_parquet(result.staging / CANDIDATES, columns=["patch_id", "staged_at"])
        for j in missing:
            if chosen.get((str(result.staging), j), 0) == _shard_size(result.kept, j):
                continue  # all in the new dataset
            ids = staged["patch_id"].to_numpy()[j * SHARD : j * SHARD + SHARD]
            sources = [(str(previous.root), int(previous.positions()[i])) for i in ids]
            store.write_shard_from_staging(result.staging, j, sources)
        runs = [r for r in (previous.run, run) if r]
        _write_json(result.staging / PLACED, {"runs": runs})


def release_staged(results: Sequence[TaskResult], layout: Layout, run: str) -> None:
    """After the commit: remove the staged shard files whose every patch is now in the
    dataset (run ``run``), which ``placed.json`` then names."""
    chosen = _chosen_per_shard(layout.chosen)
    for result in results:
        _write_json(result.staging / PLACED, {"runs": [run]})
        paths = None
        for j in range(-(-result.kept // SHARD)):
            if chosen.get((str(result.staging), j), 0) != _shard_size(result.kept, j):
                continue
            paths = paths or [
                ShardedArray.open(result.staging / n)
                for n in (store.IMAGES, store.LABELS)
                if (result.staging / n).exists()
            ]
            for array in paths:
                array.shard_path(j).unlink(missing_ok=True)


def _chosen_per_shard(chosen: pd.DataFrame) -> dict[tuple[str, int], int]:
    counts = chosen.groupby([chosen["staging"], chosen["staged_at"] // SHARD]).size()
    return {(str(s), int(j)): int(n) for (s, j), n in counts.items()}


def _shard_size(kept: int, j: int) -> int:
    return min(SHARD, kept - j * SHARD)


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def _write_json(path: Path, content: dict) -> None:
    # Not forced to disk: a lost placed.json only makes a later run cut the task again.
    with atomic_path(path, durable=False) as tmp:
        tmp.write_text(json.dumps(content) + "\n")
