"""Spatial train/val/test split by blocks, with a buffer, so that splits never touch.

Neighbouring patches share speckle statistics and land-cover parcels, so a random split
per patch leaks. Here the plane is cut into square blocks; each block (not each patch)
goes to one split, drawn with a seed in the requested proportions; a patch belongs to
the block holding its centre. Patches near a block of another split would still overlap
or touch across the block edge, so every pair of patches from different splits closer
than ``buffer`` is resolved by marking one of them ``"buffer"``: the one of lower
priority (train < val < test), so the evaluation sets stay whole and the loss falls on
train. Afterwards no two patches of different splits overlap, and their gap is at least
``buffer`` along x or y of the frame.

Frames: blocks and distances are measured within one frame.
- ``frame="equal_area"`` (default): one frame for every scene of the dataset, so repeat
  passes, overlapping frames and adjacent paths, whatever their UTM zone or CRS, share
  blocks and the buffer holds across them. Each patch footprint (its four corners, from
  its ``transform``, so rotated grids are fine) is projected to a Lambert azimuthal
  equal-area plane centred on the dataset (centre rounded to whole degrees), and blocks
  start at the dataset's south-west corner there. Equal-area: blocks of one size hold the
  same ground area everywhere. Conflicts are tested on the projected bounding boxes, padded
  for the bowing of projected edges: a box that contains the footprint keeps the
  guarantee. The plane's scale errs by at most ``k = 1 / cos(c / 2)`` at angular distance
  ``c`` from the centre (1.3 % across all of Japan), so datasets reaching farther than 90°
  from their centre are refused. The price of one frame: the plane turns each scene's
  grid a little (up to ~9° at Japan's ends), so boxes are larger than footprints, and the
  scale margins below drop patches whose gap is exactly the buffer in their own grid; a
  16384 px scene with the defaults loses 5-6 % of its patches to the buffer instead of
  3 %, and with ``buffer=0`` patches touching across a block edge can be dropped.
- ``frame="crs"``: patches of all scenes sharing a CRS are one frame, in CRS units
  (metres for UTM), from the patch bounds. Scenes in different CRSs (e.g. UTM zones)
  never conflict, so overlapping scenes of two zones can leak.
- ``frame="scene"``: each scene is its own frame, in pixels. Scenes are split
  independently, so two scenes of the same ground can put it in different splits.

Units: ``block_size`` and ``buffer`` are in pixels for ``equal_area`` and ``scene`` (as
``--block-size`` and ``--buffer``) and in CRS units for ``crs``. In the equal-area frame
a pixel is the largest pixel spacing of the dataset (along rows or columns, times ``k``
so that it bounds the ground spacing), and the buffer is multiplied by ``k`` once more:
patches of different splits are then at least ``buffer`` pixels of the coarsest scene
apart on the ground, in every scene.

Patches without a CRS (pixel-grid products, e.g. PolSARpro T3) cannot be placed in the
equal-area frame: a dataset of only such patches is split in the scene frame with a
warning; a dataset mixing them with georeferenced patches is refused, because the
pixel-grid scenes may cover the same ground as the others and nothing could tell.

Small datasets: a split needs about ``1 / (smallest positive fraction)`` blocks (10 for
80/10/10) for every split to get its share. Without a ``block_size`` (the default) the
block is 4096 px, halved while the patches fill fewer blocks than that, but never to
``2 * buffer + patch side`` or less, where a train block between two evaluation blocks
would lose all its patches to the buffer. A split that still has too few blocks, or a
split with a positive fraction left empty, is logged as a warning that names the
``--block-size`` that would do, or says to add scenes or lower ``--buffer``.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, model_validator

from alos2fm.errors import DataError
from alos2fm.geodesy import equal_area_plane, mean_direction

log = logging.getLogger(__name__)

SplitName = Literal["train", "val", "test"]
PRIORITY: tuple[SplitName, ...] = ("train", "val", "test")  # later = kept in a conflict
BUFFER = "buffer"  # label of patches dropped to keep the splits apart
DEFAULT_BLOCK_SIZE = 4096.0  # px; the largest block tried when none is given
EARTH_RADIUS_M = 6_371_007.2  # authalic radius of WGS 84
LONLAT = "EPSG:4326"


class SplitConfig(BaseModel):
    """Block split settings; ``block_size`` and ``buffer`` are in pixels for the
    ``equal_area`` and ``scene`` frames and in CRS units for ``crs``. ``block_size=None``
    adapts: 4096, halved for small datasets (see the module docstring)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    fractions: dict[SplitName, float] = Field(
        default_factory=lambda: {"train": 0.8, "val": 0.1, "test": 0.1}
    )
    block_size: float | None = Field(default=None, gt=0)
    buffer: float = Field(default=256, ge=0)
    frame: Literal["equal_area", "crs", "scene"] = "equal_area"

    @model_validator(mode="after")
    def _fractions_sum_to_one(self) -> SplitConfig:
        if any(f < 0 for f in self.fractions.values()):
            raise ValueError(f"split fractions must be >= 0, got {self.fractions}")
        if abs(sum(self.fractions.values()) - 1.0) > 1e-6:
            raise ValueError(f"split fractions must sum to 1, got {self.fractions}")
        return self


@dataclass(frozen=True)
class _Frame:
    """Patch boxes in the plane where blocks are cut and distances measured.

    ``rects`` (N, 4) are x0, y0, x1, y1; ``ids[i]`` names the frame of box i (boxes of
    different frames never conflict); ``unit`` is the length of one unit of
    ``block_size`` and ``buffer`` (named ``unit_name``) in frame coordinates;
    ``buffer_scale`` (>= 1) enlarges the buffer where the frame shrinks ground lengths.
    """

    ids: np.ndarray
    rects: np.ndarray
    unit: float
    unit_name: str
    buffer_scale: float
    description: str


def split_patches(
    index: pd.DataFrame,
    config: SplitConfig | None = None,
    *,
    patch_size: int | None = None,
    seed: int = 0,
) -> pd.Series:
    """Split label ("train", "val", "test" or "buffer") of each row of a patch index.

    ``frame="equal_area"`` uses columns ``crs`` and ``transform`` (``scene``, ``row`` and
    ``col`` where no patch has a CRS); ``frame="scene"`` uses ``scene``, ``row``, ``col``;
    both need ``patch_size``. ``frame="crs"`` uses ``crs``, ``minx``, ``miny``, ``maxx``,
    ``maxy``.
    """
    config = config or SplitConfig()
    if index.empty:
        return pd.Series([], index=index.index, name="split", dtype=object)
    frame = _patch_frame(index, config.frame, patch_size)
    block_size = config.block_size or _adapted_block_size(frame, config)
    log.info(
        "split in %s: blocks of %g %s, buffer %g %s",
        frame.description,
        block_size,
        frame.unit_name,
        config.buffer,
        frame.unit_name,
    )
    labels = block_split(
        frame.ids,
        frame.rects,
        block_size=block_size * frame.unit,
        buffer=config.buffer * frame.unit * frame.buffer_scale,
        fractions=config.fractions,
        seed=seed,
    )
    _warn_if_too_few_blocks(frame, config, block_size, labels)
    return pd.Series(labels, index=index.index, name="split")


def _patch_frame(
    index: pd.DataFrame, frame: Literal["equal_area", "crs", "scene"], patch_size: int | None
) -> _Frame:
    """The patches of ``index`` as boxes in the requested frame (see the module docstring)."""
    has_crs = index["crs"].notna() if "crs" in index else pd.Series(False, index=index.index)
    if frame == "crs":
        if not has_crs.all():
            raise DataError(
                "some patches have no CRS, so they cannot be split in map coordinates",
                hint="use the scene frame for pixel-grid products",
            )
        rects = index[["minx", "miny", "maxx", "maxy"]].to_numpy(dtype=np.float64)
        ids = index["crs"].astype(str).to_numpy()
        return _Frame(ids, rects, 1.0, "CRS units", 1.0, "the CRS of each scene")
    if patch_size is None:
        raise ValueError(f"patch_size is needed to split in the {frame} frame")
    if frame == "equal_area":
        if has_crs.all():
            return _equal_area_frame(index, patch_size)
        if has_crs.any():
            scenes = sorted(index.loc[~has_crs, "scene"].astype(str).unique())
            raise DataError(
                f"scenes {', '.join(scenes[:3])}{' ...' if len(scenes) > 3 else ''} have no "
                "CRS while others have one, so no common frame can keep the splits of "
                "scenes covering the same ground apart",
                hint="prepare the pixel-grid scenes as a dataset of their own, or set "
                "split: {frame: scene} in the --config file to split each scene alone",
            )
        log.warning(
            "no patch has a CRS (pixel-grid products): splitting each scene in its own "
            "pixel frame, so scenes covering the same ground can leak across splits"
        )
    x0 = index["col"].to_numpy(dtype=np.float64)
    y0 = index["row"].to_numpy(dtype=np.float64)
    rects = np.column_stack([x0, y0, x0 + patch_size, y0 + patch_size])
    return _Frame(index["scene"].astype(str).to_numpy(), rects, 1.0, "px", 1.0, "scene pixels")


def _equal_area_frame(index: pd.DataFrame, patch_size: int) -> _Frame:
    """Patch boxes in a Lambert azimuthal equal-area plane centred on the dataset, metres."""
    t = np.array(index["transform"].tolist(), dtype=np.float64).reshape(-1, 6)
    a, b, c, d, e, f = (t[:, i : i + 1] for i in range(6))
    # Corners in (col, row) order around the patch, through the full affine (rotations).
    cols = np.array([0.0, 1.0, 1.0, 0.0]) * patch_size
    rows = np.array([0.0, 0.0, 1.0, 1.0]) * patch_size
    xs, ys = c + a * cols + b * rows, f + d * cols + e * rows
    crs = index["crs"].astype(str).to_numpy()

    lon, lat = _reproject(crs, xs.mean(axis=1, keepdims=True), ys.mean(axis=1, keepdims=True))
    lat0, lon0 = mean_direction(lon.ravel(), lat.ravel())
    plane = equal_area_plane(lon.ravel(), lat.ravel())
    px, py = _reproject(crs, xs, ys, plane)

    # sin(c / 2) = rho / 2R in the plane, so the largest scale is 1 / cos(c_max / 2).
    half_angle = np.hypot(px, py).max() / (2 * EARTH_RADIUS_M)
    if half_angle > math.sin(math.pi / 4):
        raise DataError(
            "the scenes reach farther than 90° from their centre, too far for one equal-area plane",
            hint="prepare each region as a dataset of its own",
        )
    scale = 1.0 / math.sqrt(1.0 - half_angle**2)
    along_rows = np.hypot(px[:, 1] - px[:, 0], py[:, 1] - py[:, 0])
    along_cols = np.hypot(px[:, 3] - px[:, 0], py[:, 3] - py[:, 0])
    longest = float(max(along_rows.max(), along_cols.max()))
    # Straight edges bow out of the chord between projected corners by about L^2 / 8R at
    # most (measured: a sixth of that for UTM -> this plane); the pad keeps the box
    # around the footprint.
    pad = longest**2 / (8 * EARTH_RADIUS_M)
    rects = np.column_stack(
        [px.min(axis=1) - pad, py.min(axis=1) - pad, px.max(axis=1) + pad, py.max(axis=1) + pad]
    )
    # Blocks start at the dataset's corner, as they do at a scene's corner in pixels: a
    # small dataset then fills whole blocks instead of slivers of blocks around it.
    rects -= np.tile(rects[:, :2].min(axis=0), 2)
    pixel_m = longest / patch_size * scale  # bounds the ground spacing of every scene
    description = (
        f"a Lambert azimuthal equal-area plane at lat {lat0:g}°, lon {lon0:g}° "
        f"(1 px = {pixel_m:.2f} m)"
    )
    return _Frame(np.zeros(len(index), dtype=np.int64), rects, pixel_m, "px", scale, description)


def _reproject(
    crs: np.ndarray, xs: np.ndarray, ys: np.ndarray, target: str = LONLAT
) -> tuple[np.ndarray, np.ndarray]:
    """Points (N, K) of row i, in CRS ``crs[i]``, in ``target``: one call per source CRS."""
    from rasterio.warp import transform

    out_x, out_y = np.empty_like(xs), np.empty_like(ys)
    for name in np.unique(crs):
        rows = crs == name
        tx, ty = transform(name, target, xs[rows].ravel(), ys[rows].ravel())
        out_x[rows] = np.reshape(tx, (-1, xs.shape[1]))
        out_y[rows] = np.reshape(ty, (-1, ys.shape[1]))
    return out_x, out_y


def _adapted_block_size(frame: _Frame, config: SplitConfig) -> float:
    """The default block size, halved for small datasets (see the module docstring)."""
    size = _fitting_block_size(frame, config, DEFAULT_BLOCK_SIZE)
    if size != DEFAULT_BLOCK_SIZE:
        log.info(
            "split: patches fill %s, fewer than the %d that fractions %s need; "
            "blocks of %g %s instead (%d filled)",
            _blocks_text(frame, DEFAULT_BLOCK_SIZE),
            _blocks_needed(config.fractions),
            _fractions_text(config),
            size,
            frame.unit_name,
            _count_blocks(frame, size),
        )
    return size


def _fitting_block_size(frame: _Frame, config: SplitConfig, start: float) -> float:
    """``start`` halved while patches fill too few blocks and a halved block keeps room
    for a train block between two evaluation blocks (side > 2 * buffer + patch side)."""
    sides = frame.rects[:, 2:] - frame.rects[:, :2]
    smallest = 2 * config.buffer + float(sides.max()) / frame.unit
    needed = _blocks_needed(config.fractions)
    size = start
    while _count_blocks(frame, size) < needed and size / 2 > smallest:
        size /= 2
    return size


def _warn_if_too_few_blocks(
    frame: _Frame, config: SplitConfig, block_size: float, labels: np.ndarray
) -> None:
    """Warn where the patches fill too few blocks or a split with a positive fraction is empty."""
    needed = _blocks_needed(config.fractions)
    empty = [s for s in PRIORITY if config.fractions.get(s, 0.0) > 0 and not (labels == s).any()]
    if _count_blocks(frame, block_size) >= needed and not empty:
        return
    outcome = f"{' and '.join(empty)} got no patch" if empty else "the fractions hold roughly"
    # A block size the user chose may be larger than needed; an adapted one is as small
    # as the buffer allows.
    smaller = (
        block_size if config.block_size is None else _fitting_block_size(frame, config, block_size)
    )
    if smaller < block_size:
        advice = (
            f"set --block-size {smaller:g} ({_count_blocks(frame, smaller)} blocks filled), "
            "or leave it unset"
        )
    elif config.buffer > 0:
        advice = "add scenes, or lower --buffer so that smaller blocks can be used"
    else:
        advice = "add scenes"
    log.warning(
        "split: patches fill only %s, fewer than the %d that fractions %s need, so %s: %s",
        _blocks_text(frame, block_size),
        needed,
        _fractions_text(config),
        outcome,
        advice,
    )


def _blocks_needed(fractions: Mapping[str, float]) -> int:
    """Blocks for every split to get about its share: 1 / smallest positive fraction."""
    smallest = min(f for f in fractions.values() if f > 0)
    return math.ceil(1.0 / smallest - 1e-9)


def _fractions_text(config: SplitConfig) -> str:
    return "/".join(f"{config.fractions.get(s, 0.0):g}" for s in PRIORITY)


def _blocks_text(frame: _Frame, block_size: float) -> str:
    n = _count_blocks(frame, block_size)
    return f"{n} block{'' if n == 1 else 's'} of {block_size:g} {frame.unit_name}"


def _count_blocks(frame: _Frame, block_size: float) -> int:
    """Blocks of ``block_size`` (in the frame's user unit) that hold a patch centre."""
    return len(_block_keys(frame.ids, frame.rects, block_size * frame.unit).drop_duplicates())


def _block_keys(frames: np.ndarray, rects: np.ndarray, block_size: float) -> pd.DataFrame:
    """(frame, bx, by) of the block holding each rectangle's centre."""
    centres = (rects[:, :2] + rects[:, 2:]) / 2
    blocks = np.floor(centres / block_size).astype(np.int64)
    return pd.DataFrame({"frame": frames, "bx": blocks[:, 0], "by": blocks[:, 1]})


def block_split(
    frames: Sequence[Hashable],
    rects: np.ndarray,
    *,
    block_size: float,
    buffer: float,
    fractions: Mapping[str, float],
    seed: int = 0,
) -> np.ndarray:
    """Split labels (object array of str) for rectangles ``rects`` (N, 4) = x0, y0, x1, y1.

    Rectangles are half-open pixel or map boxes; ``frames[i]`` names the coordinate frame
    of rectangle i (only rectangles of one frame can conflict).
    """
    rects = np.asarray(rects, dtype=np.float64).reshape(-1, 4)
    n = len(rects)
    if n == 0:
        return np.array([], dtype=object)
    frame_ids = pd.factorize(pd.Series([str(f) for f in frames]), sort=True)[0]

    # One split per block: blocks in a canonical order, shuffled with the seed, then cut
    # in the requested proportions.
    keys = _block_keys(frame_ids, rects, block_size)
    unique = keys.drop_duplicates().sort_values(["frame", "bx", "by"]).reset_index(drop=True)
    order = np.random.default_rng(seed).permutation(len(unique))
    block_code = np.empty(len(unique), dtype=np.int64)
    block_code[order] = np.repeat(
        np.arange(len(PRIORITY)), _blocks_per_split(len(unique), fractions)
    )
    unique["code"] = block_code
    codes = keys.merge(unique, on=["frame", "bx", "by"], how="left")["code"].to_numpy()

    kept = _drop_conflicts(frame_ids, rects, codes, buffer)
    labels = np.array(PRIORITY, dtype=object)[codes]
    labels[~kept] = BUFFER
    return labels


def _blocks_per_split(n_blocks: int, fractions: Mapping[str, float]) -> list[int]:
    """Block counts per split in ``PRIORITY`` order, by largest remainder.

    Every split with a positive fraction gets at least one block when there are enough
    blocks (taken from the split with most), so val and test are never silently empty.
    """
    wanted = np.array([fractions.get(name, 0.0) for name in PRIORITY]) * n_blocks
    counts = np.floor(wanted).astype(int)
    remainder_order = np.argsort(-(wanted - counts), kind="stable")
    counts[remainder_order[: n_blocks - counts.sum()]] += 1
    for i in reversed(range(len(PRIORITY))):  # test first, then val
        if wanted[i] > 0 and counts[i] == 0 and counts.max() > 1:
            counts[np.argmax(counts)] -= 1
            counts[i] += 1
    return counts.tolist()


def _drop_conflicts(
    frame_ids: np.ndarray, rects: np.ndarray, codes: np.ndarray, buffer: float
) -> np.ndarray:
    """Keep-mask after removing, from each too-close pair of different splits, the lower one.

    Two rectangles conflict when their gap is below ``buffer`` along both axes (with
    ``buffer=0``: when they share area; touching edges is fine). Conflicts are resolved
    from the highest split down (test beats val and train, then val beats train), so a
    patch is never dropped for a neighbour that is dropped.
    """
    kept = np.ones(len(rects), dtype=bool)
    sizes = rects[:, 2:] - rects[:, :2]
    centres = (rects[:, :2] + rects[:, 2:]) / 2
    for frame in np.unique(frame_ids):
        members = np.flatnonzero(frame_ids == frame)
        if len(np.unique(codes[members])) < 2:
            continue
        from scipy.spatial import cKDTree  # 0.3 s to import: only where splits can clash

        # Candidates: centres within (largest size + buffer) in Chebyshev distance.
        reach = sizes[members].max() + buffer
        pairs = cKDTree(centres[members]).query_pairs(reach, p=np.inf, output_type="ndarray")
        a, b = members[pairs[:, 0]], members[pairs[:, 1]]
        gap_x = np.maximum(rects[b, 0] - rects[a, 2], rects[a, 0] - rects[b, 2])
        gap_y = np.maximum(rects[b, 1] - rects[a, 3], rects[a, 1] - rects[b, 3])
        clash = (codes[a] != codes[b]) & (gap_x < buffer) & (gap_y < buffer)
        a, b = a[clash], b[clash]
        high = np.where(codes[a] > codes[b], a, b)
        low = np.where(codes[a] > codes[b], b, a)
        for level in range(len(PRIORITY) - 1, 0, -1):
            resolve = (codes[high] == level) & kept[high] & kept[low]
            kept[low[resolve]] = False
    return kept
