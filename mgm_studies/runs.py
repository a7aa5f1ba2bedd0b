"""A run's start and resume, shared by `mgm-studies train`, config teachers and the Ray executors: its parts built
(`build_run`: a distillation teacher resolved, and trained first if missing), and for a tracked run its MLflow run
opened or reopened (`open_run`), the Trainer writing into it, and the run closed with its true status
(`train_tracked`). MLflow is imported only by the functions that track: a Ray trial reports through Ray.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sys
import tempfile
import threading
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

from mgm_studies import names
from mgm_studies.builders import build_dataset, build_parts
from mgm_studies.config import RunConfig, parse_run_config
from mgm_studies.configbase import ConfigError
from mgm_studies.data import VectorDataset
from mgm_studies.preflight import check_fits
from mgm_studies.teachers import Teacher, load_teacher, requirements
from mgm_studies.training.checkpoint import latest_checkpoint
from mgm_studies.training.parts import RunParts
from mgm_studies.training.trainer import Trainer, TrainResult

if TYPE_CHECKING:
    from mlflow.entities import Run
    from mlflow.tracking import MlflowClient


def build_run(config: RunConfig, *, device: str = "cpu") -> RunParts:
    """A Trainer's parts, validated before any tracking: the data, sizes that cannot fit on `device` (refused before a
    teacher is trained or loaded), and a distillation teacher (a config with no finished run is trained first)."""
    dataset = build_dataset(config)
    check_fits(config, dataset, device)
    return _parts(config, dataset, _teacher(config, dataset, device, load=True))


def trainer_for(config: RunConfig, **options) -> Trainer:
    """A Trainer of `config` (`options`: the Trainer's) on `build_run`'s parts: for scripts, benchmarks and tests."""
    return Trainer(config, build_run(config, device=str(options.get("device", "cpu"))), **options)


def check_run(config: RunConfig) -> VectorDataset:
    """What `validate` checks: `build_run`'s checks with nothing trained; a config teacher with no finished run is
    only checked (valid, compatible), and then the objective is not built. Returns the data."""
    dataset = build_dataset(config)
    check_fits(config, dataset)
    teacher = _teacher(config, dataset, "cpu", load=False)
    if teacher is not None or getattr(config.objective, "teacher", None) is None:
        _parts(config, dataset, teacher)  # the objective's own checks
    return dataset


def _parts(config: RunConfig, dataset: VectorDataset, teacher: Teacher | None) -> RunParts:
    if teacher is None:
        return build_parts(config, dataset)
    return build_parts(config, dataset, teacher.velocity, teacher.source)


def _teacher(config: RunConfig, dataset: VectorDataset, device: str, *, load: bool) -> Teacher | None:
    if getattr(config.objective, "teacher", None) is None:  # pfmm needs one only with reference: teacher
        return None
    interpolant, model = requirements(config)  # MGM copies weights: the same network, no gamma
    train, teacher = (partial(train_teacher, device=device) if load else None), config.objective.teacher
    return load_teacher(
        teacher, interpolant=interpolant, model=model, dim=dataset.dim, device=device, train=train, load=load
    )


def train_teacher(
    client: MlflowClient, config: RunConfig, *, device: str, experiment: str = "mgm-studies-teachers"
) -> str:
    """Train a teacher config as its own tracked run; returns its run id, or raises if it did not finish."""
    parts = build_run(config)
    run_id, checkpoint_dir = open_run(client, config, experiment=experiment, device=device)
    client.set_tag(run_id, "mgm.teacher", "true")
    result = train_tracked(client, config, run_id, checkpoint_dir, device=device, progress=False, parts=parts)
    if result.status != "finished":
        raise RuntimeError(f"teacher run {run_id} {result.status} at step {result.step}")
    return run_id


def resumable(client: MlflowClient, run: Run) -> tuple[RunConfig, tuple[str, Path]]:
    """The config, run id and checkpoint folder of the interrupted `run`. A finished run is not resumed, and a run
    whose checkpoints went missing is not silently restarted (ConfigErrors on `--resume`)."""
    from mgm_studies import tracking

    run_id = run.info.run_id
    with tempfile.TemporaryDirectory() as tmp:
        text = tracking.download(client, run_id, tracking.CONFIG_ARTIFACT, Path(tmp)).read_text()
    config = parse_run_config(json.loads(text))
    checkpoint_dir = Path(run.data.tags[names.TAG_CHECKPOINT_DIR])
    if run.data.tags.get(names.TAG_STATUS) == "finished":
        raise ConfigError.single("--resume", f"run {run_id} already finished")
    written = run.data.tags.get(names.TAG_LAST_CHECKPOINT_STEP)
    if written is not None and latest_checkpoint(checkpoint_dir) is None:
        raise ConfigError.single(
            "--resume",
            f"run {run_id} wrote a checkpoint at step {written} to {checkpoint_dir}, which holds none now "
            "(resume on the machine that ran it, or copy the folder there)",
        )
    return config, (run_id, checkpoint_dir)


def open_run(
    client: MlflowClient,
    config: RunConfig,
    *,
    experiment: str,
    device: str,
    resume: tuple[str, Path] | None = None,
    checkpoint_root: str | None = None,
) -> tuple[str, Path]:
    """The MLflow run `config` trains into, marked running, and its checkpoint folder: with `resume` (`resumable`) the
    interrupted run again, else a new run checkpointing under `checkpoint_root` (default $MGM_STUDIES_CHECKPOINTS)."""
    from mgm_studies import tracking

    if resume is not None:
        client.update_run(resume[0], status="RUNNING")
        client.set_tag(resume[0], names.TAG_STATUS, "running")
        return resume
    root = Path(checkpoint_root or os.environ.get("MGM_STUDIES_CHECKPOINTS", "checkpoints"))
    return tracking.start_run(client, config, experiment=experiment, device=device, checkpoint_root=root)


def train_tracked(
    client: MlflowClient,
    config: RunConfig,
    run_id: str,
    checkpoint_dir: Path,
    *,
    device: str,
    progress: bool,
    parts: RunParts,
) -> TrainResult:
    """Train (or resume) into `run_id` and close it: FINISHED with `checkpoints/final.pt`, FAILED as `diverged` or
    `error`, KILLED as `interrupted` (the KeyboardInterrupt is re-raised)."""
    from mgm_studies import tracking

    if parts.objective.teacher_source is not None:
        client.set_tag(run_id, "mgm.teacher_source", parts.objective.teacher_source)
    reporter = tracking.MlflowReporter(client, run_id, box=parts.dataset.histogram)
    try:
        trainer = Trainer(
            config, parts, checkpoint_dir=checkpoint_dir, reporter=reporter, device=device, progress=progress
        )
        if trainer.resumed_from is not None:
            reporter.skip_logged()  # steps after the checkpoint that a killed attempt had logged are not logged again
            print(f"resuming from {trainer.resumed_from} (step {trainer.step})", file=sys.stderr)
        with stop_signals_end_at_a_step() as stop_requested:
            result = trainer.run(should_stop=stop_requested)
        reporter.flush()
    except KeyboardInterrupt:
        reporter.flush()
        tracking.finish_run(client, run_id, "interrupted")
        raise
    except BaseException as exc:
        reporter.flush()
        tracking.finish_run(client, run_id, "error", tags={names.TAG_ERROR: repr(exc)[:5000]})
        raise
    if result.status == "diverged":
        tracking.finish_run(client, run_id, "diverged", tags={names.TAG_DIVERGED_STEP: str(result.step)})
    else:
        tracking.log_final_model(client, run_id, trainer.export())
        tracking.finish_run(client, run_id, "finished")
    return result


STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)  # Ctrl-C; a scheduler's preemption or eviction (SLURM, Kubernetes)


@contextlib.contextmanager
def stop_signals_end_at_a_step() -> Iterator[Callable[[], bool]]:
    """The first SIGINT (Ctrl-C) or SIGTERM asks the Trainer to stop after its current step (pending losses reported,
    a checkpoint written at that step), so no KeyboardInterrupt lands in the middle of an MLflow or checkpoint write
    and a preempted run loses nothing (schedulers send SIGTERM, then SIGKILL after a grace period); a second signal
    interrupts at once. Only the main thread can own signal handlers: elsewhere both keep their default behaviour."""
    requested = threading.Event()
    if threading.current_thread() is not threading.main_thread():
        yield requested.is_set
        return

    def handler(signum: int, frame: object) -> None:
        if requested.is_set():
            raise KeyboardInterrupt
        requested.set()
        name = signal.Signals(signum).name
        print(f"{name}: stopping after this step (send it again to interrupt at once)", file=sys.stderr)

    previous = {signum: signal.signal(signum, handler) for signum in STOP_SIGNALS}
    try:
        yield requested.is_set
    finally:
        for signum, handler_before in previous.items():
            signal.signal(signum, handler_before)
