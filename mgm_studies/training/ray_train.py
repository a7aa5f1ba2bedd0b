"""The shared Trainer under Ray: the `inline` executor (in the Tune trial's process) and the `train` executor (a Ray
Train `TorchTrainer` launched by the trial; N workers, CPU or GPU, data-parallel).

What a trial sends to Ray Tune, identical for both executors (platform.md: the Trainer never calls Ray itself; it is
handed a reporter; the keys and file names are `names.py`'s):

- one result per evaluation: the metrics (`kl/nfe-K`, ...), `step`, `mgm/total_steps`, `mgm.status`
  (`running` | `finished` | `diverged`), `mgm/final`, and `mgm/scalars`: the per-step training scalars since the last
  result as `[step, {name: value}]` pairs (the sweep's MLflow callback logs them at their own steps);
- with each result a checkpoint folder: `trainer.pt` (the newest Trainer checkpoint: what a restarted trial resumes
  from), `samples.pt` (the evaluation's samples and reference draw: the sweep's MLflow callback renders the sample
  plots from it on the driver, so trials never import matplotlib nor spend their time drawing) and, in the last one,
  `final.pt` (the exported model);
- a diverged run sends a last result whose metrics hold `DIVERGED_VALUE` (finite: a NaN would leave the Optuna trial
  RUNNING for ever, platform.md) with status `diverged`.
Over 300 lines: both executors, their reporters and the one result protocol above, which must change together.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch

from mgm_studies import names
from mgm_studies.config import RunConfig, parse_run_config
from mgm_studies.configbase import ConfigError
from mgm_studies.data import HistogramSpec
from mgm_studies.training.checkpoint import checkpoint_path
from mgm_studies.training.device import ray_assigned_device, ray_device_tags
from mgm_studies.training.reporter import Evaluation, NullReporter
from mgm_studies.training.trainer import Trainer

PLOTTED_POINTS = 5000  # samples kept per number of steps for the plots (a scatter shows no more)

Send = Callable[[dict[str, Any], Path | None], None]  # (result, checkpoint folder or None) -> reported to Ray


class RayReporter(NullReporter):
    """Turns what the Trainer reports into Ray results (see the module docstring). `send` is `tune.report` or
    `train.report` wrapped; on ranks other than 0 of a `train` executor only `report_peer_evaluation` is called."""

    def __init__(
        self,
        send: Send,
        *,
        total_steps: int,
        metrics: list[str],
        modes: list[str],
        box=None,
        tags: Mapping[str, str] | None = None,
        reported_through: int = 0,
    ) -> None:
        self.send, self.total_steps, self.box = send, total_steps, box
        # A restarted trial resumes from the Trainer checkpoint reported with its last result, which may be older
        # than that result (checkpoints and evaluations have their own intervals): the replayed steps and
        # evaluations up to `reported_through` were already sent, and are not sent again.
        self.reported_through = reported_through
        self.tags = dict(tags or {})  # sent with every result (the device used), set on the trial's MLflow run
        self.metrics, self.modes = metrics, modes
        self.export: Callable[[], dict] | None = None  # set once the Trainer exists: the final model
        self._scalars: list[list] = []
        self._checkpoint: tuple[int, Path] | None = None

    def report_scalars(self, step: int, scalars: Mapping[str, float]) -> None:
        if step <= self.reported_through:
            return
        self._scalars.append([step, {k: float(v) for k, v in scalars.items()}])

    def report_checkpoint(self, step: int, path: Path) -> None:
        self._checkpoint = (step, path)

    def report_evaluation(self, evaluation: Evaluation) -> None:
        final = evaluation.step >= self.total_steps
        if evaluation.step <= self.reported_through and not final:  # the last result always goes out
            return
        result = {
            **evaluation.metrics,
            names.STEP: evaluation.step,
            names.TOTAL_STEPS: self.total_steps,
            names.TAG_STATUS: "finished" if final else "running",
            names.FINAL: final,
            names.SCALARS: self._take_scalars(),
            names.TAGS: {**self.tags, **evaluation.tags},
            names.EVALUATED: sorted(evaluation.metrics),
        }
        with tempfile.TemporaryDirectory(prefix="mgm-report-") as tmp:
            folder = Path(tmp)
            meta = {"step": evaluation.step, "final": final, "checkpoint_step": None}
            if self._checkpoint is not None and self._checkpoint[1].is_file():
                shutil.copyfile(self._checkpoint[1], folder / names.CHECKPOINT_FILE)
                meta["checkpoint_step"] = self._checkpoint[0]
            self._write_samples(evaluation, folder / names.SAMPLES_FILE)
            if final and self.export is not None:
                from mgm_studies.exported import save_exported

                save_exported(self.export(), folder / names.FINAL_FILE)
            (folder / names.META_FILE).write_text(json.dumps(meta))
            self.send(result, folder)

    def report_diverged(self, step: int) -> None:
        values = {
            m: names.DIVERGED_VALUE if mode == "min" else -names.DIVERGED_VALUE
            for m, mode in zip(self.metrics, self.modes, strict=True)
        }
        result = {**values, names.STEP: step, names.TOTAL_STEPS: self.total_steps, names.FINAL: True}
        result |= {names.TAG_STATUS: "diverged", names.TAGS: self.tags, names.SCALARS: self._take_scalars()}
        self.send(result, None)

    def _take_scalars(self) -> list[list]:
        # Scalars of the steps after the divergence are never reported (the Trainer stops at the first bad step).
        scalars, self._scalars = self._scalars, []
        return [[s, {k: v for k, v in d.items() if math.isfinite(v)}] for s, d in scalars]

    def _write_samples(self, evaluation: Evaluation, path: Path) -> None:
        if evaluation.reference is None or evaluation.reference.dim() not in (2, 4):  # vectors or images
            return
        box = self.box
        torch.save(
            {
                "step": evaluation.step,
                "metrics": dict(evaluation.metrics),
                "samples": {int(k): v[:PLOTTED_POINTS].contiguous() for k, v in evaluation.samples.items()},
                "reference": evaluation.reference[:PLOTTED_POINTS].contiguous(),
                "box": None if box is None else {"low": list(box.low), "high": list(box.high), "bins": box.bins},
            },
            path,
        )


def load_samples(path: Path) -> tuple[Evaluation, HistogramSpec | None]:
    """The evaluation (metrics, samples, reference) and plot box saved in a reported `samples.pt`."""
    payload = torch.load(path, map_location="cpu", weights_only=True)
    evaluation = Evaluation(
        step=int(payload["step"]),
        metrics={k: float(v) for k, v in payload["metrics"].items()},
        samples=dict(payload["samples"]),
        reference=payload["reference"],
    )
    box = payload["box"]
    return evaluation, None if box is None else HistogramSpec(box["low"], box["high"], int(box["bins"]))


class PeerReporter(NullReporter):
    """Ranks other than 0 of a `train` executor: join each collective report with an empty result."""

    def __init__(self, send: Send, *, total_steps: int, reported_through: int = 0) -> None:
        self.send, self.total_steps, self.reported_through = send, total_steps, reported_through

    def report_peer_evaluation(self, step: int) -> None:
        if step <= self.reported_through and step < self.total_steps:  # skipped by rank 0 too (a collective)
            return
        self.send({}, None)

    def report_diverged(self, step: int) -> None:
        self.send({}, None)


def restore_checkpoint(folder: Path, into: Path) -> int:
    """Put the Trainer checkpoint of a reported checkpoint folder into `into` (the Trainer resumes from it); returns
    the step of the result the folder went out with (0 when there is none)."""
    if not (folder / names.META_FILE).is_file():
        return 0
    meta = json.loads((folder / names.META_FILE).read_text())
    if (folder / names.CHECKPOINT_FILE).is_file():
        into.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(folder / names.CHECKPOINT_FILE, checkpoint_path(into, int(meta["checkpoint_step"])))
    return int(meta["step"])


def train_with_reporter(
    config: RunConfig,
    checkpoint_dir: Path,
    send: Send,
    *,
    metrics: list[str],
    modes: list[str],
    device: str,
    rank: int = 0,
    world_size: int = 1,
    reported_through: int = 0,
) -> str:
    """Run (or resume) the Trainer, reporting to Ray through `send`; returns the run's status. `reported_through`:
    the step of the last result Ray already has (a restarted trial's)."""
    from mgm_studies.runs import build_run  # a config teacher with no finished run is trained first

    parts = build_run(config, device=device)
    total = config.train.num_steps
    if rank == 0:
        reporter: RayReporter | PeerReporter = RayReporter(
            send,
            total_steps=total,
            metrics=metrics,
            modes=modes,
            box=parts.dataset.histogram,
            tags=ray_device_tags(device),
            reported_through=reported_through,
        )
    else:
        reporter = PeerReporter(send, total_steps=total, reported_through=reported_through)
    trainer = Trainer(
        config, parts, checkpoint_dir=checkpoint_dir, reporter=reporter, device=device, rank=rank, world_size=world_size
    )
    if isinstance(reporter, RayReporter):
        reporter.export = trainer.export
    result = trainer.run()
    if result.status == "diverged":
        reporter.report_diverged(result.step)
    return result.status


def _train_reporting_to(report, checkpoint_class, latest, config: RunConfig, **options: Any) -> str:
    """The Trainer reporting through Ray's `report(result, checkpoint=...)` (Tune's or Train's, with its own
    `Checkpoint` class), resumed from `latest` (the trial's or Train run's newest checkpoint, or None)."""

    def send(result: dict[str, Any], folder: Path | None) -> None:
        report(result, checkpoint=checkpoint_class.from_directory(str(folder)) if folder is not None else None)

    with tempfile.TemporaryDirectory(prefix="mgm-trial-") as tmp:
        checkpoint_dir = Path(tmp) / "checkpoints"
        reported = 0
        if latest is not None:  # on every rank: all resume at the same step with the same weights
            with latest.as_directory() as folder:
                reported = restore_checkpoint(Path(folder), checkpoint_dir)
        return train_with_reporter(config, checkpoint_dir, send, reported_through=reported, **options)


# ---------------------------------------------------------------------- the `inline` executor
def run_inline(config: RunConfig, *, metrics: list[str], modes: list[str]) -> str:
    """Inside a Tune function trial: the Trainer in this process, results through `ray.tune.report`."""
    import ray.tune

    device = ray_assigned_device(config.resources.device)  # `auto`: CUDA when Ray gave the trial a GPU (device.py)
    checkpoint = ray.tune.get_checkpoint()
    return _train_reporting_to(
        ray.tune.report, ray.tune.Checkpoint, checkpoint, config, metrics=metrics, modes=modes, device=device
    )


# ---------------------------------------------------------------------- the `train` executor
def _train_worker(loop_config: dict[str, Any]) -> None:
    """Every Ray Train worker: the Trainer with this worker's rank; rank 0 evaluates, checkpoints and reports."""
    import ray.train
    import ray.train.torch

    os.environ.setdefault("MLFLOW_TRACKING_URI", loop_config["tracking_uri"])  # teachers found by their config hash
    context = ray.train.get_context()
    config = parse_run_config(loop_config["config"])
    device = ray_assigned_device(config.resources.device)
    if device == "cuda":  # this worker's own GPU among the node's (Ray Train's local rank mapping)
        device = str(ray.train.torch.get_device())
    metrics, modes, rank = loop_config["metrics"], loop_config["modes"], context.get_world_rank()
    options = dict(metrics=metrics, modes=modes, device=device, rank=rank, world_size=context.get_world_size())
    _train_reporting_to(ray.train.report, ray.train.Checkpoint, ray.train.get_checkpoint(), config, **options)


def per_worker_config(config: RunConfig) -> dict[str, Any]:
    """The config each of `resources.workers` workers trains: the global batch split evenly over them."""
    workers = config.resources.workers
    data = config.model_dump(mode="json")
    if config.train.batch_size % workers:
        raise ConfigError.single(
            "train.batch_size", f"{config.train.batch_size} does not split evenly over resources.workers={workers}"
        )
    data["train"]["batch_size"] = config.train.batch_size // workers
    return data


def run_torch_trainer(config: RunConfig, *, metrics: list[str], modes: list[str], tracking_uri: str) -> None:
    """Inside a Tune function trial: launch a `TorchTrainer` with `resources.workers` workers and wait for it.

    Its run lives in the trial's folder under the fixed name `train`, so a restarted trial resumes it from its latest
    checkpoint; Ray Train restarts failed workers from that checkpoint too (`FailureConfig`)."""
    import ray.train
    import ray.tune
    from ray.train.torch import TorchTrainer
    from ray.tune.integration.ray_train import TuneReportCallback

    resources = config.resources
    storage = ray.tune.get_context().get_storage()
    per_worker = {"CPU": resources.cpus_per_worker}
    if resources.gpus_per_worker > 0:
        per_worker["GPU"] = resources.gpus_per_worker
    loop_config = dict(config=per_worker_config(config), metrics=metrics, modes=modes, tracking_uri=tracking_uri)
    trainer = TorchTrainer(
        _train_worker,
        train_loop_config=loop_config,
        scaling_config=ray.train.ScalingConfig(
            num_workers=resources.workers, use_gpu=resources.gpus_per_worker > 0, resources_per_worker=per_worker
        ),
        run_config=ray.train.RunConfig(
            name="train",
            storage_path=storage.trial_fs_path,
            storage_filesystem=storage.storage_filesystem,
            # A finite controller_failure_limit: should the worker group never start (e.g. a placement group leaked
            # by a trial that a scheduler stopped, platform.md), the trial fails after a few start timeouts
            # (RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S, 60 s by default) instead of hanging the sweep.
            failure_config=ray.train.FailureConfig(max_failures=2, controller_failure_limit=3),
            checkpoint_config=ray.train.CheckpointConfig(num_to_keep=2),
            callbacks=[TuneReportCallback()],
        ),
    )
    result = trainer.fit()
    if result.error is not None:
        raise result.error
