"""``alos2fm predict`` on all cores, alone and beside a job that holds one core, with
libgomp's default spinning and with alos2fm's (``alos2fm.threads.limit_openmp_spinning``);
prints JSON.

A machine is often shared (a cluster node, a workstation running a training): torch's
OpenMP threads that poll for work at every parallel region keep a core the other job
needs, and each small operator then waits for a descheduled thread. Cells: quiet or
contended (a one-thread torch loop holds one core), and ``GOMP_SPINCOUNT`` at libgomp's
default 300000 or unset (alos2fm sets 3000). ``slowdown_*`` = contended / quiet seconds
(goal: well under 2 with alos2fm's setting), ``quiet_cost`` = alos2fm's quiet seconds /
the default's (goal: about 1). How much the default loses depends on the other job: beside
a fine-tuning run it was 68 s against 2.1 s. The scene and the tiny model are
``map_throughput.py``'s.

Run: ``python benchmarks/shared_cores.py --size 1024``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from map_throughput import write_checkpoint, write_scenes

LIBGOMP_DEFAULT = "300000"
# The other job: a one-thread torch loop, as a training run or a second map worker.
HOG = """
import torch
torch.set_num_threads(1)
a = torch.randn(256, 256)
while True:
    b = torch.nn.functional.gelu(a @ a)
"""


def predict_seconds(scene: Path, checkpoint: Path, out: Path, spincount: str | None) -> float:
    """Wall seconds of one ``alos2fm predict`` on every core, in a fresh process."""
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    env = {k: v for k, v in os.environ.items() if k not in ("GOMP_SPINCOUNT", "OMP_NUM_THREADS")}
    if spincount is not None:
        env["GOMP_SPINCOUNT"] = spincount
    command = [sys.executable, "-m", "alos2fm", "predict", str(scene), "--checkpoint",
               str(checkpoint), "--out", str(out / "map.tif"), "--no-progress",
               "--no-quicklook", "--threads", str(os.cpu_count())]  # fmt: skip
    started = time.perf_counter()
    subprocess.run(command, env=env, check=True, capture_output=True)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--work-dir", type=Path, default=None)
    args = parser.parse_args()
    work = args.work_dir or Path(tempfile.mkdtemp(prefix="alos2fm-shared-"))
    work.mkdir(parents=True, exist_ok=True)
    (scene,) = write_scenes(work, 1, args.size)
    checkpoint = write_checkpoint(work / "tiny.ckpt")
    cells = {}
    for load in ("quiet", "contended"):
        hog = None
        if load == "contended":
            hog = subprocess.Popen([sys.executable, "-c", HOG])
        try:
            for name, spincount in (("libgomp_default", LIBGOMP_DEFAULT), ("alos2fm", None)):
                cells[f"{load}_{name}_s"] = round(
                    predict_seconds(scene, checkpoint, work / "out", spincount), 2
                )
        finally:
            if hog is not None:
                hog.kill()
                hog.wait()
    print(
        json.dumps(
            {
                "size": args.size,
                "cpu_count": os.cpu_count(),
                **cells,
                "slowdown_libgomp_default": round(
                    cells["contended_libgomp_default_s"] / cells["quiet_libgomp_default_s"], 2
                ),
                "slowdown_alos2fm": round(
                    cells["contended_alos2fm_s"] / cells["quiet_alos2fm_s"], 2
                ),
                "quiet_cost": round(cells["quiet_alos2fm_s"] / cells["quiet_libgomp_default_s"], 3),
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
