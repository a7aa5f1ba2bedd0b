"""The probe `sweep_overhead.py` installs in every Ray worker process (Ray's `worker_process_setup_hook`).

It must stay light: the hook runs in *every* worker process Ray starts (idle pool workers, Tune trials, the Ray Train
controller and its helper actors). An earlier version imported the benchmark module there, and with it torch, MLflow and
Ray Tune: each of the ~8 processes a `train` trial starts then spent seconds of CPU on imports that the sweep never
does, and on 2 cores that slowed the measured training ~3x. So this module imports only the standard library and
patches `mgm_studies.training.ray_train` and `mgm_studies.studies.trial` when (and if) a process imports them.

Stamps (`stamps.jsonl` in `MGM_SWEEP_OVERHEAD_TIMINGS`): `process_start` (every process, when Ray runs the hook),
`trial_start` / `trial_end` (the Tune trial function of a sweep, either executor), `fit_start` / `fit_end`
(the trial, around `TorchTrainer.fit`), `worker_fn` (a Ray Train worker entering the sweep's worker function, after
its process has unpickled it), `trainer_start` / `trainer_end` (around the Trainer, reports included). The duration
of each report (`tune.report` / `ray.train.report`, checkpoint included) goes to `reports-<pid>.txt`.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import json
import os
import sys
import time
from pathlib import Path


def timings() -> Path:
    return Path(os.environ["MGM_SWEEP_OVERHEAD_TIMINGS"])


def stamp(name: str) -> None:
    with (timings() / "stamps.jsonl").open("a") as f:
        f.write(json.dumps({"name": name, "t": time.time(), "pid": os.getpid()}) + "\n")


def _timed(send):
    path = timings() / f"reports-{os.getpid()}.txt"

    def timed_send(result, folder):
        start = time.perf_counter()
        send(result, folder)
        with path.open("a") as f:
            f.write(f"{time.perf_counter() - start}\n")

    return timed_send


def _patch_trial(module) -> None:
    """Stamp the Tune trial function's start and end (`trial_start` / `trial_end`)."""
    original = module.run_trial

    def run_trial(params, **kwargs):
        stamp("trial_start")
        try:
            return original(params, **kwargs)
        finally:
            stamp("trial_end")

    module.run_trial = run_trial


def _patch_executors(module) -> None:
    """Wrap the executors' functions (looked up by module attribute when called, so the wrappers are what runs)."""
    original_train, original_fit, original_worker = (
        module.train_with_reporter,
        module.run_torch_trainer,
        module._train_worker,
    )

    def train_with_reporter(config, checkpoint_dir, send, **kwargs):
        stamp("trainer_start")
        status = original_train(config, checkpoint_dir, _timed(send), **kwargs)
        stamp("trainer_end")
        return status

    def run_torch_trainer(config, **kwargs):
        stamp("fit_start")
        try:
            original_fit(config, **kwargs)
        finally:
            stamp("fit_end")

    def train_worker(loop_config):
        stamp("worker_fn")
        return original_worker(loop_config)

    module.train_with_reporter, module.run_torch_trainer, module._train_worker = (
        train_with_reporter,
        run_torch_trainer,
        train_worker,
    )


TARGETS = {"mgm_studies.training.ray_train": _patch_executors, "mgm_studies.studies.trial": _patch_trial}


class _PatchOnImport(importlib.abc.MetaPathFinder):
    """Finds nothing itself; when a module of TARGETS is imported, wraps its loader so that its patch runs right
    after it."""

    def find_spec(self, fullname, path, target=None):
        if fullname not in TARGETS:
            return None
        spec = importlib.machinery.PathFinder.find_spec(fullname, path)
        if spec is None or spec.loader is None:
            return None
        exec_module = spec.loader.exec_module

        def exec_and_patch(module):
            exec_module(module)
            TARGETS[fullname](module)

        spec.loader.exec_module = exec_and_patch
        return spec


def install() -> None:
    """The worker_process_setup_hook."""
    stamp("process_start")
    for name, patch in TARGETS.items():
        if name in sys.modules:
            patch(sys.modules[name])
    sys.meta_path.insert(0, _PatchOnImport())
