"""Land-cover labels: JAXA HRLULC class tables, remap tables, labels on a patch's grid.

HRLULC maps are uint8 GeoTIFFs in EPSG:4326 (0 = no data / sea); SAR patches are on a UTM
grid. ``LabelMap.read_on_grid`` reads only the part of the map under one patch and
reprojects it onto the patch's pixels, so memory never depends on the map's size.

Class ids go through a remap table (YAML in ``alos2fm/configs/landcover``) that merges
source classes into contiguous training ids 0..n-1; ``IGNORE_INDEX`` (255) marks no data,
excluded classes and pixels outside the map; every stage imports it from here.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import numpy as np
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from alos2fm.errors import DataError
from alos2fm.products.base import RasterGrid, Window

IGNORE_INDEX = 255
NODATA = 0  # HRLULC: no data / sea
DEFAULT_REMAP = "hrlulc_v23.12_to_9"
REMAP_DIR = "configs/landcover"

Resampling = Literal["nearest", "mode"]


@dataclass(frozen=True)
class LandCoverClass:
    id: int
    name: str
    color: tuple[int, int, int]  # RGB, 0-255


def _classes(*rows: tuple[int, str, tuple[int, int, int]]) -> tuple[LandCoverClass, ...]:
    return tuple(LandCoverClass(*row) for row in rows)


# Colours are those embedded in the v23.12 GeoTIFF (ALOS2_FACTS.md §1). v21.11 is assumed
# to use the same colours for its 12 classes. v25.04 class 15 has no documented colour:
# slate grey (112, 128, 144) is our choice, between water and bare land and unlike any other.
_V21_11 = _classes(
    (1, "Water bodies", (0, 0, 100)),
    (2, "Built-up", (255, 0, 0)),
    (3, "Paddy field", (0, 128, 255)),
    (4, "Cropland", (255, 193, 191)),
    (5, "Grassland", (255, 255, 0)),
    (6, "Deciduous broad-leaf forest", (128, 255, 0)),
    (7, "Deciduous needle-leaf forest", (0, 255, 128)),
    (8, "Evergreen broad-leaf forest", (86, 172, 0)),
    (9, "Evergreen needle-leaf forest", (0, 172, 86)),
    (10, "Bare land", (128, 100, 0)),
    (11, "Bamboo forest", (217, 240, 5)),
    (12, "Solar panel", (161, 41, 119)),
)
_V23_12 = _V21_11 + _classes((13, "Wetland", (0, 150, 160)), (14, "Greenhouse", (255, 255, 255)))
_V25_04 = _V23_12 + _classes((15, "Rock reef / Tidal flat", (112, 128, 144)))

HRLULC_CLASSES: dict[str, tuple[LandCoverClass, ...]] = {
    "21.11": _V21_11,
    "23.12": _V23_12,
    "25.04": _V25_04,
}


def hrlulc_classes(version: str = "23.12") -> tuple[LandCoverClass, ...]:
    """The class table (ids 1.., names, RGB colours) of one HRLULC version."""
    if version not in HRLULC_CLASSES:
        raise DataError(
            f"unknown HRLULC version {version!r}",
            hint=f"use one of {', '.join(HRLULC_CLASSES)}",
        )
    return HRLULC_CLASSES[version]


# --- remap tables ---------------------------------------------------------------------------


class TargetClass(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    id: int = Field(ge=0, lt=IGNORE_INDEX)
    name: str
    color: tuple[int, int, int]
    source_ids: list[int] = Field(min_length=1)

    @model_validator(mode="after")
    def _color_in_range(self) -> TargetClass:
        if not all(0 <= c <= 255 for c in self.color):
            raise ValueError(f"class {self.name!r}: colour {self.color} is not RGB 0-255")
        return self


class Remap(BaseModel):
    """A source -> target class table, validated against the source HRLULC version.

    Every source class must be listed exactly once, under a target class or under
    ``exclude``; target ids must be 0..n-1.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    source_version: Literal["21.11", "23.12", "25.04"]
    ignore_index: Literal[255] = IGNORE_INDEX
    classes: list[TargetClass] = Field(min_length=1)
    exclude: list[int] = Field(default_factory=list)

    @model_validator(mode="after")
    def _complete_and_consistent(self) -> Remap:
        ids = [c.id for c in self.classes]
        if sorted(ids) != list(range(len(ids))):
            raise ValueError(f"target ids must be 0..{len(ids) - 1} each once, got {ids}")
        known = {c.id for c in hrlulc_classes(self.source_version)}
        listed = [s for c in self.classes for s in c.source_ids] + list(self.exclude)
        unknown = sorted(set(listed) - known)
        if unknown:
            raise ValueError(
                f"source ids {unknown} are not HRLULC v{self.source_version} classes "
                f"(valid: {min(known)}-{max(known)})"
            )
        twice = sorted({s for s in listed if listed.count(s) > 1})
        if twice:
            raise ValueError(f"source ids {twice} are listed more than once")
        missing = sorted(known - set(listed))
        if missing:
            raise ValueError(f"source ids {missing} are neither mapped nor excluded")
        return self

    @property
    def names(self) -> dict[int, str]:
        return {c.id: c.name for c in sorted(self.classes, key=lambda c: c.id)}

    @property
    def colors(self) -> dict[int, tuple[int, int, int]]:
        return {c.id: c.color for c in sorted(self.classes, key=lambda c: c.id)}

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def lut(self) -> np.ndarray:
        """uint8 (256,): source value -> target id; no data, excluded, unknown -> 255."""
        table = np.full(256, IGNORE_INDEX, dtype=np.uint8)
        for target in self.classes:
            table[target.source_ids] = target.id
        return table


def available_remaps() -> list[str]:
    """Names of the remap tables shipped with the package."""
    folder = resources.files("alos2fm").joinpath(REMAP_DIR)
    return sorted(p.name[: -len(".yaml")] for p in folder.iterdir() if p.name.startswith("hrlulc"))


def load_remap(name_or_path: str | Path = DEFAULT_REMAP) -> Remap:
    """Load and validate a remap table: a shipped name (see ``available_remaps``) or a file."""
    if str(name_or_path) in available_remaps():
        path = Path(str(resources.files("alos2fm").joinpath(REMAP_DIR, f"{name_or_path}.yaml")))
    else:
        path = Path(name_or_path)
        if not path.is_file():
            raise DataError(
                "no such remap table",
                path,
                hint=f"use one of {', '.join(available_remaps())} or a YAML file path",
            )
    try:
        raw = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as err:
        raise DataError(f"cannot read remap table: {err}", path) from err
    try:
        return Remap.model_validate(raw)
    except ValidationError as err:
        problems = "; ".join(
            f"{'.'.join(map(str, e['loc'])) or 'table'}: {e['msg']}" for e in err.errors()
        )
        raise DataError(
            f"invalid remap table: {problems}", path, hint="see hrlulc_v23.12_to_9.yaml"
        ) from None


def identity_remap(version: str = "23.12") -> Remap:
    """Keep every HRLULC class, shifted to ids 0..n-1 (source id k -> k - 1)."""
    return Remap(
        name=f"hrlulc_v{version}_identity",
        source_version=version,
        classes=[
            TargetClass(id=c.id - 1, name=c.name, color=c.color, source_ids=[c.id])
            for c in hrlulc_classes(version)
        ],
    )


# --- label rasters on a patch grid ----------------------------------------------------------


@dataclass(frozen=True)
class _Tile:
    """What we need to know about one label raster, read once at construction."""

    path: Path
    crs: Any  # rasterio CRS
    transform: Any  # affine.Affine
    width: int
    height: int


class LabelMap:
    """One or several land-cover rasters (e.g. HRLULC 1° tiles) read onto SAR patch grids.

    ``remap`` is a ``Remap``, a shipped table name or a YAML path; its ``source_version``
    says which HRLULC version the rasters are (``identity_remap(version)`` keeps every
    class). Rasters must be single-band uint8 with a CRS; values outside the version's
    class table raise ``DataError``.
    Safe to pickle (open file handles are not carried to worker processes).
    """

    # Source pixels read beyond the patch footprint on each side: covers the pixel that
    # contains a border target centre (nearest) and the full footprint (mode).
    MARGIN_PX = 2

    def __init__(
        self,
        paths: str | Path | Sequence[str | Path],
        remap: Remap | str | Path = DEFAULT_REMAP,
    ):
        self.remap = remap if isinstance(remap, Remap) else load_remap(remap)
        paths = [paths] if isinstance(paths, (str, Path)) else list(paths)
        if not paths:
            raise DataError("no land-cover map given")
        self.tiles = [self._describe(Path(p)) for p in paths]
        self._handles: dict[Path, Any] = {}

        # Reprojection runs on codes where 0 means no data, so that GDAL's nodata handling
        # ignores it; excluded classes get their own code, so that `mode` counts them as a
        # class (a mostly-excluded footprint stays excluded) and they become 255 after.
        remap = self.remap
        lut = remap.lut()
        known = np.zeros(256, dtype=bool)
        known[[c.id for c in hrlulc_classes(remap.source_version)]] = True
        known[NODATA] = True
        self._known = known
        excluded_code = remap.num_classes + 1
        self._encode = np.where(lut == IGNORE_INDEX, excluded_code, lut.astype(np.int16) + 1)
        self._encode = self._encode.astype(np.uint8)
        self._encode[NODATA] = 0
        self._decode = np.full(256, IGNORE_INDEX, dtype=np.uint8)
        self._decode[1:excluded_code] = np.arange(remap.num_classes, dtype=np.uint8)

    @property
    def paths(self) -> list[Path]:
        return [t.path for t in self.tiles]

    @staticmethod
    def _describe(path: Path) -> _Tile:
        import rasterio
        from rasterio.errors import RasterioIOError

        try:
            with rasterio.open(path) as src:
                if src.count != 1 or src.dtypes[0] != "uint8":
                    raise DataError(
                        f"land-cover map must be one uint8 band, found {src.count} band(s) "
                        f"of {src.dtypes[0]}",
                        path,
                        hint="pass an HRLULC class-id GeoTIFF",
                    )
                if src.crs is None:
                    raise DataError(
                        "land-cover map has no CRS", path, hint="HRLULC tiles are EPSG:4326"
                    )
                return _Tile(path, src.crs, src.transform, src.width, src.height)
        except RasterioIOError as err:
            raise DataError(f"cannot open land-cover map: {err}", path) from err

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_handles"] = {}
        return state

    def close(self) -> None:
        for handle in self._handles.values():
            handle.close()
        self._handles.clear()

    def __enter__(self) -> LabelMap:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _open(self, tile: _Tile) -> Any:
        import rasterio

        if tile.path not in self._handles:
            self._handles[tile.path] = rasterio.open(tile.path)
        return self._handles[tile.path]

    # --- checks before a scene is processed -------------------------------------------------

    def check_scene(self, grid: RasterGrid, scene: str | Path) -> None:
        """Raise ``DataError`` naming the scene and the map(s) if labels cannot go on ``grid``.

        Checks that the scene has a map CRS, that its bounds fall on Earth once converted to
        lon/lat (a wrong UTM zone or transform shows here), and that a map overlaps it.
        """
        from rasterio.warp import transform_bounds

        maps = ", ".join(str(p) for p in self.paths)
        if grid.crs is None:
            raise DataError(
                "scene has no map CRS (slant range or pixel grid), so land-cover labels "
                "cannot be placed on it",
                scene,
                hint="use a geocoded product (L1.5 G / L2.1) or omit --landcover",
            )
        west, south, east, north = transform_bounds(
            grid.crs, "EPSG:4326", *grid.window_bounds(Window(0, 0, grid.height, grid.width))
        )
        on_earth = -180 <= west <= east <= 180 and -90 <= south <= north <= 90
        if not (np.isfinite([west, south, east, north]).all() and on_earth):
            raise DataError(
                f"scene CRS and transform give lon/lat bounds "
                f"({west:.3f}, {south:.3f}, {east:.3f}, {north:.3f}) that are not on Earth",
                scene,
                hint="check the product's CRS (e.g. its UTM zone) and geotransform",
            )
        if not self.overlaps(grid):
            raise DataError(
                f"scene does not overlap the land-cover map(s) {maps} "
                f"(scene covers lon {west:.3f}..{east:.3f}, lat {south:.3f}..{north:.3f})",
                scene,
                hint="pass the HRLULC tiles that cover the scene, or omit --landcover",
            )

    def overlaps(self, grid: RasterGrid, window: Window | None = None) -> bool:
        """Whether any map covers part of ``window`` (default: the whole grid)."""
        window = window or Window(0, 0, grid.height, grid.width)
        return any(self._source_window(t, grid, window, margin=0) for t in self.tiles)

    # --- reading ----------------------------------------------------------------------------

    def read_on_grid(
        self, grid: RasterGrid, window: Window, resampling: Resampling = "nearest"
    ) -> np.ndarray:
        """Labels for one patch: uint8 (window.height, window.width), 255 = ignore.

        ``nearest`` takes the map pixel containing each patch pixel's centre; ``mode`` the
        most common class in its footprint (use it when patch pixels are coarser than the
        map's). Classes are remapped before resampling, so ``mode`` votes on target classes.
        GDAL's warper approximates the transformation: positions are exact to a few
        hundredths of a map pixel over a 64 km patch, far less over a 768 m one.
        """
        from rasterio.crs import CRS
        from rasterio.enums import Resampling as GdalResampling
        from rasterio.warp import reproject

        if resampling not in ("nearest", "mode"):
            raise DataError(f"unknown label resampling {resampling!r}", hint="nearest or mode")
        if grid.crs is None:
            raise DataError("cannot place labels on a grid without a CRS")
        codes = np.zeros((window.height, window.width), dtype=np.uint8)
        for tile in self.tiles:
            src_window = self._source_window(tile, grid, window)
            if src_window is None:
                continue
            src = self._open(tile)
            source = src.read(1, window=src_window)
            unknown = ~self._known[source]
            if unknown.any():
                raise DataError(
                    f"map holds class ids {np.unique(source[unknown])[:5].tolist()} that "
                    f"HRLULC v{self.remap.source_version} does not define",
                    tile.path,
                    hint="use the remap table of the map's HRLULC version",
                )
            tile_codes = np.zeros_like(codes)
            reproject(
                self._encode[source],
                tile_codes,
                src_transform=src.window_transform(src_window),
                src_crs=tile.crs,
                src_nodata=0,
                dst_transform=grid.window_transform(window),
                dst_crs=CRS.from_user_input(grid.crs),
                dst_nodata=0,
                resampling=getattr(GdalResampling, resampling),
            )
            # Tiles do not overlap in HRLULC; where others might, the first one listed wins.
            empty = codes == 0
            codes[empty] = tile_codes[empty]
        return self._decode[codes]

    def _source_window(
        self, tile: _Tile, grid: RasterGrid, window: Window, margin: int = MARGIN_PX
    ) -> Any:
        """The rasterio window of ``tile`` under ``window`` of ``grid`` (+ margin), or None."""
        from rasterio.warp import transform_bounds
        from rasterio.windows import Window as RioWindow

        minx, miny, maxx, maxy = transform_bounds(
            grid.crs, tile.crs, *grid.window_bounds(window), densify_pts=21
        )
        inverse = ~tile.transform
        corners = [inverse * (x, y) for x in (minx, maxx) for y in (miny, maxy)]
        cols, rows = zip(*corners, strict=True)
        col0 = max(int(np.floor(min(cols))) - margin, 0)
        row0 = max(int(np.floor(min(rows))) - margin, 0)
        col1 = min(int(np.ceil(max(cols))) + margin, tile.width)
        row1 = min(int(np.ceil(max(rows))) + margin, tile.height)
        if col1 <= col0 or row1 <= row0:
            return None
        return RioWindow(col0, row0, col1 - col0, row1 - row0)
