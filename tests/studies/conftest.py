"""One real local Ray per test module that asks for it, never two at once (platform.md): module scope, so that
`test_multinode.py`, which starts its own two-node cluster with `ray start`, runs while no other Ray is up."""

from __future__ import annotations

import os

import pytest


@pytest.fixture(scope="module")
def ray_cluster():
    """`ray.init(num_cpus=2)` with the dashboard (Ray Train's placement-group cleaner needs its state API); yields
    the cluster's address, for subprocesses that join it."""
    import ray

    from mgm_studies.studies.sweep import ray_environment

    environment = {k: v for k, v in ray_environment("").items() if k != "MLFLOW_TRACKING_URI"}
    os.environ.update(environment)
    ray.init(num_cpus=2, include_dashboard=True, log_to_driver=False, runtime_env={"env_vars": environment})
    yield ray.get_runtime_context().gcs_address
    ray.shutdown()
