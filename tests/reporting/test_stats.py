"""Confidence intervals, comparisons and verdicts (reporting/stats.py) against hand computations."""

from __future__ import annotations

import math

import pytest
from scipy import stats as scipy_stats

from mgm_studies.reporting.stats import BETTER, NOISE, TOO_FEW, WORSE, Comparison, compare, holm, judge, mean_interval


def test_the_interval_of_three_values_is_the_student_t_interval():
    # mean 2, s = 1, t(0.975, 2) = 4.302653: half-width 4.302653 / sqrt(3) = 2.484138.
    interval = mean_interval([1.0, 2.0, 3.0])
    assert (interval.mean, interval.n) == (2.0, 3)
    assert interval.low == pytest.approx(2 - 2.484138, abs=1e-6) and interval.high == pytest.approx(4.484138, abs=1e-6)


def test_one_value_has_no_interval_and_nans_are_dropped():
    interval = mean_interval([5.0, math.nan])
    assert interval.mean == 5.0 and interval.n == 1 and math.isnan(interval.low) and math.isnan(interval.high)
    assert mean_interval([]).n == 0


def test_arms_sharing_seeds_are_compared_paired():
    # Differences 1, 2, 3: mean 2, s = 1, se = 1/sqrt(3), t = 3.4641 on 2 degrees of freedom, p = 0.07418.
    arm, best = {0: 2.0, 1: 3.0, 2: 5.0}, {0: 1.0, 1: 1.0, 2: 2.0}
    c = compare(arm, best)
    assert c.paired and c.n == 3 and c.diff == pytest.approx(2.0)
    assert c.p == pytest.approx(0.074180, abs=1e-5)
    assert c.p == pytest.approx(scipy_stats.ttest_rel([2, 3, 5], [1, 1, 2]).pvalue)
    assert c.low == pytest.approx(2 - 4.302653 / math.sqrt(3), abs=1e-5)


def test_pairing_removes_the_variation_both_arms_share():
    # Seeds move both arms together (1, 5, 9) and the arm is always 0.1 higher: paired, that is certain; unpaired
    # (no shared seed), the seed spread hides it.
    best = {0: 1.0, 1: 5.0, 2: 9.0}
    arm = {0: 1.1, 1: 5.1, 2: 9.1}
    assert compare(arm, best).p < 1e-6
    unpaired = compare({10 + k: v for k, v in arm.items()}, best)
    assert not unpaired.paired and unpaired.p > 0.9
    assert unpaired.p == pytest.approx(scipy_stats.ttest_ind([1.1, 5.1, 9.1], [1, 5, 9], equal_var=False).pvalue)


def test_welch_needs_two_values_per_arm():
    c = compare({0: 1.0}, {1: 2.0, 2: 3.0})
    assert math.isnan(c.p) and c.diff == pytest.approx(-1.5)
    assert judge([c], "min")[0].verdict == TOO_FEW


def test_holm_steps_down():
    # Sorted 0.01, 0.03, 0.04: x3 = 0.03, x2 = 0.06, x1 = 0.04 -> raised to 0.06 (monotone).
    assert holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    assert holm([0.5, math.nan]) == pytest.approx([0.5, math.nan], nan_ok=True)


def test_verdicts_follow_the_mode_and_the_adjusted_p():
    def comparison(diff, p):
        return Comparison(diff, math.nan, math.nan, p, p, True, 3, "")

    # Holm over three tests: 0.001 x 3 = 0.003, 0.03 x 2 = 0.06, 0.04 -> 0.06: only the first stays below 0.05,
    # though 0.03 and 0.04 alone would pass.
    judged = judge([comparison(0.5, 0.001), comparison(0.1, 0.03), comparison(0.2, 0.04)], "min")
    assert [c.verdict for c in judged] == [WORSE, NOISE, NOISE]
    assert [c.p_adjusted for c in judged] == pytest.approx([0.003, 0.06, 0.06])
    # Higher is better under max: an arm significantly above the best is better, below it worse.
    assert [c.verdict for c in judge([comparison(0.5, 0.001), comparison(-0.5, 0.001)], "max")] == [BETTER, WORSE]
