"""Running independent tasks: here, in a pool of local processes, or on a Dask cluster.

One engine for every command that splits its work into tasks (prepare's scene parts,
map's scenes): results come back as the tasks finish. A Dask cluster is reached by its
scheduler's address, started however the site starts one (``dask scheduler`` plus
``dask worker``, dask-jobqueue on SLURM, ``LocalCUDACluster`` for one worker per GPU).
"""

from __future__ import annotations

import functools
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any

# How often a pool worker checks that the process that started it is still there.
PARENT_POLL_S = 0.5
# glibc malloc thresholds in worker processes (see tune_worker_malloc): the largest that
# its own dynamic threshold would reach on 64-bit, and twice that for trimming.
MMAP_THRESHOLD = 32 * 2**20
TRIM_THRESHOLD = 2 * MMAP_THRESHOLD


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
            futures = client.map(functools.partial(_run_in_worker, run), tasks, pure=False)
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
    tune_worker_malloc()
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


@functools.cache
def tune_worker_malloc() -> bool:
    """Fixed glibc malloc thresholds for this worker process (once; True if set).

    A Dask nanny starts its workers with ``MALLOC_TRIM_THRESHOLD_=65536``, which also
    freezes glibc's mmap threshold at 128 KiB: every larger temporary (a torch activation,
    a strip of probabilities) is then mapped and unmapped, page fault by page fault. A tiny
    Swin's forward pass ran 1.6 times as long on a Dask worker as in a plain process. Set
    here at runtime, as environment variables only act at process start; the cost is up to
    ``TRIM_THRESHOLD`` of freed memory kept by each worker. Elsewhere (not Linux, not
    glibc) nothing is changed.
    """
    if sys.platform != "linux":
        return False
    import ctypes

    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    m_trim_threshold, m_mmap_threshold = -1, -3  # glibc's <malloc.h>
    return bool(
        mallopt(m_mmap_threshold, MMAP_THRESHOLD) and mallopt(m_trim_threshold, TRIM_THRESHOLD)
    )
