"""Quicklooks: a class map as a PNG anyone can open, its legend beside it.

Drawn with Pillow, not matplotlib: a quicklook is the decimated map's own pixels (one PNG
pixel per map pixel, not resampled again by a figure canvas) plus swatches and names, and
importing and rendering a matplotlib figure cost 0.8 s of CPU, more than fusing a small
region's scenes. Class colours are RGB 0-255 triples, as in the label tables; no data
(255) is drawn black.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from alos2fm.atomic import atomic_path

NODATA = 255
MAX_SIDE = 1024  # a quicklook's longest map side, in pixels
Colour = Sequence[int]

_PAD = 12  # pixels around the map, the title and the legend
_FONT_PX = 14
_BACKGROUND, _INK, _OUTLINE = (255, 255, 255), (20, 20, 20), (77, 77, 77)


def colourise(classes: np.ndarray, colours: Sequence[Colour]) -> np.ndarray:
    """Class indices (H, W) -> RGB uint8 (H, W, 3); 255 (no data) and unknown ids black."""
    table = np.zeros((256, 3), dtype=np.uint8)
    table[: len(colours)] = np.asarray(colours, dtype=np.uint8).reshape(-1, 3)
    table[NODATA] = 0
    return table[np.asarray(classes, dtype=np.uint8)]


def write_class_quicklook(
    classes: np.ndarray,
    class_names: Sequence[str],
    colours: Sequence[Colour],
    out_png: str | Path,
    title: str | None = None,
) -> Path:
    """A PNG of ``classes`` (H, W), at one pixel per class pixel, under ``title`` and with
    a legend (a swatch and the name of each class) on its right; written atomically."""
    from PIL import Image, ImageDraw, ImageFont

    font = ImageFont.load_default(size=_FONT_PX)
    height, width = np.shape(classes)
    line = _FONT_PX + 8  # one legend row
    text_width = max((font.getlength(name) for name in class_names), default=0)
    legend_width = _FONT_PX + 8 + math.ceil(text_width)
    top = _PAD + (line + _PAD // 2 if title else 0)
    canvas = Image.new(
        "RGB",
        (width + legend_width + 3 * _PAD, top + max(height, line * len(class_names)) + _PAD),
        _BACKGROUND,
    )
    canvas.paste(Image.fromarray(colourise(classes, colours)), (_PAD, top))
    draw = ImageDraw.Draw(canvas)
    if title:
        draw.text((_PAD + width / 2, _PAD), title, fill=_INK, font=font, anchor="mt")
    left = width + 2 * _PAD
    for i, (name, colour) in enumerate(zip(class_names, colours, strict=True)):
        y = top + i * line
        swatch = (left, y + 2, left + _FONT_PX, y + 2 + _FONT_PX)
        draw.rectangle(swatch, fill=tuple(int(c) for c in colour), outline=_OUTLINE)
        draw.text((left + _FONT_PX + 8, y + 2 + _FONT_PX / 2), name, fill=_INK, font=font,
                  anchor="lm")  # fmt: skip
    out_png = Path(out_png)
    out_png.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(out_png) as tmp:
        canvas.save(tmp, format="PNG")
    return out_png


def write_map_quicklook(
    map_path: Path, class_names: Sequence[str], colours: Sequence[Colour]
) -> Path:
    """``<map>.png`` beside a class map GeoTIFF (or VRT): the map decimated to at most
    ``MAX_SIDE`` pixels (nearest class, from its overviews where it has them)."""
    import rasterio
    from rasterio.enums import Resampling

    with rasterio.open(map_path) as src:
        scale = max(1.0, max(src.height, src.width) / MAX_SIDE)
        shape = (max(1, math.floor(src.height / scale)), max(1, math.floor(src.width / scale)))
        classes = src.read(1, out_shape=shape, resampling=Resampling.nearest)
    return write_class_quicklook(
        classes, class_names, colours, map_path.with_suffix(".png"), title=map_path.stem
    )
