"""The Flevoland study's plan (run order, levers) and the report's paired comparisons.

experiments/flevoland/run.py and report.py; no training here.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pandas as pd
import pytest
from pydantic import ValidationError

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "experiments" / "flevoland"))

from report import _random_references, paired_table, score_table  # noqa: E402
from run import StudyConfig  # noqa: E402

PLAN = {
    "settings": {"HH": ["HH"], "HH+HV+VV": ["HH", "HV", "VV"]},
    "split_seeds": [0, 1],
    "fractions": [0.01, 1.0],
    "methods": ["random", "sarw_simmim", "sarw_simmim_shared", "rf"],
    "pretrain_epochs": 2,
    "finetune_epochs": 2,
}
LEVER = {"base": "sarw_simmim", "label": "SAR-W-SimMIM, mask 0.4"}


def test_methods_run_seed_by_seed_then_levers_on_their_part_of_the_grid():
    lever = LEVER | {"pretrain": {"simmim": {"mask_ratio": 0.4}}, "fractions": [0.01]}
    plan = StudyConfig.model_validate(PLAN | {"levers": {"mask40": lever}})
    jobs = plan.jobs("HH", ["HH"])
    # shared_avg weighting equals per_channel with one band: not run on HH
    methods = ["random", "sarw_simmim", "rf"]
    grid = [(s, f, m) for s in (0, 1) for f in (0.01, 1.0) for m in methods]
    assert jobs == grid + [(0, 0.01, "mask40"), (1, 0.01, "mask40")]
    two = StudyConfig.model_validate(PLAN | {"levers": {"a": lever, "b": lever}})
    # levers interleaved seed by seed, so that a stopped study leaves them paired
    assert [j for j in two.jobs("HH", ["HH"]) if j[2] in "ab"] == [
        (0, 0.01, "a"), (0, 0.01, "b"), (1, 0.01, "a"), (1, 0.01, "b"),
    ]  # fmt: skip
    assert "sarw_simmim_shared" in {m for _, _, m in plan.jobs("HH+HV+VV", ["HH", "HV", "VV"])}


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
        (1, 0.01, "e100"),
        (1, 1.0, "e100"),
    ]
    assert all(m != "e100" for _, _, m in plan.jobs("HH+HV+VV", ["HH", "HV", "VV"]))
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


def _results(rows):
    return pd.DataFrame(rows, columns=["method", "split_seed", "fraction", "test_miou"])


LABELS = {"random": "Random", "a": "A", "b": "B"}


def test_paired_differences_are_taken_seed_by_seed():
    results = _results(
        [
            ("random", 0, 0.01, 0.10), ("random", 1, 0.01, 0.30),
            ("a", 0, 0.01, 0.15), ("a", 1, 0.01, 0.29),
            ("random", 0, 1.0, 0.40), ("a", 0, 1.0, 0.50), ("a", 1, 1.0, 0.90),
        ]
    )  # fmt: skip
    table = paired_table(results, LABELS)
    assert table["method"].tolist() == ["A − Random"]
    # seed 0: +0.05, seed 1: -0.01 -> mean +0.02; at 100 % random has no seed 1, so A's
    # seed 1 has no pair and drops out
    assert table["1%"].item() == "+0.020 (+0.050, -0.010)"
    assert table["100%"].item() == "+0.100 (+0.100)"


def test_levers_are_compared_with_their_own_base():
    results = _results([("random", 0, 0.01, 0.1), ("a", 0, 0.01, 0.2), ("b", 0, 0.01, 0.25)])
    table = paired_table(results, LABELS, base={"b": "a"})
    assert table.to_dict("records") == [{"method": "B − A", "1%": "+0.050 (+0.050)"}]


def test_score_table_gives_mean_and_sample_std_over_seeds():
    results = _results([("a", 0, 0.05, 0.2), ("a", 1, 0.05, 0.4), ("a", 2, 0.05, 0.3)])
    assert score_table(results, "test_miou", LABELS).to_dict("records") == [
        {"method": "A", "5%": "0.300 ± 0.100"}
    ]
