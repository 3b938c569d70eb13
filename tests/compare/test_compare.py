"""``alos2fm compare`` end to end on a toy dataset whose answer is known.

Three classes well apart in dB: a Random Forest on local statistics separates them; a Swin
given two optimiser steps cannot. So "rf >= swin + 0.2" must hold, "swin >= rf" must be
excluded, and two Random Forest arms trained alike must show no practical difference.
"""

from __future__ import annotations

import pandas as pd
import pytest
import yaml

from alos2fm.compare.plan import read_plan
from alos2fm.compare.run import run_compare
from alos2fm.identity import IdentityError
from tests.test_cli import run_cli
from tests.train.conftest import make_store

PLAN = {
    "data": "store",
    "arms": {
        "rf": {"kind": "rf"},
        "forest": {"kind": "rf"},
        "swin": {"kind": "swin", "rates": [0.03]},
    },
    "budgets": ["100%"],
    "seeds": [0, 1, 2],
    "steps": 2,
    "rf_train_pixels": 3000,
    "goals": [
        {"name": "forest beats two steps", "a": "rf", "b": "swin", "budget": "100%", "delta": 0.2},
        {"name": "swin beats forest", "a": "swin", "b": "rf", "budget": "100%", "delta": 0.0},
    ],
    "equivalences": [{"name": "twins", "a": "rf", "b": "forest", "budget": "100%"}],
}


@pytest.fixture(scope="module")
def compared(tmp_path_factory):
    root = tmp_path_factory.mktemp("compare")
    make_store(root / "store", n_train=12, n_val=4, n_test=4)
    (root / "plan.yaml").write_text(yaml.safe_dump(PLAN))
    return root


def test_the_verdicts_of_a_separable_case_are_the_known_ones(compared, monkeypatch, capfd):
    code = run_cli(
        monkeypatch,
        "compare",
        "--plan",
        str(compared / "plan.yaml"),
        "--out",
        str(compared / "out"),
    )
    printed = capfd.readouterr().out
    assert code == 0, printed
    results = pd.read_csv(compared / "out" / "results.csv")
    assert len(results) == 9 and set(results["role"]) == {"scored"}
    assert "[9/9] scored" in printed
    goals = pd.read_csv(compared / "out" / "goals.csv").set_index("goal")["verdict"]
    assert goals.to_dict() == {
        "forest beats two steps": "holds",
        "swin beats forest": "excluded",
        "twins": "no practical difference",
    }
    report = (compared / "out" / "report.md").read_text()
    assert "| forest beats two steps | rf ≥ swin + 0.2 | 100% | 3 |" in report
    assert (compared / "out" / "figures" / "budgets.png").is_file()
    assert (compared / "out" / "figures" / "maps_100pct.png").is_file()
    # the report's maps show the same test patches for every arm
    previews = list((compared / "out" / "runs").glob("*/100pct/seed0*/preview.npz"))
    assert len(previews) == 3


def test_a_second_run_reuses_every_finished_run(compared, monkeypatch):
    results = sorted((compared / "out" / "runs").glob("*/*/*/result.json"))
    before = {p: p.stat().st_mtime_ns for p in results}
    code = run_cli(
        monkeypatch,
        "compare",
        "--plan",
        str(compared / "plan.yaml"),
        "--out",
        str(compared / "out"),
    )
    assert code == 0
    assert {p: p.stat().st_mtime_ns for p in results} == before


def test_a_run_made_with_other_settings_is_refused_naming_the_setting(compared):
    plan = read_plan(compared / "plan.yaml", {"steps": 3})
    with pytest.raises(IdentityError, match="max_steps"):
        run_compare(plan, compared / "out")
