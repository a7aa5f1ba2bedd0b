"""What runs in a Tune trial's process: its run config, and the executor that trains it.

Kept apart from `sweep.py` on purpose: Ray unpickles the trainable in every trial process, which imports its module.
`sweep.py` imports MLflow, Optuna and Tune's search code (about 4 s of imports on a 2-core machine); this module
imports only the configs and the executors (torch, pydantic; about 1.8 s).
"""

from __future__ import annotations

import os
from typing import Any

from mgm_studies.config import RunConfig
from mgm_studies.names import SEED
from mgm_studies.studies.space import StudySpec
from mgm_studies.training import ray_train

TRIAL_INDEX = "__trial_index__"  # set by Tune's Repeater: which of the study's seeds a repeated trial runs


def trial_run_config(study: StudySpec, params: dict[str, Any]) -> RunConfig:
    """The run config of the trial whose Tune config is `params` (searcher labels -> values, the seed)."""
    values = {}
    for key, axis in study.space.items():
        label = params[key]
        values[key] = axis.value_for(label) if axis.discrete else label
    if SEED in params and SEED not in study.space:
        seed = int(params[SEED])
    elif TRIAL_INDEX in params:
        seed = study.seeds[int(params[TRIAL_INDEX]) % len(study.seeds)]
    else:
        seed = study.seeds[0]
    return study.trial_config(values, seed)


def executor_of(config: RunConfig) -> str:
    """`resources.executor`, with `auto`: `train` (Ray Train workers) for more than one worker, else `inline`."""
    executor = config.resources.executor
    if executor == "auto":
        return "train" if config.resources.workers > 1 else "inline"
    return executor


def run_trial(params: dict[str, Any], *, study: StudySpec, tracking_uri: str) -> None:
    """The Tune function trainable: one run config, trained by its executor."""
    os.environ["MLFLOW_TRACKING_URI"] = tracking_uri  # teachers are looked up (read only) by config hash
    config = trial_run_config(study, params)
    if executor_of(config) == "train":
        ray_train.run_torch_trainer(config, metrics=study.metric, modes=study.mode, tracking_uri=tracking_uri)
    else:
        ray_train.run_inline(config, metrics=study.metric, modes=study.mode)
