"""``alos2fm prepare``: products -> balanced, split, georeferenced patch dataset.

The run has three phases, one module each:

1. **Check** (``inputs.py``) every input before writing anything: each product opens, is
   valid backscatter, is covered by its labels; the labels fit their class table; the
   output folder is claimed (``alos2fm.outputs``: ours, or new, or ``--overwrite``; never
   an input; one writer at a time). A bad input stops the run here with one
   ``Alos2fmError`` that names the file.
2. **Cut** (``tasks.py``, run by ``execution.py``) each scene into patches, as
   independent tasks of at most ``patches_per_task`` windows (whole shards of 256 where
   they hold one), in this process, in a process pool (``workers``) or on a Dask cluster
   (``dask_scheduler``). A task streams its windows one batch at a time into its own
   folder of the staging area ``<out>/.staging``, as shard files of the final store's own
   format, so memory does not grow with scene size. A task whose folder holds a
   ``done.json`` with the same fingerprint (``alos2fm.identity``: every file a reader
   opens, the class table, the cutting settings) is skipped: re-running resumes.
3. **Assemble** (``assembly.py``, ``commit.py``) in this process: balance the candidates of
   all scenes by land-cover category, split them spatially, lay the kept patches out in
   the final store (a staged shard whose patches are all kept becomes a shard of the
   dataset unchanged, by a hard link; the others' kept patches are copied), sum the
   train statistics from the moments staged per patch, and write ``index.parquet``,
   ``stats.json``, the class distribution (CSV and PNG) and the resolved
   ``config.yaml``. Everything is built in ``<out>/.partial`` and moved to the root of
   ``<out>`` at the end, ``index.parquet`` last: a folder with an ``index.parquet`` holds
   a complete dataset.

If the run fails, what it created is removed (a dataset from an earlier run stays as it
was, and so does the staging it relies on); scenes cut by earlier, interrupted runs stay
staged. After a successful run the staged shard files whose patches are all in the
dataset are removed, so that the dataset's patches are on disk once; the staging area
keeps each task's candidates, its other shards and ``placed.json`` (which dataset holds
the rest), so that preparing again, with the same or other balancing or split settings,
reuses the cut scenes, reading moved patches back from the dataset it replaces (see
``commit.py``). Delete ``<out>/.staging`` to reclaim the rest of the space (the next run
then cuts the scenes again).

With Dask, ``<out>`` must be on a file system that the workers share.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from alos2fm.data import store
from alos2fm.data.prepare.assembly import CLASS_PIXELS, PrepareResult, assemble
from alos2fm.data.prepare.commit import (
    drop_unusable,
    keep_reusable,
    previous_dataset,
    release_staged,
)
from alos2fm.data.prepare.config import PrepareConfig, prepare_config
from alos2fm.data.prepare.execution import run_tasks
from alos2fm.data.prepare.inputs import check_inputs, split_map_table
from alos2fm.data.prepare.tasks import DONE, make_tasks, read_done
from alos2fm.identity import inputs_fingerprint
from alos2fm.outputs import claim_folder

__all__ = [
    "DONE",
    "STAGING",
    "PrepareConfig",
    "PrepareResult",
    "prepare_config",
    "run_prepare",
    "split_map_table",
]

STAGING = ".staging"
PARTIAL = ".partial"
# Everything a run writes at the root of the output folder.
OUTPUTS = {
    store.IMAGES,
    store.LABELS,
    store.INDEX,
    store.STATS,
    "class_distribution.csv",
    "class_distribution.png",
    CLASS_PIXELS,
    "config.yaml",
}

# How the run is executed, not what it makes: left out of the dataset's recorded identity.
_EXECUTION = {"out", "workers", "dask_scheduler", "progress", "overwrite", "gdal_cache_mb"}


def run_prepare(cfg: PrepareConfig) -> PrepareResult:
    """Prepare the dataset described by ``cfg`` at the root of ``cfg.out``."""
    scenes = check_inputs(cfg)
    inputs = [*cfg.products, *cfg.labels, *cfg.split_map]
    with claim_folder(
        cfg.out,
        "prepare",
        outputs=OUTPUTS | {STAGING, PARTIAL},
        inputs=inputs,
        overwrite=cfg.overwrite,
        rerun="replace",  # a dataset is rebuilt in place; its cut scenes are reused
        identity={
            "config": cfg.model_dump(mode="json", exclude=_EXECUTION),
            "inputs": inputs_fingerprint(inputs),
        },
    ) as folder:
        created: list[Path] = []
        try:
            staging_root = cfg.out / STAGING
            if not staging_root.exists():
                created.append(staging_root)
            tasks = make_tasks(cfg, scenes, staging_root)
            # The dataset now at the root holds the patches earlier runs moved out of
            # staging (its index's run id, recorded before this run claimed the folder).
            previous = previous_dataset(cfg.out, folder.manifest.outputs.get(store.INDEX))
            drop_unusable(tasks, previous)
            created += [t.staging for t in tasks if read_done(t.staging) is None]
            results = run_tasks(cfg, tasks)
            partial = cfg.out / PARTIAL
            shutil.rmtree(partial, ignore_errors=True)
            created.append(partial)
            result, layout = assemble(cfg, scenes, results, partial, previous)
            keep_reusable(results, layout, previous, folder.run_id)
            folder.commit(partial, last=store.INDEX, keep={STAGING})
        except BaseException as err:
            # A user error or crash must not leave a half-made dataset; an interruption
            # keeps the finished tasks staged so that running again resumes.
            interrupted = isinstance(err, KeyboardInterrupt)
            for path in created:
                if not interrupted or path.name == PARTIAL:
                    shutil.rmtree(path, ignore_errors=True)
            raise
        # Committed: the staged shards now in the dataset are removed from staging.
        release_staged(results, layout, folder.run_id)
        return result
