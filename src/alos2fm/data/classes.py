"""Class tables: how the values of a label source become training classes.

One schema for every label source (HRLULC, ESA WorldCover, a water mask, polygons drawn in
QGIS, PolSAR ground truth). A table lists the training classes in id order, each with the
source values that map to it; the values that mean "no data"; and the values of source
classes deliberately left out of training::

    name: water_mask
    classes:                      # index order = training class ids 0, 1, ...
      - {name: Not water, color: [200, 200, 200], values: [0]}
      - {name: Water, color: [0, 60, 200], values: [1]}
    ignore: [-1, 255]             # no data: never a class, never counted
    exclude: []                   # real classes kept out of training (ignored in the loss)

Values are integers (raster pixels, vector attributes) or strings (vector attributes such
as ``"water"``). A value that a map holds but its table does not list is an error naming
the value, unless the caller asks for ``unknown="ignore"``: a silently ignored class is
the worst kind of wrong dataset.

``source_classes`` optionally names the source's own values (``hrlulc_v23.12`` names a
built-in vocabulary, or a mapping ``value: name``); with it, every source value must be
mapped, ignored or excluded exactly once, so a forgotten class fails when the table loads.

Tables ship as YAML in ``alos2fm/configs/classes``; ``load_class_table`` takes a shipped
name or a file path. ``IGNORE_INDEX`` (255) marks ignored pixels in every label array.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from alos2fm.errors import DataError, validation_problems

IGNORE_INDEX = 255
DEFAULT_CLASSES = "hrlulc_v23.12_to_9"
CLASSES_DIR = "configs/classes"

SourceValue = int | str


@dataclass(frozen=True)
class SourceClass:
    id: int
    name: str
    color: tuple[int, int, int]  # RGB, 0-255


def _classes(*rows: tuple[int, str, tuple[int, int, int]]) -> tuple[SourceClass, ...]:
    return tuple(SourceClass(*row) for row in rows)


# JAXA HRLULC class ids (0 = no data / sea). Colours are those embedded in the v23.12
# GeoTIFF (ALOS2_FACTS.md §1). v21.11 is assumed to use the same colours for its 12
# classes. v25.04 class 15 has no documented colour: slate grey (112, 128, 144) is our
# choice, between water and bare land and unlike any other.
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

HRLULC_CLASSES: dict[str, tuple[SourceClass, ...]] = {
    "21.11": _V21_11,
    "23.12": _V23_12,
    "25.04": _V25_04,
}
HRLULC_NODATA = 0


def hrlulc_classes(version: str = "23.12") -> tuple[SourceClass, ...]:
    """The class table (ids 1.., names, RGB colours) of one HRLULC version."""
    if version not in HRLULC_CLASSES:
        raise DataError(
            f"unknown HRLULC version {version!r}",
            hint=f"use one of {', '.join(HRLULC_CLASSES)}",
        )
    return HRLULC_CLASSES[version]


def _builtin_vocabulary(name: str) -> dict[SourceValue, str]:
    """``hrlulc_vVERSION`` -> {value: name}, no data included."""
    version = name.removeprefix("hrlulc_v")
    if not name.startswith("hrlulc_v") or version not in HRLULC_CLASSES:
        known = ", ".join(f"hrlulc_v{v}" for v in HRLULC_CLASSES)
        raise ValueError(f"unknown source vocabulary {name!r} (built in: {known})")
    return {HRLULC_NODATA: "No data / sea"} | {c.id: c.name for c in HRLULC_CLASSES[version]}


# --- the schema -----------------------------------------------------------------------------


class TrainingClass(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(min_length=1)
    color: tuple[int, int, int]
    # Empty only where a shared class scheme has a class that one source version lacks
    # (HRLULC v21.11 has no wetland): the ids stay those of the other versions.
    values: list[SourceValue] = Field(default_factory=list)

    @model_validator(mode="after")
    def _color_in_range(self) -> TrainingClass:
        if not all(0 <= c <= 255 for c in self.color):
            raise ValueError(f"class {self.name!r}: colour {self.color} is not RGB 0-255")
        return self


class ClassTable(BaseModel):
    """Source values -> training classes 0..n-1; see the module docstring for the schema."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = "classes"
    description: str | None = None
    source_classes: str | dict[SourceValue, str] | None = None
    classes: list[TrainingClass] = Field(min_length=1, max_length=IGNORE_INDEX - 1)
    ignore: list[SourceValue] = Field(default_factory=list)
    exclude: list[SourceValue] = Field(default_factory=list)

    @model_validator(mode="after")
    def _consistent(self) -> ClassTable:
        names = [c.name.lower() for c in self.classes]
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise ValueError(f"class names {twice} are used more than once")
        listed = self._listed()
        repeated = sorted({str(v) for v in listed if listed.count(v) > 1})
        if repeated:
            raise ValueError(f"values {repeated} are listed more than once")
        if self.source_classes is not None:
            known = set(self.source_vocabulary())
            unknown = sorted(map(str, set(listed) - known))
            if unknown:
                raise ValueError(f"values {unknown} are not among the source's classes")
            missing = sorted(map(str, known - set(listed)))
            if missing:
                raise ValueError(
                    f"source values {missing} are neither mapped, ignored nor excluded"
                )
        return self

    def _listed(self) -> list[SourceValue]:
        listed = [v for c in self.classes for v in c.values] + self.ignore + self.exclude
        return [attribute_key(v) for v in listed]

    # --- what the rest of the pipeline reads ------------------------------------------------

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def names(self) -> dict[int, str]:
        return {i: c.name for i, c in enumerate(self.classes)}

    @property
    def colors(self) -> dict[int, tuple[int, int, int]]:
        return {i: c.color for i, c in enumerate(self.classes)}

    def source_vocabulary(self) -> dict[SourceValue, str]:
        """Names of the source's values (empty when the table does not say)."""
        if isinstance(self.source_classes, str):
            return _builtin_vocabulary(self.source_classes)
        # Keys as the encoder sees values: "10" (a JSON key) and 10 are the same value.
        return {attribute_key(k): v for k, v in (self.source_classes or {}).items()}

    def value_role(self, value: SourceValue) -> str:
        """What the table does with one source value, in words (for ``info``)."""
        value = attribute_key(value)
        for i, cls in enumerate(self.classes):
            if value in map(attribute_key, cls.values):
                return f"class {i} {cls.name}"
        if value in map(attribute_key, self.ignore):
            return "ignored (no data)"
        if value in map(attribute_key, self.exclude):
            return "excluded"
        return "NOT IN TABLE"

    def class_index(self, value: SourceValue) -> int | None:
        """The training class id of one source value, None if it is not a class's value."""
        value = attribute_key(value)
        for i, cls in enumerate(self.classes):
            if value in map(attribute_key, cls.values):
                return i
        return None

    def documented_nodata(self) -> set[SourceValue]:
        """Ignored values that the table's own source vocabulary names (HRLULC's 0 "No data
        / sea", Flevoland's 0 "Unlabelled"): the table's author declares them no data of
        this very source, as a file's nodata tag would."""
        vocabulary = self.source_vocabulary()
        return {attribute_key(v) for v in self.ignore if attribute_key(v) in vocabulary}

    def encoder(self, unknown: str = "error") -> ValueEncoder:
        return ValueEncoder(self, unknown)

    def training_ids(
        self, values: np.ndarray, nodata: float | None = None, unknown: str = "error"
    ) -> np.ndarray:
        """uint8 training ids of source values on their own grid (255 = ignore)."""
        encoder = self.encoder(unknown)
        return encoder.decode[encoder.encode(values, nodata)]


def identity_remap(version: str = "23.12") -> ClassTable:
    """Keep every HRLULC class of ``version`` as a training class (value k -> id k - 1)."""
    return ClassTable(
        name=f"hrlulc_v{version}_identity",
        source_classes=f"hrlulc_v{version}",
        classes=[
            TrainingClass(name=c.name, color=c.color, values=[c.id])
            for c in hrlulc_classes(version)
        ],
        ignore=[HRLULC_NODATA],
    )


# --- encoding values for resampling ---------------------------------------------------------

# Label resampling (GDAL's warper, rasterisation, pixel-grid reduction) runs on uint8
# codes: 0 = no data (ignored by GDAL's nodata handling and by the `mode` vote),
# 1..n = training class + 1, n + 1 = excluded. Excluded classes keep a code of their own
# so that `mode` counts them (a mostly excluded footprint stays excluded) before they
# become IGNORE_INDEX.
NODATA_CODE = 0


class ValueEncoder:
    """Source values -> resampling codes, and codes -> training ids (255 = ignore)."""

    def __init__(self, table: ClassTable, unknown: str = "error"):
        if unknown not in ("error", "ignore"):
            raise DataError(f"unknown-values policy {unknown!r}", hint="error or ignore")
        self.table = table
        self.unknown = unknown
        self.excluded_code = table.num_classes + 1
        key = attribute_key
        self.codes: dict[SourceValue, int] = {key(v): NODATA_CODE for v in table.ignore}
        self.codes |= {key(v): self.excluded_code for v in table.exclude}
        for i, cls in enumerate(table.classes):
            self.codes |= {key(v): i + 1 for v in cls.values}
        numeric = sorted(v for v in self.codes if isinstance(v, int))
        self._keys = np.array(numeric, dtype=np.int64)
        self._key_codes = np.array([self.codes[v] for v in numeric], dtype=np.uint8)
        self.decode = np.full(256, IGNORE_INDEX, dtype=np.uint8)
        self.decode[1 : self.excluded_code] = np.arange(table.num_classes, dtype=np.uint8)

    def encode(
        self,
        values: np.ndarray,
        nodata: float | None = None,
        source: str | Path | None = None,
    ) -> np.ndarray:
        """uint8 codes of an integer array; ``nodata`` pixels (from the file) -> 0.

        Float arrays (a class raster saved as float32) must hold whole numbers; NaN is no
        data. A ``nodata`` that is not a whole number matches no pixel of whole values."""
        values = np.asarray(values)
        flat = values.ravel()
        missing = nodata_mask(flat, nodata)  # nodata, and NaN in float arrays
        if flat.dtype.kind == "f":
            missing |= ~np.isfinite(flat)
            kept = np.where(missing, 0.0, flat)
            bad = (kept % 1 != 0) | (np.abs(kept) >= 2.0**53)
            if bad.any():
                shown = np.unique(flat[bad]).tolist()
                text = ", ".join(f"{v:g}" for v in shown[:6]) + (" ..." if len(shown) > 6 else "")
                raise DataError(
                    f"label values {text} are not whole numbers",
                    source,
                    hint="a class raster holds whole class values: round it, or save it "
                    "as integers",
                )
            flat = kept.astype(np.int64)
        else:
            flat = flat.astype(np.int64, copy=False)
        codes = np.zeros(flat.shape, dtype=np.uint8)
        found = missing.copy()
        if len(self._keys):
            at = np.clip(np.searchsorted(self._keys, flat), 0, len(self._keys) - 1)
            hit = (self._keys[at] == flat) & ~missing
            codes[hit] = self._key_codes[at[hit]]
            found |= hit
        if not found.all():
            self._unknown(np.unique(flat[~found]).tolist(), source)
        return codes.reshape(values.shape)

    def encode_values(
        self, values: Sequence[SourceValue | None], source: str | Path | None = None
    ) -> np.ndarray:
        """uint8 codes of attribute values (vector features); None -> 0."""
        codes = np.zeros(len(values), dtype=np.uint8)
        unknown = []
        for i, value in enumerate(values):
            if value is None:
                continue
            key = attribute_key(value)
            if key in self.codes:
                codes[i] = self.codes[key]
            else:
                unknown.append(key)
        if unknown:
            self._unknown(sorted(set(unknown), key=str), source)
        return codes

    def _unknown(self, values: list[Any], source: str | Path | None) -> None:
        if self.unknown == "ignore":
            return
        shown = ", ".join(map(str, values[:12])) + (" ..." if len(values) > 12 else "")
        raise DataError(
            f"label values {shown} are not in class table {self.table.name!r}",
            source,
            hint="map them in a class table (--classes FILE.yaml; shipped: "
            f"{', '.join(available_class_tables())}), or pass --unknown-values ignore",
        )


def nodata_mask(values: np.ndarray, nodata: Any) -> np.ndarray:
    """Where ``values`` equal the nodata value: floats compare as floats (a float raster's
    -3.4e38 tag), integers only with a whole nodata within their range."""
    values = np.asarray(values)
    mask = np.zeros(values.shape, dtype=bool)
    if nodata is None or isinstance(nodata, str) or not np.isfinite(float(nodata)):
        return mask
    if values.dtype.kind == "f":
        return values == float(nodata)
    if not is_whole(nodata) or values.dtype.kind not in "iub":
        return mask
    info = np.iinfo(values.dtype) if values.dtype.kind != "b" else np.iinfo(np.uint8)
    value = int(float(nodata))
    if info.min <= value <= info.max:
        mask = values == np.asarray(value).astype(values.dtype)
    return mask


def is_whole(value: Any) -> bool:
    """Whether ``value`` (a nodata tag) is a finite whole number, so it can match pixels."""
    if value is None or isinstance(value, str):
        return False
    try:
        number = float(value)
    except (TypeError, ValueError):
        return False
    return bool(np.isfinite(number) and number.is_integer())


def attribute_key(value: Any) -> SourceValue:
    """Attribute values as table keys: whole numbers, as numbers or as text ("1", 1.0 from
    a GeoJSON or a text column of a shapefile), become ints; other text stays text."""
    if isinstance(value, (bool, np.bool_, int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)) and float(value).is_integer():
        return int(value)
    text = str(value).strip()
    try:
        return int(text)
    except ValueError:
        return text


# --- shipped tables and files -----------------------------------------------------------------


def available_class_tables() -> list[str]:
    """Names of the class tables shipped with the package."""
    folder = resources.files("alos2fm").joinpath(CLASSES_DIR)
    return sorted(
        p.name.removesuffix(".yaml") for p in folder.iterdir() if p.name.endswith(".yaml")
    )


def load_class_table(name_or_path: str | Path | ClassTable = DEFAULT_CLASSES) -> ClassTable:
    """A validated class table: a shipped name (``available_class_tables``) or a YAML file."""
    if isinstance(name_or_path, ClassTable):
        return name_or_path
    if str(name_or_path) in available_class_tables():
        path = Path(str(resources.files("alos2fm").joinpath(CLASSES_DIR, f"{name_or_path}.yaml")))
    else:
        path = Path(name_or_path)
        if not path.is_file():
            raise DataError(
                "no such class table",
                path,
                hint=f"use one of {', '.join(available_class_tables())} or a YAML file path",
            )
    try:
        raw = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as err:
        raise DataError(f"cannot read class table: {err}", path) from err
    if isinstance(raw, Mapping) and "source_version" in raw:
        raise DataError(
            "this is the old remap-table layout (id/source_ids/source_version)",
            path,
            hint="list classes in id order with `values:` and add `source_classes: "
            "hrlulc_vVERSION` and `ignore: [0]`; see hrlulc_v23.12_to_9.yaml",
        )
    try:
        return ClassTable.model_validate(raw)
    except ValidationError as err:
        problems = validation_problems(err, "table")
        raise DataError(
            f"invalid class table: {problems}", path, hint="see hrlulc_v23.12_to_9.yaml"
        ) from None
