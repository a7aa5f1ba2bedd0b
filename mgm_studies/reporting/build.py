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

from mgm_studies.reporting import figures as F
from mgm_studies.reporting import tables as T
from mgm_studies.reporting.collect import SEED, StudyData, collect_study, nfe_ladder
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

MAX_LOSS_CURVES = 6
RESULTS, MARKDOWN, HTML, FIGURES = "results.parquet", "report.md", "index.html", "figures"


def _pm(mean: float, std: float, n: int) -> str:
    if n == 0 or pd.isna(mean):
        return "–"
    return f"{mean:.4g} ± {std:.2g} (n={n})" if n > 1 else f"{mean:.4g} (n=1)"


def _duration(seconds: float) -> str:
    if pd.isna(seconds):
        return "–"
    minutes, secs = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min" if hours else (f"{minutes} min {secs:02d} s" if minutes else f"{secs} s")


class _Writer:
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


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in text).strip("-").lower()


def _primary_family(data: StudyData) -> str | None:
    if data.metrics:
        return data.metrics[0].split("/")[0]
    return data.eval_metrics[0].split("/")[0] if data.eval_metrics else None


def _summary(data: StudyData, leveled: pd.DataFrame, order: dict[str, list[str]]) -> list[Block]:
    counts = T.status_counts(data)
    hours, kind = T.compute_hours(data)
    wall = (data.sweep_end - data.sweep_start).total_seconds() if data.sweep_end is not None else float("nan")
    search = data.search
    swept = [[f"{axis}: ", ", ".join(order[axis])] for axis in data.axes] or ["nothing (one configuration)"]
    blocks: list[Block] = [
        Heading("Summary"),
        Bullets(
            [
                ["Swept: ", *(["; ".join("".join(s) for s in swept)] if data.axes else swept)],
                f"Search: {search.get('search.algorithm', '?')}, scheduler {_scheduler(search)}, seeds "
                f"{search.get('seeds', '?')}; optimised: "
                + ", ".join(f"{m} ({mode})" for m, mode in zip(data.metrics, data.modes, strict=False)),
                f"Trials: {len(data.trials)} — " + ", ".join(f"{n} {status}" for status, n in counts.items()),
                f"Time: sweep wall {_duration(wall)}"
                + ("" if data.sweep_end is not None else " (still running)")
                + f"; {hours:.3g} {kind}-hours of trials",
                [
                    "MLflow: ",
                    Link(f"sweep run {data.sweep_run_id}", data.run_url(data.sweep_run_id)),
                    *([" (start the UI with ", Code(data.ui_hint), ")"] if data.ui_hint else []),
                ],
            ]
        ),
    ]
    rows = []
    for metric in [*data.metrics, *[m for m in data.eval_metrics if m not in data.metrics]]:
        best = T.best_configuration(leveled, data.axes, metric, data.mode_of(metric))
        if best is None:
            continue
        config = ", ".join(f"{k}={v}" for k, v in best.config.items()) or "(the only one)"
        rows.append([metric, config, _pm(best.mean, best.std, best.n), Link(best.run_id[:8], best.url)])
    if rows:
        blocks.append(
            Table(
                ["metric", "best configuration", "mean ± std over seeds", "best trial"],
                rows,
                caption="Best configuration per metric (mean over its finished trials; lower is better unless the "
                "sweep maximised it)",
            )
        )
    return blocks


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
            rows = [
                [r.level, _pm(r.mean, r.std, r.n), str(r.not_finished), _pm(r.best_mean, r.best_std, r.best_n)]
                for r in table.rows.itertuples()
            ]
            blocks.append(
                Table(
                    ["value", f"{metric}: others marginalised", "not finished", f"{metric}: others at best ({others})"],
                    rows,
                    caption=f"{axis} vs {metric} (mean ± std over finished trials)",
                    css_class="ablation",
                )
            )
    return blocks


def _figures(data: StudyData, leveled, order, writer: _Writer, client) -> list[Block]:
    blocks: list[Block] = [Heading("Figures")]
    primary = data.metrics[0] if data.metrics else (data.eval_metrics[0] if data.eval_metrics else None)
    if primary is None:
        return [*blocks, Paragraph("No trial reported a metric.")]
    mode = data.mode_of(primary)
    per_axis = [
        Figure(writer.save(f"metric-vs-{_slug(axis)}", F.metric_vs_axis(leveled, order[axis], axis, primary)), axis)
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
    best_runs = _best_per_level(leveled, order, main, primary, mode)
    curves = []
    for label, run_id in best_runs[:MAX_LOSS_CURVES]:
        history = sorted(client.get_metric_history(run_id, "loss"), key=lambda m: m.step)
        if history:
            curves.append((label, [m.step for m in history], [m.value for m in history]))
    if curves:
        blocks += [
            Heading("Loss curves of the best trials", 3),
            Figure(writer.save("loss-curves", F.loss_curves(curves)), f"training loss, best trial per {main or 'run'}"),
        ]
    importance = F.parameter_importance(leveled, order, data.axes, primary, mode)
    if importance is not None:
        values, evaluator = importance
        blocks += [
            Heading("Parameter importance", 3),
            Figure(
                writer.save("importance", F.importance_bars(values, evaluator=evaluator, metric=primary)),
                f"{evaluator} importance of each axis for {primary}, over the finished trials (Optuna)",
            ),
        ]
    if data.axes:
        fig = F.parallel_coordinates(leveled, order, data.axes, primary, mode)
        blocks += [
            Heading("Parallel coordinates", 3),
            Figure(writer.save("parallel-coordinates", fig), f"finished trials through their values and {primary}"),
        ]
    samples = _sample_plots(data, best_runs, primary, writer, client)
    if samples:
        blocks += [
            Heading(f"Samples of the best trial per {main or 'run'}", 3),
            FigureRow(samples),
        ]
    return blocks


def _best_per_level(leveled, order, axis: str | None, metric: str, mode: str) -> list[tuple[str, str]]:
    """[(label, run id)]: the best finished trial at each level of `axis` (or the best trials overall)."""
    done = leveled[(leveled["status"] == T.FINISHED) & leveled[metric].notna()] if metric in leveled else leveled[:0]
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


def _sample_plots(data: StudyData, best_runs, metric: str, writer: _Writer, client) -> list[Figure]:
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
            name = f"samples-{_slug(label)}"
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
            ]
        )
    return [
        Heading("Trials"),
        Table(["trial (MLflow run)", *data.axes, "seed", "status", primary or "metric", "duration"], rows),
    ]


def write_results(data: StudyData, path: Path) -> None:
    """results.parquet: the trial table, plus the study and sweep ids on every row."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = data.trials.assign(study=data.study, sweep_run_id=data.sweep_run_id, parent_run_id=data.sweep_run_id)
    pq.write_table(pa.Table.from_pandas(table, preserve_index=False), path)


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
        writer = _Writer(root)
        write_results(data, root / RESULTS)
        primary = data.metrics[0] if data.metrics else None
        metrics = [m for m in data.metrics if m in data.trials] or data.eval_metrics[:1]
        blocks = [
            *_summary(data, leveled, order),
            *_ablations(data, leveled, order, metrics),
            *_figures(data, leveled, order, writer, client),
            *_trials_table(data, primary),
            Paragraph(
                [
                    "Generated by ",
                    Code("mgm-studies report"),
                    " from the MLflow store ",
                    Code(data.tracking_uri),
                    f" (sweep {data.sweep_name}).",
                ]
            ),
        ]
        title = f"Study {data.study}"
        (root / MARKDOWN).write_text(to_markdown(title, blocks))
        (root / HTML).write_text(to_html(title, blocks))
        (root / MARKER).write_text(marker_text(data.study, data.sweep_run_id))
        out.parent.mkdir(parents=True, exist_ok=True)
        # Staged beside `out` (one file system), so that it is renamed into place whole.
        staged = Path(tempfile.mkdtemp(prefix=f".{out.name}-", dir=out.parent))
        try:
            shutil.copytree(root, staged, dirs_exist_ok=True)
            place(staged, out, force, field)
        except BaseException:
            shutil.rmtree(staged, ignore_errors=True)
            raise
    return data
