"""Shared fixtures: small run configs, and an isolated MLflow store and working directory per test."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from mgm_studies.config import parse_run_config


def small_config(**sections) -> dict:
    """A tiny run config as a dict; `sections` replace whole top-level sections."""
    config = {
        "data": {"name": "checkerboard"},
        "model": {"hidden": 64, "depth": 3, "embedding_dim": 32},
        "train": {
            "steps": 60,
            "batch_size": 128,
            "checkpoint_interval": 20,
            "log_interval": 5,
            "ema_decays": [0.9, 0.99],
        },
        "eval": {"metrics": ["kl", "sw2"], "steps": [1, 4], "num_samples": 2000, "reference_samples": 2000},
    }
    config.update(sections)
    return config


def run_cli(
    *args: str, cwd: Path, env: dict[str, str] | None = None, timeout: int = 300
) -> subprocess.CompletedProcess:
    """`python -m mgm_studies ARGS` in `cwd`, as a user runs it: this environment plus `env`; output captured."""
    return subprocess.run(
        [sys.executable, "-m", "mgm_studies", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
    )


@pytest.fixture
def make_config():
    def make(**sections):
        return parse_run_config(small_config(**sections))

    return make


@pytest.fixture
def mlflow_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh SQLite MLflow store and checkpoint root under tmp_path; the test runs in tmp_path."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    monkeypatch.setenv("MGM_STUDIES_CHECKPOINTS", str(tmp_path / "checkpoints"))
    return tmp_path


# One real local Ray per test module that asks for it, never two at once (platform.md): module scope, so that
# tests/studies/test_multinode.py, which starts its own two-node cluster with `ray start`, runs with no other Ray.
@pytest.fixture(scope="module")
def ray_cluster():
    """`ray.init(num_cpus=2)` with the dashboard (Ray Train's placement-group cleaner needs its state API); yields
    the cluster's address, for subprocesses that join it."""
    import ray

    from mgm_studies.studies.ray_start import ray_environment

    environment = {k: v for k, v in ray_environment("").items() if k != "MLFLOW_TRACKING_URI"}
    os.environ.update(environment)
    ray.init(num_cpus=2, include_dashboard=True, log_to_driver=False, runtime_env={"env_vars": environment})
    yield ray.get_runtime_context().gcs_address
    ray.shutdown()
