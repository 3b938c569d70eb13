"""Writing the fused region: tiled GeoTIFFs block by block, then Cloud-Optimized GeoTIFFs
(predict's writer), and a VRT over file tiles when the region is split.

Work is spread where the scenes ran (``alos2fm.parallel``): the file tiles of a large
region are tasks, each fusing its blocks in turn; a region in one file has its blocks
fused as tasks and written here as they come.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from alos2fm.atomic import atomic_path
from alos2fm.evaluation.region import mosaic
from alos2fm.evaluation.region.grid import RegionGrid
from alos2fm.evaluation.region.mosaic import StoredScene, blocks_in, fuse_block
from alos2fm.products.base import Window

NODATA = 255
TIFF_BLOCK = 256


FUSE_FORMAT = 1  # bump when a fused part's files change meaning


@dataclass(frozen=True)
class FusePart:
    """Fuse one part of the region into its map and confidence COGs in ``folder``: a task
    (picklable) that runs here, in a local process or on a Dask worker, which opens the
    scenes' stored probabilities itself. A part whose files are already in ``folder``,
    fused from what it would be fused from now (grid, part, the identities of the scenes
    that meet it, classes, tags), is reused, so that a killed fuse redoes at most the
    parts in flight."""

    folder: Path
    region: RegionGrid
    part: Window
    scenes: tuple[Path, ...]  # scene folders under <out>/scenes
    names: tuple[str, ...]
    colours: tuple[tuple[int, ...], ...]
    tags: dict[str, str]
    suffix: str = ""
    progress: bool = False  # a bar over the blocks (a part fused in the command's process)

    @property
    def files(self) -> dict[str, Path]:
        return {kind: self.folder / f"{kind}{self.suffix}.tif" for kind in ("map", "confidence")}

    @property
    def done(self) -> Path:
        return self.folder / f".part{self.suffix}.done.json"


@dataclass(frozen=True)
class FuseBlock:
    """Fuse one block of the region from the scenes (folders) that meet it: a task."""

    region: RegionGrid
    block: Window
    scenes: tuple[Path, ...]
    classes: int


def fuse_part(
    task: FusePart, workers: int = 1, dask_scheduler: str | None = None
) -> dict[str, Path]:
    """The part's map and confidence files ({"map": path, "confidence": path}), fused
    block by block (memory: one block, whatever the part and the scenes); the blocks
    here one after another, or as tasks in ``workers`` local processes or on Dask."""
    from tqdm.auto import tqdm

    from alos2fm.parallel import execute

    scenes = [_opened(folder, task.region) for folder in task.scenes]
    scenes = [scene for scene in scenes if scene.meets(task.region.window_bounds(task.part))]
    record = json.loads(json.dumps(_part_record(task, scenes)))
    if all(p.is_file() for p in task.files.values()):
        try:
            if json.loads(task.done.read_text()) == record:
                return task.files
        except (OSError, ValueError):
            pass
    task.done.unlink(missing_ok=True)
    blocks = [
        FuseBlock(
            task.region,
            block,
            tuple(s.folder for s in scenes if s.meets(task.region.window_bounds(block))),
            len(task.names),
        )
        for block in blocks_in(task.part)
    ]
    args = (task.folder, task.region, task.part, task.names, task.colours, task.tags, task.suffix)
    with (
        tqdm(
            total=len(blocks),
            desc="fusing",
            unit="block",
            disable=True if not task.progress else None,
        ) as bar,
        FusedWriter(*args) as writer,
    ):
        for block, labels, percent in execute(fuse_one_block, blocks, workers, dask_scheduler):
            writer.write(block, labels, percent)
            bar.update()
    with atomic_path(task.done) as tmp:
        tmp.write_text(json.dumps(record, indent=1) + "\n")
    return writer.finished()


def _part_record(task: FusePart, scenes: Sequence[StoredScene]) -> dict[str, Any]:
    """What a part's files are fused from: kept beside them, compared on a rerun."""
    return {
        "format": FUSE_FORMAT,
        "grid": asdict(task.region),
        "part": list(task.part),
        "scenes": {scene.folder.name: scene.identity for scene in scenes},
        "classes": list(task.names),
        "colours": [list(c) for c in task.colours],
        "tags": task.tags,
        "fuse": {"block": mosaic.BLOCK, "warp_tile": mosaic.WARP_TILE},
    }


def fuse_one_block(task: FuseBlock) -> tuple[Window, np.ndarray, np.ndarray]:
    """(block, classes, confidence percent) of one block (see ``mosaic.fuse_block``)."""
    scenes = [_opened(folder, task.region) for folder in task.scenes]
    return task.block, *fuse_block(task.region, task.block, scenes, task.classes)


def _opened(folder: Path, region: RegionGrid) -> StoredScene:
    """The stored scene, opened once per process for the blocks it serves. Keyed by its
    ``done.json`` too: a scene mapped again (a rerun, a long-lived Dask worker) replaces
    its folder, and its new files are opened, not the old ones still mapped here."""
    from alos2fm.identity import file_stamp

    return _open_scene(folder, region, file_stamp(folder / "done.json"))


@functools.lru_cache(maxsize=64)
def _open_scene(folder: Path, region: RegionGrid, stamp: tuple[int, ...]) -> StoredScene:
    return StoredScene.open(folder, region)


class FusedWriter:
    """The map and confidence files of one part of the region (a whole region, or one file
    tile of it), written block by block into tiled GeoTIFFs and made COGs on exit."""

    def __init__(
        self,
        folder: Path,
        region: RegionGrid,
        part: Window,
        names: Sequence[str],
        colours: Sequence[Sequence[int]],
        tags: dict[str, str],
        suffix: str = "",
    ):
        self.folder, self.part, self.suffix = folder, part, suffix
        self.region, self.names, self.colours, self.tags = region, names, colours, tags
        self._files: dict[str, Any] = {}
        self._done: dict[str, Path] = {}

    def __enter__(self) -> FusedWriter:
        import rasterio
        from affine import Affine

        profile = {
            "driver": "GTiff",
            "dtype": "uint8",
            "count": 1,
            "height": self.part.height,
            "width": self.part.width,
            "crs": self.region.crs,
            "transform": self.region.transform * Affine.translation(self.part.col, self.part.row),
            "nodata": NODATA,
            "tiled": True,
            "blockxsize": TIFF_BLOCK,
            "blockysize": TIFF_BLOCK,
            # Read once, by the COG copy that compresses for good: the cheapest codec that
            # still keeps a national part's scratch file small.
            "compress": "zstd",
            "zstd_level": 1,
            "BIGTIFF": "IF_SAFER",
        }
        for kind in ("map", "confidence"):
            self._files[kind] = rasterio.open(self._tiled(kind), "w", **profile)
        classes = self._files["map"]
        classes.write_colormap(
            1, {k: (*c[:3], 255) for k, c in enumerate(self.colours)} | {NODATA: (0, 0, 0, 0)}
        )
        classes.update_tags(**{f"CLASS_{k}": n for k, n in enumerate(self.names)}, **self.tags)
        classes.set_band_description(1, "land-cover class")
        confidence = self._files["confidence"]
        confidence.update_tags(**self.tags)
        confidence.set_band_description(1, "fused probability of the class, percent")
        return self

    def write(self, block: Window, labels: np.ndarray, percent: np.ndarray) -> None:
        from rasterio.windows import Window as RioWindow

        window = RioWindow(
            block.col - self.part.col, block.row - self.part.row, block.width, block.height
        )
        self._files["map"].write(labels, 1, window=window)
        self._files["confidence"].write(percent, 1, window=window)

    def __exit__(self, kind: type[BaseException] | None, *exc: object) -> None:
        from alos2fm.evaluation.predict import write_cog

        for file in self._files.values():
            file.close()
        try:
            if kind is None:
                for name in self._files:
                    target = self.folder / f"{name}{self.suffix}.tif"
                    write_cog(self._tiled(name), target)
                    self._done[name] = target
        finally:
            for name in self._files:
                self._tiled(name).unlink(missing_ok=True)

    def finished(self) -> dict[str, Path]:
        return dict(self._done)

    def _tiled(self, kind: str) -> Path:
        return self.folder / f".{kind}{self.suffix}.tiled.tif"


def write_vrt(path: Path, tiles: Sequence[Path], region: RegionGrid) -> Path:
    """A VRT mosaicking file tiles of the region (same CRS and pixel), written atomically."""
    import rasterio
    from rasterio.crs import CRS

    sources = []
    colours = ""
    for tile in tiles:
        with rasterio.open(tile) as src:
            col = round((src.transform.c - region.left) / region.resolution)
            row = round((region.top - src.transform.f) / region.resolution)
            size = f'xSize="{src.width}" ySize="{src.height}"'
            sources.append(
                "    <SimpleSource>\n"
                f'      <SourceFilename relativeToVRT="1">{tile.parent.name}/{tile.name}'
                "</SourceFilename>\n"
                "      <SourceBand>1</SourceBand>\n"
                f'      <SrcRect xOff="0" yOff="0" {size}/>\n'
                f'      <DstRect xOff="{col}" yOff="{row}" {size}/>\n'
                "    </SimpleSource>\n"
            )
            if not colours:
                try:
                    table = src.colormap(1)
                except ValueError:  # the confidence has no colour table
                    table = {}
                entries = "".join(
                    f'      <Entry c1="{r}" c2="{g}" c3="{b}" c4="{a}"/>\n'
                    for _, (r, g, b, a) in sorted(table.items())
                )
                colours = (
                    "    <ColorInterp>Palette</ColorInterp>\n"
                    f"    <ColorTable>\n{entries}    </ColorTable>\n"
                    if table
                    else "    <ColorInterp>Gray</ColorInterp>\n"
                )
    # A full 256-entry table would be needed to be exact; GDAL pads a shorter one.
    t = region.transform
    text = (
        f'<VRTDataset rasterXSize="{region.width}" rasterYSize="{region.height}">\n'
        f"  <SRS>{_escape(CRS.from_user_input(region.crs).to_wkt())}</SRS>\n"
        f"  <GeoTransform>{t.c}, {t.a}, {t.b}, {t.f}, {t.d}, {t.e}</GeoTransform>\n"
        '  <VRTRasterBand dataType="Byte" band="1">\n'
        f"    <NoDataValue>{NODATA}</NoDataValue>\n"
        f"{colours}{''.join(sources)}"
        "  </VRTRasterBand>\n"
        "</VRTDataset>\n"
    )
    with atomic_path(path) as tmp:
        tmp.write_text(text)
    return path


def _escape(text: str) -> str:
    from xml.sax.saxutils import escape

    return escape(text)
