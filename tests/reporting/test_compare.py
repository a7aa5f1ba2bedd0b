"""`mgm-studies report A B`: two studies side by side on their shared axis and metric (issue 16, part 8), from a
SQLite store written with MLflow's own client as `mgm-studies sweep` records a sweep (collect.py)."""

from __future__ import annotations

import json
import math
import os
import statistics
from pathlib import Path

import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from mgm_studies.cli import main

T_975_DF1 = 12.706205  # two seeds


def _sweep(client: MlflowClient, study: str, values: dict[tuple[float, int], float], extra_axis: bool) -> None:
    """A finished sweep of `study` over train.optimizer.lr (and model.hidden when `extra_axis`), {(lr, seed): kl}."""
    experiment = client.create_experiment(study)
    parent = client.create_run(experiment, run_name="sweep", tags={"mgm.kind": "sweep", "mgm.sweep": f"{study}-0"})
    swept = "train.optimizer.lr,model.hidden" if extra_axis else "train.optimizer.lr"
    for key, value in {"swept": swept, "metric": "kl/nfe-1", "mode": "min", "seeds": "0,1"}.items():
        client.log_param(parent.info.run_id, key, value)
    for i, ((lr, seed), kl) in enumerate(values.items()):
        labels = {"train.optimizer.lr": lr, "train.seed": seed, **({"model.hidden": 32} if extra_axis else {})}
        tags = {
            "mgm.kind": "trial",
            "mlflow.parentRunId": parent.info.run_id,
            "mgm.status": "finished",
            "mgm.trial_id": f"t{i}",
            "mgm.trial_params": json.dumps(labels),
        }
        run_id = client.create_run(experiment, run_name=f"trial-{i}", tags=tags).info.run_id
        for key, value in labels.items():
            client.log_param(run_id, key, str(value))
        client.log_metric(run_id, "kl/nfe-1", kl, step=20)
        client.log_metric(run_id, "sw2/nfe-1", kl / 10, step=20)
        client.set_terminated(run_id)
    client.set_terminated(parent.info.run_id)


A = {(0.001, 0): 1.0, (0.001, 1): 1.2, (0.01, 0): 0.5, (0.01, 1): 0.7}
B = {(0.001, 0): 2.0, (0.001, 1): 2.4, (0.1, 0): 3.0, (0.1, 1): 3.0}


@pytest.fixture
def store(mlflow_env: Path) -> Path:
    client = MlflowClient(os.environ["MLFLOW_TRACKING_URI"])
    _sweep(client, "study_a", A, extra_axis=True)
    _sweep(client, "study_b", B, extra_axis=False)
    return mlflow_env


def _cell(values: list[float]) -> str:
    mean, sd = statistics.mean(values), statistics.stdev(values)
    half = T_975_DF1 * sd / math.sqrt(2)
    return f"{mean:.4g} (n=2) [{mean - half:.3g}, {mean + half:.3g}]"


def test_two_studies_side_by_side_on_their_shared_axis(store: Path) -> None:
    assert main(["report", "study_a", "study_b"]) == 0
    out = store / "reports" / "compare-study_a--study_b"
    text = (out / "report.md").read_text()
    assert "Shared axes: train.optimizer.lr. Shared metrics: kl/nfe-1, sw2/nfe-1." in text  # model.hidden: a's alone
    lines = text.split("*train.optimizer.lr vs kl/nfe-1 in each study: mean (n) [95 % CI]*", 1)[1].splitlines()
    rows = [[c.strip() for c in line.strip("|").split("|")] for line in lines[4:7]]
    assert rows == [
        ["0.001", _cell([1.0, 1.2]), _cell([2.0, 2.4])],
        ["0.01", _cell([0.5, 0.7]), "–"],  # a value one study did not sweep
        ["0.1", "–", _cell([3.0, 3.0])],
    ]
    best = next(line for line in text.splitlines() if line.startswith("| kl/nfe-1 |"))
    assert "train.optimizer.lr=0.01, model.hidden=32: " + _cell([0.5, 0.7]) in best
    assert "train.optimizer.lr=0.001: " + _cell([2.0, 2.4]) in best
    results = pd.read_parquet(out / "results.parquet")
    assert sorted(results["study"].value_counts().items()) == [("study_a", 4), ("study_b", 4)]
    assert (out / "figures" / "compare-train-optimizer-lr.png").is_file()
    assert json.loads((out / ".mgm-studies-report").read_text())["study"] == "study_a,study_b"


def test_a_sweep_per_study_or_none(store: Path, capsys) -> None:
    assert main(["report", "study_a", "study_b", "--sweep", "x"]) == 2
    assert "--sweep" in capsys.readouterr().err
    assert not (store / "reports").exists()
