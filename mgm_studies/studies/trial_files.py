"""A Tune trial as the sweep's MLflow writer thread sees it (`TrialSnapshot`: the Trial object keeps changing), and the
files of the checkpoints it reports: staged by the Tune hooks of `mlflow_sweep.py` (Tune deletes old checkpoints
before the writer thread gets to them), logged to the trial's child run, and pruned (`--keep-checkpoints unfinished`).
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mgm_studies.names import FINAL_FILE, META_FILE, SAMPLES_FILE

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrialSnapshot:
    """What the writer thread needs of a Tune trial."""

    trial_id: str
    config: dict
    folder: str | None = None  # the trial's folder in Tune's storage
    filesystem: Any = None  # the pyarrow filesystem that folder lives on (local, S3, GCS, ...)
    at: float = 0.0  # when the hook saw the event (seconds since the epoch): the live view's trial durations


def snapshot(trial) -> TrialSnapshot:
    storage = getattr(trial, "storage", None)
    where = (storage.trial_fs_path, storage.storage_filesystem) if storage is not None else (None, None)
    return TrialSnapshot(trial.trial_id, dict(trial.config), *where, time.time())


def stage(checkpoint) -> Path | None:
    """Copy a reported checkpoint's meta, samples and final model to a private folder (None without a meta file)."""
    with checkpoint.as_directory() as folder:
        folder = Path(folder)
        if not (folder / META_FILE).is_file():
            return None
        staged = Path(tempfile.mkdtemp(prefix="mgm-mlflow-"))
        for name in (META_FILE, SAMPLES_FILE, FINAL_FILE):
            if (folder / name).is_file():
                shutil.copy2(folder / name, staged / name)
        return staged


def log_staged(client, run_id: str, folder: Path) -> None:
    """Log a staged folder's sample plots (`plots/step-<step>/`) and final model (`checkpoints/`), then delete it."""
    try:
        meta = json.loads((folder / META_FILE).read_text())
        if (folder / SAMPLES_FILE).is_file():
            for png in _render_plots(folder / SAMPLES_FILE, folder / "plots"):
                client.log_artifact(run_id, str(png), f"plots/step-{int(meta['step']):09d}")
        if (folder / FINAL_FILE).is_file():
            client.log_artifact(run_id, str(folder / FINAL_FILE), "checkpoints")
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _render_plots(samples_file: Path, into: Path) -> list[Path]:
    """The sample plots of one reported evaluation (`nfe-K.png` per number of steps), drawn here on the driver."""
    from mgm_studies.plots import evaluation_figures
    from mgm_studies.training.ray_train import load_samples

    evaluation, box = load_samples(samples_file)
    into.mkdir(exist_ok=True)
    pngs = []
    for k, fig in evaluation_figures(evaluation, box=box):
        pngs.append(into / f"nfe-{k}.png")
        fig.savefig(pngs[-1], dpi=80)
    return pngs


def prune_checkpoints(client, trial: TrialSnapshot, run_id: str) -> None:
    """`--keep-checkpoints unfinished`: delete a finished trial's Tune checkpoints (weights, EMAs, optimiser state:
    what a restart needs, and most of a tiny trial's storage) once its final model is in MLflow. Tune never restarts
    a finished trial, `--resume` included; a trial without `checkpoints/final.pt` in its run keeps its checkpoints."""
    if trial.folder is None or trial.filesystem is None:
        return
    logged = {Path(a.path).name for a in client.list_artifacts(run_id, "checkpoints")}
    if FINAL_FILE not in logged:
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
    client.set_tag(run_id, "mgm.checkpoints_pruned", str(len(folders)))
