"""Quicklooks: the map's own pixels in the class colours, a legend, written atomically."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from alos2fm.evaluation.quicklook import colourise, write_class_quicklook, write_map_quicklook

NAMES = ["water", "urban", "rice"]
COLOURS = [(0, 0, 255), (255, 0, 0), (0, 200, 0)]


def test_colourise_maps_ids_through_the_table_and_no_data_to_black() -> None:
    rgb = colourise(np.array([[0, 1], [255, 2]], dtype=np.uint8), COLOURS)
    assert rgb.dtype == np.uint8 and rgb.shape == (2, 2, 3)
    assert rgb[0, 0].tolist() == [0, 0, 255] and rgb[0, 1].tolist() == [255, 0, 0]
    assert rgb[1, 0].tolist() == [0, 0, 0] and rgb[1, 1].tolist() == [0, 200, 0]


def _find(image: np.ndarray, block: np.ndarray) -> tuple[int, int]:
    """(row, col) where ``block`` lies in ``image``, exactly; the only place."""
    h, w = block.shape[:2]
    hits = [
        (r, c)
        for r in range(image.shape[0] - h + 1)
        for c in range(image.shape[1] - w + 1)
        if np.array_equal(image[r : r + h, c : c + w], block)
    ]
    assert len(hits) == 1, hits
    return hits[0]


def test_quicklook_holds_the_map_pixel_for_pixel_and_a_swatch_per_class(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    classes = rng.choice(np.array([0, 1, 2, 255], np.uint8), size=(30, 50))
    out = write_class_quicklook(classes, NAMES, COLOURS, tmp_path / "q.png", title="map")
    assert out == tmp_path / "q.png"
    assert [p.name for p in tmp_path.iterdir()] == ["q.png"]  # no temporary left
    image = np.asarray(Image.open(out).convert("RGB"))
    row, col = _find(image, colourise(classes, COLOURS))  # not resampled, not recoloured
    assert row > 14  # below the title
    right = image[:, col + classes.shape[1] :]
    for colour in COLOURS:  # a filled swatch of each class right of the map
        inside = np.all(right == colour, axis=-1)
        assert inside.sum() >= 100, colour
    assert image.shape[1] > col + classes.shape[1] + 60  # room for the names


def test_map_quicklook_decimates_a_large_map_to_max_side(tmp_path: Path) -> None:
    import rasterio
    from affine import Affine

    classes = np.zeros((300, 2500), np.uint8)
    classes[:, 1250:] = 2
    path = tmp_path / "map.tif"
    profile = dict(driver="GTiff", dtype="uint8", count=1, height=300, width=2500,
                   crs="EPSG:32654", transform=Affine(20, 0, 0, 0, -20, 0), nodata=255)  # fmt: skip
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(classes[None])
    out = write_map_quicklook(path, NAMES, COLOURS)
    assert out == tmp_path / "map.png"
    image = np.asarray(Image.open(out).convert("RGB"))
    # 2500 px wide -> 1024 (scale 2.44): floor(300 / 2.44) = 122 rows; nearest class, so
    # the boundary at column 1250 falls between decimated columns 511 and 512.
    expected = np.zeros((122, 1024), np.uint8)
    expected[:, 512:] = 2
    _find(image, colourise(expected, COLOURS))
