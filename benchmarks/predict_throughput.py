"""Throughput and peak memory of full-scene prediction (``alos2fm predict``); prints JSON.

For each of two synthetic dB GeoTIFF scenes (``--sizes``, default 1024 and 2048 pixels a
side, 3 m pixels in UTM, with a no-data border like an L2.1 product), in a fresh process
so that peak memory belongs to that size alone:

- ``predict_s``: ``predict_product`` end to end: windowed reads, normalisation, forward
  passes, blending, block-aligned compressed GeoTIFF writes (no quicklook);
- ``bare_forward_s``: the model alone on the same number of tiles, same batch size, in the
  same process (after a warm-up batch): the floor that prediction cannot beat;
- both are repeated ``--repeats`` times, alternating which runs first, and the fastest
  of each is kept (the least disturbed on a shared machine);
- ``ratio_to_bare_forward`` = bare_forward_s / predict_s (target >= 0.8);
- with ``--compile``, prediction runs the model compiled with fused attention
  (``alos2fm predict --compile --fused-attention``; warmed up on a full and a partial
  batch, so compilation is not timed) while the bare side stays eager: the ratio is then
  what compiling buys over the eager floor;
- ``km2_per_s`` = scene area / predict_s; ``peak_rss_mib`` = the process's ``ru_maxrss``
  (target: within 10 % across the two sizes: memory must not grow with the scene), next
  to ``rss_before_predict_mib``, the resident memory after imports, model and warm-up.

The model is a small Swin-UPerNet with random weights (``--embed-dim``, ``--patch-size``):
throughput does not depend on the weights' values. Example:
``python benchmarks/predict_throughput.py --sizes 1024 2048 --threads 2``.
"""

from __future__ import annotations

import argparse
import copy
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

PIXEL_M = 3.0


def model_spec(args: argparse.Namespace) -> dict:
    return {
        "encoder": {
            "arch": "swin_tiny",
            "in_chans": 1,
            "img_size": args.patch_size,
            "window_size": 4,
            "ape": True,
            "embed_dim": args.embed_dim,
            "depths": [1, 1, 2, 1],
            "num_heads": [1, 2, 4, 8],
        },
        "num_classes": 9,
        "decoder_channels": args.decoder_channels,
    }


def write_scene(path: Path, size: int) -> None:
    """A float32 dB scene, tiled, with a no-data triangle in two corners (as L2.1 scenes)."""
    import rasterio
    from affine import Affine

    profile = dict(
        driver="GTiff",
        width=size,
        height=size,
        count=1,
        dtype="float32",
        crs="EPSG:32654",
        transform=Affine(PIXEL_M, 0, 500_000, 0, -PIXEL_M, 4e6),
        nodata=np.nan,
        tiled=True,
        blockxsize=256,
        blockysize=256,
    )
    rng = np.random.default_rng(0)
    with rasterio.open(path, "w", **profile) as dst:
        for top in range(0, size, 256):
            rows = min(256, size - top)
            yy, xx = np.mgrid[top : top + rows, 0:size]
            db = -12 + 6 * np.sin(yy / 50) * np.cos(xx / 70) + rng.normal(0, 2, (rows, size))
            db[xx + yy < size // 8] = np.nan
            db[(size - xx) + (size - yy) < size // 8] = np.nan
            dst.write(db[None].astype(np.float32), window=((top, top + rows), (0, size)))


def current_rss_mib() -> float:
    """Resident memory now (Linux /proc), MiB: the imports, model and warm-up baseline."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return round(int(line.split()[1]) / 1024, 1)
    return float("nan")


def child(args: argparse.Namespace) -> None:
    """One scene size in this process: predict, then the bare forward; print one JSON line."""
    import torch

    from alos2fm.evaluation.predict import (
        InferenceMeta,
        PredictOptions,
        load_segmenter_for_inference,
        predict_product,
        save_inference_checkpoint,
    )
    from alos2fm.models.segmenter import build_segmenter
    from alos2fm.products import open_product

    torch.set_num_threads(args.threads)
    checkpoint = args.work_dir / "bench.ckpt"
    if not checkpoint.exists():
        torch.manual_seed(0)
        meta = InferenceMeta(
            model=model_spec(args),
            bands=("HH",),
            mean_db=(-12.0,),
            std_db=(6.0,),
            class_names=tuple(f"class{k}" for k in range(9)),
            class_colours=tuple((20 * k, 255 - 20 * k, 100) for k in range(9)),
            patch_size=args.patch_size,
        )
        save_inference_checkpoint(build_segmenter(meta.model), meta, checkpoint)
    model, meta = load_segmenter_for_inference(checkpoint, args.device)
    fast = model
    if args.compile:
        from alos2fm.models.speed import apply_speed_options

        fast = copy.deepcopy(model)
        apply_speed_options(fast, fused_attention=True, compile=True)
    scene = args.work_dir / f"scene_{args.child}.tif"
    options = PredictOptions(batch_size=args.batch_size, quicklook=False, progress=False)
    tile = args.patch_size

    compile_s = time.perf_counter()
    with torch.inference_mode():  # warm-up: first-call allocations are not throughput
        for network in {id(model): model, id(fast): fast}.values():
            for batch in (args.batch_size, max(1, args.batch_size // 2)):
                network(torch.zeros(batch, 1, tile, tile, device=args.device))
    compile_s = time.perf_counter() - compile_s
    product = open_product(scene)

    def run_predict() -> tuple[float, int]:
        started = time.perf_counter()
        result = predict_product(product, fast, meta, args.work_dir / "map.tif", options)
        return time.perf_counter() - started, result.tiles

    def run_bare(tiles: int) -> float:
        batch = torch.randn(args.batch_size, 1, tile, tile, device=args.device)
        started = time.perf_counter()
        with torch.inference_mode():
            for first in range(0, tiles, args.batch_size):
                model(batch[: min(args.batch_size, tiles - first)]).float().cpu()
        return time.perf_counter() - started

    # Repeat, alternating which goes first, and keep the fastest of each: on a shared
    # machine the minimum is the least disturbed measurement.
    rss_before = current_rss_mib()
    seconds, tiles = run_predict()
    predict_times, bare_times = [seconds], [run_bare(tiles)]
    for repeat in range(1, args.repeats):
        if repeat % 2:
            bare_times.append(run_bare(tiles))
            predict_times.append(run_predict()[0])
        else:
            predict_times.append(run_predict()[0])
            bare_times.append(run_bare(tiles))
    predict_s, bare_s = min(predict_times), min(bare_times)

    area_km2 = args.child**2 * PIXEL_M**2 / 1e6
    print(
        json.dumps(
            {
                "size_px": args.child,
                "compiled": args.compile,
                "warm_up_s": round(compile_s, 1),
                "area_km2": area_km2,
                "tiles": tiles,
                "repeats": args.repeats,
                "predict_s": round(predict_s, 3),
                "bare_forward_s": round(bare_s, 3),
                "ratio_to_bare_forward": round(bare_s / predict_s, 3),
                "km2_per_s": round(area_km2 / predict_s, 3),
                "rss_before_predict_mib": rss_before,
                "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
            }
        )
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs=2, default=[1024, 2048])
    parser.add_argument("--patch-size", type=int, default=128)
    parser.add_argument("--embed-dim", type=int, default=24)
    parser.add_argument("--decoder-channels", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=2, help="keep the fastest of N runs")
    parser.add_argument(
        "--compile", action="store_true", help="predict with the compiled model (bare: eager)"
    )
    parser.add_argument(
        "--work-dir", type=Path, default=Path(tempfile.gettempdir()) / "alos2fm-predict-bench"
    )
    parser.add_argument("--child", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    args.work_dir.mkdir(parents=True, exist_ok=True)
    if args.child is not None:
        child(args)
        return

    runs = []
    for size in args.sizes:
        scene = args.work_dir / f"scene_{size}.tif"
        if not scene.exists():
            write_scene(scene, size)
        command = [sys.executable, __file__, "--child", str(size), *sys.argv[1:]]
        output = subprocess.run(command, check=True, capture_output=True, text=True).stdout
        runs.append(json.loads(output.strip().splitlines()[-1]))
    rss = [run["peak_rss_mib"] for run in runs]
    print(
        json.dumps(
            {
                "device": args.device,
                "threads": args.threads,
                "patch_size": args.patch_size,
                "batch_size": args.batch_size,
                "runs": runs,
                "peak_rss_spread": round(max(rss) / min(rss) - 1, 3),
                "min_ratio_to_bare_forward": min(run["ratio_to_bare_forward"] for run in runs),
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
