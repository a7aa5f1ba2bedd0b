"""Many trials per GPU (issue 15, part 2): a sweep at `--gpus-per-trial 0.25` on a Ray cluster with one logical GPU
runs four trials at once, all on the same GPU. Ray's logical GPUs make this testable without one: `ray start
--num-gpus 1` advertises a GPU that Ray hands out by id, and each trial records what it was given
(`mgm.ray_gpu_ids`). Without CUDA, `device: auto` still trains on the CPU (`training/device.py`)."""

from __future__ import annotations

import json
import os
import secrets
import socket
import subprocess
import sys
from contextlib import ExitStack
from pathlib import Path

import pytest
import torch
import yaml
from mlflow.tracking import MlflowClient

from mgm_studies.training.device import TAG_DEVICE, TAG_RAY_GPU_IDS

pytestmark = pytest.mark.slow

BIN = Path(sys.executable).parent
TRIALS = 4


def _free_ports(n: int) -> list[int]:
    """`n` distinct free ports (held open together while picked, so no two are the same)."""
    with ExitStack() as stack:
        sockets = [stack.enter_context(socket.socket()) for _ in range(n)]
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]


@pytest.fixture
def one_gpu_cluster(tmp_path):
    """A head node with 1 logical GPU and 4 CPUs on non-default ports; yields (address, environment). Token
    authentication stays on (Ray's default): the sweep gets the same token."""
    env = dict(os.environ, RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=secrets.token_hex(16))
    env["PATH"] = f"{BIN}{os.pathsep}{env['PATH']}"
    env.pop("RAY_ADDRESS", None)
    port, client, metrics, runtime_env, agent = _free_ports(5)
    ray = str(BIN / "ray")
    head = [ray, "start", "--head", f"--port={port}", "--num-cpus=4", "--num-gpus=1", "--include-dashboard=false"]
    head += [f"--ray-client-server-port={client}", f"--metrics-export-port={metrics}"]
    head += [f"--runtime-env-agent-port={runtime_env}", f"--dashboard-agent-listen-port={agent}"]
    head += ["--disable-usage-stats"]
    try:
        subprocess.run(head, env=env, check=True, capture_output=True, timeout=120)
        yield f"127.0.0.1:{port}", env
    finally:
        subprocess.run([ray, "stop", "--force"], env=env, capture_output=True, timeout=120)


def _windows(trial_folders: list[Path]) -> list[tuple[float, float]]:
    """Each trial's (start, end) in its own process, from Tune's results: the last result's wall-clock `timestamp`
    less the trial's `time_total_s`, and that timestamp. Tune's timestamp is whole seconds (rounded down), so each
    window is up to 1 s early."""
    windows = []
    for folder in trial_folders:
        last = json.loads((folder / "result.json").read_text().splitlines()[-1])
        windows.append((last["timestamp"] - last["time_total_s"], float(last["timestamp"])))
    return windows


def test_four_trials_at_a_quarter_gpu_run_at_once_on_the_same_gpu(tmp_path, one_gpu_cluster):
    address, env = one_gpu_cluster
    env["MLFLOW_TRACKING_URI"] = f"sqlite:///{tmp_path / 'mlflow.db'}"
    env["MGM_STUDIES_CHECKPOINTS"] = str(tmp_path / "checkpoints")
    space = {
        "name": "packing",
        "base": {
            "data": {"name": "checkerboard"},
            "model": {"hidden": 32, "depth": 2, "embedding_dim": 16},
            # Long enough (several seconds with four trials on this machine's cores) that the trials' windows
            # overlap however Ray staggers the starts of their processes.
            "train": {"steps": 450, "batch_size": 64, "checkpoint_interval": 150, "ema_decays": [0.9]},
            "eval": {"metrics": ["kl"], "steps": [1], "num_samples": 500, "reference_samples": 500, "interval": 150},
        },
        "metric": "kl/nfe-1",
        "search": {"algorithm": "grid"},
        "space": {"train.optimizer.lr": {"grid": [1.0e-3, 2.0e-3, 3.0e-3, 4.0e-3]}},
    }
    (tmp_path / "space.yaml").write_text(yaml.safe_dump(space))
    # 4 x 0.25 GPU fills the one GPU; 4 x 0.5 CPU fits in 4 CPUs, so only the GPU fraction decides the packing.
    sweep = [str(BIN / "mgm-studies"), "sweep", str(tmp_path / "space.yaml"), "--address", address]
    sweep += ["--storage", str(tmp_path / "ray"), "--gpus-per-trial", "0.25", "--cpus-per-trial", "0.5"]
    sweep += ["--max-concurrent", str(TRIALS), "--quiet"]
    done = subprocess.run(sweep, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert f"{TRIALS} finished" in done.stdout

    client = MlflowClient(env["MLFLOW_TRACKING_URI"])
    experiment = client.get_experiment_by_name("packing")
    children = [r for r in client.search_runs([experiment.experiment_id]) if r.data.tags.get("mgm.kind") == "trial"]
    assert len(children) == TRIALS
    # Every trial was given the cluster's one GPU (Ray's id 0), and trained where `device: auto` put it.
    assert {c.data.tags[TAG_RAY_GPU_IDS] for c in children} == {"0"}
    expected_device = "cuda:0" if torch.cuda.is_available() else "cpu"
    assert {c.data.tags[TAG_DEVICE] for c in children} == {expected_device}
    assert {c.data.params["resources.gpus_per_worker"] for c in children} == {"0.25"}

    # All four ran at once: some moment lies inside every trial's window (with 0.5 GPU each at most two could). The
    # common part must exceed the 1 s by which two windows may be shifted against each other (measured: 3.6 s at
    # 300 steps on 2 cores).
    (sweep_folder,) = (tmp_path / "ray").iterdir()
    trial_folders = [p for p in sweep_folder.iterdir() if (p / "result.json").is_file()]
    assert len(trial_folders) == TRIALS
    windows = _windows(trial_folders)
    latest_start, earliest_end = max(s for s, _ in windows), min(e for _, e in windows)
    assert earliest_end - latest_start > 1.0, windows
