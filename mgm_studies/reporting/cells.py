"""How a report writes its numbers: means with their spread and 95 % intervals, comparisons with the best value,
p-values, durations, configurations; and the order its metrics are listed in. Shared by every section and by
`compare.py`."""

from __future__ import annotations

import math

import pandas as pd

from mgm_studies.names import AREA_PREFIX, parse_eval_metric
from mgm_studies.reporting import stats as S


def ci(low: float, high: float) -> str:
    """` [low, high]`, empty where there is no interval."""
    return "" if pd.isna(low) else f" [{low:.3g}, {high:.3g}]"


def mean_ci(mean: float, std: float, n: int, low: float = math.nan, high: float = math.nan) -> str:
    """mean ± std (n) [95 % interval] (no interval given: none shown); `–` without trials."""
    if n == 0 or pd.isna(mean):
        return "–"
    return (f"{mean:.4g} ± {std:.2g} (n={n})" if n > 1 else f"{mean:.4g} (n=1)") + ci(low, high)


def interval_text(iv: S.Interval) -> str:
    """mean (n) [95 % interval]."""
    return "–" if iv.n == 0 else f"{iv.mean:.4g} (n={iv.n}){ci(iv.low, iv.high)}"


def p_text(p: float) -> str:
    """`=0.032`, or `<0.0001` below it (a t-test's tail that far out says only "far")."""
    return "<0.0001" if p < 1e-4 else f"={p:.2g}"


def versus(c: S.Comparison | None, paired_by: str) -> str:
    """A comparison as a table cell: difference [interval], adjusted p, how it was paired, verdict."""
    if c is None:
        return "–"
    if c.verdict == S.TOO_FEW:
        return f"{c.diff:+.3g}: {c.verdict}" if not pd.isna(c.diff) else c.verdict
    how = f"paired by {paired_by}, n={c.n}" if c.paired else f"Welch, n={c.n}"
    return f"{c.diff:+.3g}{ci(c.low, c.high)}, p{p_text(c.p_adjusted)} ({how}): {c.verdict}"


VERSUS_BEST = "vs the best value: difference [95 % CI], Holm p, verdict"  # the header of `ablation_cells`' third


def ablation_cells(row, paired_by: str) -> list[str]:
    """The first cells of an ablation row (`tables.ablation`): level, mean ± std (n) [CI], versus the best level."""
    if row.verdict == S.BEST:
        against = "best"
    elif row.n:
        c = S.Comparison(
            row.diff, row.diff_low, row.diff_high, row.p, row.p_adjusted, bool(row.paired), int(row.pairs), row.verdict
        )
        against = versus(c, paired_by)
    else:
        against = "–"
    return [row.level, mean_ci(row.mean, row.std, row.n, row.low, row.high), against]


def config_text(config: dict[str, str]) -> str:
    """`a=1, b=x`, or `(the only one)` when nothing was swept."""
    return ", ".join(f"{k}={v}" for k, v in config.items()) or "(the only one)"


def duration(seconds: float) -> str:
    if pd.isna(seconds):
        return "–"
    minutes, secs = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min" if hours else (f"{minutes} min {secs:02d} s" if minutes else f"{secs} s")


def slug(text: str) -> str:
    """`text` as a file name: alphanumerics kept, anything else a dash."""
    return "".join(c if c.isalnum() else "-" for c in text).strip("-").lower()


def metric_order(metric: str) -> tuple[str, bool, int, str]:
    """Sort key: the metric (its convergence area after it), then K for `family/nfe-K`, then the name."""
    parsed = parse_eval_metric(metric)
    if parsed is None:
        return (metric, False, -1, metric)
    family, k = parsed
    return (family.removeprefix(AREA_PREFIX), family.startswith(AREA_PREFIX), k, metric)
