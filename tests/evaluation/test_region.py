"""``alos2fm map``: overlapping scenes fused into one map (seams, disagreement, resume,
UTM zones, file tiles, a two-worker Dask cluster, names for GIS tools)."""

from __future__ import annotations

import functools
import json
import shutil
from pathlib import Path
from xml.etree import ElementTree

import numpy as np
import pytest
import rasterio
import torch
from affine import Affine

from alos2fm.evaluation import predict
from alos2fm.evaluation.region import map_config, mosaic, run_map, writing
from alos2fm.evaluation.region.scenes import _cached_model, scene_model
from tests.evaluation.test_predict import MEAN_DB, Pointwise, _meta, _scene
from tests.products.rasters import write_tif

PIXEL = 3.0
LEFT, TOP = 380001.0, 3950001.0  # on whole pixels from the CRS origin, as the map grid is


def _crop(folder: Path, name: str, db: np.ndarray, col0: int, col1: int) -> Path:
    """Columns col0..col1 of ``db`` as a GeoTIFF on the scene's own 3 m UTM grid."""
    transform = Affine(PIXEL, 0, LEFT + col0 * PIXEL, 0, -PIXEL, TOP)
    return write_tif(folder / f"{name}.tif", db[:, :, col0:col1], transform=transform)


@pytest.fixture
def pointwise(monkeypatch, tmp_path):
    """Maps made by a model without spatial context: overlapping scenes agree exactly."""
    meta = _meta(patch_size=32)

    def load(checkpoint, device="cpu"):
        return Pointwise().eval(), meta

    monkeypatch.setattr(predict, "load_segmenter_for_inference", load)
    _cached_model.cache_clear()
    checkpoint = tmp_path / "pointwise.ckpt"
    checkpoint.write_bytes(b"model 1")
    yield checkpoint
    _cached_model.cache_clear()


def _map(products, checkpoint, out, **options):
    options = {"crs": "EPSG:32654", "resolution": PIXEL, "progress": False} | options
    return run_map(map_config(products=products, checkpoint=checkpoint, out=out, **options))


def _read(path: Path) -> tuple[np.ndarray, Affine]:
    with rasterio.open(path) as src:
        return src.read(1), src.transform


def test_two_scenes_that_agree_leave_no_seam(pointwise, tmp_path):
    db = _scene(64, 160)
    whole = _crop(tmp_path, "whole", db, 0, 160)
    left, right = _crop(tmp_path, "a", db, 0, 100), _crop(tmp_path, "b", db, 60, 160)
    fused = _map([left, right], pointwise, tmp_path / "fused")
    single = _map([whole], pointwise, tmp_path / "single")
    got, transform = _read(fused.map_path)
    want, want_transform = _read(single.map_path)
    assert transform == want_transform and got.shape == want.shape == (64, 160)
    np.testing.assert_array_equal(got, want)  # no class changes where one scene ends
    np.testing.assert_array_equal(_read(fused.confidence_path)[0], _read(single.confidence_path)[0])
    assert (got != 255).all() and len(np.unique(got)) == 3


def test_a_scene_on_the_region_pixels_is_copied_as_the_warp_would_place_it(
    pointwise, tmp_path, monkeypatch
):
    """Where a scene's pixels are the region's (same CRS, size and edges), its stored
    probabilities are sliced instead of warped: the same map, at no warp's cost."""
    from alos2fm.evaluation.region import mosaic

    product = _crop(tmp_path, "a", _scene(48, 64), 0, 64)
    offsets, pixel_offset = [], mosaic._pixel_offset

    def recorded(grid, region):
        offsets.append(pixel_offset(grid, region))
        return offsets[-1]

    monkeypatch.setattr(mosaic, "_pixel_offset", recorded)
    sliced = _map([product], pointwise, tmp_path / "sliced")
    assert offsets == [(0, 0)]
    monkeypatch.setattr(mosaic, "_pixel_offset", lambda grid, region: None)
    warped = _map([product], pointwise, tmp_path / "warped")
    np.testing.assert_array_equal(_read(sliced.map_path)[0], _read(warped.map_path)[0])
    np.testing.assert_array_equal(
        _read(sliced.confidence_path)[0], _read(warped.confidence_path)[0]
    )


def test_where_scenes_disagree_the_confidence_says_so(pointwise, tmp_path):
    db = np.full((1, 48, 160), MEAN_DB + 2.0, np.float32)  # class 2 (rice), confidently
    other = db.copy()
    other[:, :, 60:100] = MEAN_DB - 2.0  # the second pass sees class 0 in the overlap
    a = _crop(tmp_path, "a", db, 0, 100)
    b = _crop(tmp_path, "b", other, 60, 160)
    result = _map([a, b], pointwise, tmp_path / "out")
    confidence, _ = _read(result.confidence_path)
    alone = np.r_[confidence[:, :50].ravel(), confidence[:, 110:].ravel()]
    overlap = confidence[:, 75:85].ravel()
    assert alone.min() > 60 and overlap.max() < alone.min() - 20


def test_scenes_in_two_utm_zones_share_the_equal_area_grid(pointwise, tmp_path):
    db = _scene(40, 40)
    # Both sides of the 138° E meridian between zones 53 and 54, near 35.7° N.
    a = write_tif(
        tmp_path / "z53.tif", db, crs="EPSG:32653", transform=Affine(30, 0, 771000, 0, -30, 3955000)
    )
    b = write_tif(tmp_path / "z54.tif", db, crs="EPSG:32654",
                  transform=Affine(30, 0, 229000, 0, -30, 3955000))  # fmt: skip
    result = run_map(
        map_config(products=[a, b], checkpoint=pointwise, out=tmp_path / "out", progress=False)
    )
    with rasterio.open(result.map_path) as src:
        assert "laea" in src.crs.to_proj4() and "lon_0=138" in src.crs.to_proj4()
        assert src.res[0] == pytest.approx(30, rel=0.01)
        classes = src.read(1)
        tags = src.tags()
    assert (classes != 255).sum() > 1.5 * 40 * 40  # both scenes, side by side
    scenes = json.loads(tags["SOURCE_SCENES"])
    assert [s["scene"] for s in scenes] == ["z53", "z54"]
    assert tags["CHECKPOINT"].startswith("pointwise.ckpt sha256:")


def test_the_block_layout_leaves_no_trace_where_warped_scenes_disagree(
    pointwise, tmp_path, monkeypatch
):
    """Blocks bound the memory, nothing else: three overlapping scenes that disagree, none
    on the region's pixels (two UTM zones onto the equal-area plane, one rotated), fused in
    one block or in blocks of 256 px (file tiles), give the same classes and confidences.
    Warp tiles of 256 px (1024 in use) make a small region show it."""
    import math

    monkeypatch.setattr(mosaic, "WARP_TILE", 256)

    from rasterio.warp import transform

    db = _scene(240, 400)
    a = write_tif(tmp_path / "a.tif", db, transform=Affine(PIXEL, 0, LEFT, 0, -PIXEL, TOP))
    angle = math.radians(12)
    cos, sin = PIXEL * math.cos(angle), PIXEL * math.sin(angle)
    rotated = Affine(cos, sin, LEFT + 200 * PIXEL, sin, -cos, TOP - 60 * PIXEL)
    # The backscatter upside down about the mean: the classes swap where scenes overlap.
    b = write_tif(tmp_path / "b.tif", 2 * MEAN_DB - _scene(240, 400, seed=1), transform=rotated)
    (x,), (y,) = transform("EPSG:32654", "EPSG:32653", [LEFT + 100 * PIXEL], [TOP - 120 * PIXEL])
    c = write_tif(tmp_path / "c.tif", 2 * MEAN_DB - db, crs="EPSG:32653",
                  transform=Affine(PIXEL, 0, x, 0, -PIXEL, y))  # fmt: skip

    def fused(out: Path, **options) -> tuple[np.ndarray, np.ndarray]:
        config = map_config(
            products=[a, b, c], checkpoint=pointwise, out=out, progress=False, **options
        )
        result = run_map(config)
        return _read(result.map_path)[0], _read(result.confidence_path)[0]

    classes, confidence = fused(tmp_path / "one")  # one block: the region is under 1024 px
    assert min(classes.shape) > 256 and max(classes.shape) < 1024
    tiled_classes, tiled_confidence = fused(tmp_path / "tiled", file_side=256)
    assert (confidence < 40).sum() > 1000  # the scenes disagree over a wide overlap
    np.testing.assert_array_equal(tiled_classes, classes)
    np.testing.assert_array_equal(tiled_confidence, confidence)


def test_a_rerun_reuses_finished_scenes_by_identity(pointwise, tmp_path):
    db = _scene(48, 120)
    a, b = _crop(tmp_path, "a", db, 0, 70), _crop(tmp_path, "b", db, 50, 120)
    out = tmp_path / "out"
    first = _map([a, b], pointwise, out)
    assert [s.status for s in first.scenes] == ["mapped", "mapped"]
    # A run killed while mapping b: its folder half-built, a's finished.
    shutil.rmtree(out / "scenes" / "b")
    (out / "scenes" / ".b.partial").mkdir()
    again = _map([a, b], pointwise, out)
    assert [s.status for s in again.scenes] == ["reused", "mapped"]
    np.testing.assert_array_equal(_read(again.map_path)[0], _read(first.map_path)[0])
    pointwise.write_bytes(b"model 2")  # another checkpoint: nothing is reused
    assert [s.status for s in _map([a, b], pointwise, out).scenes] == ["mapped", "mapped"]
    csv = (out / "scenes.csv").read_text().splitlines()
    assert csv[0].startswith("name,product,status,seconds,valid_pixels,mean_confidence")


def test_a_large_region_is_written_as_file_tiles_under_a_vrt(pointwise, tmp_path, monkeypatch):
    monkeypatch.setattr(mosaic, "WARP_TILE", 256)  # file tiles of 256 px on a small region
    db = _scene(300, 600)
    product = _crop(tmp_path, "big", db, 0, 600)
    whole = _map([product], pointwise, tmp_path / "whole")
    tiled = _map([product], pointwise, tmp_path / "tiled", file_side=256)
    assert (
        tiled.map_path.name == "map.vrt"
        and len(list((tmp_path / "tiled/map_tiles").iterdir())) == 6
    )
    got, transform = _read(tiled.map_path)
    want, want_transform = _read(whole.map_path)
    assert transform == want_transform
    np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(_read(tiled.confidence_path)[0], _read(whole.confidence_path)[0])
    # File tiles fused in two local processes, as the scenes were mapped: the same files.
    pooled = _map([product], pointwise, tmp_path / "pooled", file_side=256, workers=2)
    for kind in ("map", "confidence"):
        pooled_tiles = sorted((tmp_path / f"pooled/{kind}_tiles").iterdir())
        assert [p.name for p in pooled_tiles] == sorted(
            p.name for p in (tmp_path / f"tiled/{kind}_tiles").iterdir()
        )
        for path in pooled_tiles:
            np.testing.assert_array_equal(
                _read(path)[0], _read(tmp_path / f"tiled/{kind}_tiles" / path.name)[0]
            )
    np.testing.assert_array_equal(_read(pooled.map_path)[0], want)


def test_a_one_file_region_fused_in_two_processes_block_by_block_is_the_same(
    pointwise, tmp_path, monkeypatch
):
    """A region in one file sends its blocks to the workers and writes them as they come,
    in any order: the same files as blocks fused one after another here."""
    monkeypatch.setattr(mosaic, "WARP_TILE", 256)
    monkeypatch.setattr(writing, "blocks_in", functools.partial(mosaic.blocks_in, side=256))
    written = []
    write = writing.FusedWriter.write
    monkeypatch.setattr(
        writing.FusedWriter,
        "write",
        lambda self, block, *a: written.append(block) or write(self, block, *a),
    )
    db = _scene(300, 600)
    a, b = _crop(tmp_path, "a", db, 0, 400), _crop(tmp_path, "b", db, 200, 600)
    here = _map([a, b], pointwise, tmp_path / "here")
    assert len(written) == 3  # blocks of 256 px (the last column takes the remainder)
    pooled = _map([a, b], pointwise, tmp_path / "pooled", workers=2)
    assert pooled.map_path.name == "map.tif" and len(written) == 6
    assert sorted(written[3:]) == sorted(written[:3])
    np.testing.assert_array_equal(_read(pooled.map_path)[0], _read(here.map_path)[0])
    np.testing.assert_array_equal(_read(pooled.confidence_path)[0], _read(here.confidence_path)[0])


class Killed(Exception):
    pass


def test_a_killed_fuse_redoes_only_the_file_tiles_in_flight(pointwise, tmp_path, monkeypatch):
    """A national region fuses for hours: a killed run, run again, reuses every file tile
    it finished from the same scenes, and the map is that of a run never killed."""
    monkeypatch.setattr(mosaic, "WARP_TILE", 256)  # six file tiles of 256 px
    db = _scene(300, 600)
    a, b = _crop(tmp_path, "a", db, 0, 400), _crop(tmp_path, "b", db, 200, 600)
    clean = _map([a, b], pointwise, tmp_path / "clean", file_side=256)
    fused, kill = [], [True]
    enter = writing.FusedWriter.__enter__

    def counted(self):
        if len(fused) == 4 and kill:
            kill.pop()
            raise Killed  # while fusing the fifth tile
        fused.append(self.suffix)
        return enter(self)

    monkeypatch.setattr(writing.FusedWriter, "__enter__", counted)
    out = tmp_path / "out"
    with pytest.raises(Killed):
        _map([a, b], pointwise, out, file_side=256)
    assert len(fused) == 4
    again = _map([a, b], pointwise, out, file_side=256)
    assert len(fused) == 6  # the two tiles not finished, no more
    for kind in ("map", "confidence"):
        for path in sorted((tmp_path / f"clean/{kind}_tiles").iterdir()):
            np.testing.assert_array_equal(
                _read(out / f"{kind}_tiles" / path.name)[0], _read(path)[0]
            )
    np.testing.assert_array_equal(_read(again.map_path)[0], _read(clean.map_path)[0])
    assert not (out / ".mosaic.partial").exists()
    # Other scenes (here: another checkpoint): every tile is fused again.
    pointwise.write_bytes(b"model 2")
    _map([a, b], pointwise, out, file_side=256)
    assert len(fused) == 12


def test_class_names_reach_gis_tools(pointwise, tmp_path):
    product = _crop(tmp_path, "a", _scene(40, 40), 0, 40)
    result = _map([product], pointwise, tmp_path / "out")
    aux = ElementTree.parse(str(result.map_path) + ".aux.xml")
    assert [c.text for c in aux.iter("Category")] == ["water", "urban", "rice"]
    style = ElementTree.parse(result.map_path.with_suffix(".qml"))
    entries = [(e.get("value"), e.get("label")) for e in style.iter("paletteEntry")]
    assert entries == [("0", "water"), ("1", "urban"), ("2", "rice")]
    with rasterio.open(result.map_path) as src:  # the colour table GIS tools paint with
        assert src.colormap(1)[2][:3] == tuple(_meta().class_colours[2])
    assert (tmp_path / "out" / "map.png").exists()
    config = (tmp_path / "out" / "config.yaml").read_text()
    assert "grid:" in config and "resolution: 3.0" in config


def test_two_dask_workers_make_the_same_map(tmp_path):
    from distributed import LocalCluster

    from alos2fm.evaluation.predict import save_inference_checkpoint
    from alos2fm.models.segmenter import build_segmenter
    from tests.tiny_models import TINY_SEGMENTER

    torch.manual_seed(0)
    checkpoint = save_inference_checkpoint(
        build_segmenter(TINY_SEGMENTER), _meta(model=TINY_SEGMENTER), tmp_path / "best.ckpt"
    )
    db = _scene(64, 96)
    products = [_crop(tmp_path, "a", db, 0, 64), _crop(tmp_path, "b", db, 32, 96)]
    here = _map(products, checkpoint, tmp_path / "here")
    with LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
    ) as cluster:
        there = _map(
            products, checkpoint, tmp_path / "there", dask_scheduler=cluster.scheduler_address
        )
    np.testing.assert_array_equal(_read(there.map_path)[0], _read(here.map_path)[0])
    assert [s.status for s in there.scenes] == ["mapped", "mapped"]


def test_a_rotated_scene_lands_north_up_with_its_footprint(pointwise, tmp_path):
    """CEOS L1.5 products are on grids rotated along track: the map is north-up, and
    every pixel of the rotated footprint is mapped, nothing outside it."""
    import math

    angle = math.radians(12)
    cos, sin = PIXEL * math.cos(angle), PIXEL * math.sin(angle)
    rotated = Affine(cos, sin, LEFT, sin, -cos, TOP)  # columns run 12° north of east
    product = write_tif(tmp_path / "rotated.tif", _scene(60, 80), transform=rotated)
    result = _map([product], pointwise, tmp_path / "out")
    classes, transform = _read(result.map_path)
    assert transform.b == 0 and transform.d == 0  # north-up
    mapped = (classes != 255).sum()
    assert abs(mapped - 60 * 80) < 0.02 * 60 * 80  # the footprint's area, to its edge pixels
    assert classes.shape[0] > 60 and classes.shape[1] > 80  # the rotated box is larger


def test_map_refuses_a_product_of_other_bands_before_writing(pointwise, tmp_path):
    two_bands = write_tif(tmp_path / "hh_hv.tif", np.concatenate([_scene(40, 40)] * 2))
    with pytest.raises(Exception, match="band") as refused:
        _map([two_bands], pointwise, tmp_path / "out")
    from alos2fm.errors import Alos2fmError

    assert isinstance(refused.value, Alos2fmError)
    assert not (tmp_path / "out").exists()


def test_a_file_side_off_the_warp_tiles_is_refused(tmp_path):
    """File edges must fall on the 1024-px tiles the fuse warps by, or they could change
    pixels; the setting says so before anything runs."""
    options = {"products": [tmp_path / "a.tif"], "checkpoint": tmp_path / "c.ckpt"}
    with pytest.raises(Exception, match="file_side.*multiple of 1024"):
        map_config(**options, out=tmp_path / "out", file_side=1536)
    assert map_config(**options, out=tmp_path / "out", file_side=2048).file_side == 2048


def test_a_checkpoint_replaced_at_the_same_path_is_loaded_again(tmp_path, monkeypatch) -> None:
    """A long-lived process (a Dask worker) must not map with a model it loaded earlier
    from a file that has since been replaced."""
    loads = []
    monkeypatch.setattr(
        predict, "load_segmenter_for_inference", lambda path, device: loads.append(path) or loads
    )
    _cached_model.cache_clear()
    checkpoint = tmp_path / "model.ckpt"
    checkpoint.write_bytes(b"model 1")
    scene_model(str(checkpoint), "cpu")
    scene_model(str(checkpoint), "cpu")
    assert len(loads) == 1  # loaded once per process
    checkpoint.write_bytes(b"model 2 (retrained)")
    scene_model(str(checkpoint), "cpu")
    assert len(loads) == 2
    _cached_model.cache_clear()
