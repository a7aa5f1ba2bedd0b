"""The sweep's parent run never stays RUNNING once the driver is gone: a sweep that fails after the parent run exists
(here Ray cannot start: `ray.init` is stubbed, the rest is real: MLflow, the space, the driver) closes it as `error`
(FAILED), a Ctrl-C as `interrupted` (KILLED), and a resume opens the same run again."""

from __future__ import annotations

import os

import pytest
import ray
from mlflow.tracking import MlflowClient
from test_sweep import study

from mgm_studies.studies.sweep import run_sweep

BASE = {
    "data": {"name": "checkerboard"},
    "model": {"hidden": 16, "depth": 2, "embedding_dim": 8},
    "train": {"steps": 5, "batch_size": 32},
    "eval": {"metrics": ["kl"], "steps": [1], "num_samples": 100, "reference_samples": 200},
}


def _parent(name: str):
    client = MlflowClient(os.environ["MLFLOW_TRACKING_URI"])
    experiment = client.get_experiment_by_name(name)
    runs = client.search_runs([experiment.experiment_id], filter_string="tags.`mgm.kind` = 'sweep'")
    assert len(runs) == 1
    return runs[0]


@pytest.mark.parametrize(
    ("raised", "status", "mlflow_status"),
    [(RuntimeError, "error", "FAILED"), (KeyboardInterrupt, "interrupted", "KILLED")],
)
def test_a_sweep_that_fails_after_its_parent_run_exists_closes_it(
    raised, status, mlflow_status, mlflow_env, tmp_path, monkeypatch
):
    assert not ray.is_initialized()
    space = {"train.optimizer.lr": {"choice": [1e-3, 2e-3]}}
    spec = study(tmp_path, name="parent_closes", base=BASE, metric="kl/nfe-1", space=space)

    def fail(*args, **kwargs):
        raise raised("Ray could not start")

    monkeypatch.setattr(ray, "init", fail)
    with pytest.raises(raised):
        run_sweep(spec, storage=str(tmp_path / "ray_results"), verbose=0)
    parent = _parent("parent_closes")
    assert parent.info.status == mlflow_status and parent.data.tags["mgm.status"] == status
    assert "Ray could not start" in parent.data.tags["mgm.error"]
    with pytest.raises(raised):  # the same sweep again: its parent run is found and reopened, then closed again
        run_sweep(spec, storage=str(tmp_path / "ray_results"), verbose=0, resume=True)
    again = _parent("parent_closes")
    assert again.info.run_id == parent.info.run_id and again.info.status == mlflow_status
