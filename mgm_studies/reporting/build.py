"""`mgm-studies report STUDY`: a study's newest sweep (or `--sweep RUN_ID`) read from MLflow, written as a report
folder: `results.parquet` (one row per trial), `report.md`, `index.html` and `figures/*.png`.

The folder is built in a temporary directory and moved into place only when complete: a report that fails (an
unknown study, an unreachable store) writes nothing. Every report folder holds a marker file (`MARKER`); an existing
folder at the target is replaced only if it holds that marker (a report written before) or is empty. Anything else (a
user's folder or file, a symbolic link) is refused before MLflow is read, unless `force`; a link is then replaced
itself, never followed, and the working and home folders are never replaced.

Sections in order: `summary.py`, `claims.py`, the ablations (here), `pareto.py`, `figure_section.py`, the trials (here);
their numbers come from `tables.py` and `stats.py`, and are written as text by `cells.py`.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pandas as pd

from mgm_studies.names import SEED
from mgm_studies.reporting import tables as T
from mgm_studies.reporting.cells import VERSUS_BEST, ablation_cells, duration, mean_ci
from mgm_studies.reporting.claims import claims_section
from mgm_studies.reporting.collect import StudyData, collect_study
from mgm_studies.reporting.figure_section import figure_section
from mgm_studies.reporting.figures import FigureWriter
from mgm_studies.reporting.pareto import pareto_section
from mgm_studies.reporting.place import MARKER, check_target, marker_text, place, report_target
from mgm_studies.reporting.render import Block, Code, Heading, Link, Paragraph, Table, to_html, to_markdown
from mgm_studies.reporting.summary import summary_section

RESULTS, MARKDOWN, HTML = "results.parquet", "report.md", "index.html"


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
                [*ablation_cells(r, paired_by), str(r.not_finished), mean_ci(r.best_mean, r.best_std, r.best_n)]
                for r in table.rows.itertuples()
            ]
            header = ["value", f"{metric}: others marginalised, mean ± std (n) [95 % CI]", VERSUS_BEST, "not finished"]
            header.append(f"{metric}: others at best ({others})")
            caption = f"{axis} vs {metric} (finished trials; statistics as in the Summary)"
            blocks.append(Table(header, rows, caption=caption, css_class="ablation"))
    return blocks


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
                duration(trial["duration_s"]),
                trial["error"] or "",
            ]
        )
    return [
        Heading("Trials"),
        Table(["trial (MLflow run)", *data.axes, "seed", "status", primary or "metric", "duration", "error"], rows),
    ]


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
        primary = data.metrics[0] if data.metrics else None
        metrics = [m for m in data.metrics if m in data.trials] or data.eval_metrics[:1]
        generated = ["Generated by ", Code("mgm-studies report"), " from the MLflow store "]
        blocks = [
            *summary_section(data, leveled, order),
            *claims_section(data, leveled, order),
            *_ablations(data, leveled, order, metrics),
            *pareto_section(data, leveled, writer),
            *figure_section(data, leveled, order, writer, client),
            *_trials_table(data, primary),
            Paragraph([*generated, Code(data.store), f" (sweep {data.sweep_name})."]),
        ]
        marker = marker_text(data.study, data.sweep_run_id)
        publish(root, out, f"Study {data.study}", blocks, data.results_table(), marker, force, field)
    return data


def publish(
    root: Path, out: Path, title: str, blocks: list[Block], results: pd.DataFrame, marker: str, force: bool, field: str
) -> None:
    """Write report.md, index.html, results.parquet (`results`: one row per trial, with its study and sweep ids) and
    the marker into `root` (which holds the figures already), then move it into place at `out` whole."""
    results.to_parquet(root / RESULTS, index=False)
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
