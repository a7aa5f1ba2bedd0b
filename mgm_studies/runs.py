"""A tracked run: the Trainer writing into one MLflow run, which ends with the run's true status.

`mgm-studies train` and teachers trained from a config both go through `train_tracked`.
"""

from __future__ import annotations

import sys
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
        result = trainer.run()
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
