"""``alos2fm map``: many scenes into one seamless land-cover map of a region.

1. **Check and claim.** The checkpoint loads, every product opens as the model needs it
   (bands, recipe) and is valid backscatter; the output folder is claimed
   (``alos2fm.outputs``) before anything is written; the common grid is chosen
   (``grid.py``: ``--crs``/``--resolution``, default the split's equal-area plane at the
   finest scene pixel).
2. **Scenes** (``scenes.py``): each product is a task, run here, in local processes
   (``--workers``) or on a Dask cluster (``--dask-scheduler``), that stores the scene's
   class probabilities and edge weights on disk (Zarr); a scene whose recorded identity
   (checkpoint, product, options) matches is reused, so a killed run redoes at most the
   scenes in flight.
3. **Mosaic** (``mosaic.py``, ``writing.py``): the region is fused block by block
   (weighted mean of the probabilities, weights falling off toward each scene's edge),
   its file tiles in parallel where the scenes ran, into ``map.tif`` and
   ``confidence.tif`` (Cloud-Optimized GeoTIFFs; a VRT over file tiles when one file would
   be too large), with class names for GIS tools, provenance tags, a quicklook,
   ``scenes.csv`` and the resolved ``config.yaml``.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator

from alos2fm.atomic import atomic_path
from alos2fm.errors import DataError, validation_problems
from alos2fm.evaluation.region import mosaic
from alos2fm.evaluation.region.grid import RegionGrid, region_grid
from alos2fm.evaluation.region.scenes import SceneResult, SceneTask, map_scene, scene_model
from alos2fm.products.naming import scene_names
from alos2fm.threads import resolve_threads

SCENES = "scenes"
MAP, CONFIDENCE = "map", "confidence"
OUTPUTS = (
    "map.tif", "map.tif.aux.xml", "map.qml", "map.vrt", "map.vrt.aux.xml", "map.png",
    "map_tiles", "confidence.tif", "confidence.vrt", "confidence_tiles",
    "scenes.csv", "config.yaml", SCENES, ".mosaic.partial",
)  # fmt: skip


class MapConfig(BaseModel):
    """Everything ``run_map`` needs; written back, resolved, as ``<out>/config.yaml``."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    products: list[Path] = Field(min_length=1)
    checkpoint: Path
    out: Path
    crs: str | None = None  # default: the equal-area plane centred on the scenes
    resolution: float | None = Field(None, gt=0)  # CRS units; default: the finest scene pixel
    tile: int | None = None
    overlap: int | None = None
    batch_size: int = Field(8, ge=1)
    device: str = "cpu"
    kind: str | None = None
    nodata: float | None = None
    edge_px: int | None = Field(None, ge=1)  # scene pixels over which weights rise to 1
    # Pixels; a larger region is split into file tiles (checked below).
    file_side: int = Field(40960, ge=256)
    workers: int = Field(1, ge=1)
    dask_scheduler: str | None = None
    overwrite: bool = False
    progress: bool = True
    # alos2fm.threads: auto shares this machine's cores among the local workers (a Dask
    # worker resolves auto on its own machine); config.yaml records the number.
    threads: Annotated[int, Field(ge=1)] | Literal["auto"] = "auto"

    @field_validator("file_side")
    @classmethod
    def _on_warp_tiles(cls, side: int) -> int:
        if side % mosaic.WARP_TILE:
            raise ValueError(
                f"must be a multiple of {mosaic.WARP_TILE} px, the tiles the fuse warps by "
                "(another edge could change pixels along it)"
            )
        return side


@dataclass(frozen=True)
class MapResult:
    map_path: Path
    confidence_path: Path
    scenes: list[SceneResult]
    grid: RegionGrid
    seconds: float


def map_config(**options: Any) -> MapConfig:
    """A validated ``MapConfig`` from command-line values (None = not given)."""
    from pydantic import ValidationError

    try:
        return MapConfig.model_validate({k: v for k, v in options.items() if v is not None})
    except ValidationError as err:
        raise DataError(f"invalid map settings: {validation_problems(err)}") from None


def run_map(cfg: MapConfig) -> MapResult:
    """Map every product of ``cfg`` and fuse them into one map of the region."""
    from alos2fm.identity import content_digest, inputs_fingerprint
    from alos2fm.outputs import claim_folder

    started = time.perf_counter()
    if not cfg.dask_scheduler:
        processes = min(cfg.workers, len(cfg.products))  # those alos2fm.parallel starts
        threads = resolve_threads(cfg.threads, processes=processes)
        cfg = cfg.model_copy(update={"threads": threads})
    meta, grids = _check_inputs(cfg)
    region = region_grid(grids, cfg.crs, cfg.resolution)
    with claim_folder(
        cfg.out,
        "map",
        outputs=OUTPUTS,
        inputs=[*cfg.products, cfg.checkpoint],
        overwrite=cfg.overwrite,
        rerun="replace",  # finished scenes are reused one by one, by identity
    ) as folder:
        checkpoint_sha = content_digest(cfg.checkpoint)
        tasks = []
        for product, name in zip(cfg.products, scene_names(cfg.products), strict=True):
            identity = {
                "checkpoint": checkpoint_sha,
                "product": inputs_fingerprint([product]),
                "options": cfg.model_dump(
                    mode="json", include={"tile", "overlap", "kind", "nodata", "edge_px"}
                ),
            }
            tasks.append(
                SceneTask(
                    product=product,
                    folder=folder.path(SCENES) / name,
                    checkpoint=cfg.checkpoint,
                    identity=identity,
                    **cfg.model_dump(
                        include={"tile", "overlap", "batch_size", "device", "kind", "nodata"}
                    ),
                    edge_px=cfg.edge_px,
                    threads=cfg.threads,
                )
            )
        (cfg.out / SCENES).mkdir(exist_ok=True)
        results = _run_scenes(cfg, tasks)
        _write_scenes_csv(cfg.out / "scenes.csv", results)
        provenance = _provenance(cfg, results, checkpoint_sha)
        scenes = [task.folder for task in tasks]
        map_path, confidence_path = _write_region(cfg, region, scenes, meta, provenance)
        resolved = cfg.model_dump(mode="json") | {"grid": asdict(region)}
        with atomic_path(cfg.out / "config.yaml") as tmp:
            tmp.write_text(yaml.safe_dump(resolved, sort_keys=False))
        return MapResult(map_path, confidence_path, results, region, time.perf_counter() - started)


def _check_inputs(cfg: MapConfig) -> tuple[Any, list[Any]]:
    """Load the checkpoint and open every product before anything is written; the grids
    of the products as the model sees them (after the training data's multilook)."""
    from alos2fm.evaluation.predict import open_for_model

    scene_names(cfg.products)  # the same product twice is refused before any work
    # On the CPU whatever the device: this process may have no GPU (a cluster's client).
    # Scenes mapped here on the CPU reuse it.
    _, meta = scene_model(str(cfg.checkpoint), "cpu")
    grids = []
    for path in cfg.products:
        product, source = open_for_model(
            path, meta, cfg.checkpoint, kind=cfg.kind, nodata=cfg.nodata
        )
        grids.append(product.grid)
        if callable(close := getattr(source, "close", None)):
            close()
    return meta, grids


def _run_scenes(cfg: MapConfig, tasks: list[SceneTask]) -> list[SceneResult]:
    from tqdm.auto import tqdm

    from alos2fm.parallel import execute

    bar = tqdm(
        total=len(tasks), desc="scenes", unit="scene", disable=True if not cfg.progress else None
    )
    results = []
    try:
        for result in execute(map_scene, tasks, cfg.workers, cfg.dask_scheduler):
            results.append(result)
            bar.update()
    finally:
        bar.close()
    order = {task.folder.name: i for i, task in enumerate(tasks)}
    return sorted(results, key=lambda r: order[r.name])


def _write_scenes_csv(path: Path, results: list[SceneResult]) -> None:
    columns = [
        "name",
        "product",
        "status",
        "seconds",
        "valid_pixels",
        "mean_confidence",
        "date",
        "bands",
    ]
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as file:  # noqa: PTH123
        writer = csv.DictWriter(file, fieldnames=columns)
        writer.writeheader()
        for result in results:
            writer.writerow(asdict(result) | {"bands": "+".join(result.bands)})


def _provenance(cfg: MapConfig, results: list[SceneResult], checkpoint_sha: str) -> dict[str, str]:
    from alos2fm import __version__

    sources = [
        {"scene": r.name, "file": Path(r.product).name, "date": r.date, "bands": r.bands}
        for r in results
    ]
    return {
        "SOFTWARE": f"alos2fm {__version__} map",
        "SOURCE_SCENES": json.dumps(sources),
        "CHECKPOINT": f"{cfg.checkpoint.name} sha256:{checkpoint_sha}",
    }


def _write_region(
    cfg: MapConfig,
    region: RegionGrid,
    scenes: list[Path],
    meta: Any,
    provenance: dict[str, str],
) -> tuple[Path, Path]:
    """Fuse the region block by block into the map and confidence files (one COG each, or
    COG tiles under a VRT, fused in parallel as the scenes were mapped), then their class
    names, style and quicklook. Parts that a killed run fused from the same scenes are
    reused (``writing.FusePart``)."""
    from tqdm.auto import tqdm

    from alos2fm.evaluation.gis import write_class_sidecars
    from alos2fm.evaluation.quicklook import write_map_quicklook
    from alos2fm.evaluation.region.writing import FusePart, fuse_part, write_vrt
    from alos2fm.parallel import execute

    partial = cfg.out / ".mosaic.partial"
    partial.mkdir(exist_ok=True)  # parts of a killed run wait there, with their identity
    parts = region.blocks(cfg.file_side)
    tiled = len(parts) > 1
    names, colours = list(meta.class_names), [tuple(c) for c in meta.class_colours]
    tasks = [
        FusePart(
            partial,
            region,
            part,
            tuple(scenes),
            tuple(names),
            tuple(colours),
            provenance,
            f"_{part.row // cfg.file_side:03d}_{part.col // cfg.file_side:03d}" if tiled else "",
            progress=cfg.progress and not tiled,
        )
        for part in parts
    ]
    # File tiles go where the scenes went, counted as they finish; a region in one file
    # sends its blocks there instead, and is written here.
    written: dict[str, list[Path]] = {MAP: [], CONFIDENCE: []}
    if tiled:
        bar = tqdm(
            total=len(tasks),
            desc="file tiles",
            unit="tile",
            disable=True if not cfg.progress else None,
        )
        try:
            for files in execute(fuse_part, tasks, cfg.workers, cfg.dask_scheduler):
                for kind, path in files.items():
                    written[kind].append(path)
                bar.update()
        finally:
            bar.close()
    else:
        for kind, path in fuse_part(tasks[0], cfg.workers, cfg.dask_scheduler).items():
            written[kind].append(path)
    outputs = {}
    for kind in (MAP, CONFIDENCE):
        if tiled:
            folder = cfg.out / f"{kind}_tiles"
            shutil.rmtree(folder, ignore_errors=True)
            folder.mkdir()
            for path in written[kind]:
                os.replace(path, folder / path.name)
            outputs[kind] = write_vrt(cfg.out / f"{kind}.vrt", sorted(folder.iterdir()), region)
        else:
            outputs[kind] = cfg.out / f"{kind}.tif"
            os.replace(written[kind][0], outputs[kind])
    shutil.rmtree(partial, ignore_errors=True)
    write_class_sidecars(outputs[MAP], names, colours)
    write_map_quicklook(outputs[MAP], names, colours)
    return outputs[MAP], outputs[CONFIDENCE]


__all__ = ["MapConfig", "MapResult", "map_config", "run_map"]
