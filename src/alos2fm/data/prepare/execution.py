"""prepare's execution: its scene tasks, with a progress bar, on the engine every
command shares (``alos2fm.parallel``)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

from alos2fm import parallel
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
    """``run(task)`` for each task as they finish, where ``cfg`` says: here, in its
    ``workers`` local processes or on its Dask cluster (``alos2fm.parallel``)."""
    return parallel.execute(run, tasks, cfg.workers, cfg.dask_scheduler)
