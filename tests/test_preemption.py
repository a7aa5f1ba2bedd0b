"""Preemption through the real CLI with real signals and a real SQLite MLflow store (issue 15, part 5).

Schedulers stop a job with SIGTERM (SLURM preemption, Kubernetes eviction) and SIGKILL after a grace period. SIGTERM
stops `train` as Ctrl-C does: a checkpoint at the step it stopped at, the run marked interrupted; SIGKILL leaves MLflow
rows logged beyond the last checkpoint, which the resumed run must not log again.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from conftest import run_cli, small_config
from mlflow.tracking import MlflowClient

from mgm_studies import tracking
from mgm_studies.training.checkpoint import list_checkpoints

pytestmark = pytest.mark.slow  # each trains two processes

STEPS = 600  # MLflow gets the first rows at about step 310 (1000 buffered metrics): see `tracking.py`


def _start(workdir: Path, checkpoint_interval: int) -> tuple[MlflowClient, subprocess.Popen]:
    config = small_config(
        model={"hidden": 32, "depth": 2, "embedding_dim": 16},
        train={"steps": STEPS, "batch_size": 64, "checkpoint_interval": checkpoint_interval, "ema_decays": [0.9]},
        eval={"metrics": ["sw2"], "steps": [1], "num_samples": 200, "reference_samples": 200},
    )
    (workdir / "run.yaml").write_text(yaml.safe_dump(config))
    client = tracking.client()  # the store's schema, created before the run's process opens it
    process = subprocess.Popen(
        [sys.executable, "-m", "mgm_studies", "train", "run.yaml", "--quiet"],
        cwd=workdir,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    return client, process


def _logged_through(client: MlflowClient, run_id: str) -> dict[str, int]:
    """Each metric's last logged step."""
    return {m.key: m.step for m in client.get_run(run_id).data.to_proto().metrics}


def _wait_for(client: MlflowClient, process: subprocess.Popen, ready) -> str:
    """The run's id once `ready(run)` holds, polled while the run trains."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and process.poll() is None:
        found = client.search_runs([e.experiment_id for e in client.search_experiments()], max_results=1)
        if found and ready(found[0]):
            return found[0].info.run_id
        time.sleep(0.02)
    raise AssertionError(f"the run ended (exit {process.poll()}) or stalled before it could be stopped")


def _assert_each_step_once(client: MlflowClient, run_id: str) -> None:
    assert client.get_run(run_id).info.status == "FINISHED"
    for key in ("loss", "grad_norm", "lr"):
        assert [m.step for m in client.get_metric_history(run_id, key)] == list(range(1, STEPS + 1)), key
    assert [m.step for m in client.get_metric_history(run_id, "sw2/nfe-1")] == [STEPS]


def test_sigterm_checkpoints_at_once_and_the_resumed_run_logs_each_step_once(mlflow_env):
    # One checkpoint interval is the whole run: any checkpoint before the end is SIGTERM's own.
    client, process = _start(mlflow_env, checkpoint_interval=STEPS)
    run_id = _wait_for(client, process, lambda run: "loss" in run.data.metrics)  # rows already in MLflow
    os.kill(process.pid, signal.SIGTERM)
    _, err = process.communicate(timeout=60)
    assert process.returncode == 130, err
    assert "SIGTERM: stopping after this step" in err and f"mgm-studies train --resume {run_id}" in err
    run = client.get_run(run_id)
    assert run.info.status == "KILLED" and run.data.tags["mgm.status"] == "interrupted"
    (checkpoint,) = list_checkpoints(mlflow_env / "checkpoints" / run_id)
    stopped_at = int(checkpoint.stem.split("-")[1])
    assert 0 < stopped_at < STEPS and run.data.tags["mgm.last_checkpoint_step"] == str(stopped_at)
    # Every step up to the interruption is in MLflow (nothing left in a buffer), none beyond it.
    assert _logged_through(client, run_id)["loss"] == stopped_at
    assert len(client.get_metric_history(run_id, "loss")) == stopped_at

    done = run_cli("train", "--resume", run_id, "--quiet", cwd=mlflow_env)
    assert done.returncode == 0, done.stderr
    assert f"(step {stopped_at})" in done.stderr
    _assert_each_step_once(client, run_id)


def test_a_run_killed_after_its_grace_period_resumes_without_logging_a_step_twice(mlflow_env):
    """SIGKILL (the grace period ran out) after MLflow got rows beyond the last checkpoint: the resumed run replays
    those steps from the checkpoint and must not log them again (292 duplicated rows in one measured case)."""
    client, process = _start(mlflow_env, checkpoint_interval=300)  # rows of steps 301-310 or so are beyond it

    def beyond_the_checkpoint(run) -> bool:
        checkpoint = run.data.tags.get("mgm.last_checkpoint_step")
        return checkpoint is not None and _logged_through(client, run.info.run_id).get("loss", 0) > int(checkpoint)

    run_id = _wait_for(client, process, beyond_the_checkpoint)
    os.kill(process.pid, signal.SIGKILL)
    process.communicate(timeout=60)
    run = client.get_run(run_id)
    assert run.data.tags["mgm.status"] == "running"  # nobody closed it: a resume reopens it
    assert _logged_through(client, run_id)["loss"] > int(run.data.tags["mgm.last_checkpoint_step"])

    done = run_cli("train", "--resume", run_id, "--quiet", cwd=mlflow_env)
    assert done.returncode == 0, done.stderr
    _assert_each_step_once(client, run_id)
