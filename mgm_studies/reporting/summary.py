"""The report's Summary section: what was swept and how, the trials and their time, and the best configuration per
metric compared with its runner-up, with the note on the statistics every later section uses."""

from __future__ import annotations

import json

import pandas as pd

from mgm_studies.names import DONE, PARAM_PLANNED
from mgm_studies.reporting import stats as S
from mgm_studies.reporting import tables as T
from mgm_studies.reporting.cells import config_text, duration, mean_ci, metric_order, versus
from mgm_studies.reporting.collect import StudyData
from mgm_studies.reporting.render import Block, Bullets, Code, Heading, Link, Paragraph, Table

STATS_NOTE = (
    "Statistics: means with 95 % Student-t intervals over finished trials; each value is compared with the best one by "
    "a t-test on the differences, paired by seed (and the other axes' values) where both share at least two such "
    "blocks, else Welch's unpaired test; p-values are two-sided and Holm-adjusted over the table's comparisons with "
    "its best; the intervals are each at 95 % on their own, not adjusted, so with many values an interval of a "
    "difference can exclude 0 while its adjusted p stays above 0.05. Verdicts at 0.05: worse / better than the "
    "best, or within noise (this study cannot tell them apart, which is not evidence that they are equal). The best "
    "was picked on the same trials, which favours it slightly."
)


def summary_section(data: StudyData, leveled: pd.DataFrame, order: dict[str, list[str]]) -> list[Block]:
    counts = T.status_counts(data)
    hours, kind = T.compute_hours(data)
    search = data.search
    swept = [[f"{axis}: ", ", ".join(order[axis])] for axis in data.axes] or ["nothing (one configuration)"]
    opens = ". The links open the runs once the MLflow UI serves this store: "
    ui = [opens, Code(data.ui_hint), " (from the folder the sweep ran in)"] if data.ui_hint else []
    partial = []
    if data.sweep_end is None:  # a running sweep (`mgm-studies status STUDY` follows it)
        done = int(data.trials["status"].isin(DONE).sum())
        planned = data.search.get(PARAM_PLANNED, "?")
        partial = [Paragraph(f"Partial report: {done} of {planned} trials done, the sweep is still running.")]
    blocks: list[Block] = [
        Heading("Summary"),
        *partial,
        Bullets(
            [
                ["Swept: ", *(["; ".join("".join(s) for s in swept)] if data.axes else swept)],
                f"Search: {search.get('search.algorithm', '?')}, scheduler {_scheduler(search)}, seeds "
                f"{search.get('seeds', '?')}; optimised: "
                + ", ".join(f"{m} ({mode})" for m, mode in zip(data.metrics, data.modes, strict=False)),
                f"Trials: {len(data.trials)} — " + ", ".join(f"{n} {status}" for status, n in counts.items()),
                f"Time: sweep wall {duration(_trials_wall(data))} (first trial's start to last trial's end)"
                + ("" if data.sweep_end is not None else " (still running)")
                + f"; {hours:.3g} {kind}-hours of trials",
                ["MLflow: ", Link(f"sweep run {data.sweep_run_id}", data.run_url(data.sweep_run_id)), *ui],
            ]
        ),
    ]
    rows = []
    for metric in sorted(dict.fromkeys([*data.metrics, *data.eval_metrics]), key=metric_order):
        best = T.best_configuration(leveled, data.axes, metric, data.mode_of(metric))
        if best is None:
            continue
        if best.runner_up is None:
            against = "–"
        else:
            second = ", ".join(f"{k}={v}" for k, v in best.runner_up.items())
            c = best.versus_runner_up
            clear = c is not None and c.verdict in (S.WORSE, S.BETTER)
            against = f"{second}: {versus(c, 'seed')}" + ("" if clear else " — the winner is not distinguishable")
        rows.append(
            [
                f"{metric} (optimised)" if metric in data.metrics else metric,
                config_text(best.config),
                mean_ci(best.mean, best.std, best.n, best.interval.low, best.interval.high),
                against,
                Link(best.run_id[:8], best.url),
            ]
        )
    if rows:
        header = ["metric", "best configuration", "mean ± std (n) [95 % CI]", "runner-up: difference, verdict"]
        blocks.append(
            Table(
                [*header, "best trial"],
                rows,
                caption="Best configuration per metric (mean over its finished trials; lower is better unless the "
                "sweep maximised it), ordered by metric then number of sampling steps",
            )
        )
        blocks.append(Paragraph(STATS_NOTE))
    if (note := _nfe_note(data)) is not None:
        blocks.append(Paragraph(note))
    return blocks


def _trials_wall(data: StudyData) -> float:
    """Seconds from the first trial's start to the last trial's end (a running trial: until now). Not the parent
    run's span, which also counts the driver's start-up, teacher training and any later `--resume` of a finished
    sweep."""
    starts = data.trials["start_time"].dropna()
    if starts.empty:
        return float("nan")
    ends = data.trials["end_time"]
    last = pd.Timestamp.now(tz="UTC") if ends.isna().any() else ends.max()
    return (last - starts.min()).total_seconds()


def _nfe_note(data: StudyData) -> str | None:
    """What K in `nfe-K` counts: sampling steps; and the network evaluations per sample they cost (`fevals/nfe-K`)."""
    if not data.fevals:
        return None
    costs = [f"K={k}: " + "/".join(f"{v:g}" for v in values) for k, values in data.fevals.items()]
    doubled = any(v == 2 * k for k, values in data.fevals.items() for v in values)
    return (
        "nfe-K means K sampling steps. Network evaluations per sample (MLflow's fevals/nfe-K; several values when "
        "the objectives differ): " + ", ".join(costs) + "." + (" A two-stage step (Heun) costs 2K." if doubled else "")
    )


def _scheduler(search: dict[str, str]) -> str:
    try:
        return json.loads(search.get("search.scheduler", "{}")).get("name", "?")
    except ValueError:
        return "?"
