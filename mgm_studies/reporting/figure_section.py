"""The report's Figures section: the primary metric against each axis and the number of sampling steps, its curves
during training with their convergence areas, the best trials' loss curves and samples, and (with two axes or more)
parameter importance and parallel coordinates. Histories and sample plots are read from MLflow here; the plots
themselves are drawn by `figures.py`."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

import pandas as pd

from mgm_studies.names import SEED, area_metric
from mgm_studies.reporting import figures as F
from mgm_studies.reporting import tables as T
from mgm_studies.reporting.cells import VERSUS_BEST, ablation_cells, slug
from mgm_studies.reporting.collect import StudyData, nfe_ladder
from mgm_studies.reporting.figures import FIGURES, FigureWriter
from mgm_studies.reporting.render import Block, Figure, FigureRow, Heading, Paragraph, Table

MAX_LOSS_CURVES = 6
# Importance (a random forest over the trials) and parallel coordinates mean little with fewer finished trials than
# this per axis: below it their captions say so.
MIN_TRIALS_PER_AXIS = 10


def figure_section(data: StudyData, leveled, order, writer: FigureWriter, client) -> list[Block]:
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
    family = primary.split("/")[0]
    ladder = nfe_ladder(data, family)
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
        note = " (one panel per objective: their losses share no scale)" if separate else ""
        path = writer.save("loss-curves", F.loss_curves(curves, separate=separate))
        caption = f"training loss, best trial per {main or 'run'}{note}"
        blocks += [Heading("Loss curves of the best trials", 3), Figure(path, caption)]
    blocks += _importance(data, leveled, order, primary, mode, writer)
    samples = _sample_plots(best_runs, primary, writer, client)
    if samples:
        blocks += [Heading(f"Samples of the best trial per {main or 'run'}", 3), FigureRow(samples)]
    return blocks


def _importance(data: StudyData, leveled, order, primary: str, mode: str, writer: FigureWriter) -> list[Block]:
    """Parameter importance and parallel coordinates over the finished trials: left out with one axis, caveated with
    few trials per axis."""
    if len(data.axes) < 2:
        return [
            Heading("Parameter importance and parallel coordinates", 3),
            Paragraph(
                "Left out: with one swept axis, importance is 1 by construction and parallel coordinates show no more "
                "than the ablation table."
            ),
        ]
    finished = len(T.finished_trials(leveled, primary))
    caveat = (
        f" Only {finished} finished trials for {len(data.axes)} axes: read these as hints, not measurements."
        if finished < MIN_TRIALS_PER_AXIS * len(data.axes)
        else ""
    )
    blocks: list[Block] = []
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
    return [
        *blocks,
        Heading("Parallel coordinates", 3),
        Figure(
            writer.save("parallel-coordinates", fig), f"finished trials through their values and {primary}.{caveat}"
        ),
    ]


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
    area = area_metric(metric)
    if area in leveled and main:
        table = T.ablation(leveled, order, data.axes, main, area, mode)
        blocks.append(
            Table(
                [main, f"{area}: mean ± std (n) [95 % CI]", VERSUS_BEST],
                [ablation_cells(r, "seed") for r in table.rows.itertuples()],
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


def _sample_plots(best_runs, metric: str, writer: FigureWriter, client) -> list[Figure]:
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
