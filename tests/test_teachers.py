"""Teachers: loaded frozen from a path, a run, or a config trained once and found again by its hash."""

from __future__ import annotations

import os
from functools import partial

import pytest
import torch
import yaml
from conftest import small_config
from mlflow.tracking import MlflowClient

from mgm_studies.config import InterpolantConfig, parse_run_config
from mgm_studies.configbase import ConfigError
from mgm_studies.exported import save_exported
from mgm_studies.runs import train_teacher, trainer_for
from mgm_studies.teachers import TeacherConfig, load_teacher

LINEAR = InterpolantConfig()
TRAIN = partial(train_teacher, device="cpu")  # what `runs.build_run` hands `load_teacher`


def _teacher_yaml(root, **sections) -> str:
    config = small_config(
        train={"steps": 20, "batch_size": 64, "checkpoint_interval": 20, "ema_decays": [0.9]},
        eval={"metrics": ["sw2"], "steps": [1], "num_samples": 100},
        **sections,
    )
    path = root / "teacher.yaml"
    path.write_text(yaml.safe_dump(config))
    return str(path)


def test_a_teacher_from_a_checkpoint_is_the_frozen_ema_velocity(tmp_path):
    config = parse_run_config(small_config(train={"steps": 20, "batch_size": 64, "ema_decays": [0.9]}))
    trainer = trainer_for(config)
    trainer.run()
    path = save_exported(trainer.export(), tmp_path / "final.pt")
    teacher = load_teacher(TeacherConfig(path=str(path)), interpolant=LINEAR, dim=2)
    assert teacher.source == f"path:{path}" and not teacher.velocity.training
    assert all(not p.requires_grad for p in teacher.velocity.parameters())
    t, x = torch.rand(16), torch.randn(16, 2)
    with torch.no_grad():
        assert torch.allclose(teacher.velocity(t, x), trainer.evaluation_model()(t, x))
    raw = load_teacher(TeacherConfig(path=str(path), ema="raw"), interpolant=LINEAR, dim=2)
    with torch.no_grad():
        assert torch.allclose(raw.velocity(t, x), trainer.model(t, x))


def test_a_config_teacher_is_trained_once_and_then_found_by_its_hash(mlflow_env):
    path = _teacher_yaml(mlflow_env)
    first = load_teacher(TeacherConfig(config=path), interpolant=LINEAR, dim=2, train=TRAIN)
    again = load_teacher(TeacherConfig(config=path), interpolant=LINEAR, dim=2, train=TRAIN)
    assert first.run_id is not None and again.run_id == first.run_id
    client = MlflowClient(os.environ["MLFLOW_TRACKING_URI"])
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()])
    assert len(runs) == 1 and runs[0].data.tags["mgm.teacher"] == "true"
    by_run = load_teacher(TeacherConfig(run=first.run_id), interpolant=LINEAR, dim=2)
    t, x = torch.rand(8), torch.randn(8, 2)
    with torch.no_grad():
        assert torch.equal(by_run.velocity(t, x), first.velocity(t, x))


def test_a_missing_config_teacher_is_not_trained_without_a_trainer(mlflow_env):
    with pytest.raises(ConfigError) as error:
        load_teacher(TeacherConfig(config=_teacher_yaml(mlflow_env)), interpolant=LINEAR, dim=2)
    assert error.value.problems[0][0] == "objective.teacher.config"


def test_incompatible_or_missing_teachers_are_invalid_input(mlflow_env):
    path = _teacher_yaml(mlflow_env)
    cases = [
        (TeacherConfig(config=path), dict(interpolant=InterpolantConfig(schedule="trig"), dim=2), "objective.teacher"),
        (TeacherConfig(config=path), dict(interpolant=LINEAR, dim=3), "objective.teacher"),
        (TeacherConfig(config=path, ema=0.5), dict(interpolant=LINEAR, dim=2), "objective.teacher.ema"),
        (TeacherConfig(run="no-such-run"), dict(interpolant=LINEAR, dim=2), "objective.teacher.run"),
        (TeacherConfig(path=str(mlflow_env / "none.pt")), dict(interpolant=LINEAR, dim=2), "objective.teacher.path"),
    ]
    for teacher, student, field in cases:
        with pytest.raises(ConfigError) as error:
            load_teacher(teacher, **student, train=TRAIN)
        assert error.value.problems[0][0] == field, (teacher, error.value)
    client = MlflowClient(os.environ["MLFLOW_TRACKING_URI"])
    # Only the `ema` case needed the teacher trained; the mismatches were refused before any training.
    assert len(client.search_runs([e.experiment_id for e in client.search_experiments()])) == 1


def test_a_teacher_is_named_exactly_once():
    with pytest.raises(ValueError, match="exactly one"):
        TeacherConfig(run="a", path="b")
    with pytest.raises(ValueError, match="exactly one"):
        TeacherConfig()
