"""A two-node Ray cluster on this machine (`ray start --head` + `ray start --address`), a sweep submitted with
`ray job submit`, and MLflow through a real `mlflow server` on 127.0.0.1 (issue 4)."""

from __future__ import annotations

import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import yaml
from mlflow.tracking import MlflowClient

BIN = Path(sys.executable).parent


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def cluster_env(tmp_path):
    """Token authentication stays on (Ray's default): every process of the test gets the same fresh token."""
    env = dict(os.environ, RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=secrets.token_hex(16))
    env["PATH"] = f"{BIN}{os.pathsep}{env['PATH']}"
    env.pop("RAY_ADDRESS", None)
    return env


@pytest.fixture
def two_nodes(cluster_env):
    port, dashboard = _free_port(), _free_port()
    ray = str(BIN / "ray")
    head = [ray, "start", "--head", f"--port={port}", "--num-cpus=1", "--include-dashboard=true"]
    head += [f"--dashboard-port={dashboard}", "--dashboard-host=127.0.0.1", "--disable-usage-stats"]
    try:
        subprocess.run(head, env=cluster_env, check=True, capture_output=True, timeout=120)
        worker = [ray, "start", f"--address=127.0.0.1:{port}", "--num-cpus=1"]
        subprocess.run(worker, env=cluster_env, check=True, capture_output=True, timeout=120)
        yield f"http://127.0.0.1:{dashboard}"
    finally:
        subprocess.run([ray, "stop", "--force"], env=cluster_env, capture_output=True, timeout=120)


@pytest.fixture
def mlflow_server(tmp_path, cluster_env):
    port = _free_port()
    command = [str(BIN / "mlflow"), "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1"]
    command += ["--backend-store-uri", f"sqlite:///{tmp_path / 'server.db'}"]
    command += ["--artifacts-destination", str(tmp_path / "server-artifacts")]
    server = subprocess.Popen(command, env=cluster_env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=2) as response:
                    if response.status == 200:
                        break
            except OSError:
                if time.monotonic() > deadline or server.poll() is not None:
                    raise RuntimeError("mlflow server did not start") from None
                time.sleep(0.5)
        yield url
    finally:
        server.terminate()
        server.wait(timeout=30)


def test_a_sweep_submitted_with_ray_job_submit_runs_on_both_nodes_and_tracks_to_an_mlflow_server(
    tmp_path, cluster_env, two_nodes, mlflow_server
):
    assert shutil.which("mgm-studies", path=cluster_env["PATH"])
    space = {
        "name": "two_nodes",
        "base": {
            "data": {"name": "checkerboard"},
            "model": {"hidden": 32, "depth": 2, "embedding_dim": 16},
            "train": {"steps": 60, "batch_size": 64, "checkpoint_interval": 20, "ema_decays": [0.9]},
            "eval": {"metrics": ["kl"], "steps": [1, 2], "num_samples": 500, "reference_samples": 500, "interval": 20},
        },
        "metric": "kl/nfe-2",
        "search": {"algorithm": "grid", "max_concurrent": 2},
        "space": {"interpolant.schedule": {"grid": ["linear", "trig"]}},
    }
    (tmp_path / "space.yaml").write_text(yaml.safe_dump(space))
    submit = [str(BIN / "ray"), "job", "submit", "--address", two_nodes]
    submit += ["--runtime-env-json", f'{{"env_vars": {{"MLFLOW_TRACKING_URI": "{mlflow_server}"}}}}', "--"]
    submit += ["mgm-studies", "sweep", str(tmp_path / "space.yaml"), "--storage", str(tmp_path / "ray"), "--quiet"]
    job = subprocess.run(submit, env=cluster_env, capture_output=True, text=True, timeout=600)
    assert job.returncode == 0, job.stdout[-3000:] + job.stderr[-3000:]
    assert "2 finished" in job.stdout

    client = MlflowClient(mlflow_server)
    (experiment,) = [e for e in client.search_experiments() if e.name == "two_nodes"]
    found = client.search_runs([experiment.experiment_id])
    parents = [r for r in found if r.data.tags.get("mgm.kind") == "sweep"]
    children = [r for r in found if r.data.tags.get("mgm.kind") == "trial"]
    assert len(parents) == 1 and len(children) == 2
    for child in children:
        assert child.data.tags["mlflow.parentRunId"] == parents[0].info.run_id
        assert child.info.status == "FINISHED" and "kl/nfe-2" in child.data.metrics
        assert "checkpoints/final.pt" in [a.path for a in client.list_artifacts(child.info.run_id, "checkpoints")]

    # Ray's state API, asked from a process that holds the cluster's token.
    query = (
        "import json, sys; from ray.util.state import list_actors; "
        "print(json.dumps([a.node_id for a in list_actors(address=sys.argv[1], detail=True, limit=1000) "
        "if a.class_name == 'ImplicitFunc']))"
    )
    listed = subprocess.run(
        [sys.executable, "-c", query, two_nodes], env=cluster_env, capture_output=True, text=True, timeout=120
    )
    nodes = json.loads(listed.stdout.strip().splitlines()[-1])
    assert len(nodes) == 2 and len(set(nodes)) == 2  # one CPU per node, two trials at once: one on each node
