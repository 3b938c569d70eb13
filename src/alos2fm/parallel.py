"""Running independent tasks: here, in a pool of local processes, or on a Dask cluster.

One engine for every command that splits its work into tasks (prepare's scene parts,
map's scenes): results come back as the tasks finish. A Dask cluster is reached by its
scheduler's address, started however the site starts one (``dask scheduler`` plus
``dask worker``, dask-jobqueue on SLURM, ``LocalCUDACluster`` for one worker per GPU).
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any

# How often a pool worker checks that the process that started it is still there.
PARENT_POLL_S = 0.5


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

        pool = cf.ProcessPoolExecutor(
            max_workers=min(workers, len(tasks)), initializer=stop_when_orphaned
        )
        with pool:
            futures = [pool.submit(_run_in_worker, run, t) for t in tasks]
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


# Set while a pool worker runs a task, so that an orphaned worker knows whether a task has
# to be stopped first.
_task_running = threading.Event()


def _run_in_worker(run: Callable[[Any], Any], task: Any) -> Any:
    _task_running.set()
    try:
        return run(task)
    finally:
        _task_running.clear()


def stop_when_orphaned() -> None:
    """Pool-worker initializer: when the process that started this worker is gone (the
    command was killed, or stopped by a signal that skips its cleanup), stop instead of
    running on unseen. A running task gets SIGTERM first, as from a scheduler: a training
    task saves ``last.ckpt`` on it, so the next run of the command resumes it."""
    parent = os.getppid()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(PARENT_POLL_S)
        if _task_running.is_set():
            os.kill(os.getpid(), signal.SIGTERM)
            while _task_running.is_set():
                time.sleep(PARENT_POLL_S)
        os._exit(128 + signal.SIGTERM)

    threading.Thread(target=watch, name="stop-when-orphaned", daemon=True).start()
