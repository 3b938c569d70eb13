"""How many threads torch computes with: one rule and one setter for every command.

torch starts with one thread per core of the machine. On a machine other jobs share, or
with several processes on one node (DDP, DataLoader workers, ``map --workers``), that
oversubscribes the cores: a fine-tuning run measured 8.5x slower with two threads on two
busy cores than with one. Every command that runs a model therefore sets the count
through :func:`apply_threads`, from a setting that is a number or ``"auto"``:

- a number is used as given;
- ``"auto"`` is ``OMP_NUM_THREADS`` when the environment sets it (a scheduler's or the
  user's explicit choice, as torch itself reads it), else the cores this process may run
  on (``os.sched_getaffinity``: a SLURM allocation, ``taskset``, a container's cpuset)
  shared among the processes of this node, one core left to each DataLoader worker,
  and never fewer than 1.

Training runs record the resolved number in their ``config.yaml``, ``map`` in its own.
The setting is how a run is executed, not what it computes (so ``--resume`` may change
it), although a different count may round floating-point sums differently.

Threads that wait also cost: see :func:`limit_openmp_spinning`, which ``import alos2fm``
applies before torch is loaded.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Literal

Threads = int | Literal["auto"]

# Times an idle libgomp thread (torch's OpenMP on Linux) polls for work before it sleeps.
OPENMP_SPINCOUNT = "3000"


def limit_openmp_spinning() -> None:
    """``GOMP_SPINCOUNT`` for this process and its children, unless already set.

    libgomp reads it once, when torch loads it. By default (300,000 polls) a thread
    that waits at one of torch's parallel regions keeps its core: where another job holds
    one of the cores, each small operator then waits for the descheduled thread's time
    slice. ``alos2fm predict`` with two threads, a tiny Swin on a 1024 px scene, took
    68 s instead of 1.0 s beside one busy process on two cores; at 3000 polls it takes
    2.1 s there and the same 1.0 s on quiet cores (``OMP_WAIT_POLICY=PASSIVE``, no polling:
    1.4 s and 2.0 s). ``OMP_WAIT_POLICY``, where set, still decides.
    """
    os.environ.setdefault("GOMP_SPINCOUNT", OPENMP_SPINCOUNT)


def available_cores() -> int:
    """Cores this process may run on (its affinity mask; all cores where there is none)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows: no affinity masks
        return os.cpu_count() or 1


def resolve_threads(
    setting: Threads,
    processes: int = 1,
    workers: int = 0,
    *,
    cores: int | None = None,
    environ: Mapping[str, str] | None = None,
) -> int:
    """The thread count ``setting`` stands for (see the module docstring).

    Args:
        setting: a positive number, or ``"auto"``.
        processes: processes on this node that compute with torch (DDP processes, map
            workers), this one included.
        workers: DataLoader worker processes of this process (one core each).
        cores: cores available (default: :func:`available_cores`).
        environ: the environment to read ``OMP_NUM_THREADS`` from (default: ``os.environ``).
    """
    if setting != "auto":
        threads = int(setting)
        if threads < 1:
            raise ValueError(f"threads must be a positive number or 'auto', not {setting!r}")
        return threads
    environ = os.environ if environ is None else environ
    explicit = environ.get("OMP_NUM_THREADS", "").strip()
    if explicit.isdigit() and int(explicit) >= 1:
        return int(explicit)
    cores = available_cores() if cores is None else cores
    return max(1, cores // max(1, processes) - max(0, workers))


def apply_threads(setting: Threads, processes: int = 1, workers: int = 0) -> int:
    """Resolve ``setting`` and make it torch's intra-op thread count; returns the number."""
    import torch

    threads = resolve_threads(setting, processes, workers)
    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)
    return threads
