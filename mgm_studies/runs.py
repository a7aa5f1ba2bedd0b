"""A tracked run: the Trainer writing into one MLflow run, which ends with the run's true status.

`mgm-studies train` and teachers trained from a config both go through `train_tracked`.
"""

from __future__ import annotations

import contextlib
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

from mlflow.tracking import MlflowClient

from mgm_studies import tracking
from mgm_studies.config import RunConfig
from mgm_studies.data import VectorDataset
from mgm_studies.interpolants import Interpolant
from mgm_studies.objectives import Objective
from mgm_studies.training.trainer import Trainer, TrainResult


def train_tracked(
    client: MlflowClient,
    config: RunConfig,
    run_id: str,
    checkpoint_dir: Path,
    *,
    device: str,
    progress: bool,
    parts: tuple[VectorDataset, Interpolant, Objective],
) -> TrainResult:
    """Train (or resume) into `run_id` and close it: FINISHED with `checkpoints/final.pt`, FAILED as `diverged` or
    `error`, KILLED as `interrupted` (the KeyboardInterrupt is re-raised)."""
    reporter = tracking.MlflowReporter(client, run_id, box=parts[0].histogram)
    try:
        trainer = Trainer(
            config, checkpoint_dir=checkpoint_dir, reporter=reporter, device=device, progress=progress, parts=parts
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
        tracking.finish_run(client, run_id, "error", tags={"mgm.error": repr(exc)[:5000]})
        raise
    if result.status == "diverged":
        tracking.finish_run(client, run_id, "diverged", tags={"mgm.diverged_step": str(result.step)})
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
