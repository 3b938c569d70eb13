"""Measuring a command the way the benchmarks compare them: wall time, CPU time and peak
memory of a fresh process (and of its children), as ratios against a baseline run the
same way."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

GIB = 2**30


def monitored(command: list[str], watch: list[int] = ()) -> dict:
    """Run ``command`` in a fresh process; wall time and peak memory of it and its children,
    and the peak RSS of each process in ``watch`` (e.g. Dask workers) meanwhile."""
    import psutil

    # A wrapper process reports ru_maxrss of the command and its children (RUSAGE_CHILDREN:
    # the largest of them), isolated from this process's own children.
    wrapper = (
        "import resource, subprocess, sys, json;"
        "rc = subprocess.run(sys.argv[1:]).returncode;"
        "usage = resource.getrusage(resource.RUSAGE_CHILDREN);"
        "print(json.dumps({'rc': rc, 'maxrss_kib': usage.ru_maxrss, "
        "'cpu_s': usage.ru_utime + usage.ru_stime}))"
    )
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    started = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, "-c", wrapper, *command], stdout=subprocess.PIPE, text=True, env=env
    )
    watched = psutil.Process(proc.pid)
    others = [psutil.Process(pid) for pid in watch]
    peak_total = 0
    peaks = [0] * len(others)
    while proc.poll() is None:
        try:
            tree = [watched, *watched.children(recursive=True)]
            peak_total = max(peak_total, sum(_rss(p) for p in tree[1:]))  # not the wrapper
        except psutil.NoSuchProcess:
            pass
        peaks = [max(peak, _rss(p)) for peak, p in zip(peaks, others, strict=True)]
        time.sleep(0.02)
    seconds = time.perf_counter() - started
    result = json.loads(proc.stdout.read().strip().splitlines()[-1])
    if result["rc"] != 0:
        raise SystemExit(f"{command[1:4]} failed with exit code {result['rc']}")
    return {
        "seconds": seconds,
        # CPU time of the command and its children: what a loaded machine's other jobs do
        # not inflate (wall time they do), so ratios of it hold on a shared machine.
        "cpu_seconds": result["cpu_s"],
        "peak": {
            "largest_process_gib": round(result["maxrss_kib"] * 1024 / GIB, 3),
            "total_gib": round(peak_total / GIB, 3),
        },
        "watched_peak_gib": [round(peak / GIB, 3) for peak in peaks],
    }


def _rss(process) -> int:
    try:
        return process.memory_info().rss
    except Exception:  # the process ended between listing and reading
        return 0
