"""Ray for a sweep's driver: the environment its processes get, the local check that a trial fits, starting (or
joining) Ray, and SIGTERM taken as Ctrl-C while Tune runs."""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from collections.abc import Iterator

from mgm_studies.config import RunConfig
from mgm_studies.configbase import ConfigError
from mgm_studies.studies.trial import executor_of


def ray_environment(tracking_uri: str) -> dict[str, str]:
    """What Ray's worker processes need: the tracking store, and two Ray Train settings (a user's own environment
    variables win):

    - the controller polls its workers every 0.1 s instead of 2 s (each `ray.train.report` otherwise blocks up to
      2 s: platform.md);
    - no preemption watcher: it is one more actor process per `train` trial (its start costs about a CPU-second)
      and only logs spot-instance preemptions; `RAY_TRAIN_ENABLE_PREEMPTION_WATCHER=1` brings it back.
    """
    return {
        "MLFLOW_TRACKING_URI": tracking_uri,
        "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": os.environ.get("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.1"),
        "RAY_TRAIN_ENABLE_PREEMPTION_WATCHER": os.environ.get("RAY_TRAIN_ENABLE_PREEMPTION_WATCHER", "0"),
        "RAY_CHDIR_TO_TRIAL_DIR": "0",
    }


def start_ray(tracking_uri: str, address: str | None, verbose: int) -> bool:
    """Start a local Ray, or join the one at `address` (`RAY_ADDRESS` too), unless this process is connected
    already; returns whether it connected (then the caller shuts Ray down)."""
    import ray

    if ray.is_initialized():
        return False
    environment = ray_environment(tracking_uri)
    os.environ.update({k: v for k, v in environment.items() if k != "MLFLOW_TRACKING_URI"})
    # Under `ray job submit` the job's own runtime env may set the same variables (MLFLOW_TRACKING_URI): combine the
    # two instead of failing on the overlap (the values agree: the URI is read from that env).
    os.environ.setdefault("RAY_OVERRIDE_JOB_RUNTIME_ENV", "1")
    ray.init(address=address, runtime_env={"env_vars": environment}, log_to_driver=verbose > 1)
    return True


def check_fits_locally(config: RunConfig, address: str | None) -> None:
    """When `start_ray` would start a local Ray (none connected, no address, no `RAY_ADDRESS`): that Ray takes every
    CPU and GPU of this machine and does not grow, so a trial that needs more would wait for ever."""
    import ray

    if ray.is_initialized() or address is not None or os.environ.get("RAY_ADDRESS"):
        return
    import torch

    available = {"CPU": float(os.cpu_count() or 1), "GPU": float(torch.cuda.device_count())}
    resources = config.resources
    train = executor_of(config) == "train"
    cpus = resources.workers * resources.cpus_per_worker + (0.01 if train else 0.0)
    gpus = resources.workers * resources.gpus_per_worker
    for name, needed in (("CPU", cpus), ("GPU", gpus)):
        if needed > available.get(name, 0.0) + 1e-9:
            raise ConfigError.single(
                "resources",
                f"a trial needs {needed:g} {name} ({resources.workers} worker(s) x "
                f"{resources.cpus_per_worker if name == 'CPU' else resources.gpus_per_worker:g}"
                f"{' + 0.01 for the trial that drives them' if train and name == 'CPU' else ''}), this machine's Ray "
                f"has {available.get(name, 0.0):g}: lower resources.workers or resources.{name.lower()}s_per_worker "
                f"(--workers-per-trial, --{name.lower()}s-per-trial)",
            )


@contextlib.contextmanager
def sigterm_as_ctrl_c() -> Iterator[None]:
    """A scheduler's SIGTERM (SLURM preemption, Kubernetes eviction; SIGKILL follows after a grace period) stops the
    sweep as Ctrl-C does: Ray Tune's SIGINT handler, installed inside `fit()`, stops the trials and saves the
    experiment so `--resume` continues it (a second signal interrupts at once). Without this, the handler that
    `ray.init` installs exits the driver on the spot. Only the main thread can own signal handlers."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: signal.raise_signal(signal.SIGINT))
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
