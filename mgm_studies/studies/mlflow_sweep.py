"""The sweep's only MLflow writer: a Ray Tune callback on the driver (platform.md, "Decisions").

One parent run per sweep (created by `sweep.py` before Tune starts); one child run per trial, found again by its
trial-id tag, so a resumed sweep never duplicates a child (Ray's `MLflowLoggerCallback` does, and leaves the old run
RUNNING). A child holds what a plain `train` run holds: the flattened config as params, `config.json`, per-step
training scalars and per-NFE metrics at their training steps, sample plots per evaluation, `checkpoints/final.pt`,
provenance tags, and its final `mgm.status`: finished, diverged, error, or stopped (early, by the scheduler).
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import Any

from mlflow.entities import Metric, Param
from mlflow.tracking import MlflowClient
from ray import tune

from mgm_studies import tracking
from mgm_studies.config import flatten
from mgm_studies.training import ray_train

TAG_TRIAL = "mgm.trial_id"
TAG_SWEEP = "mgm.sweep"  # the sweep's name (study name + space hash), on the parent and every child
TAG_KIND = "mgm.kind"  # "sweep" on the parent, "trial" on children
_EVAL_METRIC = re.compile(r"^[a-z0-9_]+/nfe-\d+$")
_REPORTED = ("loss", "mgm/divergence")


class MlflowSweepCallback(tune.Callback):
    """Writes each trial of one sweep into a child run of `parent_run_id` (see the module docstring).

    Picklable (Tune stores callbacks with the experiment for `Tuner.restore`): the client is rebuilt in `setup`.
    `trial_config(params)` maps a trial's Tune config to its run config.
    """

    def __init__(self, *, study, tracking_uri: str, experiment_id: str, parent_run_id: str, sweep: str) -> None:
        self.study, self.tracking_uri = study, tracking_uri
        self.experiment_id, self.parent_run_id, self.sweep = experiment_id, parent_run_id, sweep
        self._client: MlflowClient | None = None
        self._runs: dict[str, str] = {}
        self._where: dict[str, str] = {}

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_client": None, "_runs": {}, "_where": {}}

    @property
    def client(self) -> MlflowClient:
        if self._client is None:
            self._client = MlflowClient(tracking_uri=self.tracking_uri)
        return self._client

    def setup(self, **info: Any) -> None:
        self._runs, self._where = {}, {}

    # ------------------------------------------------------------------ runs
    def run_for(self, trial) -> str:
        """The child run of `trial`: found by its trial-id tag (after a resume), else created."""
        if trial.trial_id in self._runs:
            return self._runs[trial.trial_id]
        found = self.client.search_runs(
            [self.experiment_id],
            filter_string=f"tags.`{TAG_TRIAL}` = '{trial.trial_id}' and tags.`{TAG_SWEEP}` = '{self.sweep}'",
            max_results=1,
        )
        run_id = found[0].info.run_id if found else self._create(trial)
        self._runs[trial.trial_id] = run_id
        return run_id

    def _create(self, trial) -> str:
        from mgm_studies.studies.sweep import trial_run_config

        config = trial_run_config(self.study, trial.config)
        tags = {
            **tracking.provenance_tags(config, config.resources.device),
            "mlflow.parentRunId": self.parent_run_id,
            TAG_TRIAL: trial.trial_id,
            TAG_SWEEP: self.sweep,
            TAG_KIND: "trial",
            tracking.TAG_STATUS: "running",
            "mgm.trial_params": json.dumps({k: v for k, v in trial.config.items()}, default=str),
        }
        run = self.client.create_run(self.experiment_id, run_name=f"{self.study.name}-{trial.trial_id}", tags=tags)
        run_id = run.info.run_id
        params = [Param(k, v) for k, v in flatten(config).items()]
        for i in range(0, len(params), 100):
            self.client.log_batch(run_id, params=params[i : i + 100])
        self.client.log_text(run_id, config.model_dump_json(indent=2), tracking.CONFIG_ARTIFACT)
        return run_id

    # ------------------------------------------------------------------ Tune hooks (driver process)
    def on_trial_start(self, iteration: int, trials: list, trial, **info: Any) -> None:
        self.run_for(trial)

    def on_trial_result(self, iteration: int, trials: list, trial, result: dict, **info: Any) -> None:
        run_id = self.run_for(trial)
        now = int(time.time() * 1000)
        metrics: list[Metric] = []
        for step, scalars in result.get(ray_train.SCALARS) or []:
            metrics.extend(Metric(k, float(v), now, int(step)) for k, v in scalars.items())
        step = int(result.get(ray_train.STEP, 0))
        for key, value in result.items():
            if (_EVAL_METRIC.match(key) or key in _REPORTED) and isinstance(value, int | float):
                metrics.append(Metric(key, float(value), now, step))
        for i in range(0, len(metrics), 1000):
            self.client.log_batch(run_id, metrics=metrics[i : i + 1000])
        where = f"{result.get('hostname')}:{result.get('pid')}"  # the trial's process (it changes after a restart)
        if self._where.get(run_id) != where:
            self._where[run_id] = where
            self.client.set_tag(run_id, "mgm.trial_process", where)
        self.client.set_tag(run_id, "mgm.last_step", str(step))
        if result.get("checkpoint_path"):  # the `train` executor: Ray Train's checkpoint, forwarded by path
            self._log_checkpoint(run_id, tune.Checkpoint(result["checkpoint_path"], trial.storage.storage_filesystem))

    def on_checkpoint(self, iteration: int, trials: list, trial, checkpoint, **info: Any) -> None:
        self._log_checkpoint(self.run_for(trial), checkpoint)

    def _log_checkpoint(self, run_id: str, checkpoint) -> None:
        with checkpoint.as_directory() as folder:
            folder = Path(folder)
            meta_file = folder / ray_train.META_FILE
            if not meta_file.is_file():
                return
            meta = json.loads(meta_file.read_text())
            plots = folder / ray_train.PLOTS
            if plots.is_dir():
                for png in sorted(plots.glob("*.png")):
                    self.client.log_artifact(run_id, str(png), f"plots/step-{int(meta['step']):09d}")
            if (folder / ray_train.FINAL_FILE).is_file():
                self.client.log_artifact(run_id, str(folder / ray_train.FINAL_FILE), "checkpoints")

    def on_trial_complete(self, iteration: int, trials: list, trial, **info: Any) -> None:
        result = trial.last_result or {}
        run_id = self.run_for(trial)
        status = result.get(ray_train.STATUS)
        if status == "diverged":
            tracking.finish_run(self.client, run_id, "diverged", tags={"mgm.diverged_step": str(result.get("step"))})
        elif status == "finished" and result.get(ray_train.FINAL):
            tracking.finish_run(self.client, run_id, "finished")
        else:  # ended before its last step without an error: a scheduler (ASHA) stopped it
            tracking.finish_run(self.client, run_id, "stopped", tags={"mgm.stopped_step": str(result.get("step"))})

    def on_trial_error(self, iteration: int, trials: list, trial, **info: Any) -> None:
        error = ""
        try:
            error = str(trial.get_error())
        except Exception:  # the message is a courtesy; the status is what matters
            error = "see the trial's error file in the Ray Tune folder"
        tracking.finish_run(self.client, self.run_for(trial), "error", tags={"mgm.error": error[-5000:]})
