"""The report's Pareto front section, for a sweep that optimised several metrics at once: the configurations' means
over their finished trials, which of them no other configuration dominates, as a table and a figure of the first two
metrics."""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from mgm_studies.reporting import figures as F
from mgm_studies.reporting.cells import config_text
from mgm_studies.reporting.collect import StudyData
from mgm_studies.reporting.figures import FigureWriter
from mgm_studies.reporting.render import Block, Figure, Heading, Paragraph, Table
from mgm_studies.reporting.tables import FINISHED


@dataclass
class Pareto:
    """Configurations (combinations of levels) with their mean of each metric over finished trials; `front` marks
    the non-dominated ones: no other configuration is at least as good on every metric and better on one."""

    metrics: list[str]
    modes: list[str]
    rows: pd.DataFrame  # the axes' levels, one column per metric (mean), n, front (bool)


def pareto(leveled: pd.DataFrame, axes: list[str], metrics: list[str], modes: list[str]) -> Pareto | None:
    """The Pareto front of a multi-objective sweep over configuration means; None when no configuration finished
    with every metric."""
    done = leveled[(leveled["status"] == FINISHED)]
    for metric in metrics:
        done = done[done[metric].notna()] if metric in done else done[:0]
    if done.empty:
        return None
    groups = done.groupby(axes, sort=False) if axes else done.groupby(lambda _: 0)
    rows = groups[metrics].mean().reset_index(drop=not axes)
    rows["n"] = groups.size().to_numpy()
    # Signs so that lower is better for every metric.
    signed = rows[metrics].to_numpy() * [1.0 if mode == "min" else -1.0 for mode in modes]
    rows["front"] = [
        not any((other <= point).all() and (other < point).any() for j, other in enumerate(signed) if j != i)
        for i, point in enumerate(signed)
    ]
    return Pareto(metrics=list(metrics), modes=list(modes), rows=rows)


def pareto_section(data: StudyData, leveled: pd.DataFrame, writer: FigureWriter) -> list[Block]:
    """A multi-objective sweep's Pareto front over configuration means: a table, and a figure of the first two
    metrics."""
    metrics = [m for m in data.metrics if m in leveled]
    if len(metrics) < 2:
        return []
    front = pareto(leveled, data.axes, metrics, [data.mode_of(m) for m in metrics])
    if front is None:
        return []
    rows = front.rows
    labels = [config_text({a: r[a] for a in data.axes}) for _, r in rows.iterrows()]
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
