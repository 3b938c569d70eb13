"""Paired differences, Holm and verdicts from a hand-made results table."""

import numpy as np
import pandas as pd
import pytest

from alos2fm.compare.analysis import comparison_table, goal_table, score_table
from alos2fm.compare.plan import build_plan
from alos2fm.compare.run import choose_rates


def _plan(**fields):
    arms = {"rf": {"kind": "rf"}, "swin": {"kind": "swin"}, "unet": {"kind": "unet"}}
    return build_plan({"data": "ds", "arms": arms, "budgets": ["k1"], "seeds": [0, 1, 2]} | fields)


def _results(scores: dict[str, list[float]]) -> pd.DataFrame:
    rows = [
        {"arm": arm, "budget": "k1", "seed": seed, "test_miou": value, "test_oa": 0.5}
        for arm, values in scores.items()
        for seed, value in enumerate(values)
    ]
    return pd.DataFrame(rows)


def test_differences_are_paired_by_seed_and_holm_adjusted():
    # swin - rf = [0.1, 0.2, 0.3]: mean 0.2, sd 0.1; unet - rf = [0.01, 0.03, 0.02]
    results = _results({"rf": [0.5, 0.4, 0.3], "swin": [0.6, 0.6, 0.6], "unet": [0.51, 0.43, 0.32]})
    table = comparison_table(results, _plan()).set_index("a")
    assert table.loc["swin", "mean"] == pytest.approx(0.2)
    assert table.loc["swin", "low"] == pytest.approx(0.2 - 4.3027 * 0.1 / np.sqrt(3), abs=1e-4)
    # Holm over the two: the smaller p doubled, the larger kept (then monotone)
    p = table["p"].sort_values()
    assert table["p_holm"].sort_values().tolist() == pytest.approx(
        [2 * p.iloc[0], max(2 * p.iloc[0], p.iloc[1])]
    )


def test_goal_verdicts_hold_exclude_or_stay_inconclusive():
    results = _results({"rf": [0.5, 0.4, 0.3], "swin": [0.9, 0.81, 0.69], "unet": [0.5, 0.4, 0.31]})
    goals = [
        {"name": "holds", "a": "swin", "b": "rf", "budget": "k1", "delta": 0.3},
        {"name": "excluded", "a": "unet", "b": "rf", "budget": "k1", "delta": 0.05},
        {"name": "open", "a": "swin", "b": "rf", "budget": "k1", "delta": 0.41},
    ]
    equal = [{"name": "same", "a": "unet", "b": "rf", "budget": "k1", "margin": 0.02}]
    verdicts = goal_table(results, _plan(goals=goals, equivalences=equal)).set_index("goal")
    assert verdicts["verdict"].to_dict() == {
        "holds": "holds",  # diffs 0.4, 0.41, 0.39: lower bound 0.383 >= 0.3
        "excluded": "excluded",  # diffs 0, 0, 0.01: upper bound 0.013 < 0.05
        "open": "inconclusive",  # 0.41 lies between the bounds 0.383 and 0.417
        "same": "no practical difference",
    }


def test_a_seed_one_arm_lacks_drops_out_of_the_pair():
    results = _results({"rf": [0.5, 0.4, 0.3], "swin": [0.6, 0.6]})
    table = comparison_table(results, _plan(arms={"rf": {"kind": "rf"}, "swin": {"kind": "swin"}}))
    assert table.loc[0, "n"] == 2
    scores = score_table(results, _plan(arms={"rf": {"kind": "rf"}, "swin": {"kind": "swin"}}))
    assert scores.set_index("arm").loc["swin", "seeds"] == 2


def test_the_rate_with_the_best_mean_over_tuning_seeds_is_chosen():
    plan = _plan(arms={"swin": {"kind": "swin", "rates": [0.01, 0.1]}, "rf": {"kind": "rf"}})
    tuning = pd.DataFrame(
        {
            "arm": "swin",
            "budget": "k1",
            "seed": [1000, 1000, 1001, 1001],
            "rate": [0.01, 0.1, 0.01, 0.1],
            # 0.1 wins one seed by a little, loses the other by a lot
            "val_miou": [0.50, 0.52, 0.60, 0.40],
        }
    )
    rates = choose_rates(plan, tuning).set_index("rate")
    assert rates.loc[0.01, "chosen"] and not rates.loc[0.1, "chosen"]
    assert rates.loc[0.01, "val_miou"] == pytest.approx(0.55)
