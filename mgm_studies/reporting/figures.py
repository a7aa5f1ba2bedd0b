"""The report's figures (matplotlib, headless), saved as PNGs under the report's figures/ by a `FigureWriter`.

Inputs are the tables of `tables.py` and histories read by `figure_section.py`; nothing here reads MLflow.
"""

from __future__ import annotations

import math
import warnings
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from mgm_studies.reporting.tables import FINISHED, finished_trials

_COLORS = plt.get_cmap("tab10")
FIGURES = "figures"  # the report's folder of figures


def _finish(fig: Figure, ax, *, legend: int = 7) -> Figure:
    """How a one-panel line figure ends: a light grid, the legend, a tight layout."""
    ax.grid(alpha=0.3)
    ax.legend(fontsize=legend)
    fig.tight_layout()
    return fig


def metric_vs_axis(leveled: pd.DataFrame, levels: list[str], axis: str, metric: str) -> Figure:
    """Every finished trial's `metric` at its level of `axis` (dots), with the mean ± std over them (bars)."""
    done = finished_trials(leveled, metric)
    fig, ax = plt.subplots(figsize=(max(4.0, 1.1 * len(levels) + 2), 3.6), dpi=100)
    rng = np.random.default_rng(0)
    for i, level in enumerate(levels):
        values = done.loc[done[axis] == level, metric].to_numpy(dtype=float)
        if len(values):
            ax.scatter(i + rng.uniform(-0.12, 0.12, len(values)), values, s=14, color="tab:gray", alpha=0.7, zorder=2)
            spread = values.std(ddof=1) if len(values) > 1 else 0.0
            ax.errorbar(i + 0.25, values.mean(), yerr=spread, fmt="o", color="tab:blue", capsize=4, zorder=3)
    ax.set_xticks(range(len(levels)), levels, rotation=20 if max(map(len, levels), default=0) > 8 else 0)
    ax.set_xlim(-0.6, len(levels) - 0.4)
    ax.set(xlabel=axis, ylabel=metric)
    ax.set_title(f"{metric} by {axis} (dots: trials; blue: mean ± std)", fontsize=9)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    return fig


def nfe_ladder(leveled: pd.DataFrame, levels: list[str], axis: str | None, ladder: list[tuple[int, str]]) -> Figure:
    """Quality against the number of sampling steps K: mean ± std over finished trials, one line per level of `axis`
    (one line for all trials when nothing was swept)."""
    fig, ax = plt.subplots(figsize=(5.0, 3.6), dpi=100)
    ks = [k for k, _ in ladder]
    groups = [(level, leveled[leveled[axis] == level]) for level in levels] if axis else [("all trials", leveled)]
    for i, (label, group) in enumerate(groups):
        done = group[group["status"] == FINISHED]
        means = [done[name].mean() for _, name in ladder]
        stds = [done[name].std() if done[name].notna().sum() > 1 else 0.0 for _, name in ladder]
        if all(math.isnan(m) for m in means):
            continue
        ax.errorbar(ks, means, yerr=stds, marker="o", capsize=3, label=label, color=_COLORS(i % 10))
    ax.set_xscale("log", base=2)
    ax.set_xticks(ks, [str(k) for k in ks])
    ax.set(xlabel="sampling steps (NFE)", ylabel=ladder[0][1].split("/")[0] if ladder else "")
    ax.set_title(f"quality vs steps{f', by {axis}' if axis else ''}", fontsize=9)
    return _finish(fig, ax, legend=8)


def loss_curves(
    curves: list[tuple[str, list[int], list[float]]], *, metric: str = "loss", separate: bool = False
) -> Figure:
    """Training loss against step for a few trials [(label, steps, values)], smoothed by a running mean of ~2 % of
    the steps (the raw values faint behind). `separate`: one panel per trial, each with its own y axis (losses of
    different objectives are different quantities and share no scale)."""
    n = len(curves) if separate and curves else 1
    columns = min(n, 3)
    rows = -(-n // columns)
    fig, axes = plt.subplots(rows, columns, figsize=(6.0 if n == 1 else 3.2 * columns, 3.6 * rows), dpi=100)
    axes = np.atleast_1d(axes).ravel()
    for i, (label, steps, values) in enumerate(curves):
        ax = axes[i if separate else 0]
        steps_a, values_a = np.asarray(steps), np.asarray(values, dtype=float)
        color = _COLORS(i % 10)
        ax.plot(steps_a, values_a, color=color, alpha=0.2, linewidth=0.8)
        window = max(1, len(values_a) // 50)
        if window > 1:
            smooth = np.convolve(values_a, np.ones(window) / window, mode="valid")
            ax.plot(steps_a[window - 1 :], smooth, color=color, linewidth=1.5, label=label)
        else:
            ax.lines[-1].set_label(label)
    for ax in axes[len(curves) :] if separate else axes[1:]:
        ax.axis("off")
    used = axes[: len(curves)] if separate else axes[:1]
    for ax in used:
        values = [np.asarray(line.get_ydata()) for line in ax.lines]
        if values and all(np.all(v > 0) for v in values if len(v)):
            ax.set_yscale("log")
        ax.set(xlabel="training step", ylabel=metric)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    title = f"{metric} of the best trials" + (" (own scale each: different objectives)" if separate else "")
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return fig


def metric_curves(
    curves: list[tuple[str, list[int], list[float], bool]], order: list[str], *, metric: str, mode: str
) -> Figure:
    """`metric` against training step for every trial [(level, steps, values, stopped early)]: one colour per level
    of the main axis (in `order`), trials stopped early by the scheduler dashed and ending in a cross."""
    fig, ax = plt.subplots(figsize=(6.4, 3.8), dpi=100)
    colors = {level: _COLORS(i % 10) for i, level in enumerate(order)}
    labelled: set[str] = set()
    for level, steps, values, stopped in curves:
        if not steps:
            continue
        color = colors.get(level, "grey")
        label = None if level in labelled else level
        labelled.add(level)
        ax.plot(steps, values, color=color, alpha=0.8, linewidth=1.2, linestyle="--" if stopped else "-", label=label)
        if stopped:
            ax.plot(steps[-1:], values[-1:], marker="x", color=color, markersize=7)
    if any(s for *_, s in curves):
        ax.plot([], [], color="grey", linestyle="--", marker="x", label="stopped early")
    ax.set(xlabel="training step", ylabel=metric)
    ax.set_title(
        f"{metric} during training, every trial ({'lower' if mode == 'min' else 'higher'} is better)", fontsize=9
    )
    return _finish(fig, ax)


def importance_bars(importances: dict[str, float], *, evaluator: str, metric: str) -> Figure:
    """Horizontal bars of each axis's share of the metric's variance."""
    names = list(importances)[::-1]
    fig, ax = plt.subplots(figsize=(5.5, 0.5 * len(names) + 1.4), dpi=100)
    ax.barh(names, [importances[n] for n in names], color="tab:blue")
    ax.set_xlim(0, 1)
    ax.set_xlabel("importance (share, sums to 1)")
    ax.set_title(f"parameter importance for {metric} ({evaluator})", fontsize=9)
    fig.tight_layout()
    return fig


def parallel_coordinates(
    leveled: pd.DataFrame, order: dict[str, list[str]], axes: list[str], metric: str, mode: str
) -> Figure:
    """One polyline per finished trial through its level on each axis and its metric; darker is better."""
    done = finished_trials(leveled, metric)
    columns = [*axes, metric]
    fig, ax = plt.subplots(figsize=(max(5.0, 1.8 * len(columns)), 3.8), dpi=100)
    values = done[metric].to_numpy(dtype=float)
    low, high = (values.min(), values.max()) if len(values) else (0.0, 1.0)
    span = high - low if high > low else 1.0
    cmap = plt.get_cmap("viridis" if mode == "min" else "viridis_r")  # the best value is darkest
    for _, trial in done.iterrows():
        ys = [order[a].index(trial[a]) / max(len(order[a]) - 1, 1) for a in axes]
        ys.append((trial[metric] - low) / span)
        ax.plot(range(len(columns)), ys, color=cmap((trial[metric] - low) / span), alpha=0.75, linewidth=1.2)
    for i, axis in enumerate(axes):
        ax.axvline(i, color="black", linewidth=0.8)
        for j, level in enumerate(order[axis]):
            ax.text(i + 0.03, j / max(len(order[axis]) - 1, 1), level, fontsize=7, va="center")
    ax.axvline(len(axes), color="black", linewidth=0.8)
    for frac in (0.0, 0.5, 1.0):
        ax.text(len(axes) + 0.03, frac, f"{low + frac * span:.3g}", fontsize=7, va="center")
    ax.set_xticks(range(len(columns)), columns, fontsize=8)
    ax.set_yticks([])
    ax.set_xlim(-0.2, len(columns) - 0.5)
    ax.set_title(f"parallel coordinates (finished trials; darker: better {metric})", fontsize=9)
    fig.tight_layout()
    return fig


def parameter_importance(
    leveled: pd.DataFrame, order: dict[str, list[str]], axes: list[str], metric: str, mode: str
) -> tuple[dict[str, float], str] | None:
    """Optuna's fANOVA importance of each axis for `metric` over the finished trials (levels as categories); PED-ANOVA
    when fANOVA cannot run. None with fewer than two distinct configurations."""
    import optuna
    from optuna.distributions import CategoricalDistribution
    from optuna.importance import FanovaImportanceEvaluator, PedAnovaImportanceEvaluator

    done = finished_trials(leveled, metric)
    if not axes or done[axes].drop_duplicates().shape[0] < 2:
        return None
    distributions = {axis: CategoricalDistribution(order[axis]) for axis in axes}
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="minimize" if mode == "min" else "maximize")
    for _, trial in done.iterrows():
        study.add_trial(
            optuna.trial.create_trial(
                params={axis: trial[axis] for axis in axes}, distributions=distributions, value=float(trial[metric])
            )
        )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Optuna marks the evaluators experimental
        for name, evaluator in (
            ("fANOVA", FanovaImportanceEvaluator(seed=0)),
            ("PED-ANOVA", PedAnovaImportanceEvaluator()),
        ):
            try:
                importances = optuna.importance.get_param_importances(study, evaluator=evaluator)
            except Exception:  # e.g. too few trials for one of them
                continue
            return {k: float(v) for k, v in importances.items()}, name
    return None


class FigureWriter:
    """Saves figures under figures/ of the report being built (`root`); returns their paths relative to it."""

    def __init__(self, root: Path) -> None:
        self.root = root
        (root / FIGURES).mkdir(parents=True)

    def save(self, name: str, fig: Figure) -> str:
        path = f"{FIGURES}/{name}.png"
        try:
            fig.savefig(self.root / path, dpi=100)
        finally:
            plt.close(fig)
        return path


def pareto_front(points: pd.DataFrame, x: str, y: str, *, modes: tuple[str, str], labels: list[str]) -> Figure:
    """Configuration means of two metrics (one dot each), the Pareto front (`points.front`) joined and labelled."""
    fig, ax = plt.subplots(figsize=(5.6, 4.0), dpi=100)
    behind = points[~points["front"]]
    ax.scatter(behind[x], behind[y], color="0.6", s=22, label="dominated")
    front = points[points["front"]].sort_values(x)
    ax.plot(front[x], front[y], color=_COLORS(3), marker="o", linewidth=1.2, label="Pareto front")
    for (_, row), label in zip(points.iterrows(), labels, strict=True):
        if row["front"]:
            ax.annotate(label, (row[x], row[y]), fontsize=7, xytext=(3, 3), textcoords="offset points")
    ax.set_xlabel(f"{x} ({'lower' if modes[0] == 'min' else 'higher'} is better)")
    ax.set_ylabel(f"{y} ({'lower' if modes[1] == 'min' else 'higher'} is better)")
    ax.set_title("configuration means over seeds", fontsize=9)
    return _finish(fig, ax)


def compare_levels(points: list[tuple[str, str, object]], levels: list[str], *, axis: str, metric: str) -> Figure:
    """Each study's mean of `metric` at each value of `axis` [(study, level, stats.Interval)], side by side with
    its 95 % interval (none drawn for a single trial)."""
    studies = list(dict.fromkeys(study for study, _, _ in points))
    fig, ax = plt.subplots(figsize=(max(4.5, 1.2 * len(levels) + 2), 3.6), dpi=100)
    width = 0.7 / max(1, len(studies))
    for i, study in enumerate(studies):
        xs, ys, errors = [], [], [[], []]
        for study_, level, interval in points:
            if study_ != study or interval.n == 0:
                continue
            xs.append(levels.index(level) - 0.35 + width * (i + 0.5))
            ys.append(interval.mean)
            spread = not np.isnan(interval.low)
            errors[0].append(interval.mean - interval.low if spread else 0.0)
            errors[1].append(interval.high - interval.mean if spread else 0.0)
        ax.errorbar(xs, ys, yerr=errors, fmt="o", color=_COLORS(i % 10), capsize=3, label=study)
    ax.set_xticks(range(len(levels)), levels, rotation=20 if len(levels) > 4 else 0)
    ax.set(xlabel=axis, ylabel=metric)
    return _finish(fig, ax)
