"""Running independent tasks: here, in a pool of local processes, or on a Dask cluster.

One engine for every command that splits its work into tasks (prepare's scene parts,
map's scenes): results come back as the tasks finish. A Dask cluster is reached by its
scheduler's address, started however the site starts one (``dask scheduler`` plus
``dask worker``, dask-jobqueue on SLURM, ``LocalCUDACluster`` for one worker per GPU).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any


def execute(
    run: Callable[[Any], Any],
    tasks: Sequence[Any],
    workers: int = 1,
    dask_scheduler: str | None = None,
) -> Iterable[Any]:
    """``run(task)`` for each task, yielded as they finish: on the Dask cluster at
    ``dask_scheduler``, in ``workers`` local processes, or here one after another."""
    if dask_scheduler:
        from distributed import Client, as_completed

        with Client(dask_scheduler) as client:
            futures = client.map(run, tasks, pure=False)
            for future in as_completed(futures):
                yield future.result()
    elif workers > 1 and len(tasks) > 1:
        import concurrent.futures as cf

        with cf.ProcessPoolExecutor(max_workers=min(workers, len(tasks))) as pool:
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
