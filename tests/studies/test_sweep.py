"""Sweeps end to end with a real local Ray, real Optuna and a real SQLite MLflow store (issue 4)."""

from __future__ import annotations

import os

import pytest
import yaml
from mlflow.tracking import MlflowClient

from mgm_studies.exported import load_exported
from mgm_studies.studies.space import parse_study_spec
from mgm_studies.studies.sweep import run_sweep

pytestmark = pytest.mark.usefixtures("ray_cluster")

BASE = {
    "data": {"name": "checkerboard"},
    "model": {"hidden": 32, "depth": 2, "embedding_dim": 16},
    "train": {"steps": 60, "batch_size": 64, "checkpoint_interval": 20, "ema_decays": [0.9], "log_interval": 10},
    "eval": {"metrics": ["kl"], "steps": [1, 2], "num_samples": 500, "reference_samples": 500, "interval": 20},
}


def study(tmp_path, **fields):
    data = {"name": "test_study", "base": BASE, "metric": "kl/nfe-2", "mode": "min", **fields}
    path = tmp_path / "space.yaml"
    path.write_text(yaml.safe_dump(data))
    return parse_study_spec(data, source=path)


def runs(experiment: str):
    client = MlflowClient(os.environ["MLFLOW_TRACKING_URI"])
    found = client.get_experiment_by_name(experiment)
    assert found is not None
    all_runs = client.search_runs([found.experiment_id], max_results=1000)
    parents = [r for r in all_runs if r.data.tags.get("mgm.kind") == "sweep"]
    children = [r for r in all_runs if r.data.tags.get("mgm.kind") == "trial"]
    return client, parents, children


def test_a_grid_sweep_records_one_parent_run_and_a_child_run_per_trial(mlflow_env, tmp_path):
    spec = study(
        tmp_path,
        search={"algorithm": "grid", "max_concurrent": 2},
        space={"interpolant.schedule": {"grid": ["linear", "trig"]}},
        seeds=[0, 1],
    )
    outcome = run_sweep(spec, storage=str(tmp_path / "ray"), verbose=0)
    assert outcome.statuses == {"finished": 4} and not outcome.interrupted

    client, parents, children = runs("test_study")
    assert len(parents) == 1 and parents[0].info.status == "FINISHED" and len(children) == 4
    parent = parents[0]
    assert parent.data.tags["mgm.space_hash"] == spec.space_hash() and parent.data.metrics["trials/finished"] == 4
    assert "space.yaml" in [a.path for a in client.list_artifacts(parent.info.run_id)]
    combos = sorted((c.data.params["interpolant.schedule"], c.data.params["train.seed"]) for c in children)
    assert combos == [("linear", "0"), ("linear", "1"), ("trig", "0"), ("trig", "1")]
    for child in children:
        run_id = child.info.run_id
        assert child.data.tags["mlflow.parentRunId"] == parent.info.run_id
        assert child.info.status == "FINISHED" and child.data.tags["mgm.status"] == "finished"
        assert child.data.tags["mgm.config_hash"] and child.data.tags["mgm.trial_id"]
        # Every step's loss, and each evaluation's metrics at its own training step.
        assert [m.step for m in client.get_metric_history(run_id, "loss")] == list(range(1, 61))
        assert [m.step for m in client.get_metric_history(run_id, "kl/nfe-2")] == [20, 40, 60]
        plots = [a.path for a in client.list_artifacts(run_id, "plots/step-000000060")]
        assert sorted(plots) == ["plots/step-000000060/nfe-1.png", "plots/step-000000060/nfe-2.png"]
        final = client.download_artifacts(run_id, "checkpoints/final.pt", str(tmp_path / run_id))
        assert load_exported(final).step == 60
    best_run, best_value, _ = outcome.best["kl/nfe-2"]
    assert best_value == min(c.data.metrics["kl/nfe-2"] for c in children)
    assert parent.data.tags["mgm.best_run.kl/nfe-2"] == best_run


def test_an_optuna_sweep_runs_and_a_diverging_trial_ends_diverged_while_the_others_finish(mlflow_env, tmp_path):
    spec = study(
        tmp_path,
        search={"algorithm": "optuna", "num_samples": 3, "max_concurrent": 2, "seed": 3},
        space={
            "train.optimizer.lr": {"choice": [1.0e-3, 1.0e12]},
            "model.hidden": {"int": [16, 48]},
        },
        base={**BASE, "train": {**BASE["train"], "grad_clip": None}},
    )
    outcome = run_sweep(spec, storage=str(tmp_path / "ray"), verbose=0)
    _, parents, children = runs("test_study")
    assert len(parents) == 1 and len(children) == 3
    statuses = {c.data.params["train.optimizer.lr"]: set() for c in children}
    for child in children:
        statuses[child.data.params["train.optimizer.lr"]].add(child.data.tags["mgm.status"])
        assert 16 <= int(child.data.params["model.hidden"]) <= 48
    # Optuna's seeded draws (seed 3) take both learning rates: the huge one diverges, the other trains to the end.
    assert statuses == {"1000000000000.0": {"diverged"}, "0.001": {"finished"}}
    for child in children:
        if child.data.tags["mgm.status"] == "diverged":
            assert child.info.status == "FAILED" and 1 <= int(child.data.tags["mgm.diverged_step"]) <= 60
    assert sum(outcome.statuses.values()) == 3 and parents[0].info.status == "FINISHED"
