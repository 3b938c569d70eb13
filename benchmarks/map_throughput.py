"""Cost of ``alos2fm map`` over single-scene ``predict`` runs, its memory, its Dask scaling;
prints JSON.

Scenes: ``--scenes`` synthetic dB GeoTIFFs of ``--size`` px (20 m pixels), overlapping by
half a scene along a row that crosses from UTM zone 53 into 54, and a tiny Swin
segmenter (random weights: what is timed is the pipeline, not the map's quality).

- ``fuse_ratio`` = (sum of one ``alos2fm predict`` per scene) / ``alos2fm map`` of all of
  them, each in a fresh process (goal: >= 0.9, i.e. fusing costs at most 10 %); and
  ``fuse_ratio_net``, the same with each process's start (importing torch, rasterio and
  alos2fm, measured here) taken off, since map starts once and the predicts N times;
  ``fuse_ratio_net_cpu``, the same in CPU seconds (user + system of each process and its
  children), which other jobs on a shared machine do not inflate;
- ``peak_rss_ratio`` = peak RSS of ``map`` at ``--scenes`` / at 2 scenes (goal: <= 1.2);
- ``dask_speedup`` = ``map`` on a one-worker / two-worker ``LocalCluster`` (on 2 cores,
  the ceiling is 2);
- ``fuse_cpu_s_per_scene_mpx`` = what ``map`` spends beyond the predictions, per million
  scene pixels (CPU seconds), beside ``predict_cpu_s_per_scene_mpx``: with a model that
  costs P s per million pixels, fusing costs about that figure / P of the predictions.

Every command runs with ``--threads 1``: the same for both sides, and a second thread
that waits on a core another job holds slows torch's small operators tenfold or more.

Run: ``python benchmarks/map_throughput.py --scenes 8 --size 1024``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np
from measure import monitored

TINY = {
    "encoder": {
        "arch": "swin_tiny",
        "in_chans": 1,
        "img_size": 64,
        "window_size": 4,
        "ape": True,
        "embed_dim": 24,
        "depths": [1, 1, 2, 1],
        "num_heads": [1, 2, 4, 8],
    },
    "num_classes": 9,
    "decoder_channels": 32,
}


def write_scenes(folder: Path, count: int, size: int) -> list[Path]:
    """``count`` dB scenes along one row at 35.7° N, half-overlapping, across 138° E."""
    import rasterio
    from affine import Affine
    from rasterio.warp import transform

    rng = np.random.default_rng(0)
    paths = []
    step_m = size * 20 / 2
    for i in range(count):
        # Scene i's left edge in degrees east, then in its own UTM zone.
        x_lon = 137.9 + i * step_m / 90000
        zone = 53 if x_lon < 138 else 54
        crs = f"EPSG:326{zone}"
        (x,), (y,) = transform("EPSG:4326", crs, [x_lon], [35.7])
        yy, xx = np.mgrid[0:size, 0:size]
        db = -12 + 6 * np.sin(yy / 40) * np.cos(xx / 55) + rng.normal(0, 1.5, (size, size))
        path = folder / f"scene_{i:02d}.tif"
        profile = dict(driver="GTiff", dtype="float32", count=1, height=size, width=size,
                       crs=crs, transform=Affine(20, 0, round(x), 0, -20, round(y)),
                       tiled=True, blockxsize=256, blockysize=256)  # fmt: skip
        with rasterio.open(path, "w", **profile) as dst:
            dst.write(db[None].astype(np.float32))
        paths.append(path)
    return paths


def write_checkpoint(path: Path) -> Path:
    import torch

    from alos2fm.evaluation.predict import InferenceMeta, save_inference_checkpoint
    from alos2fm.models.segmenter import build_segmenter

    torch.manual_seed(0)
    names = tuple(f"class_{k}" for k in range(TINY["num_classes"]))
    meta = InferenceMeta(
        model=TINY,
        bands=("DB1",),
        mean_db=(-12.0,),
        std_db=(5.0,),
        class_names=names,
        class_colours=tuple((20 * k, 255 - 20 * k, 128) for k in range(len(names))),
        patch_size=64,
    )
    return save_inference_checkpoint(build_segmenter(TINY).eval(), meta, path)


def run(command: list[str]) -> dict:
    """Wall time and the peak RSS (largest process) of ``alos2fm ...`` in a fresh process."""
    measured = monitored([sys.executable, "-m", "alos2fm", *command])
    return {
        "seconds": round(measured["seconds"], 2),
        "cpu_seconds": round(measured["cpu_seconds"], 2),
        "peak_gib": measured["peak"]["largest_process_gib"],
    }


def startup_seconds(repeats: int = 5) -> tuple[float, float]:
    """What starting a command costs before it reads anything, (wall, CPU) seconds: the
    median of a few. Not the fastest: it is taken off every predict run, each measured
    once, and the fastest start would credit them with time they spent."""
    code = "import torch, rasterio, alos2fm.evaluation.predict, alos2fm.evaluation.region"
    walls, cpus = [], []
    for _ in range(repeats):
        measured = monitored([sys.executable, "-c", code])
        walls.append(measured["seconds"])
        cpus.append(measured["cpu_seconds"])
    return float(np.median(walls)), float(np.median(cpus))


def mean_run(command: list[str], out: Path, repeats: int) -> dict:
    """``run`` ``repeats`` times into a fresh ``out``: mean seconds, largest peak."""
    runs = []
    for _ in range(repeats):
        shutil.rmtree(out, ignore_errors=True)
        runs.append(run(command))
    return {
        "seconds": round(float(np.mean([r["seconds"] for r in runs])), 2),
        "cpu_seconds": round(float(np.mean([r["cpu_seconds"] for r in runs])), 2),
        "peak_gib": max(r["peak_gib"] for r in runs),
    }


def map_command(paths: list[Path], checkpoint: Path, out: Path, *extra: str) -> list[str]:
    shutil.rmtree(out, ignore_errors=True)
    return ["map", *map(str, paths), "--checkpoint", str(checkpoint), "--out", str(out),
            "--no-progress", "--threads", "1", *extra]  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenes", type=int, default=8)
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--work-dir", type=Path, default=None)
    args = parser.parse_args()
    work = args.work_dir or Path(tempfile.mkdtemp(prefix="alos2fm-map-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    paths = write_scenes(work, args.scenes, args.size)
    checkpoint = write_checkpoint(work / "tiny.ckpt")

    predicts = []
    for path in paths:
        target = work / "predict" / f"{path.stem}.tif"
        shutil.rmtree(target.parent, ignore_errors=True)
        predicts.append(run(["predict", str(path), "--checkpoint", str(checkpoint),
                             "--out", str(target), "--no-progress", "--no-quicklook",
                             "--threads", "1"]))  # fmt: skip
    # The map runs once where the predicts run once per scene: its run is the mean of a
    # few, so that one noisy run does not decide the ratio.
    all_scenes = mean_run(map_command(paths, checkpoint, work / "map"), work / "map", 3)
    two_scenes = run(map_command(paths[:2], checkpoint, work / "map2"))

    from distributed import LocalCluster

    dask = {}
    for workers in (1, 2):
        with LocalCluster(n_workers=workers, threads_per_worker=1, dashboard_address=None) as c:
            dask[workers] = run(
                map_command(
                    paths,
                    checkpoint,
                    work / f"dask{workers}",
                    "--dask-scheduler",
                    c.scheduler_address,
                )  # fmt: skip
            )
    predict_total = sum(p["seconds"] for p in predicts)
    predict_cpu = sum(p["cpu_seconds"] for p in predicts)
    start, start_cpu = startup_seconds()
    net = (predict_total - start * len(predicts)) / (all_scenes["seconds"] - start)
    predict_net_cpu = predict_cpu - start_cpu * len(predicts)
    map_net_cpu = all_scenes["cpu_seconds"] - start_cpu
    scene_mpx = args.scenes * args.size**2 / 1e6
    print(
        json.dumps(
            {
                "scenes": args.scenes,
                "size": args.size,
                "cpu_count": os.cpu_count(),
                "predict_sum_s": round(predict_total, 2),
                "map_s": all_scenes["seconds"],
                "fuse_ratio": round(predict_total / all_scenes["seconds"], 3),
                "process_start_s": round(start, 2),
                "fuse_ratio_net": round(net, 3),
                "predict_sum_cpu_s": round(predict_cpu, 2),
                "map_cpu_s": all_scenes["cpu_seconds"],
                "fuse_ratio_net_cpu": round(predict_net_cpu / map_net_cpu, 3),
                "predict_cpu_s_per_scene_mpx": round(predict_net_cpu / scene_mpx, 3),
                "fuse_cpu_s_per_scene_mpx": round((map_net_cpu - predict_net_cpu) / scene_mpx, 3),
                "peak_rss_gib": {
                    "2": two_scenes["peak_gib"],
                    str(args.scenes): all_scenes["peak_gib"],
                },
                "peak_rss_ratio": round(all_scenes["peak_gib"] / two_scenes["peak_gib"], 3),
                "dask_s": {str(k): v["seconds"] for k, v in dask.items()},
                "dask_speedup": round(dask[1]["seconds"] / dask[2]["seconds"], 3),
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
