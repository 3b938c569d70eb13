"""The Flevoland study's plan (run order, levers) and the report's paired comparisons.

experiments/flevoland/run.py and report.py; no training here.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from pydantic import ValidationError

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "experiments" / "flevoland"))

from report import (  # noqa: E402
    _random_references,
    goals_section,
    paired_differences,
    paired_table,
    score_table,
    seed_spread_table,
    significance,
)
from run import StudyConfig, budget_tag, parse_budget, validation_curve  # noqa: E402

PLAN = {
    "settings": {"HH": ["HH"], "HH+HV+VV": ["HH", "HV", "VV"]},
    "split_seeds": [0, 1],
    "budgets": ["1%", "100%"],
    "methods": ["random", "sarw_simmim", "sarw_simmim_shared", "rf"],
    "pretrain_epochs": 2,
    "finetune_epochs": 2,
}
LEVER = {"base": "sarw_simmim", "label": "SAR-W-SimMIM, mask 0.4"}


def test_methods_run_seed_by_seed_then_levers_on_their_part_of_the_grid():
    lever = LEVER | {"pretrain": {"simmim": {"mask_ratio": 0.4}}, "budgets": ["0.01"]}
    plan = StudyConfig.model_validate(PLAN | {"levers": {"mask40": lever}})
    jobs = plan.jobs("HH", ["HH"])
    # shared_avg weighting equals per_channel with one band: not run on HH
    methods = ["random", "sarw_simmim", "rf"]
    grid = [(s, b, m, s) for b in ("1%", "100%") for s in (0, 1) for m in methods]
    # a lever's budget "0.01" is the plan's "1%"
    assert jobs == grid + [(0, "1%", "mask40", 0), (1, "1%", "mask40", 1)]
    two = StudyConfig.model_validate(PLAN | {"levers": {"a": lever, "b": lever}})
    # levers interleaved seed by seed, so that a stopped study leaves them paired
    assert [j[:3] for j in two.jobs("HH", ["HH"]) if j[2] in "ab"] == [
        (0, "1%", "a"), (0, "1%", "b"), (1, "1%", "a"), (1, "1%", "b"),
    ]  # fmt: skip
    assert "sarw_simmim_shared" in {j[2] for j in plan.jobs("HH+HV+VV", ["HH", "HV", "VV"])}


def test_extra_cells_run_after_the_grid_in_their_order_once_each():
    cells = [
        {"methods": ["rf", "random"], "budgets": ["k1"], "split_seeds": [1]},
        {"methods": ["random"], "budgets": ["k1"], "split_seeds": [1], "finetune_seed": 100},
        {"methods": ["rf"], "budgets": ["100%"], "split_seeds": [0]},  # in the grid already
    ]
    plan = StudyConfig.model_validate(PLAN | {"cells": cells, "methods": ["random", "rf"]})
    jobs = plan.jobs("HH", ["HH"])
    assert jobs[8:] == [(1, "k1", "rf", 1), (1, "k1", "random", 1), (1, "k1", "random", 100)]
    with pytest.raises(ValidationError, match="unknown methods"):
        StudyConfig.model_validate(PLAN | {"cells": [cells[0] | {"methods": ["unett"]}]})


@pytest.mark.parametrize(
    "budget, kind, value, tag",
    [("k3", "parcels", 3, "k3"), ("0.1%", "fraction", 0.001, "0.1pct"),
     ("100%", "fraction", 1.0, "100pct"), (0.05, "fraction", 0.05, "5pct")],
)  # fmt: skip
def test_label_budgets_are_parcels_or_fractions(budget, kind, value, tag):
    assert parse_budget(budget) == (kind, pytest.approx(value))
    assert budget_tag(budget) == tag


@pytest.mark.parametrize("budget", ["k0", "0%", "150%", "kx", "2"])
def test_impossible_budgets_are_refused(budget):
    with pytest.raises(ValueError, match="label budget"):
        parse_budget(budget)
    with pytest.raises(ValidationError):
        StudyConfig.model_validate(PLAN | {"budgets": [budget]})


def test_probes_name_known_encoders():
    probe = {"setting": "HH", "split_seed": 0, "budget": "100%"}
    plan = StudyConfig.model_validate(
        PLAN | {"probes": [probe | {"encoders": ["sarw_simmim", "random"]}]}
    )
    assert plan.probes[0].seeds == 10
    with pytest.raises(ValidationError, match="unknown encoders"):
        StudyConfig.model_validate(PLAN | {"probes": [probe | {"encoders": ["random", "simmin"]}]})


def test_a_lever_limited_to_one_setting_runs_only_there():
    plan = StudyConfig.model_validate(
        PLAN
        | {
            "levers": {
                "e100": LEVER | {"finetune_epochs": 3, "settings": ["HH"], "split_seeds": [1]}
            }
        }
    )
    assert [j for j in plan.jobs("HH", ["HH"]) if j[2] == "e100"] == [
        (1, "1%", "e100", 1),
        (1, "100%", "e100", 1),
    ]
    assert all(j[2] != "e100" for j in plan.jobs("HH+HV+VV", ["HH", "HV", "VV"]))
    assert plan.labels()["e100"] == LEVER["label"]


def test_a_fine_tuning_lever_reuses_its_base_encoder():
    plan = StudyConfig.model_validate(
        PLAN
        | {
            "levers": {
                "ft40": LEVER | {"finetune_epochs": 40},
                "random_ft40": {"base": "random", "label": "R", "finetune_epochs": 40},
                "e100": LEVER | {"pretrain": {"schedule": {"epochs": 100}}},
            }
        }
    )
    assert plan.recipe("sarw_simmim") == ("sarw_simmim", 2)
    assert plan.recipe("ft40") == ("sarw_simmim", 40)
    assert plan.recipe("random_ft40") == ("random", 40)
    assert plan.recipe("e100") == ("e100", 2)  # its own pretraining run
    # a lever is compared with random init fine-tuned for as long, where the plan has it
    assert _random_references(plan) == {"ft40": "random_ft40", "e100": "random"}


@pytest.mark.parametrize(
    "levers, message",
    [
        ({"x": LEVER}, "must change"),
        ({"x": LEVER | {"base": "random", "pretrain": {"a": 1}}}, "no pretraining"),
        ({"random": LEVER | {"finetune_epochs": 3}}, "name of a method"),
        ({"x": LEVER | {"finetune_epochs": 3, "settings": ["VV"]}}, "not in the plan"),
        ({"x": LEVER | {"finetune_epochs": 3, "base": "rf"}}, "base"),
    ],
)
def test_bad_levers_are_refused(levers, message):
    with pytest.raises(ValidationError, match=message):
        StudyConfig.model_validate(PLAN | {"levers": levers})


PIXELS = {"k1": 20000, "1pct": 700, "5pct": 3500, "100pct": 70000}


def _results(rows):
    """Rows of (method, split seed, budget, test mIoU[, fine-tuning seed])."""
    table = pd.DataFrame(
        [(*r[:4], r[4] if len(r) > 4 else r[1]) for r in rows],
        columns=["method", "split_seed", "budget", "test_miou", "finetune_seed"],
    )
    return table.assign(setting="HH", train_pixels=table["budget"].map(PIXELS))


LABELS = {"random": "Random", "a": "A", "b": "B", "rf": "RF"}


def test_paired_differences_are_taken_seed_by_seed():
    results = _results(
        [
            ("random", 0, "1pct", 0.10), ("random", 1, "1pct", 0.30),
            ("a", 0, "1pct", 0.15), ("a", 1, "1pct", 0.29),
            ("random", 0, "100pct", 0.40), ("a", 0, "100pct", 0.50), ("a", 1, "100pct", 0.90),
        ]
    )  # fmt: skip
    table = paired_table(results, LABELS)
    assert table["method"].tolist() == ["A − Random"]
    # seed 0: +0.05, seed 1: -0.01 -> mean +0.02; at 100 % random has no seed 1, so A's
    # seed 1 has no pair and drops out
    assert table["1 %"].item() == "+0.020 (+0.050, -0.010)"
    assert table["100 %"].item() == "+0.100 (+0.100)"


def test_levers_are_compared_with_their_own_base():
    results = _results([("random", 0, "1pct", 0.1), ("a", 0, "1pct", 0.2), ("b", 0, "1pct", 0.25)])
    table = paired_table(results, LABELS, base={"b": "a"})
    assert table.to_dict("records") == [{"method": "B − A", "1 %": "+0.050 (+0.050)"}]


def test_score_table_gives_mean_and_sample_std_over_seeds_scarcest_budget_first():
    results = _results(
        [("a", 0, "5pct", 0.2), ("a", 1, "5pct", 0.4), ("a", 2, "5pct", 0.3),
         ("a", 0, "k1", 0.5), ("a", 0, "1pct", 0.1)]
    )  # fmt: skip
    table = score_table(results, "test_miou", LABELS)
    assert list(table.columns) == ["method", "1 %", "5 %", "1 parcel/class"]
    assert table.to_dict("records")[0]["5 %"] == "0.300 ± 0.100"


def test_significance_matches_a_paired_t_test_by_hand():
    diff = np.array([0.02, 0.04, 0.06])
    stats = significance(diff)
    # mean 0.04, sample std 0.02, t = 0.04 / (0.02 / sqrt 3) = 3.464 on 2 dof: p = 0.0742
    assert stats["mean"] == pytest.approx(0.04)
    assert stats["p"] == pytest.approx(0.0742, abs=5e-4)
    assert 0.02 <= stats["low"] <= 0.04 <= stats["high"] <= 0.06
    assert np.isnan(significance(np.array([0.1]))["p"])


def test_the_second_fine_tuning_seed_is_reported_apart_from_the_grid():
    results = _results([("a", 0, "k1", 0.30), ("a", 0, "k1", 0.26, 100), ("a", 1, "k1", 0.5)])
    spread = seed_spread_table(results, LABELS)
    assert spread.to_dict("records") == [
        {
            "method": "A", "budget": "1 parcel/class", "split seed": 0,
            "fine-tuning seed 0": "0.300", "second seed": "0.260 (seed 100)",
            "difference": "-0.040",
        }
    ]  # fmt: skip
    # paired differences pair the same fine-tuning seed only
    results = _results([("a", 0, "k1", 0.3), ("random", 0, "k1", 0.2), ("a", 0, "k1", 0.5, 100)])
    assert paired_differences(results, "a", "random").tolist() == [pytest.approx(0.1)]


def test_goals_are_checked_against_the_random_forest_and_random_init():
    results = _results(
        [("a", s, "100pct", 0.6 + s / 100) for s in range(3)]
        + [("rf", s, "100pct", 0.5) for s in range(3)]
        + [("random", s, "100pct", 0.55) for s in range(3)]
        + [("a", s, "k1", 0.33) for s in range(3)]
        + [("random", s, "k1", 0.30 + s / 100) for s in range(3)]
    )
    text = "\n".join(goals_section(results, {"random": "Random", "a": "A", "rf": "RF"}))
    assert "best network A 0.610 vs RF 0.500" in text
    assert "paired difference +0.110 over 3 cells (significant (p < 0.05))" in text
    assert "goal ≥ RF **met**" in text
    # k1: A - random = +0.03, +0.02, +0.01 -> +0.020, short of +0.05 by 0.030
    assert "goal ≥ random + 0.05 **missed by 0.030**" in text


def test_the_validation_curve_is_read_once_per_step_from_the_csv_log(tmp_path):
    logs = tmp_path / "logs"
    logs.mkdir()
    # training rows have no val/miou; a resumed run may log a step twice: the last counts
    pd.DataFrame(
        {"step": [9, 99, 99, 199, 199], "val/miou": [np.nan, 0.2, np.nan, 0.25, 0.3]}
    ).to_csv(logs / "metrics.csv", index=False)
    assert validation_curve(tmp_path) == [[99.0, 0.2], [199.0, 0.3]]
    assert validation_curve(tmp_path / "rf_run") == []
