"""The numbers of an ablation report, computed from the trial table of `collect.py` (pure pandas, no I/O).

- Levels: each axis value becomes a level (its label); a numeric axis with more than `MAX_LEVELS` distinct values
  (a sampled range) is cut into `BINS` quantile bins, so every table has a handful of rows.
- The best configuration for a metric: the combination of levels with the best mean over its finished trials.
- An ablation table for (axis, metric): for each level of the axis, mean ± std and the 95 % interval over the finished
  trials that have it (the other axes marginalised), its comparison with the best level (paired by seed and the other
  axes' levels where the sweep pairs them; Holm-adjusted; a verdict: `stats.py`), and mean ± std over the trials whose
  other axes sit at the best configuration; with the number of trials behind each figure and of trials that did not
  finish.
- The best configuration is compared with the runner-up the same way (paired by seed), so a report says when the
  winner is not distinguishable from it.
- Claims (`claims.py`) compare their values with `against`, as an ablation compares its levels with the best one.

Only `finished` trials enter a mean: a diverged or failed trial has no final metric, and a trial stopped early by a
scheduler was measured at fewer steps than the others.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import pandas as pd

from mgm_studies.names import SEED
from mgm_studies.reporting import stats
from mgm_studies.reporting.collect import StudyData

MAX_LEVELS = 8
BINS = 4
FINISHED = "finished"


def fmt(value) -> str:
    """An axis value as the report shows it (floats to 4 significant digits)."""
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def levels(data: StudyData) -> tuple[pd.DataFrame, dict[str, list[str]]]:
    """(the trial table with each axis column replaced by its level label, {axis: levels in display order})."""
    table = data.trials.copy()
    order: dict[str, list[str]] = {}
    for axis in data.axes:
        column = table[axis]
        numeric = pd.api.types.is_numeric_dtype(column)
        if numeric and column.nunique() > MAX_LEVELS:
            bins = pd.qcut(column, q=BINS, duplicates="drop")
            labels = {iv: f"[{fmt(iv.left)}, {fmt(iv.right)}]" for iv in bins.cat.categories}
            table[axis] = bins.map(labels).astype(str)
            order[axis] = [labels[iv] for iv in bins.cat.categories]
        else:
            values = sorted(column.dropna().unique()) if numeric else list(dict.fromkeys(column.dropna()))
            table[axis] = column.map(fmt)
            order[axis] = [fmt(v) for v in values]
    return table, order


@dataclass
class Best:
    """The best configuration for one metric: its levels, and mean ± std over its finished trials (seeds)."""

    metric: str
    mode: str
    config: dict[str, str]
    mean: float
    std: float
    n: int
    run_id: str  # its best single trial
    url: str
    interval: stats.Interval  # 95 % interval of the mean over seeds
    runner_up: dict[str, str] | None = None  # the second-best configuration (None: only one)
    versus_runner_up: stats.Comparison | None = None  # runner-up minus best, paired by seed


def best_configuration(leveled: pd.DataFrame, axes: list[str], metric: str, mode: str) -> Best | None:
    """The combination of levels with the best mean of `metric` over its finished trials, compared with the
    runner-up; None when no finished trial has the metric."""
    done = finished_trials(leveled, metric)
    if done.empty:
        return None
    if axes:
        grouped = done.groupby(axes, sort=False)[metric].agg(["mean", "std", "count"]).reset_index()
    else:
        grouped = pd.DataFrame([{"mean": done[metric].mean(), "std": done[metric].std(), "count": len(done)}])
    ranked = grouped.sort_values("mean", ascending=mode == "min", kind="stable")
    row = ranked.iloc[0]
    config = {axis: str(row[axis]) for axis in axes}
    members = _members(done, config)
    top = members.loc[members[metric].idxmin() if mode == "min" else members[metric].idxmax()]
    runner_up, versus = None, None
    if len(ranked) > 1:
        runner_up = {axis: str(ranked.iloc[1][axis]) for axis in axes}
        second = _members(done, runner_up)
        versus = stats.judge([stats.compare(_by_seed(second, metric), _by_seed(members, metric))], mode)[0]
    interval = stats.mean_interval(members[metric].tolist())
    mean, std, n = float(row["mean"]), _std(row["std"]), int(row["count"])
    return Best(metric, mode, config, mean, std, n, str(top["run_id"]), str(top["url"]), interval, runner_up, versus)


def finished_trials(leveled: pd.DataFrame, metric: str) -> pd.DataFrame:
    """The finished trials that reported `metric` (the only ones a mean, a test or a figure uses)."""
    if metric not in leveled:
        return leveled[:0]
    return leveled[(leveled["status"] == FINISHED) & leveled[metric].notna()]


def _members(done: pd.DataFrame, config: dict[str, str]) -> pd.DataFrame:
    for axis, level in config.items():
        done = done[done[axis] == level]
    return done


def _by_seed(trials: pd.DataFrame, metric: str, others: list[str] = ()) -> dict[tuple, float]:
    """{block: mean value}: a block is a seed with the levels of `others` (what pairs two arms); repeats of one
    block (a grid run twice) are averaged."""
    if SEED not in trials:  # a table without seeds (hand-made): every trial its own block, compared unpaired
        return {(i,): float(v) for i, v in trials[metric].items()}
    keys = [SEED, *others]
    return {
        (k if isinstance(k, tuple) else (k,)): float(v)
        for k, v in trials.groupby(keys, sort=False, dropna=False)[metric].mean().items()
    }


def _std(value) -> float:
    return 0.0 if value is None or (isinstance(value, float) and math.isnan(value)) else float(value)


@dataclass
class Ablation:
    """One axis against one metric; `rows` has one row per level, in display order."""

    axis: str
    metric: str
    best: Best | None
    # level, mean, std, n, low, high (95 % interval), not_finished, best_mean, best_std, best_n, and the comparison
    # with the best level: diff, diff_low, diff_high, p, p_adjusted, paired, pairs, verdict ("best" on its row).
    rows: pd.DataFrame
    best_level: str | None = None


def ablation(leveled: pd.DataFrame, order: dict[str, list[str]], axes: list[str], axis: str, metric: str, mode: str):
    """The ablation table of `axis` for `metric` (see the module docstring)."""
    best = best_configuration(leveled, axes, metric, mode)
    finished = finished_trials(leveled, metric)
    at_best = finished
    if best is not None:
        at_best = _members(finished, {k: v for k, v in best.config.items() if k != axis})
    others = [a for a in axes if a != axis]
    rows = []
    for level in order[axis]:
        here = finished[finished[axis] == level][metric]
        held = at_best[at_best[axis] == level][metric]
        interval = stats.mean_interval(here.tolist())
        rows.append(
            {
                "level": level,
                "mean": here.mean() if len(here) else math.nan,
                "std": _std(here.std()) if len(here) else math.nan,
                "n": len(here),
                "low": interval.low,
                "high": interval.high,
                "not_finished": int(((leveled[axis] == level) & (leveled["status"] != FINISHED)).sum()),
                "best_mean": held.mean() if len(held) else math.nan,
                "best_std": _std(held.std()) if len(held) else math.nan,
                "best_n": len(held),
            }
        )
    table = pd.DataFrame(rows)
    best_level = _compare_with_best(table, finished, axis, others, metric, mode)
    return Ablation(axis=axis, metric=metric, best=best, rows=table, best_level=best_level)


def against(finished, axis: str, others: list[str], metric: str, reference: str, levels: list[str], mode: str):
    """Each level of `axis` in `levels` minus `reference`, paired by seed and the levels of `others` where the sweep
    pairs them; Holm-adjusted over these comparisons, with verdicts (stats.judge)."""
    blocks = _by_seed(finished[finished[axis] == reference], metric, others)
    raw = [stats.compare(_by_seed(finished[finished[axis] == level], metric, others), blocks) for level in levels]
    return stats.judge(raw, mode)


def _compare_with_best(table: pd.DataFrame, finished, axis: str, others: list[str], metric: str, mode: str):
    """Add each level's comparison with the best level (by marginal mean) to `table`; returns the best level."""
    for column in ("diff", "diff_low", "diff_high", "p", "p_adjusted"):
        table[column] = math.nan
    table["paired"], table["pairs"], table["verdict"] = False, 0, ""
    scored = table[table["n"] > 0]
    if scored.empty:
        return None
    best_index = scored["mean"].idxmin() if mode == "min" else scored["mean"].idxmax()
    best_level = str(table.loc[best_index, "level"])
    indices = [i for i in scored.index if i != best_index]
    levels = [table.loc[i, "level"] for i in indices]
    for i, c in zip(indices, against(finished, axis, others, metric, best_level, levels, mode), strict=True):
        table.loc[i, ["diff", "diff_low", "diff_high", "p", "p_adjusted"]] = [c.diff, c.low, c.high, c.p, c.p_adjusted]
        table.loc[i, ["paired", "pairs", "verdict"]] = [c.paired, c.n, c.verdict]
    table.loc[best_index, "verdict"] = stats.BEST
    return best_level


def status_counts(data: StudyData) -> dict[str, int]:
    """Trials per status (finished, diverged, error, stopped, running), most common first."""
    return {str(k): int(v) for k, v in data.trials["status"].value_counts().items()}


def compute_hours(data: StudyData) -> tuple[float, str]:
    """(hours, "GPU" or "CPU"): the trials' durations times the devices they held; GPU-hours when any trial held a
    GPU, else CPU-hours (cores)."""
    trials = data.trials.dropna(subset=["duration_s"])
    if (trials["gpus"] > 0).any():
        return float((trials["duration_s"] * trials["gpus"]).sum() / 3600), "GPU"
    return float((trials["duration_s"] * trials["cpus"]).sum() / 3600), "CPU"
