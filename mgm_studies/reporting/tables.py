"""The numbers of an ablation report, computed from the trial table of `collect.py` (pure pandas, no I/O).

- Levels: each axis value becomes a level (its label); a numeric axis with more than `MAX_LEVELS` distinct values
  (a sampled range) is cut into `BINS` quantile bins, so every table has a handful of rows.
- The best configuration for a metric: the combination of levels with the best mean over its finished trials.
- An ablation table for (axis, metric): for each level of the axis, mean ± std over the finished trials that have it
  (the other axes marginalised), and the same over the trials whose other axes sit at the best configuration; with
  the number of trials behind each figure and of trials that did not finish.

Only `finished` trials enter a mean: a diverged or failed trial has no final metric, and a trial stopped early by a
scheduler was measured at fewer steps than the others.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import pandas as pd

from mgm_studies.reporting.collect import StudyData

MAX_LEVELS = 8
BINS = 4
FINISHED = "finished"


def fmt(value) -> str:
    """An axis value as the report shows it (floats to 4 significant digits)."""
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


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


def best_configuration(leveled: pd.DataFrame, axes: list[str], metric: str, mode: str) -> Best | None:
    """The combination of levels with the best mean of `metric` over its finished trials; None when none has it."""
    done = leveled[(leveled["status"] == FINISHED) & leveled[metric].notna()] if metric in leveled else leveled[:0]
    if done.empty:
        return None
    if axes:
        grouped = done.groupby(axes, sort=False)[metric].agg(["mean", "std", "count"]).reset_index()
    else:
        grouped = pd.DataFrame([{"mean": done[metric].mean(), "std": done[metric].std(), "count": len(done)}])
    row = grouped.loc[grouped["mean"].idxmin() if mode == "min" else grouped["mean"].idxmax()]
    config = {axis: str(row[axis]) for axis in axes}
    members = done
    for axis, level in config.items():
        members = members[members[axis] == level]
    top = members.loc[members[metric].idxmin() if mode == "min" else members[metric].idxmax()]
    return Best(
        metric=metric,
        mode=mode,
        config=config,
        mean=float(row["mean"]),
        std=_std(row["std"]),
        n=int(row["count"]),
        run_id=str(top["run_id"]),
        url=str(top["url"]),
    )


def _std(value) -> float:
    return 0.0 if value is None or (isinstance(value, float) and math.isnan(value)) else float(value)


@dataclass
class Ablation:
    """One axis against one metric; `rows` has one row per level, in display order."""

    axis: str
    metric: str
    best: Best | None
    rows: pd.DataFrame  # level, mean, std, n, not_finished, best_mean, best_std, best_n


def ablation(leveled: pd.DataFrame, order: dict[str, list[str]], axes: list[str], axis: str, metric: str, mode: str):
    """The ablation table of `axis` for `metric` (see the module docstring)."""
    best = best_configuration(leveled, axes, metric, mode)
    finished = leveled[(leveled["status"] == FINISHED) & leveled[metric].notna()]
    at_best = finished
    if best is not None:
        for other in axes:
            if other != axis:
                at_best = at_best[at_best[other] == best.config[other]]
    rows = []
    for level in order[axis]:
        here = finished[finished[axis] == level][metric]
        held = at_best[at_best[axis] == level][metric]
        rows.append(
            {
                "level": level,
                "mean": here.mean() if len(here) else math.nan,
                "std": _std(here.std()) if len(here) else math.nan,
                "n": len(here),
                "not_finished": int(((leveled[axis] == level) & (leveled["status"] != FINISHED)).sum()),
                "best_mean": held.mean() if len(held) else math.nan,
                "best_std": _std(held.std()) if len(held) else math.nan,
                "best_n": len(held),
            }
        )
    return Ablation(axis=axis, metric=metric, best=best, rows=pd.DataFrame(rows))


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


def mean_std(values: pd.Series) -> tuple[float, float, int]:
    """(mean, std (0 for one value), n) of the non-missing values."""
    values = values.dropna()
    return (float(values.mean()) if len(values) else math.nan, _std(values.std()), len(values))
