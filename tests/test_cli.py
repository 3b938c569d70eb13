"""The command line as users meet it: exit codes, one-line errors, outputs (synth, prepare)."""

from __future__ import annotations

import shutil
import sys

import numpy as np
import pandas as pd
import pytest
import rasterio

from alos2fm import cli
from alos2fm.data.synth import PRODUCT_NAME, write_synthetic_scene
from tests.products.rasters import write_tif


def run_cli(monkeypatch, *args: str) -> int:
    """Run ``alos2fm ARGS`` in this process through the console entry point."""
    monkeypatch.setattr(sys, "argv", ["alos2fm", *args])
    try:
        cli.main()
    except SystemExit as exit_:
        return int(exit_.code or 0)
    return 0


@pytest.fixture(scope="module")
def small_scene(tmp_path_factory):
    return write_synthetic_scene(tmp_path_factory.mktemp("scene"), size=384, seed=2)


# --- synth --------------------------------------------------------------------------------


def test_synth_writes_a_named_product_and_its_map(monkeypatch, capfd, tmp_path):
    code = run_cli(monkeypatch, "synth", "--out", str(tmp_path), "--size", "64", "--seed", "4")
    out = capfd.readouterr().out
    assert code == 0
    assert (tmp_path / PRODUCT_NAME).exists() and (tmp_path / "README.txt").exists()
    assert "SYNTHETIC" in out and PRODUCT_NAME in out
    with rasterio.open(tmp_path / PRODUCT_NAME) as src:
        assert src.shape == (64, 64) and src.tags()["SEED"] == "4"


# --- prepare ------------------------------------------------------------------------------


def test_prepare_turns_the_synthetic_scene_into_a_dataset(
    monkeypatch, capfd, small_scene, tmp_path
):
    out = tmp_path / "ds"
    code = run_cli(
        monkeypatch,
        "prepare",
        str(small_scene.product),
        "--out",
        str(out),
        "--landcover",
        str(small_scene.landcover),
        "--patch-size",
        "64",
        "--stride",
        "64",
        "--max-nodata",
        "0.2",
        "--block-size",
        "128",
        "--buffer",
        "0",
        "--split-fractions",
        "0.6,0.2,0.2",
        "--cap",
        "Forest=3",
        "--seed",
        "1",
        "--no-progress",
    )
    captured = capfd.readouterr()
    assert code == 0, captured.err
    index = pd.read_parquet(out / "index.parquet")
    for column in ("patch_id", "row", "col", "split", "category", "minx", "miny", "maxx", "maxy"):
        assert column in index.columns
    assert (index["category"] == 5).sum() <= 3  # Forest capped
    assert (out / "stats.json").exists() and (out / "images").is_dir()
    assert f"{len(index)} patches" in captured.out
    config = (out / "config.yaml").read_text()
    assert "patch_size: 64" in config and "block_size: 128.0" in config


def _zero_scene(folder):
    path = folder / PRODUCT_NAME
    return write_tif(path, np.zeros((128, 128), dtype=np.uint16), nodata=0)


def _bad_truncated_ceos(tmp_path, scene, request):
    # The real header set's IMG file holds its 720-byte descriptor but none of its lines.
    source = request.getfixturevalue("ceos_l15_dir")
    for kind in ("VOL", "LED", "TRL", "IMG-HH"):
        for file in source.glob(f"{kind}-*"):
            shutil.copy(file, tmp_path / file.name)
    (img,) = tmp_path.glob("IMG-HH-*")
    return [str(img)], img, None


def _bad_corrupt_geotiff(tmp_path, scene, request):
    path = tmp_path / PRODUCT_NAME
    path.write_bytes(scene.product.read_bytes()[:4000])  # header and first bytes only
    return [str(path)], path, None


def _bad_non_sar(tmp_path, scene, request):
    # A land-cover map passed as a product: uint8 class ids, not backscatter.
    return [str(scene.landcover)], scene.landcover, None


def _bad_all_nodata(tmp_path, scene, request):
    path = _zero_scene(tmp_path)
    return [str(path)], path, None


def _bad_label_map_elsewhere(tmp_path, scene, request):
    far = write_synthetic_scene(tmp_path / "far", size=64, origin_xy=(600000.0, 4500000.0))
    return [str(scene.product), "--landcover", str(far.landcover)], scene.product, None


def _bad_unwritable_out(tmp_path, scene, request):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    return [str(scene.product)], blocker / "ds", blocker / "ds"


# Each builder returns (product arguments, the path the message must name, --out or None).
BAD_INPUTS = {
    "truncated CEOS file": _bad_truncated_ceos,
    "corrupt GeoTIFF": _bad_corrupt_geotiff,
    "non-SAR file": _bad_non_sar,
    "all-nodata scene": _bad_all_nodata,
    "label map not over the scene": _bad_label_map_elsewhere,
    "unwritable output folder": _bad_unwritable_out,
}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input_gives_one_line_naming_the_file(
    case, monkeypatch, capfd, small_scene, tmp_path, request
):
    args, named, out = BAD_INPUTS[case](tmp_path, small_scene, request)
    out = out or tmp_path / "ds"
    code = run_cli(
        monkeypatch, "prepare", *args, "--out", str(out), "--patch-size", "64", "--no-progress"
    )
    err = capfd.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2
    assert len(lines) == 1, err
    assert lines[0].startswith("alos2fm: error: ") and str(named) in lines[0]
    assert "Traceback" not in err
    assert not out.exists()  # no partial dataset left behind


def test_multilook_option_parses_rows_by_cols():
    from alos2fm.cli import _looks
    from alos2fm.errors import Alos2fmError

    assert _looks("2x3") == (2, 3) and _looks("4") == (4, 4)
    for bad in ("2x", "0x2", "axb", "1x2x3"):
        with pytest.raises(Alos2fmError, match="ROWSxCOLS"):
            _looks(bad)


# --- your own labels ----------------------------------------------------------------------


def _flood_chip(tmp_path):
    """A two-band VV/VH dB chip in EPSG:4326 and its int16 water mask (0, 1, -1 invalid)."""
    from affine import Affine

    transform = Affine(1e-4, 0, 139.5, 0, -1e-4, 35.5)
    db = np.random.default_rng(0).normal(-15, 3, (2, 128, 128)).astype(np.float32)
    chip = write_tif(
        tmp_path / "S1.tif", db, crs="EPSG:4326", transform=transform, descriptions=("VV", "VH")
    )
    mask = np.zeros((128, 128), np.int16)
    mask[:, 50:80] = 1
    mask[:10, :10] = -1
    return chip, write_tif(tmp_path / "mask.tif", mask, crs="EPSG:4326", transform=transform)


def test_info_on_a_label_raster_lists_its_values_and_their_classes(monkeypatch, capfd, tmp_path):
    _, mask = _flood_chip(tmp_path)
    code = run_cli(monkeypatch, "info", str(mask), "--classes", "water_mask")
    out = capfd.readouterr().out
    assert code == 0
    assert "class raster" in out and "EPSG:4326" in out and "int16" in out
    assert "ignored (no data)" in out and "class 1 Water" in out
    assert "3840" in out  # 128 x 30 water pixels
    assert "not calibrated" not in out


def test_prepare_with_own_labels_and_class_table(monkeypatch, capfd, tmp_path):
    chip, mask = _flood_chip(tmp_path)
    out = tmp_path / "ds"
    args = ["prepare", str(chip), "--labels", str(mask), "--classes", "water_mask"]
    args += ["--out", str(out), "--patch-size", "32", "--stride", "32", "--no-progress"]
    code = run_cli(monkeypatch, *args)
    captured = capfd.readouterr()
    assert code == 0, captured.err
    stats = pd.read_json(out / "stats.json", typ="series")
    assert list(stats["class_names"]) == ["Not water", "Water"]
    config = (out / "config.yaml").read_text()
    assert "classes: water_mask" in config and "mask.tif" in config


def test_version_is_printed(monkeypatch, capfd):
    from alos2fm import __version__

    assert run_cli(monkeypatch, "--version") == 0
    assert capfd.readouterr().out.strip() == f"alos2fm {__version__}"


def test_a_preset_typo_is_reported_before_torch_loads(tmp_path):
    """Resolving the config comes first: a typo costs a fraction of a second, not the
    seconds of importing torch."""
    import subprocess

    code = (
        "import sys\n"
        "from alos2fm import cli\n"
        f"sys.argv = ['alos2fm', 'finetune', '--data', {str(tmp_path)!r}, '--out', "
        f"{str(tmp_path / 'run')!r}, '--preset', 'cpu-tiny-sgx']\n"
        "try:\n    cli.main()\nexcept SystemExit as exit_:\n    print(exit_.code)\n"
        "print('torch' in sys.modules)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.stdout.split() == ["2", "False"], done.stderr
    assert "unknown preset 'cpu-tiny-sgx'" in done.stderr and "cpu-tiny-seg" in done.stderr


def test_prepare_says_when_a_split_gets_no_patch(monkeypatch, capfd, small_scene, tmp_path):
    """A small scene with the default 4096 px blocks is one block: all of it goes to train,
    and fine-tuning would stop later for want of a validation split. prepare says so."""
    code = run_cli(
        monkeypatch,
        "prepare",
        str(small_scene.product),
        "--labels",
        str(small_scene.landcover),
        "--out",
        str(tmp_path / "ds"),
        "--patch-size",
        "64",
        "--no-progress",
    )
    err = capfd.readouterr().err
    assert code == 0, err
    assert "warning: the val split has no patch" in err and "--block-size" in err
    assert "warning: the test split has no patch" in err
    assert "no labelled pixel in val" not in err  # one line per empty split, not per class
