"""Land-cover-stratified patch sampling, as in the paper's ``*_no_forest`` patch lists.

Each candidate patch gets a category from its labels (the dominant class, or the class
at its centre); patches are then drawn per category, with quotas (a wanted count), caps
(a maximum) and excluded categories, so that forest and water do not dominate the
dataset. Everything here is pure numpy/pandas: the caller gathers the categories of all
candidate patches (across scenes) and applies the returned selection.

Selection is reproducible: it depends only on the seed, each patch's id (the index of
the category series) and category, never on the order in which scenes were processed.
Each category draws from its own random stream, so changing one category's cap does not
reshuffle the others.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from importlib import resources
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from alos2fm.atomic import atomic_path
from alos2fm.data.classes import IGNORE_INDEX
from alos2fm.errors import DataError, validation_problems

log = logging.getLogger(__name__)

CategoryRule = Literal["dominant", "centre"]
BALANCE_DIR = "configs/balance"  # shipped balance presets
UNLABELLED = IGNORE_INDEX  # category of a patch without any valid label
Cap = int | Literal["median"]
ClassKey = int | str  # a class id, or a class name of the remap in use


def patch_category(labels: np.ndarray, rule: CategoryRule = "dominant") -> int:
    """Category of one patch from its labels, uint8 (H, W) with 255 = ignore.

    ``dominant``: the most frequent valid class (ties -> the smaller id); ``centre``: the
    class of pixel (H // 2, W // 2). ``UNLABELLED`` (255) when there is no valid label.
    """
    if rule == "centre":
        return int(labels[labels.shape[0] // 2, labels.shape[1] // 2])
    counts = np.bincount(labels.ravel(), minlength=256)
    counts[IGNORE_INDEX] = 0
    return int(np.argmax(counts)) if counts.any() else UNLABELLED


class BalanceConfig(BaseModel):
    """How many patches of each category to keep.

    - ``exclude``: categories dropped entirely (e.g. ``[Forest]`` for ``no_forest``);
    - ``caps``: at most this many patches of a category; ``"median"`` = the median
      count of the other kept categories;
    - ``quotas``: exactly this many when available; a shortfall keeps all there are
      (``on_shortfall: keep``, logged) or stops (``error``);
    - ``default_cap``: a cap for every category not named in ``caps``/``quotas``;
    - ``keep_unlabelled``: keep patches with no valid label (category 255) uncapped.
    Classes are given by id or by name of the remap's target classes.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    category_rule: CategoryRule = "dominant"
    exclude: list[ClassKey] = Field(default_factory=list)
    caps: dict[ClassKey, Cap] = Field(default_factory=dict)
    quotas: dict[ClassKey, int] = Field(default_factory=dict)
    default_cap: Cap | None = None
    keep_unlabelled: bool = False
    on_shortfall: Literal["keep", "error"] = "keep"

    @model_validator(mode="after")
    def _one_rule_per_class(self) -> BalanceConfig:
        counts = [*self.caps.values(), *self.quotas.values()]
        if self.default_cap is not None:
            counts.append(self.default_cap)
        if any(isinstance(n, int) and n < 0 for n in counts):
            raise ValueError("caps and quotas must be >= 0")
        ruled = [*self.exclude, *self.caps, *self.quotas]
        both = {k for k in ruled if ruled.count(k) > 1}
        if both:
            raise ValueError(f"classes {sorted(map(str, both))} have more than one rule")
        return self


def load_balance_preset(name_or_path: str | Path) -> BalanceConfig:
    """A shipped preset (``no_forest``, ``forest_capped``) or a YAML file of the same form."""
    shipped = resources.files("alos2fm").joinpath(BALANCE_DIR, f"balance_{name_or_path}.yaml")
    path = Path(str(shipped)) if shipped.is_file() else Path(name_or_path)
    try:
        raw = yaml.safe_load(path.read_text()) or {}
        return BalanceConfig.model_validate(raw)
    except (OSError, yaml.YAMLError) as err:
        raise DataError(
            f"cannot read balance preset: {err}", path, hint="presets: no_forest, forest_capped"
        ) from err
    except ValidationError as err:
        problems = validation_problems(err)
        raise DataError(f"invalid balance preset: {problems}", path) from None


def balance_targets(
    categories: pd.Series,
    config: BalanceConfig,
    class_names: Mapping[int, str] | None = None,
) -> dict[int, int | None]:
    """Per category present: how many patches to keep at most (None = all, 0 = none)."""
    ids = _ClassIds(class_names or {})
    counts = categories.value_counts().to_dict()
    excluded = {ids(k) for k in config.exclude}
    if not config.keep_unlabelled:
        excluded.add(UNLABELLED)
    rules: dict[int, Cap] = {ids(k): v for k, v in config.caps.items()}
    rules.update({ids(k): v for k, v in config.quotas.items()})

    def median_of_others(category: int) -> int:
        others = [
            n for c, n in counts.items() if c != category and c not in excluded and c != UNLABELLED
        ]
        return int(np.median(others)) if others else 0

    targets: dict[int, int | None] = {}
    for category in sorted(counts):
        rule = rules.get(category, config.default_cap if category != UNLABELLED else None)
        if category in excluded:
            targets[category] = 0
        elif rule == "median":
            targets[category] = median_of_others(category)
        else:
            targets[category] = rule
    return targets


def select_balanced(
    categories: pd.Series,
    config: BalanceConfig,
    *,
    class_names: Mapping[int, str] | None = None,
    seed: int = 0,
) -> pd.Series:
    """Boolean mask over ``categories`` (index = unique patch ids): the patches to keep."""
    if not categories.index.is_unique:
        raise ValueError("categories must be indexed by unique patch ids")
    targets = balance_targets(categories, config, class_names)
    ids = _ClassIds(class_names or {})
    quotas = {ids(k): n for k, n in config.quotas.items()}
    keep = pd.Series(False, index=categories.index)
    for category, target in targets.items():
        members = np.sort(categories.index[categories.to_numpy() == category].to_numpy())
        wanted = quotas.get(category)
        if wanted is not None and len(members) < wanted:
            message = f"category {ids.name(category)}: quota {wanted}, only {len(members)} patches"
            if config.on_shortfall == "error":
                raise DataError(message, hint="lower the quota or add scenes")
            log.warning("%s; keeping all of them", message)
        if target is None or target >= len(members):
            chosen = members
        else:
            rng = np.random.default_rng([seed, category])
            chosen = members[rng.permutation(len(members))[:target]]
        keep[chosen] = True
    return keep


class _ClassIds:
    """Turns the class keys of a config (ids or remap class names) into ids."""

    def __init__(self, class_names: Mapping[int, str]):
        self.names = dict(class_names)
        self.by_name = {name.lower(): i for i, name in class_names.items()}
        self.by_name["unlabelled"] = UNLABELLED

    def __call__(self, key: ClassKey) -> int:
        if isinstance(key, int):
            return key
        if key.isdigit():  # an id that went through JSON, where dict keys are strings
            return int(key)
        if key.lower() not in self.by_name:
            known = ", ".join(self.names.values()) or "none: pass the remap's class names"
            raise DataError(f"unknown class {key!r} in balance settings", hint=f"known: {known}")
        return self.by_name[key.lower()]

    def name(self, category: int) -> str:
        return "unlabelled" if category == UNLABELLED else self.names.get(category, str(category))


# --- reporting ------------------------------------------------------------------------------


def class_distribution(
    before: pd.Series,
    after: pd.Series,
    class_names: Mapping[int, str] | None = None,
    targets: Mapping[int, int | None] | None = None,
) -> pd.DataFrame:
    """Patch counts and shares per category before and after balancing.

    ``before``/``after``: the category of every candidate / kept patch. Columns:
    category, name, before, after, before_share, after_share (fractions 0-1), and with
    ``targets`` (from ``balance_targets``) target: the cap or quota (None = keep all).
    """
    names = _ClassIds(class_names or {})
    n_before = before.value_counts()
    n_after = after.value_counts()
    categories = sorted(set(n_before.index) | set(n_after.index))
    table = pd.DataFrame(
        {
            "category": categories,
            "name": [names.name(c) for c in categories],
            "before": [int(n_before.get(c, 0)) for c in categories],
            "after": [int(n_after.get(c, 0)) for c in categories],
        }
    )
    table["before_share"] = table["before"] / max(int(table["before"].sum()), 1)
    table["after_share"] = table["after"] / max(int(table["after"].sum()), 1)
    if targets is not None:
        table["target"] = pd.array([targets.get(c) for c in categories], dtype="Int64")
    return table


def plot_distribution(
    table: pd.DataFrame,
    path: str | Path,
    colors: Mapping[int, tuple[int, int, int]] | None = None,
    title: str = "Patches per land-cover category",
) -> Path:
    """Bar chart (PNG) of a ``class_distribution`` table: before (pale) and after each class.

    Written atomically: a partial file never appears at ``path``.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch

    path = Path(path)
    colors = colors or {}
    x = np.arange(len(table))
    bar_colors = [
        tuple(v / 255 for v in colors.get(int(c), (90, 90, 90))) for c in table["category"]
    ]
    fig = Figure(figsize=(max(6.0, 0.8 * len(table) + 2), 4.5), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    width = 0.4
    ax.bar(x - width / 2, table["before"], width, color=bar_colors, alpha=0.35)
    ax.bar(x + width / 2, table["after"], width, color=bar_colors, edgecolor="black")
    ax.set_xticks(x, table["name"], rotation=30, ha="right")
    ax.set_ylabel("patches")
    ax.set_title(title)
    # Bars take their class colour, so the legend shows the two styles in neutral grey.
    ax.legend(
        handles=[
            Patch(facecolor="grey", alpha=0.35, label="before"),
            Patch(facecolor="grey", edgecolor="black", label="after"),
        ]
    )
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120)
    return path
