"""Paired comparisons of models over seeds: intervals, multiple tests, margins, plateaus.

Why these statistics and not a bare difference of means:

- **Seed-to-seed noise.** Two training recipes scored once each differ by chance alone
  (initialisation, data order, the probe's pixel draw). Both arms are therefore run on
  the same seeds and compared *per seed*: the paired difference ``a[i] - b[i]`` cancels
  what a seed does to both arms, and its spread over seeds says how large a difference
  noise alone produces. A difference counts only when it beats that noise (paired t).
- **Many comparisons.** Comparing several models (or several metrics) at the 5 % level
  each makes at least one false positive likely; Holm's step-down adjustment keeps the
  family-wise error at 5 % and is never weaker than Bonferroni.
- **Goals with a margin.** "A beats B by at least 0.02 mIoU" is not answered by a
  p-value against zero (a tiny, real gain is significant yet misses the goal). It is
  answered by a one-sided 95 % bound on the mean difference compared with the margin;
  "no practical difference" likewise needs the whole two-sided interval inside
  ``[-margin, +margin]`` (equivalence by confidence interval, i.e. two one-sided tests).

Higher scores are better throughout (mIoU, accuracy). numpy and scipy only, so the
``compare`` command imports this without loading torch.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
from scipy import stats

# Differences that agree up to float rounding (e.g. 0.6 - 0.5 and 0.61 - 0.51) have no
# real spread; a t statistic from rounding noise would claim certainty it does not have.
_ROUNDING = 1e-12


@dataclass(frozen=True)
class PairedDifference:
    """Mean of the per-seed differences ``a - b`` with its t intervals and p-value."""

    n: int  # pairs (seeds where both arms have a score)
    mean: float
    std: float  # sample std (ddof=1); nan when n < 2
    low: float  # two-sided 95 % t interval of the mean difference
    high: float
    lower_bound: float  # one-sided 95 % lower bound (mean - t_{0.95,n-1} * se)
    upper_bound: float  # one-sided 95 % upper bound
    p: float  # two-sided paired t-test p against 0 (nan when n < 2 or no spread)


def paired_difference(a: Sequence[float], b: Sequence[float]) -> PairedDifference:
    """Paired t statistics of ``d_i = a[i] - b[i]`` where ``i`` is the seed (Student's
    paired t-test: a one-sample t-test of the differences against 0).

    With ``se = std(d, ddof=1) / sqrt(n)`` and ``t_q`` the ``q`` quantile of Student's t
    with ``n - 1`` degrees of freedom: the two-sided 95 % interval is
    ``mean ± t_0.975 * se``, the one-sided bounds are ``mean ∓ t_0.95 * se`` and ``p`` is
    ``2 * P(T > |mean / se|)`` (the same as ``scipy.stats.ttest_rel``). A pair with a NaN
    on either side is dropped (a seed that one arm did not finish). With fewer than two
    pairs there is no spread to judge noise by, so everything but ``n`` and ``mean`` is
    NaN. Identical differences on every seed give a zero-width interval (the seeds do
    not move the difference) and ``p`` NaN.
    """
    if len(a) != len(b):
        raise ValueError(f"paired scores need one per seed on both sides: {len(a)} vs {len(b)}")
    d = np.asarray(a, dtype=float) - np.asarray(b, dtype=float)
    d = d[~np.isnan(d)]
    n = int(d.size)
    mean = float(d.mean()) if n else math.nan
    if n < 2:
        return PairedDifference(n, mean, *([math.nan] * 6))
    std = float(d.std(ddof=1))
    se = std / math.sqrt(n)
    two_sided = float(stats.t.ppf(0.975, n - 1)) * se
    one_sided = float(stats.t.ppf(0.95, n - 1)) * se
    no_spread = std <= _ROUNDING * abs(mean)
    p = math.nan if no_spread else float(2 * stats.t.sf(abs(mean) / se, n - 1))
    return PairedDifference(
        n=n,
        mean=mean,
        std=std,
        low=mean - two_sided,
        high=mean + two_sided,
        lower_bound=mean - one_sided,
        upper_bound=mean + one_sided,
        p=p,
    )


def holm(p_values: Sequence[float]) -> np.ndarray:
    """Holm-Bonferroni adjusted p-values (Holm 1979, "A simple sequentially rejective
    multiple test procedure", Scand. J. Statist. 6:65-70).

    Sort the ``m`` p-values ascending; the ``j``-th smallest (``j = 1..m``) becomes
    ``(m - j + 1) * p_(j)``, then a running maximum makes the adjusted values monotone
    and they are capped at 1. Rejecting where the adjusted p < 0.05 keeps the chance of
    any false rejection at 5 %. A NaN (a comparison with no test) stays NaN and does not
    count in ``m``. Returned in the input order.
    """
    p = np.asarray(p_values, dtype=float)
    adjusted = np.full(p.shape, np.nan)
    tested = np.flatnonzero(~np.isnan(p))
    order = tested[np.argsort(p[tested], kind="stable")]
    m = order.size
    scaled = (m - np.arange(m)) * p[order]
    adjusted[order] = np.minimum(np.maximum.accumulate(scaled), 1.0)
    return adjusted


Verdict = Literal["holds", "excluded", "inconclusive"]


def margin_verdict(diff: PairedDifference, delta: float) -> Verdict:
    """Verdict on the goal "A >= B + delta" for ``diff`` of ``a = A``, ``b = B``.

    ``holds`` when the one-sided 95 % lower bound of the mean difference is at least
    ``delta``; ``excluded`` when the one-sided 95 % upper bound is below ``delta`` (the
    goal is missed even allowing for seed noise); otherwise — and with fewer than two
    pairs — ``inconclusive``: more seeds are needed to tell.
    """
    if diff.n < 2:
        return "inconclusive"
    if diff.lower_bound >= delta:
        return "holds"
    if diff.upper_bound < delta:
        return "excluded"
    return "inconclusive"


Equivalence = Literal["no practical difference", "differs", "inconclusive"]


def equivalence_verdict(diff: PairedDifference, margin: float) -> Equivalence:
    """Whether A and B are practically the same, within ``±margin``.

    ``no practical difference`` when the two-sided 95 % interval lies inside
    ``[-margin, +margin]`` (equivalence by confidence interval) — even if it also
    excludes 0, since a real but smaller-than-margin difference does not matter;
    ``differs`` when the interval excludes 0; otherwise (and with fewer than two pairs)
    ``inconclusive``.
    """
    if margin < 0:
        raise ValueError(f"an equivalence margin is a half-width, not {margin}")
    if diff.n < 2:
        return "inconclusive"
    if -margin <= diff.low and diff.high <= margin:
        return "no practical difference"
    if diff.low > 0 or diff.high < 0:
        return "differs"
    return "inconclusive"


def plateau_gain(steps: Sequence[float], scores: Sequence[float], tail: float = 0.3) -> float:
    """How much training still helped at the end: the best validation score in the last
    ``tail`` share of the step budget minus the best score before it.

    The budget is the largest step, so the tail is the evaluations at steps above
    ``(1 - tail) * max(steps)``. A gain near 0 or negative means the curve had plateaued
    (more steps would not help); a clear gain means the run was cut short. NaN scores
    are ignored; NaN when either part has no score.
    """
    if len(steps) != len(scores):
        raise ValueError(f"one score per step: {len(steps)} steps vs {len(scores)} scores")
    if not 0 < tail < 1:
        raise ValueError(f"tail is a share of the steps in (0, 1), not {tail}")
    step = np.asarray(steps, dtype=float)
    score = np.asarray(scores, dtype=float)
    keep = ~np.isnan(score)
    step, score = step[keep], score[keep]
    if step.size == 0:
        return math.nan
    late = step > (1 - tail) * step.max()
    if late.all() or not late.any():
        return math.nan
    return float(score[late].max() - score[~late].max())
