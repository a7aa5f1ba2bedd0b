"""Teachers of the distillation objectives: a finished `si` run's EMA velocity, loaded frozen.

A teacher is named by an MLflow run (`{run: RUN_ID}`), an exported checkpoint (`{path: final.pt}`), or an `si` run
config (`{config: teacher.yaml}`). A config teacher is trained once and found again by the hash of its resolved config
(the `mgm.config_hash` tag of a finished run), so every student, trial and sweep that names it shares one run
(`runs.py` trains a missing one). A missing or incompatible teacher (another data dimension or interpolant, not a
velocity model) is invalid input, reported before the student trains.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from torch import nn

from mgm_studies import names
from mgm_studies.builders import build_dataset
from mgm_studies.config import InterpolantConfig, RunConfig, load_run_config
from mgm_studies.configbase import ConfigError
from mgm_studies.exported import ExportedModel, UnreadableCheckpoint, load_exported
from mgm_studies.models import ModelConfig
from mgm_studies.objectives.teacher_config import TeacherConfig

if TYPE_CHECKING:
    from mlflow.tracking import MlflowClient

FIELD = "objective.teacher"


@dataclass
class Teacher:
    """A frozen velocity network b(t, x) in eval mode, and where it came from."""

    velocity: nn.Module
    source: str  # "run:<id>" or "path:<file>"
    config: RunConfig
    run_id: str | None = None


def load_teacher(
    teacher: TeacherConfig,
    *,
    interpolant: InterpolantConfig,
    dim: int,
    model: ModelConfig | None = None,
    device: str = "cpu",
    train: Callable[[MlflowClient, RunConfig], str] | None = None,
    load: bool = True,
) -> Teacher | None:
    """Resolve, check and load `teacher` for a student on `interpolant` with data of dimension `dim`; with `model`
    (a student that copies the teacher's weights, MGM) the teacher must also have that model config.

    A config teacher with no finished run is trained by `train` (`runs.train_teacher`, which returns its run id),
    and refused when there is none. With `load` False (what `validate` does) the teacher is checked as far as it can
    be without training it, and None comes back.
    """
    ema = "config" if teacher.ema is None else (None if teacher.ema == "raw" else teacher.ema)
    if teacher.path is not None:
        path = Path(teacher.path)
        if not path.is_file():
            raise ConfigError.single(f"{FIELD}.path", f"no checkpoint file {str(path)!r}")
        return _frozen(_load(path, ema, device, f"{FIELD}.path"), interpolant, model, dim, f"path:{path}", None)
    from mgm_studies import tracking  # here, not at the top: a path teacher needs no MLflow (e.g. on a GPU node)

    client = tracking.client()
    if teacher.run is not None:
        return _from_run(client, teacher.run, ema, interpolant, model, dim, device, f"{FIELD}.run")
    config = load_run_config(teacher.config)
    check_compatible(config, interpolant, model)
    _check_dimension(build_dataset(config).dim, dim)  # before training a teacher nobody can use
    run_id = find_finished_run(client, config.config_hash())
    if run_id is None:
        if not load:
            return None  # checked: a valid, compatible config that the first real run will train
        if train is None:
            raise ConfigError.single(f"{FIELD}.config", "no finished run of this teacher config yet (train it first)")
        run_id = train(client, config)
    return _from_run(client, run_id, ema, interpolant, model, dim, device, f"{FIELD}.config")


def requirements(config: RunConfig) -> tuple[InterpolantConfig, ModelConfig | None]:
    """The interpolant a student's teacher must have trained on, and the model config it must have (None: any).

    Distillation students call their teacher, on their own interpolant. MGM copies its teacher's weights (generator and
    critic start from that denoiser): the teacher needs the run's network, on the path without MGM's observation noise.
    """
    from mgm_studies.objectives import OBJECTIVES

    if OBJECTIVES[config.objective.name].objective.teacher_gives_weights:
        return config.interpolant.without_gamma(), config.model
    return config.interpolant, None


def check_compatible(teacher: RunConfig, interpolant: InterpolantConfig, model: ModelConfig | None = None) -> None:
    """A teacher must be an `si` velocity model on the student's interpolant (and with `model`, that network)."""
    if teacher.objective.name != "si":
        raise ConfigError.single(FIELD, f"a teacher is an 'si' run, this one trains {teacher.objective.name!r}")
    if model is not None and teacher.model != model:
        raise ConfigError.single(
            FIELD,
            f"the teacher's network ({teacher.model.model_dump()}) differs from the run's model ({model.model_dump()}):"
            " its weights are copied, so the model sections must be equal",
        )
    if teacher.interpolant.path_key() != interpolant.path_key():
        raise ConfigError.single(
            FIELD,
            f"the teacher's interpolant ({teacher.interpolant.model_dump()}) differs from the student's "
            f"({interpolant.model_dump()}): its velocity belongs to another path",
        )


def find_finished_run(client: MlflowClient, config_hash: str) -> str | None:
    """The newest finished run, in any experiment, whose resolved config has `config_hash`."""
    experiments = [e.experiment_id for e in client.search_experiments()]
    if not experiments:
        return None
    runs = client.search_runs(
        experiments,
        filter_string=f"tags.`{names.TAG_CONFIG_HASH}` = '{config_hash}' and tags.`{names.TAG_STATUS}` = 'finished'",
        max_results=1,
        order_by=["attributes.start_time DESC"],
    )
    return runs[0].info.run_id if runs else None


def _from_run(
    client, run_id: str, ema, interpolant: InterpolantConfig, model, dim: int, device: str, field: str
) -> Teacher:
    from mlflow.exceptions import MlflowException

    from mgm_studies import tracking

    try:
        run = client.get_run(run_id)
    except MlflowException:
        raise ConfigError.single(field, f"no run {run_id!r} in the tracking store {client.tracking_uri}") from None
    if run.data.tags.get(names.TAG_STATUS) != "finished":
        raise ConfigError.single(field, f"teacher run {run_id} has not finished (status {run.info.status})")
    with tempfile.TemporaryDirectory() as tmp:
        path = tracking.download(client, run_id, tracking.MODEL_ARTIFACT, Path(tmp))
        exported = _load(path, ema, device, field)
    return _frozen(exported, interpolant, model, dim, f"run:{run_id}", run_id)


def _load(path: Path, ema, device: str, field: str) -> ExportedModel:
    try:
        return load_exported(path, ema=ema, device=device)
    except UnreadableCheckpoint as exc:  # not an export, or a pickle that would run code: never loaded
        raise ConfigError.single(field, str(exc)) from None
    except ValueError as exc:  # an EMA decay the teacher did not track
        raise ConfigError.single(f"{FIELD}.ema", str(exc)) from None


def _frozen(exported: ExportedModel, interpolant: InterpolantConfig, model, dim: int, source: str, run_id) -> Teacher:
    check_compatible(exported.config, interpolant, model)
    _check_dimension(exported.dataset.dim, dim)
    velocity = exported.model.requires_grad_(False).eval()
    return Teacher(velocity=velocity, source=source, config=exported.config, run_id=run_id)


def _check_dimension(teacher_dim: int, student_dim: int) -> None:
    if teacher_dim != student_dim:
        raise ConfigError.single(
            FIELD, f"the teacher models data of dimension {teacher_dim}, the student's data has {student_dim}"
        )
