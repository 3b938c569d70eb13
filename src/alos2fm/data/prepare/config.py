"""prepare's settings: ``PrepareConfig`` (validated, frozen, written back resolved as
``<out>/config.yaml``) and ``prepare_config`` (defaults <- YAML file <- command line)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import AliasChoices, BaseModel, ConfigDict, Field

from alos2fm.data.balance import BalanceConfig
from alos2fm.data.classes import DEFAULT_CLASSES
from alos2fm.data.split import SplitConfig
from alos2fm.errors import DataError, validation_problems

SPLIT_NAMES = ("train", "val", "test")


class PrepareConfig(BaseModel):
    """Everything ``run_prepare`` needs; written back, resolved, as ``<out>/config.yaml``."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    products: list[Path] = Field(min_length=1)
    out: Path
    # Label sources (see alos2fm.data.labels): class rasters, one pixel-grid image per
    # product (labels_grid="pixel"), or one polygon layer (label_field = its class
    # attribute). `landcover` and `remap` are the names of earlier releases.
    labels: list[Path] = Field(
        default_factory=list, validation_alias=AliasChoices("labels", "landcover")
    )
    # None: the default table (HRLULC), used only where the labels plausibly are HRLULC.
    classes: str | None = Field(None, validation_alias=AliasChoices("classes", "remap"))
    # The label files' own nodata tag ("file"), none ("none": the tag is wrong, the value
    # is read through the class table) or another value that marks no data.
    label_nodata: float | Literal["file", "none"] = "file"
    labels_grid: Literal["map", "pixel"] = "map"
    label_field: str | None = None
    unknown_values: Literal["error", "ignore"] = "error"
    label_resampling: Literal["nearest", "mode"] = "nearest"
    patch_size: int = Field(256, gt=0)
    stride: int = Field(256, gt=0)
    max_nodata: float = Field(0.1, ge=0.0, le=1.0)
    # How products are read: a reader instead of detection (e.g. "power" for a linear σ0
    # GeoTIFF, "dn" for a renamed DN product) and a value that marks no data in a dB or
    # power raster whose file does not tag it (e.g. -9999).
    kind: Literal["ceos", "dn", "mosaic", "t3", "db", "power"] | None = None
    nodata: float | None = None
    # Pre-processing of every product, window by window (None / (1, 1) = as read).
    bands: list[str] | None = None
    multilook: tuple[int, int] = (1, 1)
    speckle: Literal["boxcar", "lee"] | None = None
    filter_size: int = Field(5, ge=3)
    balance: BalanceConfig = Field(default_factory=BalanceConfig)
    split: SplitConfig = Field(default_factory=SplitConfig)
    # A split decided by the user instead of the block split: rasters of split codes
    # (1 train, 2 val, 3 test, 0 none), on the same grid as the labels (`labels_grid`),
    # one per product for pixel-grid maps. Each window gives one patch per split whose
    # labelled pixels it holds, carrying only that split's labels.
    split_map: list[Path] = Field(default_factory=list)
    # Also cut a last row and column of windows moved back to end on the scene's edge
    # (as full-scene prediction tiles it), so that no labelled edge pixel is left out.
    cover_edges: bool = False
    seed: int = 0
    workers: int = Field(1, ge=1)
    dask_scheduler: str | None = None
    # Windows per task; default (None): whole shards of 256, up to four in scenes that
    # give six tasks or more (tasks.default_task_size).
    patches_per_task: int | None = Field(None, gt=0)
    batch_patches: int = Field(32, gt=0)
    gdal_cache_mb: int = Field(64, ge=8)
    progress: bool = True
    # Write into a non-empty folder that is not an alos2fm dataset (its files are kept).
    overwrite: bool = False

    @property
    def class_table(self) -> str:
        """The class table's name or file (the default one when none was chosen)."""
        return self.classes or DEFAULT_CLASSES

    @property
    def label_nodata_option(self) -> float | str | None:
        """``label_nodata`` as the label readers take it (None: the tag is ignored)."""
        return None if self.label_nodata == "none" else self.label_nodata


def prepare_config(
    config_file: str | Path | None = None,
    *,
    balance_preset: str | None = None,
    caps: Sequence[str] | None = None,
    exclude: Sequence[str] | None = None,
    block_size: float | None = None,
    buffer: float | None = None,
    split_fractions: str | None = None,
    **options: Any,
) -> PrepareConfig:
    """Defaults <- YAML ``config_file`` <- command-line values (None = not given).

    ``caps`` items are ``N`` or ``median`` (a cap for every class) or ``CLASS=N``;
    ``exclude`` items and ``CLASS`` are class ids or names of the remap's classes;
    ``split_fractions`` is ``"train,val,test"``; ``balance_preset`` replaces the file's
    ``balance`` section before caps and exclusions apply.
    """
    from pydantic import ValidationError

    from alos2fm.data.balance import load_balance_preset

    source = Path(config_file) if config_file is not None else None
    raw: dict[str, Any] = {}
    if source is not None:
        try:
            raw = yaml.safe_load(source.read_text()) or {}
        except (OSError, yaml.YAMLError) as err:
            raise DataError(f"cannot read config: {err}", source) from err
        if not isinstance(raw, dict):
            raise DataError("config must be a YAML mapping", source)
    raw.update({key: value for key, value in options.items() if value is not None})

    balance = dict(raw.get("balance") or {})
    if balance_preset is not None:
        balance = load_balance_preset(balance_preset).model_dump(mode="json")
    for item in caps or []:
        key, _, value = item.rpartition("=")
        limit = value if value == "median" else _integer(value, "--cap")
        if key:
            balance["caps"] = {**balance.get("caps", {}), _class_key(key): limit}
        else:
            balance["default_cap"] = limit
    if exclude:
        balance["exclude"] = [_class_key(key) for key in exclude]
    raw["balance"] = balance

    split = dict(raw.get("split") or {})
    if block_size is not None:
        split["block_size"] = block_size
    if buffer is not None:
        split["buffer"] = buffer
    if split_fractions is not None:
        parts = split_fractions.split(",")
        if len(parts) != 3:
            raise DataError(f"--split-fractions needs train,val,test, got {split_fractions!r}")
        split["fractions"] = dict(zip(("train", "val", "test"), parts, strict=True))
    raw["split"] = split

    try:
        return PrepareConfig.model_validate(raw)
    except ValidationError as err:
        problems = validation_problems(err, "config")
        raise DataError(f"invalid prepare settings: {problems}", source) from None


def _class_key(text: str) -> int | str:
    return int(text) if text.strip().isdigit() else text.strip()


def _integer(text: str, option: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise DataError(f"{option} expects a whole number or 'median', got {text!r}") from None


def progress_disabled(cfg: PrepareConfig) -> bool | None:
    """tqdm's ``disable``: off when asked, else None = shown only on a terminal."""
    return True if not cfg.progress else None
