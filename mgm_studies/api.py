"""The Python API: a study's results as a DataFrame, and a finished run's model to sample from.

    import mgm_studies
    trials = mgm_studies.results("demo_itvm_intermediate_time")  # its newest sweep; sweep=RUN_ID for another
    best = trials[trials.status == "finished"].sort_values("kl/nfe-1").run_id.iloc[0]
    model = mgm_studies.load_model(best)  # its checkpoints/final.pt with the run's eval EMA (ema="raw": raw weights)
    x = model.sample(1000, steps=4, seed=0)  # (1000, *model.shape): what `sample --steps 4 --seed 0` writes

Both read the MLflow store the CLI reads (`MLFLOW_TRACKING_URI`, else ./mlflow.db) unless given `tracking_uri=`, and
both are built on the functions the CLI verbs use (`report`'s trial table, `sample`'s loader and sampler), so the
API and the CLI agree value for value. Invalid input is a ConfigError (a ValueError) naming the argument.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import torch
from torch import Tensor, nn

from mgm_studies.configbase import ConfigError
from mgm_studies.names import TAG_STATUS
from mgm_studies.tracking_store import check_reachable, shown, sqlite_path
from mgm_studies.tracking_store import tracking_uri as default_tracking_uri

if TYPE_CHECKING:
    import pandas as pd
    from mlflow.entities import Run
    from mlflow.tracking import MlflowClient

    from mgm_studies.config import RunConfig
    from mgm_studies.exported import ExportedModel
    from mgm_studies.objectives import Objective

# collect_study's errors name the CLI's fields; the API names its own arguments.
_API_FIELDS = {"STUDY": "study", "--sweep": "sweep"}


def results(study: str, sweep: str | None = None, *, tracking_uri: str | None = None) -> pd.DataFrame:
    """The trials of one sweep of `study`, one row each (every status): the table `mgm-studies report` writes as
    `results.parquet`, with the same columns and values.

    `sweep`: a sweep's parent run id (as `report --sweep`); default the study's newest sweep. Columns: run_id,
    run_name, trial_id, status, train.seed, start_time, end_time (UTC), duration_s, last_step, workers, cpus, gpus,
    url, error, then one per swept key, then one per final quality metric (`kl/nfe-K`, `area_kl/nfe-K`, ...), then
    study, sweep_run_id and parent_run_id. Raises ConfigError for an unknown study or sweep, TrackingUnreachable for
    a store that cannot be read.
    """
    from mgm_studies.reporting.collect import collect_study

    uri = tracking_uri or default_tracking_uri()
    try:
        data = collect_study(study, tracking_uri=uri, sweep_run_id=sweep)
    except ConfigError as exc:
        raise ConfigError([(_API_FIELDS.get(field, field), message) for field, message in exc.problems]) from None
    return data.results_table()


@dataclass(frozen=True, eq=False)
class Model:
    """A finished run's exported model (`checkpoints/final.pt`), on `device` in eval mode.

    network: the trained network, carrying the EMA weights of decay `ema` (None: the raw weights).
    objective: the run's objective; its `sample(network, x0 (B, *shape), num_steps)` is the sampler.
    shape: one sample's shape: (D,) for vectors, (C, H, W) for images.
    step: the training step the model was exported at.
    """

    run_id: str
    config: RunConfig
    network: nn.Module
    objective: Objective
    shape: tuple[int, ...]
    step: int
    ema: float | None
    device: torch.device

    def sample(self, n: int, *, steps: int, seed: int = 0) -> Tensor:
        """`n` samples after `steps` sampling steps: (n, *shape) float32 on the CPU, (n, D) for vectors and
        (n, C, H, W) for images (pixels in the data's [-1, 1] scale).

        The noise is drawn chunk by chunk from a CPU generator seeded with `seed`, exactly as `mgm-studies sample
        RUN_ID --steps K --num-samples n --seed s` draws it, so the values equal the ones that command writes.
        """
        from mgm_studies.evaluation import generate_chunks, noise_chunks

        for name, value in (("n", n), ("steps", steps)):
            if value < 1:
                raise ValueError(f"{name} must be >= 1, got {value}")
        noise = noise_chunks(self.objective.interpolant, n, self.shape, torch.Generator().manual_seed(seed))
        return torch.cat([part.x for part in generate_chunks(self.objective, self.network, noise, steps, self.device)])


def load_model(
    run_id: str,
    *,
    ema: float | Literal["raw"] | None = None,
    device: str = "cpu",
    tracking_uri: str | None = None,
) -> Model:
    """The model a finished run exported, loaded as `mgm-studies sample RUN_ID` loads it.

    `ema`: None (the run's `eval.ema`, as the CLI's default), "raw" (the raw weights) or a decay the run tracked.
    Raises ConfigError naming the argument for an unknown run, a run without `checkpoints/final.pt`, an EMA the run
    did not track, or a device that is not there.
    """
    from mgm_studies.data import data_shape

    target = _device(device)
    _, exported = load_run(run_id, ema=_ema(ema), device=str(target), tracking_uri=tracking_uri)
    return Model(
        run_id=run_id,
        config=exported.config,
        network=exported.model,
        objective=exported.objective,
        shape=tuple(data_shape(exported.dataset)),
        step=exported.step,
        ema=exported.ema,
        device=target,
    )


def load_run(
    run_id: str, *, ema: float | str | None = "config", device: str = "cpu", tracking_uri: str | None = None
) -> tuple[MlflowClient, ExportedModel]:
    """A client of the store and the model run `run_id` exported, loaded on `device`: what `load_model` and the
    CLI's `evaluate` and `sample` load. `ema`: "config" (the run's eval.ema), None (raw) or a tracked decay.
    ConfigErrors name `run_id` (no such run, no export, an unreadable one) or `ema`."""
    from mgm_studies.exported import UnreadableCheckpoint, load_exported
    from mgm_studies.tracking import MODEL_ARTIFACT

    client, run = get_run(run_id, tracking_uri or default_tracking_uri())
    found = [item.path for item in client.list_artifacts(run_id, MODEL_ARTIFACT.rsplit("/", 1)[0])]
    if MODEL_ARTIFACT not in found:
        status = run.data.tags.get(TAG_STATUS, run.info.status.lower())
        raise ConfigError.single(
            "run_id", f"run {run_id} has no {MODEL_ARTIFACT} (status {status}): only a finished training run has one"
        )
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(client.download_artifacts(run_id, MODEL_ARTIFACT, tmp))
        try:
            return client, load_exported(path, ema=ema, device=device)
        except UnreadableCheckpoint as exc:
            raise ConfigError.single("run_id", f"run {run_id}'s {MODEL_ARTIFACT}: {exc}") from None
        except ValueError as exc:
            raise ConfigError.single("ema", f"expected None, 'raw' or a tracked EMA decay: {exc}") from None


def _device(device: str) -> torch.device:
    try:
        target = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise ConfigError.single("device", f"not a torch device: {device!r} ({exc})") from None
    if target.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError.single("device", f"{device!r} was asked for but no CUDA device is visible")
    return target


def _ema(ema: float | str | None) -> float | str | None:
    """The API's choice as `load_exported` takes it: "config" (the run's eval.ema), None (raw) or a decay."""
    if ema is None:
        return "config"
    if ema == "raw":
        return None
    if isinstance(ema, int | float) and not isinstance(ema, bool):
        return float(ema)
    raise ConfigError.single("ema", f"expected None (the run's eval.ema), 'raw' or an EMA decay, got {ema!r}")


def get_run(run_id: str, uri: str) -> tuple[MlflowClient, Run]:
    """A client of the store at `uri` and the run `run_id` in it. A SQLite store that does not exist is not created
    to find that out, and MLflow's global tracking URI is left alone."""
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    path = sqlite_path(uri)
    if path is not None and not path.is_file():
        raise ConfigError.single("run_id", f"no run {run_id!r}: there is no MLflow store at {path}")
    check_reachable(uri)
    client = MlflowClient(tracking_uri=uri)
    try:
        return client, client.get_run(run_id)
    except MlflowException:
        raise ConfigError.single("run_id", f"no run {run_id!r} in the tracking store {shown(uri)}") from None
