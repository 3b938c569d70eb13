"""Fuse the scenes' probabilities onto the region's grid, one block at a time.

For each block of the region grid, every scene whose footprint meets it is reprojected
there (its stored probabilities through GDAL's warper, sliced instead when the scene's
pixels are the region's, and its edge weights; bilinear), and the class probabilities are
averaged with those weights: where scenes overlap, each counts most far from its edges
and the seam disappears; where they disagree, the fused probability of the winning class
(the confidence layer) drops. Never "last wins". A block's memory is classes x block²
floats, whatever the number and size of the scenes.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from alos2fm.evaluation.region.grid import RegionGrid, finest_pixel, scene_bounds
from alos2fm.evaluation.region.scenes import NO_DATA, read_done
from alos2fm.products.base import RasterGrid, Window

BLOCK = 1024  # region pixels fused at a time (a multiple of WARP_TILE; a block at the end
# of a part may be up to a quarter longer)
# Scenes are warped in tiles of this side counted from the region's origin (see _tiles):
# block and file edges lie on their edges, so no layout changes a pixel. Larger tiles, fewer
# GDAL calls: at 256 px, their overhead made the fuse cost as much as the predictions.
WARP_TILE = 1024


@dataclass
class StoredScene:
    """A scene's stored probabilities and weights, and where it lies on the region."""

    folder: Path
    grid: RasterGrid
    coarse: int
    bounds: tuple[float, float, float, float]  # in the region's CRS
    probs: Any  # the Zarr array, opened once for every block
    weights: np.ndarray  # coarse edge weights, memory-mapped
    scale: float  # region pixels per scene pixel
    offset: tuple[int, int] | None  # (row, col) of pixel (0, 0) where its pixels are the region's
    identity: dict[str, Any]  # what its probabilities were computed from (done.json)

    @classmethod
    def open(cls, folder: Path, region: RegionGrid) -> StoredScene:
        import zarr
        from affine import Affine
        from rasterio.crs import CRS

        record = json.loads((folder / "scene.json").read_text())
        grid = RasterGrid(
            record["height"], record["width"], CRS.from_user_input(record["crs"]),
            Affine(*record["transform"]),
        )  # fmt: skip
        return cls(
            folder,
            grid,
            record["coarse"],
            scene_bounds(grid, region.crs),
            zarr.open_array(str(folder / "probs.zarr"), mode="r"),
            np.load(folder / "weights.npy", mmap_mode="r"),
            finest_pixel([grid], region.crs) / region.resolution,
            _pixel_offset(grid, region),
            (read_done(folder) or {}).get("identity", {}),
        )

    def meets(self, bounds: tuple[float, float, float, float]) -> bool:
        left, bottom, right, top = bounds
        return not (
            self.bounds[2] <= left
            or self.bounds[0] >= right
            or self.bounds[3] <= bottom
            or self.bounds[1] >= top
        )

    def source_window(self, bounds: tuple[float, float, float, float], crs: str) -> Window | None:
        """The scene pixels under ``bounds`` (region CRS), with a margin for bilinear."""
        from rasterio.warp import transform_bounds

        left, bottom, right, top = transform_bounds(crs, self.grid.crs, *bounds, densify_pts=5)
        inverse = ~self.grid.transform
        corners = [inverse * (x, y) for x in (left, right) for y in (bottom, top)]
        cols, rows = [c[0] for c in corners], [c[1] for c in corners]
        col0, col1 = (
            max(0, int(np.floor(min(cols))) - 2),
            min(self.grid.width, int(np.ceil(max(cols))) + 2),
        )
        row0, row1 = (
            max(0, int(np.floor(min(rows))) - 2),
            min(self.grid.height, int(np.ceil(max(rows))) + 2),
        )
        if col1 <= col0 or row1 <= row0:
            return None
        return Window(row0, col0, row1 - row0, col1 - col0)


def fuse_block(
    region: RegionGrid, window: Window, scenes: Sequence[StoredScene], classes: int
) -> tuple[np.ndarray, np.ndarray]:
    """(classes uint8, confidence uint8 percent) of one block; 255 where no scene has data."""
    total = np.zeros((classes, window.height, window.width), np.float32)
    weight_sum = np.zeros((window.height, window.width), np.float32)
    for scene in scenes:
        # Only the part of the block the scene covers is read: a scene often meets a
        # block in a corner, and GDAL's cost follows the pixels it writes.
        part = _covered_part(region, window, scene.bounds)
        if part is None:
            continue
        probs = _probabilities_on(scene, region, part)
        # No data is 0 in every class, so the class sum is how much of the pixel the
        # scene's data covers (~254 inside, less at its edge): dividing by it makes the
        # bilinear mean one of valid pixels only, as GDAL's no-data masks would, at less
        # than half their cost.
        covered = probs.sum(axis=0, dtype=np.uint16)
        weights = _warped_weights(scene, region, part)
        weights = np.where(covered > 0, weights, 0.0).astype(np.float32)
        rows = slice(part.row - window.row, part.row - window.row + part.height)
        cols = slice(part.col - window.col, part.col - window.col + part.width)
        _add_weighted(total[:, rows, cols], probs, weights / np.maximum(covered, 1))
        weight_sum[rows, cols] += weights
    labels, best = _top_class(total)
    mapped = weight_sum > 0
    labels[~mapped] = NO_DATA
    percent = np.rint(best / np.maximum(weight_sum, 1e-12) * 100)
    return labels, np.where(mapped, percent, NO_DATA).astype(np.uint8)


def _probabilities_on(scene: StoredScene, region: RegionGrid, part: Window) -> np.ndarray:
    """The scene's stored probabilities (uint8, 0 in every class where it has no data) on
    the region pixels of ``part``: sliced where its pixels are the region's, else warped."""
    from affine import Affine
    from rasterio.warp import Resampling, reproject

    out = np.zeros((scene.probs.shape[0], part.height, part.width), np.uint8)
    if scene.offset is not None:
        row0, col0 = part.row - scene.offset[0], part.col - scene.offset[1]
        rows = slice(max(row0, 0), min(row0 + part.height, scene.grid.height))
        cols = slice(max(col0, 0), min(col0 + part.width, scene.grid.width))
        if rows.start < rows.stop and cols.start < cols.stop:
            stored = scene.probs[:, rows, cols]
            stored[stored == NO_DATA] = 0
            out[:, rows.start - row0 : rows.stop - row0, cols.start - col0 : cols.stop - col0] = (
                stored
            )
        return out
    tiles = [
        (tile, scene.source_window(region.window_bounds(tile), region.crs)) for tile in _tiles(part)
    ]
    windows = [source for _, source in tiles if source is not None]
    if not windows:
        return out
    # Read once for the whole part (decoding Zarr chunks is dear), warped tile by tile.
    row0, col0 = min(w.row for w in windows), min(w.col for w in windows)
    row1 = max(w.row + w.height for w in windows)
    col1 = max(w.col + w.width for w in windows)
    stored = scene.probs[:, row0:row1, col0:col1]
    stored[stored == NO_DATA] = 0
    for tile, source in tiles:
        if source is None:
            continue
        warped = np.zeros((len(out), tile.height, tile.width), np.uint8)
        # Warped as stored (uint8) and without no-data masks: GDAL's fastest bilinear, and
        # bilinear between quantised probabilities loses nothing the quantisation kept.
        reproject(
            np.ascontiguousarray(
                stored[
                    :,
                    source.row - row0 : source.row - row0 + source.height,
                    source.col - col0 : source.col - col0 + source.width,
                ]
            ),
            warped,
            src_transform=scene.grid.transform * Affine.translation(source.col, source.row),
            src_crs=scene.grid.crs,
            dst_transform=region.transform * Affine.translation(tile.col, tile.row),
            dst_crs=region.crs,
            resampling=Resampling.bilinear,
            **_warp_scale(scene),
        )
        out[
            :,
            tile.row - part.row : tile.row - part.row + tile.height,
            tile.col - part.col : tile.col - part.col + tile.width,
        ] = warped
    return out


def _add_weighted(total: np.ndarray, probs: np.ndarray, factor: np.ndarray) -> None:
    """``total += probs * factor`` (C, H, W) += (C, H, W) * (H, W), one class at a time:
    a float temporary of one class instead of all of them, a third less time."""
    product = np.empty(factor.shape, np.float32)
    for k in range(len(probs)):
        np.multiply(probs[k], factor, out=product)
        total[k] += product


def _top_class(total: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(index uint8, value) of the largest class at each pixel of ``total`` (C, H, W),
    the first on ties; a loop over classes, as numpy's argmax over the first axis is slow."""
    labels = np.zeros(total.shape[1:], np.uint8)
    best = total[0].copy()
    for k in range(1, len(total)):
        np.copyto(labels, k, where=total[k] > best)
        np.maximum(best, total[k], out=best)
    return labels, best


def _pixel_offset(grid: RasterGrid, region: RegionGrid) -> tuple[int, int] | None:
    """(row, col) of the scene's first pixel on the region grid when the scene's pixels
    are the region's (same CRS, size, north-up and on its pixel edges), else None."""
    from rasterio.crs import CRS

    t, res = grid.transform, region.resolution
    col, row = (t.c - region.left) / res, (region.top - t.f) / res
    # Off by less than a thousandth of a pixel across the whole scene.
    drift = max(abs(t.a - res), abs(t.b), abs(t.d), abs(t.e + res)) * max(grid.height, grid.width)
    same = (
        drift < 1e-3 * res
        and abs(col - round(col)) < 1e-3
        and abs(row - round(row)) < 1e-3
        and grid.crs == CRS.from_user_input(region.crs)
    )
    return (round(row), round(col)) if same else None


def _covered_part(
    region: RegionGrid, window: Window, bounds: tuple[float, float, float, float]
) -> Window | None:
    """The region pixels of ``window`` inside ``bounds`` (region CRS), one pixel wider."""
    left, bottom, right, top = bounds
    col0 = max(window.col, int(np.floor((left - region.left) / region.resolution)) - 1)
    col1 = min(
        window.col + window.width, int(np.ceil((right - region.left) / region.resolution)) + 1
    )
    row0 = max(window.row, int(np.floor((region.top - top) / region.resolution)) - 1)
    row1 = min(
        window.row + window.height, int(np.ceil((region.top - bottom) / region.resolution)) + 1
    )
    if col1 <= col0 or row1 <= row0:
        return None
    return Window(row0, col0, row1 - row0, col1 - col0)


def _warped_weights(scene: StoredScene, region: RegionGrid, part: Window) -> np.ndarray:
    """The scene's coarse edge weights on the region pixels of ``part`` (bilinear)."""
    from rasterio.warp import transform
    from scipy.ndimage import map_coordinates

    k = scene.coarse
    # Weights ramp over hundreds of pixels: interpolated at the centres of the region's
    # cells of k x k pixels (from its origin) and repeated, at 1/k² of a full warp (the
    # data's own edge comes from its no data). Each centre is transformed exactly, on its
    # own (GDAL's warper would interpolate along the part's rows), so a pixel gets the same
    # weight whichever block it falls in.
    row0, col0 = part.row // k, part.col // k
    rows = np.arange(row0, -(-(part.row + part.height) // k))
    cols = np.arange(col0, -(-(part.col + part.width) // k))
    x, y = np.meshgrid(
        region.left + (cols + 0.5) * k * region.resolution,
        region.top - (rows + 0.5) * k * region.resolution,
    )
    xs, ys = transform(region.crs, scene.grid.crs, x.ravel(), y.ravel())
    col, row = ~scene.grid.transform * (np.asarray(xs), np.asarray(ys))
    # Coarse cells of the scene, counted from their centres: the 2 x 2 around each point.
    u, v = col / k - 0.5, row / k - 0.5
    top, left = max(0, int(np.floor(v.min()))), max(0, int(np.floor(u.min())))
    bottom = min(scene.weights.shape[0], int(np.floor(v.max())) + 2)
    right = min(scene.weights.shape[1], int(np.floor(u.max())) + 2)
    coarse = np.zeros(x.shape, np.float32)
    if top < bottom and left < right:
        # Outside the scene the weight is 0 (as at its edge), hence mode "constant".
        coarse = map_coordinates(
            np.asarray(scene.weights[top:bottom, left:right], np.float32),
            [v - top, u - left],
            order=1,
            mode="constant",
        ).reshape(x.shape)
    full = np.repeat(np.repeat(coarse, k, axis=0), k, axis=1)[
        part.row - row0 * k : part.row - row0 * k + part.height,
        part.col - col0 * k : part.col - col0 * k + part.width,
    ]
    return np.maximum(full, 1e-3)  # every covering scene counts a little, even at its edge


def _tiles(part: Window) -> Iterator[Window]:
    """The region's tiles (WARP_TILE px from its origin) under ``part``, cut to it. Warps
    go tile by tile: GDAL's approximate transformer interpolates the source coordinates
    along each warped row between its ends, so a pixel's value would otherwise depend on
    the block it falls in; block edges lie on tile edges."""
    side = WARP_TILE
    for row in range(part.row // side * side, part.row + part.height, side):
        for col in range(part.col // side * side, part.col + part.width, side):
            top, left = max(row, part.row), max(col, part.col)
            bottom = min(row + side, part.row + part.height)
            right = min(col + side, part.col + part.width)
            yield Window(top, left, bottom - top, right - left)


def _warp_scale(scene: StoredScene) -> dict[str, float]:
    """GDAL's warp options fixing the resampling scale: left to GDAL, it is measured on
    each warp's window (a rotated scene's bounding box looks downsampled), so bilinear
    would mix more or fewer source pixels depending on the block."""
    return {"XSCALE": scene.scale, "YSCALE": scene.scale}


def blocks_in(part: Window, side: int = BLOCK) -> Iterator[Window]:
    """The blocks of a file part of the region, row by row, in region pixels."""
    for row, height in _spans(part.row, part.height, side):
        for col, width in _spans(part.col, part.width, side):
            yield Window(row, col, height, width)


def _spans(start: int, length: int, side: int) -> list[tuple[int, int]]:
    """(start, length) of ``side`` pixels each along ``start``..``start + length``, the
    last one taking in a remainder under a quarter of ``side``: a thin last row or column
    of blocks would cost a warp, a read and a weight warp per scene for few pixels."""
    starts = list(range(start, start + length, side))
    if len(starts) > 1 and start + length - starts[-1] < side // 4:
        starts.pop()
    ends = [*starts[1:], start + length]
    return [(a, b - a) for a, b in zip(starts, ends, strict=True)]
