"""`mgm-studies report STUDY`: a study's newest sweep (or `--sweep RUN_ID`) read from MLflow, written as a report
folder: `results.parquet` (one row per trial), `report.md`, `index.html` and `figures/*.png`.

The folder is built in a temporary directory and moved into place only when complete: a report that fails (an
unknown study, an unreachable store) writes nothing. Every report folder holds a marker file (`MARKER`); an existing
folder at the target is replaced only if it holds that marker (a report written before) or is empty. Anything else (a
user's folder or file, a symbolic link) is refused before MLflow is read, unless `force`; a link is then replaced
itself, never followed, and the working and home folders are never replaced.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

import pandas as pd

from mgm_studies.convergence import AREA_PREFIX
from mgm_studies.reporting import figures as F
from mgm_studies.reporting import stats as S
from mgm_studies.reporting import tables as T
from mgm_studies.reporting.collect import EVAL_METRIC, SEED, StudyData, collect_study, nfe_ladder
from mgm_studies.reporting.place import MARKER, check_target, marker_text, place, report_target
from mgm_studies.reporting.render import (
    Block,
    Bullets,
    Code,
    Figure,
    FigureRow,
    Heading,
    Link,
    Paragraph,
    Table,
    to_html,
    to_markdown,
)
from mgm_studies.studies.live import DONE, PARAM_PLANNED

MAX_LOSS_CURVES = 6
# Importance (a random forest over the trials) and parallel coordinates mean little with fewer finished trials than
# this per axis: below it their captions say so.
MIN_TRIALS_PER_AXIS = 10
RESULTS, MARKDOWN, HTML, FIGURES = "results.parquet", "report.md", "index.html", "figures"


def _pm(mean: float, std: float, n: int) -> str:
    if n == 0 or pd.isna(mean):
        return "–"
    return f"{mean:.4g} ± {std:.2g} (n={n})" if n > 1 else f"{mean:.4g} (n=1)"


def _ci(low: float, high: float) -> str:
    return "" if pd.isna(low) else f" [{low:.3g}, {high:.3g}]"


def _mean_ci(mean: float, std: float, n: int, low: float, high: float) -> str:
    """mean ± std (n) [95 % interval]."""
    return _pm(mean, std, n) + _ci(low, high)


def interval_text(iv: S.Interval) -> str:
    """mean (n) [95 % interval]."""
    return "–" if iv.n == 0 else f"{iv.mean:.4g} (n={iv.n}){_ci(iv.low, iv.high)}"


def _signed(value: float) -> str:
    return f"{value:+.3g}"


def _versus(c, paired_by: str) -> str:
    """A comparison as a table cell: difference [interval], adjusted p, how it was paired, verdict."""
    if c is None:
        return "–"
    if c.verdict == S.TOO_FEW:
        return f"{_signed(c.diff)}: {c.verdict}" if not pd.isna(c.diff) else c.verdict
    how = f"paired by {paired_by}, n={c.n}" if c.paired else f"Welch, n={c.n}"
    return f"{_signed(c.diff)}{_ci(c.low, c.high)}, p{p_text(c.p_adjusted)} ({how}): {c.verdict}"


def p_text(p: float) -> str:
    """`=0.032`, or `<0.0001` below it (a t-test's tail that far out says only "far")."""
    return "<0.0001" if p < 1e-4 else f"={p:.2g}"


STATS_NOTE = (
    "Statistics: means with 95 % Student-t intervals over finished trials; each value is compared with the best one by "
    "a t-test on the differences, paired by seed (and the other axes' values) where both share at least two such "
    "blocks, else Welch's unpaired test; p-values are two-sided and Holm-adjusted over the table's comparisons with "
    "its best; the intervals are each at 95 % on their own, not adjusted, so with many values an interval of a "
    "difference can exclude 0 while its adjusted p stays above 0.05. Verdicts at 0.05: worse / better than the "
    "best, or within noise (this study cannot tell them apart, which is not evidence that they are equal). The best "
    "was picked on the same trials, which favours it slightly."
)


def _duration(seconds: float) -> str:
    if pd.isna(seconds):
        return "–"
    minutes, secs = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min" if hours else (f"{minutes} min {secs:02d} s" if minutes else f"{secs} s")


class FigureWriter:
    """Saves figures under figures/ of the report being built; returns their relative paths."""

    def __init__(self, root: Path) -> None:
        self.root = root
        (root / FIGURES).mkdir(parents=True)

    def save(self, name: str, fig) -> str:
        path = f"{FIGURES}/{name}.png"
        try:
            fig.savefig(self.root / path, dpi=100)
        finally:
            F.close(fig)
        return path


def slug(text: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in text).strip("-").lower()


def _primary_family(data: StudyData) -> str | None:
    if data.metrics:
        return data.metrics[0].split("/")[0]
    return data.eval_metrics[0].split("/")[0] if data.eval_metrics else None


def _summary(data: StudyData, leveled: pd.DataFrame, order: dict[str, list[str]]) -> list[Block]:
    counts = T.status_counts(data)
    hours, kind = T.compute_hours(data)
    wall = _trials_wall(data)
    search = data.search
    swept = [[f"{axis}: ", ", ".join(order[axis])] for axis in data.axes] or ["nothing (one configuration)"]
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
                f"Time: sweep wall {_duration(wall)} (first trial's start to last trial's end)"
                + ("" if data.sweep_end is not None else " (still running)")
                + f"; {hours:.3g} {kind}-hours of trials",
                [
                    "MLflow: ",
                    Link(f"sweep run {data.sweep_run_id}", data.run_url(data.sweep_run_id)),
                    *(
                        [
                            ". The links open the runs once the MLflow UI serves this store: ",
                            Code(data.ui_hint),
                            " (from the folder the sweep ran in)",
                        ]
                        if data.ui_hint
                        else []
                    ),
                ],
            ]
        ),
    ]
    rows = []
    for metric in sorted(dict.fromkeys([*data.metrics, *data.eval_metrics]), key=metric_order):
        best = T.best_configuration(leveled, data.axes, metric, data.mode_of(metric))
        if best is None:
            continue
        config = ", ".join(f"{k}={v}" for k, v in best.config.items()) or "(the only one)"
        interval = best.interval or S.Interval(best.mean, float("nan"), float("nan"), best.n)
        if best.runner_up is None:
            versus = "–"
        else:
            second = ", ".join(f"{k}={v}" for k, v in best.runner_up.items())
            c = best.versus_runner_up
            clear = c is not None and c.verdict in (S.WORSE, S.BETTER)
            versus = f"{second}: {_versus(c, 'seed')}" + ("" if clear else " — the winner is not distinguishable")
        label = f"{metric} (optimised)" if metric in data.metrics else metric
        rows.append(
            [
                label,
                config,
                _mean_ci(best.mean, best.std, best.n, interval.low, interval.high),
                versus,
                Link(best.run_id[:8], best.url),
            ]
        )
    if rows:
        blocks.append(
            Table(
                [
                    "metric",
                    "best configuration",
                    "mean ± std (n) [95 % CI]",
                    "runner-up: difference, verdict",
                    "best trial",
                ],
                rows,
                caption="Best configuration per metric (mean over its finished trials; lower is better unless the "
                "sweep maximised it), ordered by metric then number of sampling steps",
            )
        )
        blocks.append(Paragraph(STATS_NOTE))
    if (note := _nfe_note(data)) is not None:
        blocks.append(Paragraph(note))
    return blocks


def metric_order(metric: str) -> tuple[str, bool, int, str]:
    """Sort key: the metric (its convergence area after it), then K for `family/nfe-K`, then the name."""
    match = EVAL_METRIC.match(metric)
    if not match:
        return (metric, False, -1, metric)
    family = match["family"]
    return (family.removeprefix(AREA_PREFIX), family.startswith(AREA_PREFIX), int(match["k"]), metric)


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
    costs = []
    for k, values in data.fevals.items():
        spread = "/".join(f"{v:g}" for v in values)
        costs.append(f"K={k}: {spread}")
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


def _ablations(data: StudyData, leveled, order, metrics: list[str]) -> list[Block]:
    blocks: list[Block] = [Heading("Ablations")]
    if not data.axes:
        return [*blocks, Paragraph("Nothing was swept.")]
    for axis in data.axes:
        blocks.append(Heading(axis, 3))
        for metric in metrics:
            table = T.ablation(leveled, order, data.axes, axis, metric, data.mode_of(metric))
            others = (
                ", ".join(f"{k}={v}" for k, v in table.best.config.items() if k != axis) if table.best else ""
            ) or "nothing else swept"
            paired_by = "seed" + (" and the other axes" if len(data.axes) > 1 else "")
            rows = [
                [
                    r.level,
                    _mean_ci(r.mean, r.std, r.n, r.low, r.high),
                    "best" if r.verdict == S.BEST else (_versus(_row_comparison(r), paired_by) if r.n else "–"),
                    str(r.not_finished),
                    _pm(r.best_mean, r.best_std, r.best_n),
                ]
                for r in table.rows.itertuples()
            ]
            blocks.append(
                Table(
                    [
                        "value",
                        f"{metric}: others marginalised, mean ± std (n) [95 % CI]",
                        "vs the best value: difference [95 % CI], Holm p, verdict",
                        "not finished",
                        f"{metric}: others at best ({others})",
                    ],
                    rows,
                    caption=f"{axis} vs {metric} (finished trials; statistics as in the Summary)",
                    css_class="ablation",
                )
            )
    return blocks


def _claims(data: StudyData, leveled, order) -> list[Block]:
    """The space's claims, each read against the trials (tables.check_claim): outcome, reason and the comparisons."""
    if not data.claims:
        return []
    blocks: list[Block] = [
        Heading("Claims"),
        Paragraph(
            "What the study set out to test (the space's `claims`), read against its finished trials with the "
            "statistics of the Summary: a claim holds when the claimed value does significantly better than each "
            "value it is compared with (Holm-adjusted over that claim's comparisons), or, for `not_worse`, when none "
            "does significantly better than it."
        ),
    ]
    for claim in data.claims:
        names = data.option_names.get(claim["axis"], {})  # a claim names a positional label (option-i) as given
        claim = {
            **claim,
            "best": names.get(claim["best"], claim["best"]),
            "against": [names.get(v, v) for v in claim.get("against") or []] or None,
        }
        mode = data.mode_of(claim["metric"])
        check = T.check_claim(leveled, order, data.axes, claim, mode)
        best = check.best_interval
        blocks += [
            Heading(check.statement, 3),
            Paragraph(
                f"{check.outcome.upper()}: {check.reason}. Read on {check.metric} "
                f"({'lower' if mode == 'min' else 'higher'} is better) along {check.axis}"
                + (
                    ", at " + ", ".join(f"{k}={v}" for k, v in claim["where"].items())
                    if claim.get("where")
                    else ", the other axes marginalised"
                )
                + f"; {check.axis}={check.best}: "
                + (interval_text(best) if best.n else "no trials")
                + "."
            ),
        ]
        if check.rows:
            rows = [[level, interval_text(iv), _versus(c, "seed")] for level, iv, c in check.rows]
            blocks.append(
                Table(
                    [
                        check.axis,
                        f"{check.metric}: mean (n) [95 % CI]",
                        f"minus {check.best}: [95 % CI], Holm p, verdict",
                    ],
                    rows,
                    caption=f"{check.statement}: each value against {check.best}",
                )
            )
    return blocks


def _pareto(data: StudyData, leveled, writer: FigureWriter) -> list[Block]:
    """A multi-objective sweep's Pareto front over configuration means: a table, and a figure of the first two
    metrics."""
    metrics = [m for m in data.metrics if m in leveled]
    if len(metrics) < 2:
        return []
    front = T.pareto(leveled, data.axes, metrics, [data.mode_of(m) for m in metrics])
    if front is None:
        return []
    rows = front.rows
    labels = [", ".join(f"{a}={r[a]}" for a in data.axes) or "(the only one)" for _, r in rows.iterrows()]
    table_rows = [
        [label, *[f"{r[m]:.4g}" for m in metrics], str(int(r["n"])), "front" if r["front"] else "dominated"]
        for label, (_, r) in zip(labels, rows.iterrows(), strict=True)
    ]
    table_rows.sort(key=lambda row: row[-1] != "front")
    figure = F.pareto_front(rows, metrics[0], metrics[1], modes=tuple(front.modes[:2]), labels=labels)
    return [
        Heading("Pareto front"),
        Paragraph(
            f"The sweep optimised {len(metrics)} metrics at once: a configuration is on the front when no other is at "
            "least as good on every metric and better on one (means over its finished trials; with few seeds a "
            "point's position is uncertain, see the intervals above)."
        ),
        Table(["configuration", *metrics, "n", "Pareto"], table_rows, caption="Configurations by Pareto front"),
        Figure(writer.save("pareto-front", figure), f"{metrics[1]} against {metrics[0]}: the front joined"),
    ]


def _row_comparison(row) -> S.Comparison:
    return S.Comparison(
        row.diff, row.diff_low, row.diff_high, row.p, row.p_adjusted, bool(row.paired), int(row.pairs), row.verdict
    )


def _figures(data: StudyData, leveled, order, writer: FigureWriter, client) -> list[Block]:
    blocks: list[Block] = [Heading("Figures")]
    primary = data.metrics[0] if data.metrics else (data.eval_metrics[0] if data.eval_metrics else None)
    if primary is None:
        return [*blocks, Paragraph("No trial reported a metric.")]
    mode = data.mode_of(primary)
    per_axis = [
        Figure(writer.save(f"metric-vs-{slug(axis)}", F.metric_vs_axis(leveled, order[axis], axis, primary)), axis)
        for axis in data.axes
    ]
    if per_axis:
        blocks += [Heading(f"{primary} against each axis", 3), FigureRow(per_axis)]
    family = _primary_family(data)
    ladder = nfe_ladder(data, family) if family else []
    main = data.main_axis
    if len(ladder) > 1:
        fig = F.nfe_ladder(leveled, order[main] if main else [], main, ladder)
        blocks += [
            Heading("Quality against the number of sampling steps", 3),
            Figure(writer.save("nfe-ladder", fig), f"{family} per NFE" + (f", one line per {main}" if main else "")),
        ]
    blocks += _convergence(data, leveled, order, primary, mode, writer, client)
    best_runs = _best_per_level(leveled, order, main, primary, mode)
    curves, objectives = [], set()
    for label, run_id in best_runs[:MAX_LOSS_CURVES]:
        history = sorted(client.get_metric_history(run_id, "loss"), key=lambda m: m.step)
        if history:
            curves.append((label, [m.step for m in history], [m.value for m in history]))
            objectives.add(client.get_run(run_id).data.params.get("objective.name"))
    if curves:
        separate = len(objectives) > 1  # different objectives' losses are different quantities: one panel each
        blocks += [
            Heading("Loss curves of the best trials", 3),
            Figure(
                writer.save("loss-curves", F.loss_curves(curves, separate=separate)),
                f"training loss, best trial per {main or 'run'}"
                + (" (one panel per objective: their losses share no scale)" if separate else ""),
            ),
        ]
    finished = len(T.finished_trials(leveled, primary))
    if len(data.axes) < 2:
        blocks += [
            Heading("Parameter importance and parallel coordinates", 3),
            Paragraph(
                "Left out: with one swept axis, importance is 1 by construction and parallel coordinates show no more "
                "than the ablation table."
            ),
        ]
    else:
        caveat = (
            f" Only {finished} finished trials for {len(data.axes)} axes: read these as hints, not measurements."
            if finished < MIN_TRIALS_PER_AXIS * len(data.axes)
            else ""
        )
        importance = F.parameter_importance(leveled, order, data.axes, primary, mode)
        if importance is not None:
            values, evaluator = importance
            blocks += [
                Heading("Parameter importance", 3),
                Figure(
                    writer.save("importance", F.importance_bars(values, evaluator=evaluator, metric=primary)),
                    f"{evaluator} importance of each axis for {primary}, over the finished trials (Optuna).{caveat}",
                ),
            ]
        fig = F.parallel_coordinates(leveled, order, data.axes, primary, mode)
        blocks += [
            Heading("Parallel coordinates", 3),
            Figure(
                writer.save("parallel-coordinates", fig),
                f"finished trials through their values and {primary}.{caveat}",
            ),
        ]
    samples = _sample_plots(data, best_runs, primary, writer, client)
    if samples:
        blocks += [
            Heading(f"Samples of the best trial per {main or 'run'}", 3),
            FigureRow(samples),
        ]
    return blocks


def _convergence(data: StudyData, leveled, order, metric: str, mode: str, writer: FigureWriter, client) -> list[Block]:
    """`metric` against training step for every trial that reported it (stopped trials marked), with the normalised
    area of each trial's curve (convergence.py) summarised per level of the main axis."""
    if "/nfe-" not in metric:
        return []
    main = data.main_axis
    curves = []
    for _, trial in leveled.iterrows():
        if trial["status"] not in (T.FINISHED, "stopped"):
            continue
        history = sorted(client.get_metric_history(trial["run_id"], metric), key=lambda m: m.step)
        if history:
            level = str(trial[main]) if main else "all trials"
            curves.append((level, [m.step for m in history], [m.value for m in history], trial["status"] == "stopped"))
    if not curves:
        return []
    figure = writer.save(
        "convergence", F.metric_curves(curves, order[main] if main else ["all trials"], metric=metric, mode=mode)
    )
    blocks: list[Block] = [
        Heading(f"Convergence: {metric} during training", 3),
        Figure(
            figure,
            f"{metric} at each evaluation of every trial, one colour per {main or 'run'}; dashed with a cross: "
            "stopped early by the scheduler",
        ),
    ]
    area = AREA_PREFIX + metric
    if area in leveled and main:
        table = T.ablation(leveled, order, data.axes, main, area, mode)
        rows = [
            [
                r.level,
                _mean_ci(r.mean, r.std, r.n, r.low, r.high),
                "best" if r.verdict == S.BEST else (_versus(_row_comparison(r), "seed") if r.n else "–"),
            ]
            for r in table.rows.itertuples()
        ]
        blocks.append(
            Table(
                [main, f"{area}: mean ± std (n) [95 % CI]", "vs the best value: difference [95 % CI], Holm p, verdict"],
                rows,
                caption=f"Convergence speed: the area under each finished trial's {metric} curve divided by its "
                "steps (the metric's mean over training; lower converges faster when lower is better)",
            )
        )
    return blocks


def _best_per_level(leveled, order, axis: str | None, metric: str, mode: str) -> list[tuple[str, str]]:
    """[(label, run id)]: the best finished trial at each level of `axis` (or the best trials overall)."""
    done = T.finished_trials(leveled, metric)
    pick: Callable = pd.Series.idxmin if mode == "min" else pd.Series.idxmax
    if axis is None:
        ranked = done.sort_values(metric, ascending=mode == "min").head(3)
        return [(f"{row['trial_id']} (seed {row[SEED]})", str(row["run_id"])) for _, row in ranked.iterrows()]
    out = []
    for level in order[axis]:
        group = done[done[axis] == level]
        if len(group):
            row = group.loc[pick(group[metric])]
            out.append((f"{axis}={level} (seed {row[SEED]})", str(row["run_id"])))
    return out


def _sample_plots(data: StudyData, best_runs, metric: str, writer: FigureWriter, client) -> list[Figure]:
    """The last evaluation's sample plot (at the primary metric's number of steps) of each run, copied from MLflow."""
    k = metric.rsplit("-", 1)[-1] if "/nfe-" in metric else None
    figures = []
    for label, run_id in best_runs:
        steps = [a.path for a in client.list_artifacts(run_id, "plots") if a.is_dir]
        if not steps:
            continue
        pngs = [a.path for a in client.list_artifacts(run_id, sorted(steps)[-1]) if a.path.endswith(".png")]
        wanted = [p for p in pngs if k and p.endswith(f"/nfe-{k}.png")] or sorted(pngs)[:1]
        if not wanted:
            continue
        with tempfile.TemporaryDirectory() as tmp:
            local = Path(client.download_artifacts(run_id, wanted[0], tmp))
            name = f"samples-{slug(label)}"
            shutil.copyfile(local, writer.root / FIGURES / f"{name}.png")
        figures.append(Figure(f"{FIGURES}/{name}.png", f"{label}: {Path(wanted[0]).stem}", width=300))
    return figures


def _trials_table(data: StudyData, primary: str | None) -> list[Block]:
    rows = []
    for _, trial in data.trials.iterrows():
        value = trial.get(primary) if primary else None
        rows.append(
            [
                Link(trial["trial_id"] or trial["run_id"][:8], trial["url"]),
                *[T.fmt(trial[a]) for a in data.axes],
                str(trial[SEED]),
                trial["status"],
                "–" if value is None or pd.isna(value) else f"{value:.4g}",
                _duration(trial["duration_s"]),
                trial["error"] or "",
            ]
        )
    return [
        Heading("Trials"),
        Table(["trial (MLflow run)", *data.axes, "seed", "status", primary or "metric", "duration", "error"], rows),
    ]


def write_results(data: StudyData, path: Path) -> None:
    """results.parquet: the trial table, plus the study and sweep ids on every row."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.Table.from_pandas(data.results_table(), preserve_index=False), path)


def build_report(
    study: str,
    *,
    out: Path,
    tracking_uri: str,
    sweep_run_id: str | None = None,
    force: bool = False,
    field: str = "--out",
) -> StudyData:
    """Write the report of `study` to the folder `out`; returns what it was built from.

    An existing `out` is replaced only if it is empty or a report written here before (its `MARKER`), or with
    `force`; otherwise a ConfigError on `field` is raised before MLflow is read, and nothing is written or removed.
    """
    from mlflow.tracking import MlflowClient

    out = report_target(out)
    check_target(out, force, field)  # before the store is read: a refusal costs nothing and writes nothing
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    data = collect_study(study, tracking_uri=tracking_uri, sweep_run_id=sweep_run_id)
    client = MlflowClient(tracking_uri=tracking_uri)
    leveled, order = T.levels(data)
    with tempfile.TemporaryDirectory(prefix="mgm-report-") as tmp:
        root = Path(tmp) / "report"
        writer = FigureWriter(root)
        write_results(data, root / RESULTS)
        primary = data.metrics[0] if data.metrics else None
        metrics = [m for m in data.metrics if m in data.trials] or data.eval_metrics[:1]
        blocks = [
            *_summary(data, leveled, order),
            *_claims(data, leveled, order),
            *_ablations(data, leveled, order, metrics),
            *_pareto(data, leveled, writer),
            *_figures(data, leveled, order, writer, client),
            *_trials_table(data, primary),
            Paragraph(
                [
                    "Generated by ",
                    Code("mgm-studies report"),
                    " from the MLflow store ",
                    Code(data.store),
                    f" (sweep {data.sweep_name}).",
                ]
            ),
        ]
        publish(root, out, f"Study {data.study}", blocks, marker_text(data.study, data.sweep_run_id), force, field)
    return data


def publish(root: Path, out: Path, title: str, blocks: list[Block], marker: str, force: bool, field: str) -> None:
    """Write report.md, index.html and the marker into `root` (which holds the figures and data already), then
    move it into place at `out` whole."""
    (root / MARKDOWN).write_text(to_markdown(title, blocks))
    (root / HTML).write_text(to_html(title, blocks))
    (root / MARKER).write_text(marker)
    out.parent.mkdir(parents=True, exist_ok=True)
    # Staged beside `out` (one file system), so that it is renamed into place whole.
    staged = Path(tempfile.mkdtemp(prefix=f".{out.name}-", dir=out.parent))
    try:
        shutil.copytree(root, staged, dirs_exist_ok=True)
        place(staged, out, force, field)
    except BaseException:
        shutil.rmtree(staged, ignore_errors=True)
        raise
