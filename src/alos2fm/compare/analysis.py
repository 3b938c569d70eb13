"""What the runs say: scores per arm and budget, paired differences, verdicts.

Arms are compared seed by seed (the same labels, the same split, the same test pixels),
so the noise a difference must beat is the spread of the per-seed differences, not of
the scores. Every comparison's p-value is Holm-adjusted over all comparisons made; goals
("A >= B + delta") get a verdict from a one-sided 95 % bound, equivalences ("no practical
difference") from the 95 % interval (``alos2fm.evaluation.statistics``).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from alos2fm.compare.plan import ComparePlan, Equivalence
from alos2fm.evaluation.statistics import (
    equivalence_verdict,
    holm,
    margin_verdict,
    paired_difference,
)

METRIC = "test_miou"


def paired(results: pd.DataFrame, a: str, b: str, budget: str) -> tuple[np.ndarray, np.ndarray]:
    """Test mIoU of ``a`` and ``b`` on the seeds both finished at ``budget``."""
    cell = results[results["budget"] == budget]
    mine = cell[cell["arm"] == a].set_index("seed")[METRIC]
    theirs = cell[cell["arm"] == b].set_index("seed")[METRIC]
    seeds = sorted(set(mine.index) & set(theirs.index))
    return mine.loc[seeds].to_numpy(float), theirs.loc[seeds].to_numpy(float)


def score_table(results: pd.DataFrame, plan: ComparePlan) -> pd.DataFrame:
    """Per arm and budget: seeds, mean and std of test mIoU, and of overall accuracy."""
    rows = []
    for arm in plan.arms:
        for budget in plan.budgets:
            cell = results[(results["arm"] == arm) & (results["budget"] == budget)]
            rows.append(
                {
                    "arm": arm,
                    "budget": budget,
                    "seeds": len(cell),
                    "miou_mean": cell[METRIC].mean(),
                    "miou_std": cell[METRIC].std(ddof=1) if len(cell) > 1 else np.nan,
                    "oa_mean": cell["test_oa"].mean() if "test_oa" in cell else np.nan,
                }
            )
    return pd.DataFrame(rows)


def comparison_table(results: pd.DataFrame, plan: ComparePlan) -> pd.DataFrame:
    """Each planned pair at each budget: the paired difference, its interval, p and the
    Holm-adjusted p over every row of the table."""
    rows = []
    for a, b in plan.pairs():
        for budget in plan.budgets:
            diff = paired_difference(*paired(results, a, b, budget))
            rows.append({"a": a, "b": b, "budget": budget} | vars(diff))
    table = pd.DataFrame(rows)
    table["p_holm"] = holm(table["p"].to_numpy()) if len(table) else []
    return table


def goal_table(results: pd.DataFrame, plan: ComparePlan) -> pd.DataFrame:
    """Each goal and equivalence with its verdict and the bounds the verdict reads: the
    one-sided 95 % bounds for a margin, the two-sided 95 % interval for an equivalence."""
    rows = []
    for claim in [*plan.goals, *plan.equivalences]:
        diff = paired_difference(*paired(results, claim.a, claim.b, claim.budget))
        if isinstance(claim, Equivalence):
            text = f"{claim.a} − {claim.b} within ±{claim.margin:g}"
            verdict = equivalence_verdict(diff, claim.margin)
            bounds = f"[{diff.low:+.3f}, {diff.high:+.3f}] two-sided"
        else:
            text = f"{claim.a} ≥ {claim.b} + {claim.delta:g}"
            verdict = margin_verdict(diff, claim.delta)
            bounds = f"[{diff.lower_bound:+.3f}, {diff.upper_bound:+.3f}] one-sided"
        rows.append(
            {"goal": claim.name, "claim": text, "budget": claim.budget, "verdict": verdict}
            | {"judged_on": bounds}
            | vars(diff)
        )
    return pd.DataFrame(rows)


def convergence_table(runs: pd.DataFrame, plan: ComparePlan) -> pd.DataFrame:
    """Per network arm and budget: how much validation mIoU the last 30 % of the step
    budget still added (mean and worst over runs), and the runs above the tolerance."""
    if "plateau_gain" not in runs:
        return pd.DataFrame()
    networks = runs.dropna(subset=["plateau_gain"])
    rows = []
    for (arm, budget), group in networks.groupby(["arm", "budget"], sort=False):
        gains = group["plateau_gain"]
        rows.append(
            {
                "arm": arm,
                "budget": budget,
                "runs": len(gains),
                "gain_mean": gains.mean(),
                "gain_max": gains.max(),
                "still_rising": int((gains > plan.plateau_tolerance).sum()),
            }
        )
    return pd.DataFrame(rows)
