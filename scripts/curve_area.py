"""Final value and convergence speed (normalised area under the metric-versus-step curve) per configuration of a study.

    MLFLOW_TRACKING_URI=sqlite:///mlflow.db python scripts/curve_area.py STUDY [--metric kl/nfe-1 --metric kl/nfe-2]

One row per configuration of the swept axes (seeds pooled): mean +- std over its finished trials of each metric's last
value and of its area (`mgm_studies.convergence.normalised_area`: the metric's mean over training, lower is faster
for a metric minimised).
"""

from __future__ import annotations

import argparse
import os
import statistics

from mgm_studies.convergence import normalised_area
from mgm_studies.reporting.collect import collect_study, read_client
from mgm_studies.reporting.tables import FINISHED, levels


def _pm(values: list[float]) -> str:
    spread = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.fmean(values):.3f} +- {spread:.3f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("study")
    parser.add_argument("--metric", action="append", help="default: kl/nfe-1 and kl/nfe-2")
    args = parser.parse_args()
    metrics = args.metric or ["kl/nfe-1", "kl/nfe-2"]
    uri = os.environ.get("MLFLOW_TRACKING_URI", "sqlite:///mlflow.db")
    data = collect_study(args.study, tracking_uri=uri)
    client = read_client(uri)
    table, _ = levels(data)
    table = table[table["status"] == FINISHED]
    header = ["configuration", "n"] + [f"{m} {kind}" for m in metrics for kind in ("final", "area")]
    print(" | ".join(header))
    for key, group in table.groupby(data.axes, sort=False):
        cells: list[str] = []
        for metric in metrics:
            finals, areas = [], []
            for run_id in group["run_id"]:
                history = sorted(client.get_metric_history(run_id, metric), key=lambda m: m.step)
                finals.append(history[-1].value)
                areas.append(normalised_area([m.step for m in history], [m.value for m in history]))
            cells += [_pm(finals), _pm(areas)]
        label = ", ".join(str(k) for k in (key if isinstance(key, tuple) else (key,)))
        print(" | ".join([label, str(len(group)), *cells]))


if __name__ == "__main__":
    main()
