"""prepare, phase 1: check every input before anything is written. Each product opens,
its labels and split map cover it, products agree on bands and quantity."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from alos2fm.data.prepare.config import SPLIT_NAMES, PrepareConfig
from alos2fm.errors import DataError
from alos2fm.products.base import RasterGrid
from alos2fm.products.naming import scene_names

if TYPE_CHECKING:
    from alos2fm.data.labels import LabelSource


@dataclass(frozen=True)
class Scene:
    product: Path
    name: str
    grid: RasterGrid
    bands: tuple[str, ...]
    quantity: str
    labels: LabelSource | None
    splits: LabelSource | None = None


def open_scene(path: Path, cfg: PrepareConfig) -> Any:
    """The product as prepare cuts it: read as ``kind`` (None: detected) with ``nodata``
    masked, chosen bands, multilooked, speckle-filtered."""
    from alos2fm.products import open_product
    from alos2fm.products.processing import process

    return process(
        open_product(path, kind=cfg.kind, bands=cfg.bands, nodata=cfg.nodata),
        bands=cfg.bands,
        looks=cfg.multilook,
        speckle=cfg.speckle,
        filter_size=cfg.filter_size,
    )


def check_inputs(cfg: PrepareConfig) -> list[Scene]:
    """Open every product (and its labels and split map) before any output is written."""
    from alos2fm.products import validate_product

    given = cfg.classes is not None
    nodata = cfg.label_nodata_option
    sources = _label_sources(cfg, cfg.labels, cfg.class_table, given, nodata)
    split_maps = _label_sources(cfg, cfg.split_map, split_map_table(), table_given=True)
    if cfg.split_map and not cfg.labels:
        raise DataError("a split map needs labels", cfg.split_map[0], hint="pass --labels")
    names = scene_names(cfg.products)
    scenes: list[Scene] = []
    for path, name, labels, splits in zip(cfg.products, names, sources, split_maps, strict=True):
        product = open_scene(path, cfg)
        validate_product(product)  # fill values, non-finite, outside physical dB: refused
        for source in (labels, splits):
            if source is not None:
                source.check_scene(product, path)
        if scenes and product.bands != scenes[0].bands:
            raise DataError(
                f"bands {list(product.bands)} differ from {list(scenes[0].bands)} of "
                f"{scenes[0].product}",
                path,
                hint="prepare products with the same polarisations together",
            )
        if scenes and product.quantity != scenes[0].quantity:
            raise DataError(
                f"holds {product.quantity} while {scenes[0].product} holds {scenes[0].quantity}",
                path,
                hint="prepare products of one backscatter quantity together",
            )
        scenes.append(
            Scene(
                Path(path),
                name,
                product.grid,
                tuple(product.bands),
                product.quantity,
                labels,
                splits,
            )
        )
        if hasattr(product, "close"):
            product.close()
    return scenes


def _label_sources(
    cfg: PrepareConfig,
    paths: list[Path],
    classes: Any,
    table_given: bool = True,
    nodata: Any = "file",
) -> list[Any]:
    """The source of ``paths`` for each product: one shared source of rasters or polygons,
    or one pixel-grid image per product (in product order); None without ``paths``. Each
    is checked against its class table (``table_given``: chosen by the user, not the
    default) and the label nodata setting."""
    from alos2fm.data.labels import open_labels

    if not paths:
        return [None] * len(cfg.products)
    options = {
        "field": cfg.label_field,
        "unknown": cfg.unknown_values,
        "nodata": nodata,
        "table_given": table_given,
    }
    if cfg.labels_grid == "pixel":
        if len(paths) != len(cfg.products):
            raise DataError(
                f"{len(paths)} pixel-grid image(s) for {len(cfg.products)} product(s)",
                paths[0],
                hint="give one image per product, in the same order",
            )
        return [open_labels(p, classes, grid="pixel", **options) for p in paths]
    shared = open_labels(paths, classes, **options)
    return [shared] * len(cfg.products)


def split_map_table() -> Any:
    """The class table of split maps: 1 train, 2 val, 3 test (ids 0-2), 0 in no split."""
    from alos2fm.data.classes import ClassTable, TrainingClass

    colours = ((0, 120, 0), (240, 160, 0), (200, 0, 0))
    return ClassTable(
        name="split_map",
        classes=[
            TrainingClass(name=name, color=colour, values=[code + 1])
            for code, (name, colour) in enumerate(zip(SPLIT_NAMES, colours, strict=True))
        ],
        ignore=[0],
    )
