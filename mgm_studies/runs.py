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
            print(f"resuming from {trainer.resumed_from} (step {trainer.step})", file=sys.stderr)
        with _ctrl_c_stops_at_a_step() as stop_requested:
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


@contextlib.contextmanager
def _ctrl_c_stops_at_a_step() -> Iterator[Callable[[], bool]]:
    """The first Ctrl-C asks the Trainer to stop after its current step (pending losses reported, a checkpoint
    written), so no KeyboardInterrupt lands in the middle of an MLflow or checkpoint write; a second one interrupts
    at once. Only the main thread can own signal handlers: elsewhere Ctrl-C keeps its default behaviour."""
    requested = threading.Event()
    if threading.current_thread() is not threading.main_thread():
        yield requested.is_set
        return

    def handler(signum: int, frame: object) -> None:
        if requested.is_set():
            raise KeyboardInterrupt
        requested.set()
        print("stopping after this step (Ctrl-C again to interrupt at once)", file=sys.stderr)

    previous = signal.signal(signal.SIGINT, handler)
    try:
        yield requested.is_set
    finally:
        signal.signal(signal.SIGINT, previous)
