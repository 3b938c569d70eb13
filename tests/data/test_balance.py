"""Land-cover-stratified sampling: categories, caps, quotas, exclusions, reports."""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd
import pytest
from pydantic import ValidationError

from alos2fm.data.balance import (
    UNLABELLED,
    BalanceConfig,
    balance_targets,
    class_distribution,
    load_balance_preset,
    patch_category,
    plot_distribution,
    select_balanced,
)
from alos2fm.data.classes import load_class_table
from alos2fm.errors import DataError

NAMES = load_class_table().names  # 0 Water, 1 Built-up, ..., 5 Forest, ...
WATER, BUILT, PADDY, FOREST = 0, 1, 2, 5


def _candidates(counts: dict[int, int]) -> pd.Series:
    """Categories indexed by patch ids, in a scrambled order (as from parallel workers)."""
    cats = np.concatenate([np.full(n, c) for c, n in counts.items()])
    ids = [f"S_{i * 256}_0" for i in range(len(cats))]
    order = np.random.default_rng(99).permutation(len(cats))
    return pd.Series(cats[order], index=np.asarray(ids)[order], name="category")


COUNTS = {WATER: 80, BUILT: 20, PADDY: 30, FOREST: 300, UNLABELLED: 7}


def test_dominant_and_centre_categories():
    labels = np.full((4, 4), 255, np.uint8)
    labels[:2, :] = 3  # 8 x cropland
    labels[2:, :3] = 5  # 6 x forest, centre pixel (2, 2) is forest
    assert patch_category(labels, "dominant") == 3
    assert patch_category(labels, "centre") == 5
    labels[2:, 3] = 5  # now 8 x forest too: a tie goes to the smaller id
    assert patch_category(labels, "dominant") == 3
    assert patch_category(np.full((4, 4), 255, np.uint8)) == UNLABELLED


def test_caps_are_respected_exactly_and_smaller_classes_kept_whole():
    cats = _candidates(COUNTS)
    keep = select_balanced(cats, BalanceConfig(caps={"Forest": 40, WATER: 50}), class_names=NAMES)
    kept = cats[keep].value_counts().to_dict()
    assert kept == {FOREST: 40, WATER: 50, PADDY: 30, BUILT: 20}  # unlabelled dropped


def test_no_forest_preset_excludes_forest_and_unlabelled():
    cats = _candidates(COUNTS)
    config = load_balance_preset("no_forest")
    kept = cats[select_balanced(cats, config, class_names=NAMES)]
    assert FOREST not in set(kept) and UNLABELLED not in set(kept)
    assert len(kept) == 80 + 20 + 30


def test_forest_capped_preset_caps_forest_at_the_median_of_the_others():
    cats = _candidates(COUNTS)
    config = load_balance_preset("forest_capped")
    kept = cats[select_balanced(cats, config, class_names=NAMES)].value_counts()
    assert kept[FOREST] == 30  # median of water 80, built-up 20, paddy 30
    assert kept[WATER] == 80


def test_config_survives_a_json_round_trip_with_integer_class_keys():
    cats = _candidates(COUNTS)
    config = BalanceConfig(caps={FOREST: 40}, exclude=[WATER])
    again = BalanceConfig.model_validate_json(config.model_dump_json())
    assert cats[select_balanced(cats, again)].value_counts().to_dict() == {
        FOREST: 40, PADDY: 30, BUILT: 20,
    }  # fmt: skip


def test_default_cap_and_keeping_unlabelled():
    cats = _candidates(COUNTS)
    config = BalanceConfig(default_cap=25, keep_unlabelled=True)
    kept = cats[select_balanced(cats, config)].value_counts().to_dict()
    assert kept == {WATER: 25, BUILT: 20, PADDY: 25, FOREST: 25, UNLABELLED: 7}


def test_selection_is_seeded_and_independent_of_row_order():
    cats = _candidates(COUNTS)
    config = BalanceConfig(caps={FOREST: 40, WATER: 10})
    first = select_balanced(cats, config, seed=3)
    reordered = cats.sample(frac=1.0, random_state=1)
    again = select_balanced(reordered, config, seed=3)
    assert set(first[first].index) == set(again[again].index)
    other = select_balanced(cats, config, seed=4)
    assert set(first[first].index) != set(other[other].index)
    # Changing the water cap leaves the forest draw alone (one random stream per category).
    water_changed = select_balanced(cats, BalanceConfig(caps={FOREST: 40, WATER: 20}), seed=3)
    forest = cats.index[cats == FOREST]
    assert (first[forest] == water_changed[forest]).all()


def test_quota_met_exactly_or_shortfall_kept_with_a_warning(caplog):
    cats = _candidates(COUNTS)
    config = BalanceConfig(quotas={"Forest": 100, "Built-up": 50})
    with caplog.at_level(logging.WARNING):
        kept = cats[select_balanced(cats, config, class_names=NAMES)].value_counts()
    assert kept[FOREST] == 100 and kept[BUILT] == 20
    assert "Built-up: quota 50, only 20 patches" in caplog.text
    strict = config.model_copy(update={"on_shortfall": "error"})
    with pytest.raises(DataError, match="quota 50, only 20"):
        select_balanced(cats, strict, class_names=NAMES)


def test_bad_settings_fail_clearly():
    with pytest.raises(DataError, match="unknown class 'Jungle'.*Forest"):
        select_balanced(_candidates(COUNTS), BalanceConfig(exclude=["Jungle"]), class_names=NAMES)
    with pytest.raises(ValidationError, match="more than one rule"):
        BalanceConfig(exclude=["Forest"], caps={"Forest": 3})
    with pytest.raises(ValidationError, match=">= 0"):
        BalanceConfig(caps={"Forest": -1})


def test_distribution_table_and_chart(tmp_path):
    cats = _candidates(COUNTS)
    config = BalanceConfig(caps={FOREST: 40})
    keep = select_balanced(cats, config)
    targets = balance_targets(cats, config, NAMES)
    table = class_distribution(cats, cats[keep], NAMES, targets)
    row = table.set_index("name").loc["Forest"]
    assert (row["before"], row["after"], row["target"]) == (300, 40, 40)
    assert row["before_share"] == pytest.approx(300 / 437)
    assert row["after_share"] == pytest.approx(40 / (40 + 80 + 20 + 30))
    assert table.set_index("name").loc["unlabelled", "after"] == 0
    assert table["category"].tolist() == [WATER, BUILT, PADDY, FOREST, UNLABELLED]

    png = plot_distribution(table, tmp_path / "distribution.png", load_class_table().colors)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert [p.name for p in tmp_path.iterdir()] == ["distribution.png"]  # no temp file left
