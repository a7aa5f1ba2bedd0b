"""The sweep's only MLflow writer: a Ray Tune callback on the driver (platform.md, "Decisions").

One child run per trial under the parent run (`parent_run.py`), found again by its trial-id tag, so a resumed sweep
never duplicates a child (Ray's `MLflowLoggerCallback` does, and leaves the old run RUNNING). A child holds what a
plain `train` run holds (`tracking.py`: params, `config.json`, per-step scalars, per-NFE metrics, sample plots,
`checkpoints/final.pt`, provenance tags) and its final `mgm.status`: finished, diverged, error, or stopped (early, by
the scheduler). The parent gets the live view (`live.py`); plots and the final model come from the checkpoint folders
the trials report (`trial_files.py`).
"""

from __future__ import annotations

import json
import logging
import queue
import threading
import time
from pathlib import Path
from typing import Any

from mlflow.entities import Metric
from mlflow.tracking import MlflowClient
from ray import tune

from mgm_studies import names, tracking
from mgm_studies.studies.live import HEARTBEAT_S, LIVE_INTERVAL_S, LiveView
from mgm_studies.studies.space_checks import objective_metrics
from mgm_studies.studies.trial_files import TrialSnapshot, log_staged, prune_checkpoints, snapshot, stage

logger = logging.getLogger(__name__)


class MlflowSweepCallback(tune.Callback):
    """Writes each trial of one sweep into a child run of `parent_run_id`. Picklable (Tune stores callbacks with the
    experiment for `Tuner.restore`): the client is rebuilt in `setup`. `max_concurrent` (None: as many as the
    resources allow) is what the live view's ETA assumes at most.
    """

    def __init__(
        self,
        *,
        study,
        tracking_uri: str,
        experiment_id: str,
        parent_run_id: str,
        sweep: str,
        keep_checkpoints: str = "all",
        max_concurrent: int | None = None,
    ) -> None:
        self.study, self.tracking_uri = study, tracking_uri
        self.experiment_id, self.parent_run_id, self.sweep = experiment_id, parent_run_id, sweep
        self.keep_checkpoints = keep_checkpoints  # "all", or "unfinished": see `trial_files.prune_checkpoints`
        self.max_concurrent = max_concurrent
        self.declared = {names.LOSS, *objective_metrics()}  # logged from a result when it holds them (_log_result)
        self._client: MlflowClient | None = None
        self._runs: dict[str, str] = {}
        self._where: dict[str, str] = {}
        self._queue: queue.Queue | None = None
        self._thread: threading.Thread | None = None
        self._live: LiveView | None = None  # the writer thread's
        self._live_sent, self._live_dirty = 0.0, False  # the hooks': when a live update was last queued, and why

    def __getstate__(self) -> dict[str, Any]:
        dropped = {"_client": None, "_runs": {}, "_where": {}, "_queue": None, "_thread": None, "_live": None}
        return {**self.__dict__, **dropped, "_live_sent": 0.0, "_live_dirty": False}

    def __setstate__(self, state: dict[str, Any]) -> None:
        # A sweep started before the live view existed has none of its fields.
        self.__dict__.update({"max_concurrent": None, **state, "_live": None, "_live_sent": 0.0, "_live_dirty": False})

    @property
    def client(self) -> MlflowClient:
        if self._client is None:
            self._client = MlflowClient(tracking_uri=self.tracking_uri)
        return self._client

    @property
    def live(self) -> LiveView:
        if self._live is None:
            self._live = LiveView(
                self.client,
                self.experiment_id,
                self.parent_run_id,
                study=self.study,
                max_concurrent=self.max_concurrent,
            )
        return self._live

    def setup(self, **info: Any) -> None:
        self._runs, self._where, self._live = {}, {}, None

    # ------------------------------------------------------------------ runs
    def run_for(self, trial) -> str:
        """The child run of `trial`: found by its trial-id tag (after a resume), else created."""
        if trial.trial_id in self._runs:
            return self._runs[trial.trial_id]
        query = f"tags.`{names.TAG_TRIAL}` = '{trial.trial_id}' and tags.`{names.TAG_SWEEP}` = '{self.sweep}'"
        found = self.client.search_runs([self.experiment_id], filter_string=query, max_results=1)
        run_id = found[0].info.run_id if found else self._create(trial)
        if found and found[0].data.tags.get(names.TAG_STATUS) == "interrupted":  # continued by `--resume`
            self.client.update_run(run_id, status="RUNNING")
            self.client.set_tag(run_id, names.TAG_STATUS, "running")
        self._runs[trial.trial_id] = run_id
        return run_id

    def _create(self, trial) -> str:
        from mgm_studies.studies.trial import trial_run_config

        config = trial_run_config(self.study, trial.config)
        tags = {
            **tracking.provenance_tags(config, None),  # the device: sent by the trial (ray_train.RayReporter)
            names.TAG_PARENT: self.parent_run_id,
            names.TAG_TRIAL: trial.trial_id,
            names.TAG_SWEEP: self.sweep,
            names.TAG_KIND: names.KIND_TRIAL,
            names.TAG_STATUS: "running",
            names.TAG_TRIAL_PARAMS: json.dumps(dict(trial.config), default=str),
        }
        shown = {key: axis.display_names() for key, axis in self.study.space.items()}
        labels = {k: shown.get(k, {}).get(v, v) if isinstance(v, str) else v for k, v in trial.config.items()}
        run_id = self.client.create_run(self.experiment_id, run_name=run_name(labels), tags=tags).info.run_id
        tracking.log_config(self.client, run_id, config)
        return run_id

    # ------------------------------------------------------------------ Tune hooks (driver process)
    # Tune waits for each hook, and a trial's `report` waits for Tune to take its result: MLflow writes done here
    # would slow every trial down (SQLite: tens of ms per write, several per result). The hooks only snapshot what
    # they need (and stage the checkpoint's small files, which Tune may delete later) and queue the writes for one
    # background thread, in order; `flush` (at the end of the experiment) waits for them.
    def _submit(self, fn, *args: Any) -> None:
        if self._queue is None:
            self._queue = queue.Queue()
            self._thread = threading.Thread(target=self._work, name="mgm-mlflow-writer", daemon=True)
            self._thread.start()
        self._queue.put((fn, args))

    def _work(self) -> None:
        while True:
            fn, args = self._queue.get()
            try:
                fn(*args)
            except Exception:  # one failed write must not stop the others (or the sweep)
                logger.exception("MLflow write for the sweep failed")
            finally:
                self._queue.task_done()

    def flush(self) -> None:
        """Wait until every queued MLflow write is done."""
        if self._queue is not None:
            self._queue.join()

    def on_experiment_end(self, trials: list, **info: Any) -> None:
        self.flush()

    def _write_live(self) -> None:
        self._live_sent, self._live_dirty = time.monotonic(), False
        self._submit(lambda: self.live.write(time.time()))

    def on_step_end(self, iteration: int, trials: list, **info: Any) -> None:
        """The parent run's live view: at most every LIVE_INTERVAL_S when a trial started or reported, at least
        every HEARTBEAT_S (a trial's end writes at once)."""
        since = time.monotonic() - self._live_sent
        if (self._live_dirty and since >= LIVE_INTERVAL_S) or since >= HEARTBEAT_S:
            self._write_live()

    def on_trial_start(self, iteration: int, trials: list, trial, **info: Any) -> None:
        self._submit(lambda t: self.live.started(self.run_for(t), t.at), snapshot(trial))
        self._live_dirty = True

    def on_trial_result(self, iteration: int, trials: list, trial, result: dict, **info: Any) -> None:
        self._live_dirty = True
        staged = None
        if result.get("checkpoint_path"):  # the `train` executor: Ray Train's checkpoint, forwarded by path
            staged = stage(tune.Checkpoint(result["checkpoint_path"], trial.storage.storage_filesystem))
        self._submit(self._log_result, snapshot(trial), dict(result), staged)

    def _log_result(self, trial: TrialSnapshot, result: dict, staged: Path | None) -> None:
        run_id = self.run_for(trial)
        now = int(time.time() * 1000)
        metrics: list[Metric] = []
        for step, scalars in result.get(names.SCALARS) or []:
            metrics.extend(Metric(k, float(v), now, int(step)) for k, v in scalars.items())
        step = int(result.get(names.STEP, 0))
        # The evaluation's metrics (e.g. MGM's collapse check: mgm/divergence_refit), and the loss and what the
        # objectives declare (`reported_metrics`) when a result holds them.
        reported = {*(result.get(names.EVALUATED) or ()), *self.declared}
        for key, value in result.items():
            if (key in reported or names.parse_eval_metric(key)) and isinstance(value, int | float):
                metrics.append(Metric(key, float(value), now, step))
        for i in range(0, len(metrics), 1000):
            self.client.log_batch(run_id, metrics=metrics[i : i + 1000])
        where = f"{result.get('hostname')}:{result.get('pid')}"  # the trial's process (it changes after a restart)
        if self._where.get(run_id) != where:
            self._where[run_id] = where
            self.client.set_tag(run_id, "mgm.trial_process", where)
        self.client.set_tag(run_id, names.TAG_LAST_STEP, str(step))
        for key, value in (result.get(names.TAGS) or {}).items():
            self.client.set_tag(run_id, key, str(value))
        if staged is not None:
            log_staged(self.client, run_id, staged)

    def on_checkpoint(self, iteration: int, trials: list, trial, checkpoint, **info: Any) -> None:
        staged = stage(checkpoint)
        if staged is not None:
            self._submit(lambda t, folder: log_staged(self.client, self.run_for(t), folder), snapshot(trial), staged)

    def on_trial_complete(self, iteration: int, trials: list, trial, **info: Any) -> None:
        self._submit(self._finish, snapshot(trial), dict(trial.last_result or {}))
        self._write_live()

    def _finish(self, trial: TrialSnapshot, result: dict) -> None:
        run_id = self.run_for(trial)
        status, step = result.get(names.TAG_STATUS), str(result.get(names.STEP))
        if status == "diverged":
            tracking.finish_run(self.client, run_id, "diverged", tags={names.TAG_DIVERGED_STEP: step})
        elif status == "finished" and result.get(names.FINAL):
            tracking.finish_run(self.client, run_id, "finished")
        else:  # ended before its last step without an error: a scheduler (ASHA) stopped it
            status = "stopped"
            tracking.finish_run(self.client, run_id, "stopped", tags={"mgm.stopped_step": step})
        values = {m: float(result[m]) for m in self.study.metric if isinstance(result.get(m), int | float)}
        self.live.ended(run_id, status, trial.at, values)
        if status == "finished" and self.keep_checkpoints == "unfinished":
            prune_checkpoints(self.client, trial, run_id)

    def on_trial_error(self, iteration: int, trials: list, trial, **info: Any) -> None:
        try:
            error = str(trial.get_error())
        except Exception:  # the message is a courtesy; the status is what matters
            error = "see the trial's error file in the Ray Tune folder"
        self._submit(self._fail, snapshot(trial), error)
        self._write_live()

    def _fail(self, trial: TrialSnapshot, error: str) -> None:
        run_id = self.run_for(trial)
        tracking.finish_run(self.client, run_id, "error", tags={names.TAG_ERROR: error[-5000:]})
        self.live.ended(run_id, "error", trial.at, {})


def run_name(labels: dict[str, Any]) -> str:
    """A trial's MLflow run name from its configuration, e.g. `t_minus_tau tau=0.1 seed=1`: a named choice as itself,
    a number as `key=value` (the key's last dotted part), the seed last."""
    words = []
    for key, value in labels.items():
        if key == names.SEED:
            continue
        if isinstance(value, str):
            words.append(value)
        else:
            shown = f"{value:.4g}" if isinstance(value, float) else str(value)
            words.append(f"{key.rsplit('.', 1)[-1]}={shown}")
    if names.SEED in labels:
        words.append(f"seed={labels[names.SEED]}")
    return " ".join(words)[:250] or "trial"
