"""The default split frame: one equal-area plane for all scenes, whatever their CRS.

Distances are checked independently of the split's own geometry: patch footprints (from
their transforms) are projected by the test into its own equal-area plane centred on the
data, and the exact distance between the footprint quadrilaterals is measured.
"""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd
import pytest
from affine import Affine
from rasterio.warp import transform
from scipy.spatial import cKDTree

from alos2fm.data.split import BUFFER, SplitConfig, split_patches
from alos2fm.errors import DataError

PATCH = 64  # px
COARSE = 25.0  # m, the coarsest pixel of the two scenes below
PLANE = "+proj=laea +lat_0=36.1 +lon_0=137.9 +datum=WGS84 +units=m +no_defs"


def _scene(name: str, crs: str, lon: float, lat: float, pixel: float, n: int, angle: float = 0):
    """Index rows of an n x n grid of patches; top-left corner at (lon, lat), the grid
    rotated by ``angle`` degrees in its CRS. ``transform`` and bounds agree, as
    ``patch_georefs`` writes them."""
    (x0,), (y0,) = transform("EPSG:4326", crs, [lon], [lat])
    grid = Affine.translation(x0, y0) @ Affine.rotation(angle) @ Affine.scale(pixel, -pixel)
    rows = []
    for i in range(n):
        for j in range(n):
            t = grid @ Affine.translation(j * PATCH, i * PATCH)
            xs, ys = _corners(t).T
            rows.append(
                {"patch_id": f"{name}_{i * PATCH}_{j * PATCH}", "scene": name,
                 "row": i * PATCH, "col": j * PATCH, "crs": crs,
                 "transform": (t.a, t.b, t.c, t.d, t.e, t.f),
                 "minx": min(xs), "miny": min(ys), "maxx": max(xs), "maxy": max(ys)}
            )  # fmt: skip
    return pd.DataFrame(rows)


def _corners(t: Affine | tuple[float, ...]) -> np.ndarray:
    """(4, 2) map coordinates of a patch's corners (col, row) = (0, 0), (P, 0), (P, P), (0, P)."""
    a, b, c, d, e, f = tuple(t)[:6]
    cols, rows = np.array([0, PATCH, PATCH, 0]), np.array([0, 0, PATCH, PATCH])
    return np.column_stack([c + a * cols + b * rows, f + d * cols + e * rows])


def _two_zones() -> pd.DataFrame:
    """Two passes over the same ~48 km near 138°E: A on a 25 m grid in UTM 53, B on a
    12.5 m grid in UTM 54, rotated by 12° and shifted by a few km."""
    a = _scene("A", "EPSG:32653", 137.60, 36.30, COARSE, 30)
    b = _scene("B", "EPSG:32654", 137.65, 36.25, COARSE / 2, 60, angle=12.0)
    return pd.concat([a, b], ignore_index=True)


def _footprints(index: pd.DataFrame, plane: str) -> np.ndarray:
    """(N, 4, 2) patch corners in ``plane``, metres."""
    out = np.empty((len(index), 4, 2))
    for crs, group in index.groupby("crs"):
        corners = np.concatenate([_corners(t) for t in group["transform"]])
        xs, ys = transform(crs, plane, corners[:, 0], corners[:, 1])
        out[index.index.get_indexer(group.index)] = np.stack([xs, ys], -1).reshape(-1, 4, 2)
    return out


def _quad_distance(p: np.ndarray, q: np.ndarray) -> np.ndarray:
    """Distance between convex quadrilaterals p[k] and q[k] (M, 4, 2); 0 where they meet."""
    # Separating axes: the quadrilaterals are disjoint iff some edge normal separates them.
    edges = np.concatenate([np.roll(p, -1, 1) - p, np.roll(q, -1, 1) - q], axis=1)
    normals = np.stack([-edges[..., 1], edges[..., 0]], -1)  # (M, 8, 2)
    proj_p = np.einsum("mad,mvd->mav", normals, p)
    proj_q = np.einsum("mad,mvd->mav", normals, q)
    apart = (proj_p.max(-1) < proj_q.min(-1)) | (proj_q.max(-1) < proj_p.min(-1))
    # Disjoint convex polygons: the closest points include a vertex of one of them.
    return np.where(apart.any(-1), np.minimum(_vertex_edge(p, q), _vertex_edge(q, p)), 0.0)


def _vertex_edge(p: np.ndarray, q: np.ndarray) -> np.ndarray:
    """Smallest distance from a vertex of p[k] to an edge of q[k]."""
    start, stop = q[:, None, :, :], np.roll(q, -1, 1)[:, None, :, :]
    vertex = p[:, :, None, :]
    along = stop - start
    t = np.clip(((vertex - start) * along).sum(-1) / (along**2).sum(-1), 0, 1)
    nearest = start + t[..., None] * along
    return np.linalg.norm(vertex - nearest, axis=-1).min(axis=(1, 2))


def _closest_pairs(
    index: pd.DataFrame, split: pd.Series, within: float, plane: str = PLANE
) -> pd.DataFrame:
    """Pairs of kept patches of different splits whose footprints are nearer than ``within``
    metres in ``plane``, with their scenes, splits and distance."""
    kept = np.flatnonzero((split != BUFFER).to_numpy())
    quads = _footprints(index.iloc[kept].reset_index(drop=True), plane)
    reach = within + np.ptp(quads, axis=1).max() * 2  # centre distance bound
    pairs = cKDTree(quads.mean(axis=1)).query_pairs(reach, output_type="ndarray")
    labels = split.to_numpy()[kept]
    pairs = pairs[labels[pairs[:, 0]] != labels[pairs[:, 1]]]
    distance = _quad_distance(quads[pairs[:, 0]], quads[pairs[:, 1]])
    near = distance < within
    i, j = kept[pairs[near, 0]], kept[pairs[near, 1]]
    scenes = index["scene"].to_numpy()
    return pd.DataFrame(
        {"scenes": [f"{a}-{b}" for a, b in zip(scenes[i], scenes[j], strict=True)],
         "splits": [frozenset(s) for s in zip(split.iloc[i], split.iloc[j], strict=True)],
         "distance": distance[near]}
    )  # fmt: skip


def test_default_split_keeps_two_utm_zones_apart_by_the_buffer_in_metres():
    index = _two_zones()
    split = split_patches(index, patch_size=PATCH, seed=0)
    # 256 px of the coarsest scene (25 m) on the ground, across both scenes and zones
    # (the test's plane is within 2e-5 of the ground scale here).
    buffer_m = SplitConfig().buffer * COARSE
    near = _closest_pairs(index, split, buffer_m * (1 - 1e-4))
    assert near.empty, f"{len(near)} pairs of splits closer than {buffer_m:g} m: {near.head()}"
    kept = split[split != BUFFER]
    for scene in ("A", "B"):
        assert set(kept[index["scene"] == scene]) == {"train", "val", "test"}


def test_scene_and_crs_frames_leak_on_the_same_passes():
    """What the default prevents: each pass split alone, or each UTM zone alone, puts the
    same ground in train through one pass and in test through the other."""
    index = _two_zones()
    by_pass = index["scene"].map({"A": "train", "B": "test"})
    assert len(_closest_pairs(index, by_pass, 1e-6)) > 1000  # the passes share ground
    for config in (
        SplitConfig(block_size=1024, frame="scene"),
        SplitConfig(block_size=1024 * COARSE, buffer=256 * COARSE, frame="crs"),
    ):
        split = split_patches(index, config, patch_size=PATCH, seed=0)
        overlapping = _closest_pairs(index, split, 1e-6)  # footprints that share ground
        assert set(overlapping["scenes"]) == {"A-B"}  # within a scene the buffer holds
        assert (overlapping["splits"] == frozenset({"train", "test"})).sum() > 50


def test_equal_area_split_is_independent_of_row_order():
    index = _two_zones()
    first = split_patches(index, patch_size=PATCH, seed=3)
    shuffled = index.sample(frac=1.0, random_state=1)
    pd.testing.assert_series_equal(
        first, split_patches(shuffled, patch_size=PATCH, seed=3).loc[first.index]
    )


def test_buffer_holds_on_the_ground_at_both_ends_of_japan():
    """A dataset from Yonaguni to Hokkaido: the common plane is 1 % off the ground scale at
    its ends, where each pair of passes (UTM 51/52 and 54/55) is measured in a plane of
    its own (ground scale within 1e-5)."""
    ends = {
        "+proj=laea +lat_0=24.7 +lon_0=126 +datum=WGS84 +units=m": [
            _scene("S51", "EPSG:32651", 125.70, 24.90, COARSE, 20),
            _scene("S52", "EPSG:32652", 125.75, 24.85, COARSE, 20, angle=-8.0),
        ],
        "+proj=laea +lat_0=43.8 +lon_0=144 +datum=WGS84 +units=m": [
            _scene("H54", "EPSG:32654", 143.70, 44.00, COARSE, 20),
            _scene("H55", "EPSG:32655", 143.80, 43.95, COARSE / 2, 40, angle=5.0),
        ],
    }
    index = pd.concat([s for scenes in ends.values() for s in scenes], ignore_index=True)
    split = split_patches(index, patch_size=PATCH, seed=0)
    buffer_m = SplitConfig().buffer * COARSE
    for plane, scenes in ends.items():
        here = index["scene"].isin([s["scene"].iloc[0] for s in scenes]).to_numpy()
        local = index[here].reset_index(drop=True)
        local_split = split[here].reset_index(drop=True)
        assert _closest_pairs(local, local_split, buffer_m * (1 - 1e-4), plane).empty
        # Not vacuous: splits meet here, within twice the buffer.
        assert not _closest_pairs(local, local_split, 2 * buffer_m, plane).empty


def test_scenes_around_the_globe_are_refused():
    index = pd.concat(
        [
            _scene("W", "EPSG:32631", 0.0, 0.5, COARSE, 1),
            _scene("E", "EPSG:32647", 100.0, 0.5, COARSE, 1),
            _scene("P", "EPSG:32604", -160.0, 0.5, COARSE, 1),
        ],
        ignore_index=True,
    )
    with pytest.raises(DataError, match="farther than 90°"):
        split_patches(index, patch_size=PATCH)


def _small_scene(crs: str | None) -> pd.DataFrame:
    """A 2048 x 2048 px scene of 256 px patches, as in the issue."""
    rows = []
    for r in range(0, 2048, 256):
        for c in range(0, 2048, 256):
            t = Affine(25.0, 0, 500000 + c * 25.0, 0, -25.0, 4000000 - r * 25.0)
            rows.append({"scene": "S", "row": r, "col": c, "crs": crs, "transform": tuple(t)[:6]})
    return pd.DataFrame(rows)


@pytest.mark.parametrize("crs", ["EPSG:32654", None])
def test_small_scene_gets_val_and_test_from_a_smaller_default_block(crs, caplog):
    caplog.set_level(logging.INFO, logger="alos2fm.data.split")
    split = split_patches(_small_scene(crs), patch_size=256, seed=0)
    assert {"val", "test"} <= set(split)
    assert "patches fill 1 block of 4096 px" in caplog.text
    assert "blocks of 1024 px instead (4 filled)" in caplog.text  # 1024 > 2 * 256 + 256 > 512


def test_explicit_block_too_large_for_the_data_warns_with_one_that_fits(caplog):
    split = split_patches(_small_scene("EPSG:32654"), SplitConfig(block_size=4096), patch_size=256)
    assert set(split) == {"train"}
    assert "val and test got no patch" in caplog.text
    assert "--block-size 1024" in caplog.text


def test_pixel_grid_scenes_fall_back_to_the_scene_frame_and_cannot_mix(caplog):
    pixel_grid = _small_scene(None).assign(scene="T3")
    split_patches(pixel_grid, patch_size=256)
    assert "own pixel frame" in caplog.text
    mixed = pd.concat([_small_scene("EPSG:32654"), pixel_grid], ignore_index=True)
    with pytest.raises(DataError, match="T3 have no CRS"):
        split_patches(mixed, patch_size=256)
