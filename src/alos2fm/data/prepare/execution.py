"""prepare's execution: run tasks here, in a process pool (``workers``) or on a Dask
cluster (``dask_scheduler``), yielding results as they finish."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

from alos2fm.data.prepare.config import PrepareConfig, progress_disabled
from alos2fm.data.prepare.tasks import SceneTask, TaskResult, run_scene_task


def run_tasks(cfg: PrepareConfig, tasks: Sequence[SceneTask]) -> list[TaskResult]:
    """Run the tasks here, in a process pool or on a Dask cluster, with a progress bar."""
    from tqdm.auto import tqdm

    bar = tqdm(total=len(tasks), desc="scene parts", unit="part", disable=progress_disabled(cfg))
    results: list[TaskResult] = []
    try:
        for result in execute(cfg, run_scene_task, tasks):
            results.append(result)
            bar.update()
    finally:
        bar.close()
    return sorted(results, key=lambda r: str(r.staging))


def execute(cfg: PrepareConfig, run: Callable[[Any], Any], tasks: Sequence[Any]) -> Iterable[Any]:
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
