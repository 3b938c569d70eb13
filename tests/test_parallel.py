"""The task engine: results as tasks finish, and no orphaned pool workers."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from alos2fm.parallel import execute


def _square(x: int) -> int:
    return x * x


@pytest.mark.parametrize("workers", [1, 2])
def test_every_task_runs_once(workers):
    assert sorted(execute(_square, [1, 2, 3, 4], workers=workers)) == [1, 4, 9, 16]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie still answers kill(0) until its parent (init here) reaps it.
    stat = Path(f"/proc/{pid}/stat")
    return stat.exists() and stat.read_text().split()[2] != "Z"


@pytest.mark.skipif(sys.platform != "linux", reason="reads /proc to see the workers")
def test_pool_workers_stop_when_the_command_is_killed(tmp_path):
    """A command killed outright (SIGKILL skips every cleanup) leaves no worker training on
    unseen: each worker is stopped by SIGTERM, which a training task answers by saving
    its checkpoint (here: by writing a file)."""
    script = tmp_path / "command.py"
    script.write_text(
        textwrap.dedent(
            f"""
            import os, signal, sys, time
            from pathlib import Path
            from alos2fm.parallel import execute

            OUT = Path({str(tmp_path)!r})

            def task(i):
                def saved(signum, frame):
                    (OUT / f"saved-{{os.getpid()}}").write_text("last.ckpt")
                    sys.exit(128 + signum)
                signal.signal(signal.SIGTERM, saved)
                (OUT / f"worker-{{os.getpid()}}").write_text("")
                time.sleep(60)

            if __name__ == "__main__":
                list(execute(task, [0, 1], workers=2))
            """
        )
    )
    command = subprocess.Popen([sys.executable, str(script)])
    try:
        deadline = time.monotonic() + 60
        while len(list(tmp_path.glob("worker-*"))) < 2:
            assert time.monotonic() < deadline, "the workers never started"
            time.sleep(0.1)
    finally:
        command.send_signal(signal.SIGKILL)
        command.wait()
    workers = [int(p.name.split("-")[1]) for p in tmp_path.glob("worker-*")]
    deadline = time.monotonic() + 10
    while any(_alive(pid) for pid in workers) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not any(_alive(pid) for pid in workers), "a pool worker outlived its command"
    assert sorted(p.name for p in tmp_path.glob("saved-*")) == sorted(
        f"saved-{pid}" for pid in workers
    )


@pytest.mark.skipif(
    sys.platform != "linux" or not os.confstr("CS_GNU_LIBC_VERSION"), reason="glibc only"
)
def test_workers_allocate_from_the_heap_even_under_a_dask_nanny_setting(tmp_path):
    """With ``MALLOC_TRIM_THRESHOLD_=65536`` in the environment (as a Dask nanny starts its
    workers), glibc maps every allocation over 128 KiB on its own: a task's temporaries
    cost page faults each time. A task run through ``execute`` has them from the heap."""
    script = tmp_path / "command.py"
    script.write_text(
        textwrap.dedent(
            """
            import ctypes
            from alos2fm.parallel import execute

            class MallInfo2(ctypes.Structure):
                _fields_ = [(name, ctypes.c_size_t) for name in (
                    "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks",
                    "fsmblks", "uordblks", "fordblks", "keepcost")]

            def mapped_by_a_4_mib_allocation(_):
                libc = ctypes.CDLL(None)
                libc.mallinfo2.restype = MallInfo2
                libc.malloc.restype = ctypes.c_void_p
                before = libc.mallinfo2().hblkhd
                block = libc.malloc(4 * 2**20)
                mapped = libc.mallinfo2().hblkhd - before
                libc.free(ctypes.c_void_p(block))
                return mapped

            if __name__ == "__main__":
                print(mapped_by_a_4_mib_allocation(0), *execute(
                    mapped_by_a_4_mib_allocation, [0, 1], workers=2))
            """
        )
    )
    env = {**os.environ, "MALLOC_TRIM_THRESHOLD_": "65536"}
    done = subprocess.run([sys.executable, str(script)], env=env, capture_output=True, text=True)
    here, *workers = map(int, done.stdout.split())
    assert here >= 4 * 2**20  # the setting's effect: mapped on its own
    assert workers == [0, 0]  # in the workers: from the heap
