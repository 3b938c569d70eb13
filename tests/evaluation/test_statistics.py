"""Paired statistics against values worked out by hand (t quantiles from tables)."""

import math

import numpy as np
import pytest
from scipy import stats

from alos2fm.evaluation.statistics import (
    PairedDifference,
    equivalence_verdict,
    holm,
    margin_verdict,
    paired_difference,
    plateau_gain,
)

# Differences 0.1, 0.2, 0.3: mean 0.2, std 0.1, se = 0.1 / sqrt(3) = 0.05774.
A, B = [0.1, 0.2, 0.3], [0.0, 0.0, 0.0]


def _diff(differences: list[float]) -> PairedDifference:
    return paired_difference(differences, [0.0] * len(differences))


def test_paired_difference_matches_the_hand_computed_t_interval():
    d = paired_difference(A, B)
    assert d.n == 3
    assert d.mean == pytest.approx(0.2) and d.std == pytest.approx(0.1)
    # t_{0.975,2} = 4.303: 0.2 -/+ 4.303 * 0.05774 = 0.2 -/+ 0.2484
    assert (d.low, d.high) == pytest.approx((-0.0484, 0.4484), abs=1e-4)
    # t_{0.95,2} = 2.920: 0.2 -/+ 2.920 * 0.05774 = 0.2 -/+ 0.1686
    assert (d.lower_bound, d.upper_bound) == pytest.approx((0.0314, 0.3686), abs=1e-4)
    # t = 0.2 / 0.05774 = 2*sqrt(3); with 2 degrees of freedom p = 1 - t / sqrt(2 + t^2)
    assert d.p == pytest.approx(1 - 2 * math.sqrt(3) / math.sqrt(14), abs=1e-4)  # 0.0742
    assert d.p == pytest.approx(stats.ttest_1samp(np.subtract(A, B), 0.0).pvalue)
    assert d.p == pytest.approx(stats.ttest_rel(A, B).pvalue)


def test_a_pair_with_a_nan_on_either_side_is_dropped():
    d = paired_difference([0.1, math.nan, 0.2, 0.3, 0.5], [0.0, 0.0, 0.0, 0.0, math.nan])
    assert d == paired_difference(A, B)


def test_unequal_lengths_are_refused():
    with pytest.raises(ValueError, match="one per seed"):
        paired_difference([0.1, 0.2], [0.0])


def test_one_pair_has_a_mean_but_no_spread_to_judge_noise_by():
    d = paired_difference([0.3], [0.1])
    assert d.n == 1 and d.mean == pytest.approx(0.2)
    rest = (d.std, d.low, d.high, d.lower_bound, d.upper_bound, d.p)
    assert all(math.isnan(v) for v in rest)
    assert math.isnan(paired_difference([math.nan], [0.1]).mean)


def test_differences_equal_up_to_rounding_have_no_p_value():
    # 0.61 - 0.51 and 0.6 - 0.5 differ only in the last bits; no t statistic from that.
    d = paired_difference([0.6, 0.61, 0.62], [0.5, 0.51, 0.52])
    assert d.mean == pytest.approx(0.1) and math.isnan(d.p)
    assert (d.low, d.high) == pytest.approx((0.1, 0.1))


def test_holm_multiplies_by_the_remaining_count_and_keeps_order():
    # sorted 0.01 * 3 = 0.03, 0.03 * 2 = 0.06, 0.04 * 1 = 0.04 -> running max 0.06
    assert holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])


def test_holm_caps_at_one():
    # 0.5 * 2 = 1.0, 0.6 * 1 = 0.6 -> running max 1.0; 0.7 * 2 = 1.4 -> 1
    assert holm([0.6, 0.5]) == pytest.approx([1.0, 1.0])
    assert holm([0.7, 0.8]) == pytest.approx([1.0, 1.0])


def test_holm_leaves_nan_out_of_the_count():
    # m = 2: 0.01 * 2 = 0.02, 0.04 * 1 = 0.04
    adjusted = holm([0.01, math.nan, 0.04])
    assert adjusted[0] == pytest.approx(0.02) and adjusted[2] == pytest.approx(0.04)
    assert math.isnan(adjusted[1])
    assert holm([]).shape == (0,)


def test_margin_verdict_in_each_branch():
    d = paired_difference(A, B)  # one-sided bounds 0.0314 .. 0.3686
    assert margin_verdict(d, 0.02) == "holds"
    assert margin_verdict(d, 0.05) == "inconclusive"
    assert margin_verdict(d, 0.40) == "excluded"
    assert margin_verdict(paired_difference([0.9], [0.1]), 0.02) == "inconclusive"


def test_equivalence_verdict_in_each_branch():
    d = paired_difference(A, B)  # two-sided interval -0.0484 .. 0.4484
    assert equivalence_verdict(d, 0.5) == "no practical difference"
    assert equivalence_verdict(d, 0.1) == "inconclusive"
    # differences 0.2, 0.3, 0.4: 0.3 -/+ 0.2484 = 0.0516 .. 0.5484 excludes 0
    assert equivalence_verdict(_diff([0.2, 0.3, 0.4]), 0.1) == "differs"
    assert equivalence_verdict(_diff([-0.2, -0.3, -0.4]), 0.1) == "differs"
    assert equivalence_verdict(paired_difference([0.0], [0.0]), 0.1) == "inconclusive"
    with pytest.raises(ValueError):
        equivalence_verdict(d, -0.1)


STEPS = [1000.0 * i for i in range(11)]  # budget 10000: the last 30 % is 8000, 9000, 10000


def test_plateau_gain_of_a_curve_that_still_rises():
    rising = [0.2 + 0.5 * s / 10000 for s in STEPS]  # 0.55 at 7000, 0.70 at 10000
    assert plateau_gain(STEPS, rising) == pytest.approx(0.15)


def test_plateau_gain_of_a_flat_curve_is_zero_and_of_an_overfit_one_negative():
    flat = [0.2, 0.4, 0.5, 0.55, 0.6, 0.6, 0.6, 0.6, 0.6, 0.59, 0.6]
    assert plateau_gain(STEPS, flat) == pytest.approx(0.0)
    overfit = [0.2, 0.4, 0.5, 0.55, 0.6, 0.62, 0.61, 0.6, 0.58, 0.57, 0.56]
    assert plateau_gain(STEPS, overfit) == pytest.approx(0.58 - 0.62)


def test_plateau_gain_is_nan_when_a_part_is_empty():
    assert math.isnan(plateau_gain([10000.0], [0.5]))
    assert math.isnan(plateau_gain(STEPS[:3], [0.1, math.nan, math.nan]))  # nothing late
    assert math.isnan(plateau_gain([], []))
    with pytest.raises(ValueError):
        plateau_gain(STEPS, [0.5])
