"""A sweep's search: the Tune experiment of a new sweep (what it samples or enumerates, how many trials that makes, the
scheduler) and the trainable each trial runs.

- Optuna (TPE, NSGA-II, random) through `OptunaSearch`, seeds repeated with Tune's `Repeater` (`SeedRepeater`); or a
  grid (`tune.grid_search` over every axis and the seeds).
- Scheduler FIFO, or ASHA on the first metric, deciding at evaluations (`training_iteration` counts a trial's
  evaluations).
- Each trial trains one run config through an executor (`trial.py`, `training/ray_train.py`): `inline` (the Trainer in
  the trial process) or `train` (a Ray Train `TorchTrainer`); `auto` takes `train` for more than one worker.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from ray.tune.search import Repeater

from mgm_studies.config import RunConfig
from mgm_studies.names import SEED
from mgm_studies.studies.space import StudySpec
from mgm_studies.studies.trial import executor_of, run_trial


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
        if axis.discrete:
            space[key] = CategoricalDistribution(axis.labels())
        elif axis.kind == "int":
            space[key] = IntDistribution(int(axis.values[0]), int(axis.values[1]))
        else:
            space[key] = FloatDistribution(float(axis.values[0]), float(axis.values[1]), log=axis.kind == "loguniform")
    return space


def tune_search(study: StudySpec, num_samples: int) -> tuple[Any, dict[str, Any], int]:
    """(search algorithm or None, Tune param_space, Tune num_samples)."""
    from ray import tune

    seeds, algorithm = study.seeds, study.search.algorithm
    if algorithm == "grid":
        space: dict[str, Any] = {key: tune.grid_search(axis.labels()) for key, axis in study.space.items()}
        if SEED not in study.space:
            space[SEED] = tune.grid_search(list(seeds))
        return None, space, num_samples
    import optuna
    from ray.tune.search.optuna import OptunaSearch

    kinds = optuna.samplers
    samplers = {"optuna": kinds.TPESampler, "optuna-nsga2": kinds.NSGAIISampler, "random": kinds.RandomSampler}
    multi = study.multi_objective
    searcher = OptunaSearch(
        space=_optuna_space(study),
        metric=study.metric if multi else study.metric[0],
        mode=study.mode if multi else study.mode[0],
        sampler=samplers[algorithm](seed=study.search.seed),
    )
    if len(seeds) > 1:
        searcher = SeedRepeater(searcher, repeat=len(seeds), set_index=True)
    return searcher, {}, num_samples * len(seeds)


def planned_trials(param_space: dict[str, Any], samples: int) -> int:
    """How many trials Tune runs for `tune_search`'s output: `samples` times the combinations of its grids."""
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


def trainable(study: StudySpec, base: RunConfig, tracking_uri: str):
    """Tune's trainable for the trials of `study` (`trial.run_trial`) and what each trial reserves: its worker's
    resources (`inline`), or next to nothing (`train`: the trial only waits on its TorchTrainer, whose workers hold
    the resources)."""
    from ray import tune

    function = tune.with_parameters(run_trial, study=study, tracking_uri=tracking_uri)
    if executor_of(base) == "train":
        return tune.with_resources(function, {"cpu": 0.01})
    return tune.with_resources(function, {"cpu": base.resources.cpus_per_worker, "gpu": base.resources.gpus_per_worker})


def new_tuner(
    study: StudySpec,
    base: RunConfig,
    trainable,
    *,
    sweep: str,
    storage_path: str,
    callback,
    num_samples: int,
    max_concurrent: int | None,
    verbose: int,
) -> tuple[Any, int]:
    """The Tune experiment of a new sweep, named `sweep` under `storage_path`: (its Tuner, how many trials it
    plans). `callback` writes the trials to MLflow (`mlflow_sweep.py`)."""
    from ray import tune
    from ray.tune.logger import CSVLoggerCallback, JsonLoggerCallback

    searcher, param_space, samples = tune_search(study, num_samples)
    tuner = tune.Tuner(
        trainable,
        param_space=param_space,
        tune_config=tune.TuneConfig(
            search_alg=searcher,
            scheduler=_scheduler(study, base),
            num_samples=samples,
            max_concurrent_trials=max_concurrent,
        ),
        run_config=tune.RunConfig(
            name=sweep,
            storage_path=storage_path,
            failure_config=tune.FailureConfig(max_failures=2),
            checkpoint_config=tune.CheckpointConfig(num_to_keep=2),
            # Tune's JSON and CSV result files, not its TensorBoard logger (which warns on every result about the
            # per-step scalars it cannot plot).
            callbacks=[callback, JsonLoggerCallback(), CSVLoggerCallback()],
            verbose=verbose,
        ),
    )
    return tuner, planned_trials(param_space, samples)
