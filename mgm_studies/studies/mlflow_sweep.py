"""The sweep's only MLflow writer: a Ray Tune callback on the driver (platform.md, "Decisions").

One parent run per sweep (created by `sweep.py` before Tune starts); one child run per trial, found again by its
trial-id tag, so a resumed sweep never duplicates a child (Ray's `MLflowLoggerCallback` does, and leaves the old run
RUNNING). A child holds what a plain `train` run holds: the flattened config as params, `config.json`, per-step
training scalars and per-NFE metrics at their training steps, sample plots per evaluation, `checkpoints/final.pt`,
provenance tags, and its final `mgm.status`: finished, diverged, error, or stopped (early, by the scheduler).
The parent run gets the sweep's live view as trials start and end (`studies/live.py`).
"""

from __future__ import annotations

import json
import logging
import queue
import re
import shutil
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mlflow.entities import Metric, Param
from mlflow.tracking import MlflowClient
from ray import tune

from mgm_studies import tracking
from mgm_studies.config import flatten
from mgm_studies.studies.live import HEARTBEAT_S, LIVE_INTERVAL_S, LiveView
from mgm_studies.training import ray_train

TAG_TRIAL = "mgm.trial_id"
TAG_SWEEP = "mgm.sweep"  # the sweep's name (study name + space hash), on the parent and every child
TAG_KIND = "mgm.kind"  # "sweep" on the parent, "trial" on children
logger = logging.getLogger(__name__)
_EVAL_METRIC = re.compile(r"^[a-z0-9_]+/nfe-\d+$")
_REPORTED = ("loss", "mgm/divergence")


class MlflowSweepCallback(tune.Callback):
    """Writes each trial of one sweep into a child run of `parent_run_id` (see the module docstring).

    Picklable (Tune stores callbacks with the experiment for `Tuner.restore`): the client is rebuilt in `setup`.
    `trial_config(params)` maps a trial's Tune config to its run config. `max_concurrent` (None: as many as the
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
        self.keep_checkpoints = keep_checkpoints  # "all", or "unfinished": see `_prune_checkpoints`
        self.max_concurrent = max_concurrent
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
        found = self.client.search_runs(
            [self.experiment_id],
            filter_string=f"tags.`{TAG_TRIAL}` = '{trial.trial_id}' and tags.`{TAG_SWEEP}` = '{self.sweep}'",
            max_results=1,
        )
        run_id = found[0].info.run_id if found else self._create(trial)
        if found and found[0].data.tags.get(tracking.TAG_STATUS) == "interrupted":  # continued by `--resume`
            self.client.update_run(run_id, status="RUNNING")
            self.client.set_tag(run_id, tracking.TAG_STATUS, "running")
        self._runs[trial.trial_id] = run_id
        return run_id

    def _create(self, trial) -> str:
        from mgm_studies.studies.trial import trial_run_config

        config = trial_run_config(self.study, trial.config)
        tags = {
            **tracking.provenance_tags(config, None),  # the device: sent by the trial (ray_train.RayReporter)
            "mlflow.parentRunId": self.parent_run_id,
            TAG_TRIAL: trial.trial_id,
            TAG_SWEEP: self.sweep,
            TAG_KIND: "trial",
            tracking.TAG_STATUS: "running",
            "mgm.trial_params": json.dumps({k: v for k, v in trial.config.items()}, default=str),
        }
        names = {key: axis.display_names() for key, axis in self.study.space.items()}
        labels = {k: names.get(k, {}).get(v, v) if isinstance(v, str) else v for k, v in trial.config.items()}
        run = self.client.create_run(self.experiment_id, run_name=run_name(labels), tags=tags)
        run_id = run.info.run_id
        params = [Param(k, v) for k, v in flatten(config).items()]
        for i in range(0, len(params), 100):
            self.client.log_batch(run_id, params=params[i : i + 100])
        self.client.log_text(run_id, config.model_dump_json(indent=2), tracking.CONFIG_ARTIFACT)
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
        self._submit(lambda t: self.live.started(self.run_for(t), t.at), _snapshot(trial))
        self._live_dirty = True

    def on_trial_result(self, iteration: int, trials: list, trial, result: dict, **info: Any) -> None:
        self._live_dirty = True
        staged = None
        if result.get("checkpoint_path"):  # the `train` executor: Ray Train's checkpoint, forwarded by path
            staged = _stage(tune.Checkpoint(result["checkpoint_path"], trial.storage.storage_filesystem))
        self._submit(self._log_result, _snapshot(trial), dict(result), staged)

    def _log_result(self, trial: _Trial, result: dict, staged: Path | None) -> None:
        run_id = self.run_for(trial)
        now = int(time.time() * 1000)
        metrics: list[Metric] = []
        for step, scalars in result.get(ray_train.SCALARS) or []:
            metrics.extend(Metric(k, float(v), now, int(step)) for k, v in scalars.items())
        step = int(result.get(ray_train.STEP, 0))
        evaluated = set(result.get(ray_train.EVALUATED) or ())  # e.g. MGM's collapse check: mgm/divergence_refit
        for key, value in result.items():
            if (key in evaluated or _EVAL_METRIC.match(key) or key in _REPORTED) and isinstance(value, int | float):
                metrics.append(Metric(key, float(value), now, step))
        for i in range(0, len(metrics), 1000):
            self.client.log_batch(run_id, metrics=metrics[i : i + 1000])
        where = f"{result.get('hostname')}:{result.get('pid')}"  # the trial's process (it changes after a restart)
        if self._where.get(run_id) != where:
            self._where[run_id] = where
            self.client.set_tag(run_id, "mgm.trial_process", where)
        self.client.set_tag(run_id, "mgm.last_step", str(step))
        for key, value in (result.get(ray_train.TAGS) or {}).items():
            self.client.set_tag(run_id, key, str(value))
        if staged is not None:
            self._log_staged(run_id, staged)

    def on_checkpoint(self, iteration: int, trials: list, trial, checkpoint, **info: Any) -> None:
        staged = _stage(checkpoint)
        if staged is not None:
            self._submit(lambda t, folder: self._log_staged(self.run_for(t), folder), _snapshot(trial), staged)

    def _log_staged(self, run_id: str, folder: Path) -> None:
        try:
            meta = json.loads((folder / ray_train.META_FILE).read_text())
            if (folder / ray_train.SAMPLES_FILE).is_file():
                for png in _render_plots(folder / ray_train.SAMPLES_FILE, folder / "plots"):
                    self.client.log_artifact(run_id, str(png), f"plots/step-{int(meta['step']):09d}")
            if (folder / ray_train.FINAL_FILE).is_file():
                self.client.log_artifact(run_id, str(folder / ray_train.FINAL_FILE), "checkpoints")
        finally:
            shutil.rmtree(folder, ignore_errors=True)

    def on_trial_complete(self, iteration: int, trials: list, trial, **info: Any) -> None:
        self._submit(self._finish, _snapshot(trial), dict(trial.last_result or {}))
        self._write_live()

    def _finish(self, trial: _Trial, result: dict) -> None:
        run_id = self.run_for(trial)
        status = result.get(ray_train.STATUS)
        if status == "diverged":
            tracking.finish_run(self.client, run_id, "diverged", tags={"mgm.diverged_step": str(result.get("step"))})
        elif status == "finished" and result.get(ray_train.FINAL):
            tracking.finish_run(self.client, run_id, "finished")
        else:  # ended before its last step without an error: a scheduler (ASHA) stopped it
            status = "stopped"
            tracking.finish_run(self.client, run_id, "stopped", tags={"mgm.stopped_step": str(result.get("step"))})
        values = {m: float(result[m]) for m in self.study.metric if isinstance(result.get(m), int | float)}
        self.live.ended(run_id, status, trial.at, values)
        if status == "finished" and self.keep_checkpoints == "unfinished":
            self._prune_checkpoints(trial, run_id)

    def _prune_checkpoints(self, trial: _Trial, run_id: str) -> None:
        """`--keep-checkpoints unfinished`: delete a finished trial's Tune checkpoints (weights, EMAs, optimiser
        state: what a restart needs, and most of a tiny trial's storage) once its final model is in MLflow. Tune
        never restarts a finished trial, `--resume` included; a trial without `checkpoints/final.pt` in its run keeps
        its checkpoints."""
        if trial.folder is None or trial.filesystem is None:
            return
        logged = {Path(a.path).name for a in self.client.list_artifacts(run_id, "checkpoints")}
        if ray_train.FINAL_FILE not in logged:
            logger.warning("trial %s: final model not in MLflow, its checkpoints are kept", trial.trial_id)
            return
        from pyarrow import fs

        found = trial.filesystem.get_file_info(fs.FileSelector(trial.folder, recursive=True, allow_not_found=True))
        # Tune's (checkpoint_000003) and, for `train` trials, Ray Train's under the trial's folder.
        folders = [f.path for f in found if f.type == fs.FileType.Directory and f.base_name.startswith("checkpoint_")]
        for folder in sorted(folders, key=len):
            if any(folder.startswith(done + "/") for done in folders if done != folder):
                continue  # inside a checkpoint folder already deleted
            trial.filesystem.delete_dir(folder)
        self.client.set_tag(run_id, "mgm.checkpoints_pruned", str(len(folders)))

    def on_trial_error(self, iteration: int, trials: list, trial, **info: Any) -> None:
        try:
            error = str(trial.get_error())
        except Exception:  # the message is a courtesy; the status is what matters
            error = "see the trial's error file in the Ray Tune folder"
        self._submit(self._fail, _snapshot(trial), error)
        self._write_live()

    def _fail(self, trial: _Trial, error: str) -> None:
        run_id = self.run_for(trial)
        tracking.finish_run(self.client, run_id, "error", tags={"mgm.error": error[-5000:]})
        self.live.ended(run_id, "error", trial.at, {})


def run_name(labels: dict[str, Any]) -> str:
    """A trial's MLflow run name from its configuration, e.g. `t_minus_tau tau=0.1 seed=1`: a named choice as itself,
    a number as `key=value` (the key's last dotted part), the seed last."""
    words = []
    for key, value in labels.items():
        if key == "train.seed":
            continue
        if isinstance(value, str):
            words.append(value)
        else:
            shown = f"{value:.4g}" if isinstance(value, float) else str(value)
            words.append(f"{key.rsplit('.', 1)[-1]}={shown}")
    if "train.seed" in labels:
        words.append(f"seed={labels['train.seed']}")
    return " ".join(words)[:250] or "trial"


@dataclass(frozen=True)
class _Trial:
    """What the writer thread needs of a Tune trial (the Trial object itself keeps changing)."""

    trial_id: str
    config: dict
    folder: str | None = None  # the trial's folder in Tune's storage
    filesystem: Any = None  # the pyarrow filesystem that folder lives on (local, S3, GCS, ...)
    at: float = 0.0  # when the hook saw the event (seconds since the epoch): the live view's trial durations


def _snapshot(trial) -> _Trial:
    storage = getattr(trial, "storage", None)
    if storage is None:
        return _Trial(trial.trial_id, dict(trial.config), at=time.time())
    return _Trial(trial.trial_id, dict(trial.config), storage.trial_fs_path, storage.storage_filesystem, time.time())


def _stage(checkpoint) -> Path | None:
    """Copy a reported checkpoint's meta, samples and final model to a private folder (Tune deletes old
    checkpoints; the writer thread gets to them later)."""
    with checkpoint.as_directory() as folder:
        folder = Path(folder)
        if not (folder / ray_train.META_FILE).is_file():
            return None
        staged = Path(tempfile.mkdtemp(prefix="mgm-mlflow-"))
        for name in (ray_train.META_FILE, ray_train.SAMPLES_FILE, ray_train.FINAL_FILE):
            if (folder / name).is_file():
                shutil.copy2(folder / name, staged / name)
        return staged


def _render_plots(samples_file: Path, into: Path) -> list[Path]:
    """The sample plots of one reported evaluation (`nfe-K.png` per number of steps), drawn here on the driver."""
    from mgm_studies.plots import evaluation_figures

    evaluation, box = ray_train.load_samples(samples_file)
    into.mkdir(exist_ok=True)
    pngs = []
    for k, fig in evaluation_figures(evaluation, box=box):
        pngs.append(into / f"nfe-{k}.png")
        fig.savefig(pngs[-1], dpi=80)
    return pngs
