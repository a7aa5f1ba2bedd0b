"""A study's sweep: Ray Tune trials over a search space, tracked in MLflow (platform.md, "The path a study takes").

- Search: Optuna (TPE, NSGA-II, random) through `OptunaSearch`, seeds repeated with Tune's `Repeater`; or a grid
  (`tune.grid_search` over every axis and the seeds). Scheduler FIFO or ASHA on the first metric, deciding at
  evaluations (`training_iteration` counts a trial's evaluations).
- Each trial trains one run config through an executor (`training/ray_train.py`): `inline` (the Trainer in the trial
  process) or `train` (a Ray Train `TorchTrainer`); `auto` takes `train` for more than one worker.
- MLflow: experiment = study name, one parent run per sweep, written only by `MlflowSweepCallback` on this driver.
- The sweep's name is the study name plus the space hash, so the same space finds its own sweep again: `--resume`
  restores it (`Tuner.restore(..., resume_errored=True)`); unfinished trials continue from their checkpoints.
- Teachers named by config are trained once here, before any trial starts, and found by their config hash by the
  trials.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import signal
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from mlflow.entities import Param
from ray.tune.search import Repeater

from mgm_studies import tracking
from mgm_studies.config import RunConfig
from mgm_studies.configbase import ConfigError
from mgm_studies.names import check_name
from mgm_studies.studies import live
from mgm_studies.studies.placement import reaping_orphaned_placement_groups
from mgm_studies.studies.space import StudySpec, load_study_spec
from mgm_studies.studies.trial import SEED_KEY, executor_of, run_trial
from mgm_studies.tracking_store import shown

TAG_OVERRIDES = "mgm.overrides"  # the parent run's: this attempt's --set and resource flags (JSON list)
TAG_CLAIMS = "mgm.claims"  # the parent run's: the space's claims (JSON), read by the report
TAG_RESOURCES = "mgm.resources"  # the parent run's: the trials' resources section (JSON), this attempt


# ---------------------------------------------------------------------- search
class SeedRepeater(Repeater):
    """Tune's `Repeater` (each configuration once per seed; the searcher is told the mean over seeds), extended to a
    multi-objective metric: Ray's own averages a single metric and fails on a list. Module level: Tune pickles the
    searcher with the experiment for `Tuner.restore`."""

    def on_trial_complete(self, trial_id: str, result: dict | None = None, **kwargs: Any) -> None:
        metrics = self.searcher.metric
        if not isinstance(metrics, list | tuple):
            super().on_trial_complete(trial_id, result, **kwargs)
            return
        group = self._trial_id_to_group[trial_id]
        group.report(trial_id, [float((result or {}).get(m, np.nan)) for m in metrics])
        if group.finished_reporting():
            means = np.nanmean(np.array(group.scores(), dtype=float), axis=0)
            averaged = dict(zip(metrics, means.tolist(), strict=True))
            self.searcher.on_trial_complete(group.primary_trial_id, result=averaged, **kwargs)


def _optuna_space(study: StudySpec) -> dict[str, Any]:
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    space: dict[str, Any] = {}
    for key, axis in study.space.items():
        if axis.kind in ("choice", "grid"):
            space[key] = CategoricalDistribution(axis.labels())
        elif axis.kind == "int":
            space[key] = IntDistribution(int(axis.values[0]), int(axis.values[1]))
        else:
            space[key] = FloatDistribution(float(axis.values[0]), float(axis.values[1]), log=axis.kind == "loguniform")
    return space


def _search(study: StudySpec, num_samples: int) -> tuple[Any, dict[str, Any], int]:
    """(search algorithm or None, Tune param_space, Tune num_samples)."""
    from ray import tune

    seeds, algorithm = study.seeds, study.search.algorithm
    if algorithm == "grid":
        space: dict[str, Any] = {key: tune.grid_search(axis.labels()) for key, axis in study.space.items()}
        if SEED_KEY not in study.space:
            space[SEED_KEY] = tune.grid_search(list(seeds))
        return None, space, num_samples
    import optuna
    from ray.tune.search.optuna import OptunaSearch

    seed = study.search.seed
    sampler = {
        "optuna": lambda: optuna.samplers.TPESampler(seed=seed),
        "optuna-nsga2": lambda: optuna.samplers.NSGAIISampler(seed=seed),
        "random": lambda: optuna.samplers.RandomSampler(seed=seed),
    }[algorithm]()
    multi = study.multi_objective
    searcher = OptunaSearch(
        space=_optuna_space(study),
        metric=study.metric if multi else study.metric[0],
        mode=study.mode if multi else study.mode[0],
        sampler=sampler,
    )
    if len(seeds) > 1:
        searcher = SeedRepeater(searcher, repeat=len(seeds), set_index=True)
    return searcher, {}, num_samples * len(seeds)


def planned_trials(param_space: dict[str, Any], samples: int) -> int:
    """How many trials Tune runs for `_search`'s output: `samples` times the combinations of its grids."""
    grids = [len(v["grid_search"]) for v in param_space.values() if isinstance(v, dict) and "grid_search" in v]
    return samples * math.prod(grids)


def _scheduler(study: StudySpec, base: RunConfig):
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler

    spec = study.search.scheduler
    if spec.name == "fifo":
        return FIFOScheduler()
    evaluations = math.ceil(base.train.num_steps / base.eval.interval)
    return ASHAScheduler(
        time_attr="training_iteration",
        metric=study.metric[0],
        mode=study.mode[0],
        max_t=max(evaluations, 1),
        grace_period=min(spec.grace_period, max(evaluations, 1)),
        reduction_factor=spec.reduction_factor,
    )


# ---------------------------------------------------------------------- teachers and the parent run
def _variants(study: StudySpec) -> list[dict[str, Any]]:
    """The default assignment, and each choice/grid value of each axis with the others at their defaults."""
    default = study.default_params()
    variants = [default]
    for key, axis in study.space.items():
        if axis.kind in ("choice", "grid"):
            variants.extend({**default, key: value} for value in axis.values)
    return variants


def prepare_teachers(study: StudySpec) -> list[str]:
    """Train (once) every teacher named by config in the study, and every offline FID extractor its trials would
    train on first use, before trials start; returns the teachers' sources."""
    from mgm_studies.builders import build_dataset, build_run

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
        _, _, objective = build_run(config, teachers="load")
        sources.append(objective.teacher_source)
    return sources


def _parent_run(
    client, experiment_id: str, study: StudySpec, sweep: str, storage_path: str, overrides: list[str], resources: str
) -> tuple[str, bool]:
    """The sweep's parent run: found by its sweep tag (a resume), else created. Returns (run id, created). The
    overrides (`--set`, the resource flags) and the resources (JSON) of this attempt are its tags: a resume may
    change the resources without changing the sweep (`studies/overrides.py`)."""
    from mgm_studies.studies.mlflow_sweep import TAG_KIND, TAG_SWEEP

    found = client.search_runs(
        [experiment_id], filter_string=f"tags.`{TAG_SWEEP}` = '{sweep}' and tags.`{TAG_KIND}` = 'sweep'", max_results=1
    )
    attempt = {TAG_OVERRIDES: json.dumps(overrides), TAG_RESOURCES: resources}
    # Claims change nothing the trials train (not in the space hash): a resume records the space's current ones.
    attempt[TAG_CLAIMS] = json.dumps([c.model_dump(mode="json") for c in study.claims])
    if found:  # a resume: running again (an earlier attempt may have closed it as interrupted or error)
        run_id = found[0].info.run_id
        before = found[0].data.tags.get(TAG_RESOURCES)
        if before is not None and before != resources:
            print(
                f"resources changed since this sweep started ({before} -> {resources}): trials that Ray Tune had "
                "created keep the resources it reserved for them (Tuner.restore); Ray Train workers of `train` "
                "trials and the device of every trial follow the new ones",
                file=sys.stderr,
            )
        client.update_run(run_id, status="RUNNING")
        for key, value in {tracking.TAG_STATUS: "running", **attempt}.items():
            client.set_tag(run_id, key, value)
        return run_id, False
    search = study.search
    tags = {
        TAG_SWEEP: sweep,
        TAG_KIND: "sweep",
        "mgm.study": study.name,
        "mgm.space_hash": study.space_hash(),
        "mgm.storage": storage_path,
        "mgm.code_version": tracking.code_version(),
        tracking.TAG_STATUS: "running",
        **attempt,
    }
    run_id = client.create_run(experiment_id, run_name=f"sweep-{sweep}", tags=tags).info.run_id
    params = {
        "search.algorithm": search.algorithm,
        "search.num_samples": search.num_samples,
        "search.max_concurrent": search.max_concurrent,
        "search.seed": search.seed,
        "search.scheduler": search.scheduler.model_dump_json(),
        "metric": ",".join(study.metric),
        "mode": ",".join(study.mode),
        "seeds": ",".join(map(str, study.seeds)),
        "swept": ",".join(study.space),
    }
    client.log_batch(run_id, params=[Param(k, str(v)) for k, v in params.items()])
    text = study.source.read_text() if study.source is not None else yaml.safe_dump(study.model_dump(mode="json"))
    client.log_text(run_id, text, "space.yaml")
    return run_id, True


# ---------------------------------------------------------------------- the sweep
@dataclass
class SweepOutcome:
    sweep: str
    path: str
    parent_run_id: str
    experiment: str  # the MLflow experiment the sweep was tracked in
    statuses: dict[str, int] = field(default_factory=dict)  # mgm.status -> number of trials
    best: dict[str, tuple[str, float, dict]] = field(default_factory=dict)  # metric -> (child run id, value, params)
    interrupted: bool = False


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
    from ray.tune.logger import CSVLoggerCallback, JsonLoggerCallback

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
    if not ray.is_initialized() and address is None and not os.environ.get("RAY_ADDRESS"):
        import torch

        # The local Ray started below takes every CPU and GPU of this machine, and does not grow.
        _check_fits_locally(base, {"CPU": float(os.cpu_count() or 1), "GPU": float(torch.cuda.device_count())})
    uri = tracking.tracking_uri()
    os.environ["MLFLOW_TRACKING_URI"] = uri  # absolute: trials run in other folders and other processes
    os.environ["TUNE_DISABLE_AUTO_CALLBACK_LOGGERS"] = "1"  # read by Tune in this process; loggers given below
    client = tracking.client()
    described = (
        f"Study {study.name}: {study.description or ''}\n\nSwept: {', '.join(study.space)}; seeds "
        f"{', '.join(map(str, study.seeds))}; optimised: {', '.join(study.metric)} ({', '.join(study.mode)}). Each "
        "sweep is a parent run with one child run per trial. To compare trials, add the columns "
        + ", ".join(f"`params.{k}`" for k in [*study.space, "train.seed"])
        + " and "
        + ", ".join(f"`metrics.{m}`" for m in study.metric)
        + " from the runs table's Columns menu."
    )
    experiment_id = tracking.experiment_id(client, experiment, description=described)  # creates the schema, once
    prepare_teachers(study)
    resources = base.resources.model_dump_json()
    parent_run_id, _ = _parent_run(client, experiment_id, study, sweep, storage_path, overrides or [], resources)

    started_ray = False
    try:
        if not ray.is_initialized():
            environment = ray_environment(uri)
            os.environ.update({k: v for k, v in environment.items() if k != "MLFLOW_TRACKING_URI"})
            # Under `ray job submit` the job's own runtime env may set the same variables (MLFLOW_TRACKING_URI):
            # combine the two instead of failing on the overlap (the values agree: the URI is read from that env).
            os.environ.setdefault("RAY_OVERRIDE_JOB_RUNTIME_ENV", "1")
            ray.init(address=address, runtime_env={"env_vars": environment}, log_to_driver=verbose > 1)
            started_ray = True
        trainable = tune.with_parameters(run_trial, study=study, tracking_uri=uri)
        resources = base.resources
        if executor_of(base) == "train":  # the trial only waits on its TorchTrainer; the workers hold the resources
            trainable = tune.with_resources(trainable, {"cpu": 0.01})
        else:
            trainable = tune.with_resources(
                trainable, {"cpu": resources.cpus_per_worker, "gpu": resources.gpus_per_worker}
            )
        if exists:
            print(f"resuming sweep {sweep} from {path}", file=sys.stderr)
            tuner = tune.Tuner.restore(path, trainable=trainable, resume_errored=True)
        else:
            searcher, param_space, samples = _search(study, num_samples or study.search.num_samples)
            live.record_planned(client, parent_run_id, planned_trials(param_space, samples))
            callback = MlflowSweepCallback(
                study=study,
                tracking_uri=uri,
                experiment_id=experiment_id,
                parent_run_id=parent_run_id,
                sweep=sweep,
                keep_checkpoints=keep_checkpoints,
                max_concurrent=max_concurrent or study.search.max_concurrent,
            )
            tuner = tune.Tuner(
                trainable,
                param_space=param_space,
                tune_config=tune.TuneConfig(
                    search_alg=searcher,
                    scheduler=_scheduler(study, base),
                    num_samples=samples,
                    max_concurrent_trials=max_concurrent or study.search.max_concurrent,
                ),
                run_config=tune.RunConfig(
                    name=sweep,
                    storage_path=storage_path,
                    failure_config=tune.FailureConfig(max_failures=2),
                    checkpoint_config=tune.CheckpointConfig(num_to_keep=2),
                    # Tune's JSON and CSV result files, not its TensorBoard logger (which warns on every result
                    # about the per-step scalars it cannot plot).
                    callbacks=[callback, JsonLoggerCallback(), CSVLoggerCallback()],
                    verbose=verbose,
                ),
            )
        with reaping_orphaned_placement_groups(), _sigterm_as_ctrl_c():  # placement.py; preemption
            results = tuner.fit()
    except BaseException as exc:  # Ray or Tune failed, or Ctrl-C outside fit(): the parent run never stays RUNNING
        status = "interrupted" if isinstance(exc, KeyboardInterrupt) else "error"
        tracking.finish_run(client, parent_run_id, status, tags={"mgm.error": repr(exc)[:5000]})
        raise
    finally:
        if started_ray:
            ray.shutdown()
    outcome = SweepOutcome(sweep=sweep, path=path, parent_run_id=parent_run_id, experiment=experiment)
    return _summarise(client, study, outcome, experiment_id, results)


def axis_param(params: dict[str, str], key: str) -> str | None:
    """An axis's value among a run's MLflow params (flattened dotted keys): the param itself, or for an axis over a
    whole section (`objective`) its `name`, else its keys as JSON."""
    if key in params:
        return params[key]
    if f"{key}.name" in params:
        return params[f"{key}.name"]
    inside = {k[len(key) + 1 :]: v for k, v in params.items() if k.startswith(f"{key}.")}
    return json.dumps(inside, sort_keys=True) if inside else None


@contextlib.contextmanager
def _sigterm_as_ctrl_c() -> Iterator[None]:
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


def _check_fits_locally(config: RunConfig, available: dict[str, float]) -> None:
    """On a local Ray (which does not grow), a trial that needs more than the machine has would wait for ever."""
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


def _summarise(client, study, outcome: SweepOutcome, experiment_id, results) -> SweepOutcome:
    from mgm_studies.studies.mlflow_sweep import TAG_SWEEP

    sweep, parent_run_id = outcome.sweep, outcome.parent_run_id
    children = client.search_runs(
        [experiment_id],
        filter_string=f"tags.`{TAG_SWEEP}` = '{sweep}' and tags.`mlflow.parentRunId` = '{parent_run_id}'",
        max_results=10_000,
    )
    # Interrupted: a child still running, or a trial Tune knows of that never got a child run. Tune has stopped
    # every trial by now: a child still running is closed as interrupted (`--resume` continues it, and opens it again).
    running = [r for r in children if r.data.tags.get(tracking.TAG_STATUS, "running") == "running"]
    outcome.interrupted = bool(running) or len(results) > len(children)
    for run in running if outcome.interrupted else []:
        tracking.finish_run(client, run.info.run_id, "interrupted")
        run.data.tags[tracking.TAG_STATUS] = "interrupted"
    # The same names as the live view's updates (`live.py`), after its last one.
    summary = live.write_final(
        client,
        client.get_run(parent_run_id),
        [live.record_of(r) for r in children],
        study,
        interrupted=outcome.interrupted,
    )
    outcome.statuses = {status: n for status, n in summary.counts.items() if n and status != "pending"}
    by_id = {r.info.run_id: r for r in children}
    for metric, (value, record) in summary.best.items():
        run = by_id[record.run_id]
        params = {k: axis_param(run.data.params, k) for k in study.space}
        params["train.seed"] = run.data.params.get("train.seed")
        outcome.best[metric] = (record.run_id, value, params)
    tracking.finish_run(client, parent_run_id, "interrupted" if outcome.interrupted else "finished")
    return outcome


# ---------------------------------------------------------------------- the CLI verb
def run_sweep_command(args, study: StudySpec | None = None, overrides: list[str] | None = None) -> int:
    """`sweep`: `study` is the space already loaded with its `overrides` (the CLI checks both before importing
    this module), else read from `args.space`."""
    study = load_study_spec(args.space) if study is None else study
    outcome = run_sweep(
        study,
        overrides=overrides,
        resume=args.resume,
        address=args.address,
        storage=args.storage,
        experiment=args.experiment,
        num_samples=args.num_samples,
        max_concurrent=args.max_concurrent,
        verbose=0 if args.quiet else 1,
        keep_checkpoints=args.keep_checkpoints,
    )
    counts = ", ".join(f"{n} {status}" for status, n in sorted(outcome.statuses.items()))
    print(f"sweep {outcome.sweep}: {counts or 'no trials'}")
    for metric, (run_id, value, params) in outcome.best.items():
        setting = ", ".join(f"{k}={v}" for k, v in params.items())
        print(f"best {metric} = {value:.4g} (run {run_id}): {setting}")
    uri = tracking.tracking_uri()
    where = shown(uri) if uri.startswith(("http://", "https://")) else f"mlflow ui --backend-store-uri {uri}"
    print(f"MLflow: {where}  (experiment {outcome.experiment!r}, parent run {outcome.parent_run_id})")
    if outcome.interrupted:
        print(f"sweep interrupted: continue it with  mgm-studies sweep {args.space} --resume", file=sys.stderr)
        return 130
    return 0 if outcome.statuses.get("finished", 0) > 0 else 1
