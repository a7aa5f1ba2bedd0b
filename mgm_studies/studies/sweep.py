"""A study's sweep: Ray Tune trials over a search space, tracked in MLflow (platform.md, "The path a study takes").

`run_sweep` does, in order: checks (the experiment name, whether the sweep exists, whether a trial fits a local Ray),
teachers and offline FID extractors trained once before any trial starts (`prepare_teachers`; the trials find them
by their config hash), the MLflow parent run (`parent_run.py`), Ray (`ray_start.py`), the Tune experiment
(`search.py`, `mlflow_sweep.py`), and the parent's final summary. The sweep's name is the study name plus the space
hash, so `--resume` finds and restores it (`Tuner.restore(..., resume_errored=True)`): unfinished trials continue
from their checkpoints.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

from mgm_studies import tracking
from mgm_studies.configbase import ConfigError
from mgm_studies.names import TAG_ERROR, check_name
from mgm_studies.studies import live
from mgm_studies.studies.parent_run import SweepOutcome, close_parent_run, experiment_description, open_parent_run
from mgm_studies.studies.placement import reaping_orphaned_placement_groups
from mgm_studies.studies.ray_start import check_fits_locally, sigterm_as_ctrl_c, start_ray
from mgm_studies.studies.search import (
    SeedRepeater,  # noqa: F401 (sweeps started before the split pickled it here)
    new_tuner,
    trainable,
)
from mgm_studies.studies.space import StudySpec
from mgm_studies.tracking_store import shown


def _variants(study: StudySpec) -> list[dict[str, Any]]:
    """The default assignment, and each choice/grid value of each axis with the others at their defaults."""
    default = study.default_params()
    return [default, *({**default, key: v} for key, axis in study.space.items() if axis.discrete for v in axis.values)]


def prepare_teachers(study: StudySpec) -> list[str]:
    """Train (once) every teacher named by config in the study, and every offline FID extractor its trials would
    train on first use, before trials start; returns the teachers' sources."""
    from mgm_studies.builders import build_dataset
    from mgm_studies.runs import build_run

    sources, seen = [], set()
    for values in _variants(study):
        config = study.trial_config(values, study.seeds[0])
        fid = config.eval.fid
        if {"fid", "kid"} & set(config.eval.metrics) and fid.extractor == "mgm-offline" and fid.weights is None:
            from mgm_studies.metrics.image_quality import cache_folder, offline_weights

            offline_weights(build_dataset(config), cache_folder(fid.cache_dir))
        teacher = getattr(config.objective, "teacher", None)
        if teacher is None or teacher.config is None or teacher.config in seen:
            continue
        seen.add(teacher.config)
        sources.append(build_run(config).objective.teacher_source)
    return sources


def sweep_name(study: StudySpec) -> str:
    return f"{study.name}-{study.space_hash()}"


def _storage_path(storage: str | None) -> str:
    if storage and "://" in storage:
        return storage.rstrip("/")
    return str(Path(storage or "ray_results").resolve())


def run_sweep(
    study: StudySpec,
    *,
    resume: bool = False,
    address: str | None = None,
    storage: str | None = None,
    experiment: str | None = None,
    num_samples: int | None = None,
    max_concurrent: int | None = None,
    verbose: int = 1,
    overrides: list[str] | None = None,
    keep_checkpoints: str = "all",
) -> SweepOutcome:
    """Run (or, with `resume`, continue) the sweep of `study`; returns what happened. Starts a local Ray unless one
    is running or an address is given (`RAY_ADDRESS` too). `experiment` (default: the study name) is checked first,
    before anything starts or is written. `overrides` (already applied to `study.base`) are recorded on the parent
    run. `keep_checkpoints`: "all" (Tune keeps each trial's last 2), or "unfinished" (a finished trial's are deleted
    once its final model is in MLflow; stored with the sweep, so a `--resume` keeps the choice it started with)."""
    experiment = check_name(study.name if experiment is None else experiment, "--experiment")
    import ray
    from ray import tune

    from mgm_studies.studies.mlflow_sweep import MlflowSweepCallback

    for name, value in (("--num-samples", num_samples), ("--max-concurrent", max_concurrent)):
        if value is not None and value < 1:
            raise ConfigError.single(name, f"must be >= 1, got {value}")
    sweep, storage_path = sweep_name(study), _storage_path(storage)
    path = f"{storage_path}/{sweep}"
    exists = tune.Tuner.can_restore(path)
    if exists and not resume:
        raise ConfigError.single(
            "--resume",
            f"a sweep of this space already exists at {path}: pass --resume to continue it, or remove that folder "
            "(or change the space) to start a new one",
        )
    base = study.trial_config(study.default_params(), study.seeds[0])  # values, not searcher labels
    check_fits_locally(base, address)
    uri = tracking.tracking_uri()
    os.environ["MLFLOW_TRACKING_URI"] = uri  # absolute: trials run in other folders and other processes
    os.environ["TUNE_DISABLE_AUTO_CALLBACK_LOGGERS"] = "1"  # read by Tune in this process; loggers given below
    client = tracking.client()
    experiment_id = tracking.experiment_id(client, experiment, description=experiment_description(study))
    prepare_teachers(study)
    resources = base.resources.model_dump_json()
    parent_run_id = open_parent_run(client, experiment_id, study, sweep, storage_path, overrides or [], resources)

    started_ray = False
    try:
        started_ray = start_ray(uri, address, verbose)
        if exists:
            print(f"resuming sweep {sweep} from {path}", file=sys.stderr)
            tuner = tune.Tuner.restore(path, trainable=trainable(study, base, uri), resume_errored=True)
        else:
            max_concurrent = max_concurrent or study.search.max_concurrent
            callback = MlflowSweepCallback(
                study=study,
                tracking_uri=uri,
                experiment_id=experiment_id,
                parent_run_id=parent_run_id,
                sweep=sweep,
                keep_checkpoints=keep_checkpoints,
                max_concurrent=max_concurrent,
            )
            tuner, planned = new_tuner(
                study,
                base,
                trainable(study, base, uri),
                sweep=sweep,
                storage_path=storage_path,
                callback=callback,
                num_samples=num_samples or study.search.num_samples,
                max_concurrent=max_concurrent,
                verbose=verbose,
            )
            live.record_planned(client, parent_run_id, planned)
        with reaping_orphaned_placement_groups(), sigterm_as_ctrl_c():  # placement.py; preemption
            results = tuner.fit()
    except BaseException as exc:  # Ray or Tune failed, or Ctrl-C outside fit(): the parent run never stays RUNNING
        status = "interrupted" if isinstance(exc, KeyboardInterrupt) else "error"
        tracking.finish_run(client, parent_run_id, status, tags={TAG_ERROR: repr(exc)[:5000]})
        raise
    finally:
        if started_ray:
            ray.shutdown()
    outcome = SweepOutcome(sweep=sweep, path=path, parent_run_id=parent_run_id, experiment=experiment)
    return close_parent_run(client, study, outcome, experiment_id, results)


def print_outcome(outcome: SweepOutcome, space: str) -> int:
    """Print what the sweep of the space file `space` did (its trials' statuses, the best per metric, where MLflow
    shows it); returns the `sweep` verb's exit status: 130 interrupted, 0 if a trial finished, else 1."""
    counts = ", ".join(f"{n} {status}" for status, n in sorted(outcome.statuses.items()))
    print(f"sweep {outcome.sweep}: {counts or 'no trials'}")
    for metric, (run_id, value, params) in outcome.best.items():
        setting = ", ".join(f"{k}={v}" for k, v in params.items())
        print(f"best {metric} = {value:.4g} (run {run_id}): {setting}")
    uri = tracking.tracking_uri()
    where = shown(uri) if uri.startswith(("http://", "https://")) else f"mlflow ui --backend-store-uri {uri}"
    print(f"MLflow: {where}  (experiment {outcome.experiment!r}, parent run {outcome.parent_run_id})")
    if outcome.interrupted:
        print(f"sweep interrupted: continue it with  mgm-studies sweep {space} --resume", file=sys.stderr)
        return 130
    return 0 if outcome.statuses.get("finished", 0) > 0 else 1
