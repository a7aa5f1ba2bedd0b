"""How sure a report can be: confidence intervals over seeds, and comparisons of each configuration with the best.

- **Interval**: the mean of n values with its 95 % Student-t interval, mean ± t(0.975, n - 1) s / sqrt(n). With a
  handful of seeds the t quantile is large (12.7 at n = 2, 4.3 at n = 3): the interval says how little two seeds
  pin down.
- **Comparison** of an arm with the best arm: paired when the two share at least two blocks (a block is what the
  sweep held fixed across arms: the seed, and the other axes' levels), a paired t-test on the per-block differences
  over the shared blocks; otherwise Welch's unpaired t-test (each arm needs two values). Pairing removes the
  seed-to-seed variation both arms share, which is most of it when seeds fix the data, noise and initialisation.
- **Multiple comparisons**: a table compares k arms with its best, k - 1 tests; their p-values are Holm-adjusted
  (step-down Bonferroni, which controls the family-wise error at `ALPHA` without assuming independence).
- **Verdict** at `ALPHA` on the adjusted p-value: `worse` or `better` than the best (by the sweep's mode), else
  `within noise` (the study cannot tell them apart: not evidence that they are equal), or `too few trials` when no
  test is possible. The best arm was chosen on the same trials, which favours it slightly; `within noise` for the
  runner-up means the choice of winner is not supported.

Closed-form checks against hand computations: tests/reporting/test_stats.py.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass

from scipy import stats as _scipy

LEVEL = 0.95
ALPHA = 0.05
BEST, WORSE, BETTER, NOISE, TOO_FEW = "best", "worse", "better", "within noise", "too few trials"


@dataclass(frozen=True)
class Interval:
    """Mean of n values and its 95 % t interval; low = high = nan when n < 2."""

    mean: float
    low: float
    high: float
    n: int


def mean_interval(values: Sequence[float]) -> Interval:
    """The mean of `values` (NaNs dropped) with its Student-t interval at `LEVEL`."""
    xs = [float(v) for v in values if not math.isnan(float(v))]
    n = len(xs)
    if n == 0:
        return Interval(math.nan, math.nan, math.nan, 0)
    mean = sum(xs) / n
    if n < 2:
        return Interval(mean, math.nan, math.nan, 1)
    half = _t_quantile(n - 1) * _sd(xs) / math.sqrt(n)
    return Interval(mean, mean - half, mean + half, n)


@dataclass(frozen=True)
class Comparison:
    """`arm` minus `best` (diff > 0: the arm's values are higher), its interval, the two-sided p-value (raw and
    Holm-adjusted within its table), how it was tested, and the verdict."""

    diff: float
    low: float
    high: float
    p: float
    p_adjusted: float
    paired: bool
    n: int  # pairs (paired) or the smaller arm's size (Welch)
    verdict: str


def compare(arm: Mapping[Hashable, float], best: Mapping[Hashable, float]) -> Comparison:
    """`arm` against `best`, each {block: value} (see the module docstring); verdict left to `judge`."""
    arm = {k: float(v) for k, v in arm.items() if not math.isnan(float(v))}
    best = {k: float(v) for k, v in best.items() if not math.isnan(float(v))}
    shared = [k for k in arm if k in best]
    if len(shared) >= 2:
        diffs = [arm[k] - best[k] for k in shared]
        n = len(diffs)
        mean, sd = sum(diffs) / n, _sd(diffs)
        se = sd / math.sqrt(n)
        p = _p_from_t(mean, se, n - 1)
        half = _t_quantile(n - 1) * se
        return Comparison(mean, mean - half, mean + half, p, p, True, n, "")
    a, b = list(arm.values()), list(best.values())
    if len(a) < 2 or len(b) < 2:
        diff = (sum(a) / len(a) - sum(b) / len(b)) if a and b else math.nan
        return Comparison(diff, math.nan, math.nan, math.nan, math.nan, False, min(len(a), len(b)), "")
    va, vb = _sd(a) ** 2 / len(a), _sd(b) ** 2 / len(b)
    diff, se = sum(a) / len(a) - sum(b) / len(b), math.sqrt(va + vb)
    # Welch-Satterthwaite degrees of freedom (two arms with no spread at all: any difference is certain).
    df = (va + vb) ** 2 / (va**2 / (len(a) - 1) + vb**2 / (len(b) - 1)) if va + vb > 0 else len(a) + len(b) - 2
    p = _p_from_t(diff, se, df)
    half = _t_quantile(df) * se
    return Comparison(diff, diff - half, diff + half, p, p, False, min(len(a), len(b)), "")


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm's step-down adjustment of `p_values` (NaN stays NaN and does not count as a test)."""
    tested = sorted((p, i) for i, p in enumerate(p_values) if not math.isnan(p))
    m, adjusted, running = len(tested), [math.nan] * len(p_values), 0.0
    for rank, (p, i) in enumerate(tested):
        running = max(running, min(1.0, (m - rank) * p))
        adjusted[i] = running
    return adjusted


def judge(comparisons: Sequence[Comparison], mode: str) -> list[Comparison]:
    """Holm-adjust a table's comparisons with its best and give each its verdict (`mode`: the metric's min / max)."""
    adjusted = holm([c.p for c in comparisons])
    out = []
    for c, p in zip(comparisons, adjusted, strict=True):
        if math.isnan(p):
            verdict = TOO_FEW
        elif p >= ALPHA:
            verdict = NOISE
        else:
            verdict = WORSE if (c.diff > 0) == (mode == "min") else BETTER
        out.append(Comparison(c.diff, c.low, c.high, c.p, p, c.paired, c.n, verdict))
    return out


def _sd(xs: Sequence[float]) -> float:
    mean = sum(xs) / len(xs)
    return math.sqrt(sum((x - mean) ** 2 for x in xs) / (len(xs) - 1))


def _t_quantile(df: float) -> float:
    return float(_scipy.t.ppf(0.5 + LEVEL / 2, df))


def _p_from_t(diff: float, se: float, df: float) -> float:
    """Two-sided p-value of t = diff / se; se = 0 (no spread) gives 1 for no difference, else 0."""
    if se == 0:
        return 1.0 if diff == 0 else 0.0
    return float(2 * _scipy.t.sf(abs(diff / se), df))
