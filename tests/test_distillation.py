"""Flow-map objectives through the shared Trainer and the CLI, with real teachers and a real MLflow store."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
import yaml
from conftest import small_config
from mlflow.tracking import MlflowClient

from mgm_studies.cli import main
from mgm_studies.config import parse_run_config
from mgm_studies.exported import save_exported
from mgm_studies.runs import trainer_for
from mgm_studies.training.reporter import RecordingReporter

TINY_TRAIN = {"steps": 30, "batch_size": 64, "checkpoint_interval": 30, "ema_decays": [0.9]}
TINY_EVAL = {"metrics": ["kl", "sw2"], "steps": [1, 2], "num_samples": 500, "reference_samples": 500}


def _runs(client: MlflowClient):
    return client.search_runs([e.experiment_id for e in client.search_experiments()])


def test_self_distillation_trains_a_two_time_model_with_the_shared_trainer():
    config = parse_run_config(small_config(objective={"name": "lsd"}, train=TINY_TRAIN, eval=TINY_EVAL))
    reporter = RecordingReporter()
    result = trainer_for(config, reporter=reporter).run()
    assert result.status == "finished"
    assert {"kl/nfe-1", "kl/nfe-2", "fevals/nfe-2"} <= set(result.metrics) and result.metrics["fevals/nfe-2"] == 2
    assert {"loss", "loss/diagonal", "loss/offdiagonal"} <= set(reporter.scalars[30])


def test_lmd_distils_a_frozen_teacher_given_by_path(tmp_path):
    teacher = trainer_for(parse_run_config(small_config(train=TINY_TRAIN)))
    teacher.run()
    path = save_exported(teacher.export(), tmp_path / "teacher.pt")
    before = torch.load(path, weights_only=True)
    config = parse_run_config(
        small_config(objective={"name": "lmd", "teacher": {"path": str(path)}}, train=TINY_TRAIN, eval=TINY_EVAL)
    )
    student = trainer_for(config)
    assert student.objective.teacher is not None and not any(
        p.requires_grad for p in student.objective.teacher.parameters()
    )
    assert student.run().status == "finished"
    after = torch.load(path, weights_only=True)
    assert all(torch.equal(before["model"][k], after["model"][k]) for k in before["model"])


def test_cli_validates_without_training_then_trains_teacher_and_student(mlflow_env, capsys):
    (mlflow_env / "teacher.yaml").write_text(yaml.safe_dump(small_config(train=TINY_TRAIN)))
    student = small_config(
        objective={"name": "emd", "teacher": {"config": "teacher.yaml"}}, train=TINY_TRAIN, eval=TINY_EVAL
    )
    (mlflow_env / "student.yaml").write_text(yaml.safe_dump(student))
    client = MlflowClient(os.environ["MLFLOW_TRACKING_URI"])

    assert main(["validate", "student.yaml"]) == 0
    assert "objective emd" in capsys.readouterr().out
    assert not (mlflow_env / "mlflow.db").exists() or not _runs(client)

    assert main(["train", "student.yaml", "--quiet"]) == 0
    run_id = capsys.readouterr().out.strip().splitlines()[-1]
    runs = {r.info.run_id: r for r in _runs(client)}
    assert len(runs) == 2 and runs[run_id].data.params["objective.name"] == "emd"
    (teacher_run,) = [r for r in runs.values() if r.data.tags.get("mgm.teacher") == "true"]
    assert teacher_run.data.tags["mgm.status"] == "finished"
    assert runs[run_id].data.tags["mgm.teacher_source"] == f"run:{teacher_run.info.run_id}"

    # A second student reuses the finished teacher run: no third teacher training.
    assert main(["train", "student.yaml", "--quiet", "--set", "train.seed=1"]) == 0
    assert len(_runs(client)) == 3


def test_an_incompatible_teacher_is_invalid_input_and_writes_nothing(mlflow_env, capsys):
    (mlflow_env / "teacher.yaml").write_text(
        yaml.safe_dump(small_config(train=TINY_TRAIN, interpolant={"schedule": "trig"}))
    )
    student = small_config(objective={"name": "lmd", "teacher": {"config": "teacher.yaml"}}, train=TINY_TRAIN)
    (mlflow_env / "student.yaml").write_text(yaml.safe_dump(student))
    for verb in ("validate", "train"):
        assert main([verb, "student.yaml"]) == 2
        assert "  objective.teacher: the teacher's interpolant" in capsys.readouterr().err
    assert not (mlflow_env / "mlflow.db").exists() or not _runs(MlflowClient(os.environ["MLFLOW_TRACKING_URI"]))


def test_every_shipped_config_trains_for_a_few_steps(tmp_path):
    from pathlib import Path

    from mgm_studies.config import load_run_config

    teacher = trainer_for(parse_run_config(small_config(train=TINY_TRAIN)))
    teacher.run()
    teacher_path = save_exported(teacher.export(), tmp_path / "teacher.pt")
    shrink = [
        "train.steps=3",
        "train.checkpoint_interval=3",
        "eval.interval=0",
        "eval.num_samples=200",
        "eval.reference_samples=200",
        "model.hidden=32",
    ]
    configs = sorted((Path(__file__).parent.parent / "configs").glob("*.yaml"))
    assert len(configs) >= 3
    for path in configs:
        raw = yaml.safe_load(path.read_text())
        extra = [f"objective.teacher={{path: {teacher_path}}}"] if "teacher" in raw.get("objective", {}) else []
        if "denoiser_steps" in raw.get("objective", {}):  # one warm-up step, then the game: both phases run
            extra.append("objective.denoiser_steps=1")
        # The tiny teacher is an MLP of width 64: the student's width does not have to match the teacher's.
        result = trainer_for(load_run_config(path, shrink + extra)).run()
        assert result.status == "finished" and result.step == 3, path.name


class _StopAtFirstCheckpoint(RecordingReporter):
    def report_checkpoint(self, step, path):
        raise KeyboardInterrupt


def test_itvm_resumes_exactly_with_its_ema_target_in_the_checkpoint(tmp_path):

    teacher = trainer_for(parse_run_config(small_config(train=TINY_TRAIN)))
    teacher.run()
    path = save_exported(teacher.export(), tmp_path / "teacher.pt")
    train = {**TINY_TRAIN, "steps": 40, "checkpoint_interval": 20}
    objective = {"name": "itvm", "teacher": {"path": str(path)}, "target_ema": 0.9, "tau": 0.2}
    config = parse_run_config(small_config(objective=objective, train=train, eval=TINY_EVAL))
    reference = trainer_for(config)
    assert reference.run().status == "finished"
    with pytest.raises(KeyboardInterrupt):
        trainer_for(config, checkpoint_dir=tmp_path / "run", reporter=_StopAtFirstCheckpoint()).run()
    resumed = trainer_for(config, checkpoint_dir=tmp_path / "run")
    assert resumed.step == 20
    resumed.run()
    for a, b in zip(reference.model.parameters(), resumed.model.parameters(), strict=True):
        assert torch.equal(a, b)
    target = reference.objective.state_dict()
    for key, value in resumed.objective.state_dict()["target"].items():
        assert torch.equal(value, target["target"][key]), key


def test_mgm_trains_generator_and_critic_through_the_trainer_and_refuses_vp(tmp_path):

    from mgm_studies.configbase import ConfigError

    objective = {"name": "mgm", "critic_steps": 2, "warmup_steps": 5, "critic_hidden": 32, "critic_depth": 2}
    config = parse_run_config(
        small_config(
            data={"name": "eight_gaussians"},
            objective=objective,
            train={**TINY_TRAIN, "steps": 20, "checkpoint_interval": 10},
            eval={**TINY_EVAL, "steps": [1]},
        )
    )
    reporter = RecordingReporter()
    trainer = trainer_for(config, checkpoint_dir=tmp_path, reporter=reporter)
    assert set(trainer.optimizers) == {"model", "critic"}
    assert trainer.run().status == "finished"
    assert "loss" not in reporter.scalars[5] and "loss/critic" in reporter.scalars[5]  # warm-up: critic only
    assert "mgm/divergence" not in reporter.scalars[5] and "mgm/divergence/critic" in reporter.scalars[5]
    assert {"loss", "loss/critic", "mgm/divergence", "mgm/divergence/critic"} <= set(reporter.scalars[20])
    assert trainer.last_evaluation.metrics["fevals/nfe-1"] == 1
    state = torch.load(next(tmp_path.glob("ckpt-*.pt")), weights_only=True)
    assert set(state["networks"]) == {"critic"} and set(state["optimizers"]) == {"model", "critic"}
    with pytest.raises(ConfigError, match="symmetric"):
        parse_run_config(small_config(objective={"name": "mgm"}, interpolant={"schedule": "vp"}))


def _moons_run(objective: dict, steps: int = 1600, seed: int = 0) -> dict[str, float]:
    """kl at 1 and 4 steps of a run on moons (MLP 128x3, batch 256, lr 1e-3, no clipping: MGM's recipe)."""
    config = parse_run_config(
        {
            "data": {"name": "moons"},
            "model": {"hidden": 128, "depth": 3},
            "objective": objective,
            "train": {
                "steps": steps,
                "batch_size": 256,
                "ema_decays": [0.999],
                "grad_clip": None,
                "checkpoint_interval": 10**6,
                "optimizer": {"lr": 1e-3},
                "seed": seed,
            },
            "eval": {"metrics": ["kl"], "steps": [1, 4], "num_samples": 10000},
        }
    )
    return trainer_for(config).run().metrics


def test_mgm_with_its_warm_up_learns_moons_against_si_at_the_same_budget():
    """MGM's recipe (half the steps a denoising warm-up, then the game against a Fourier-feature critic at ten times
    the generator's learning rate) against `si` with the same network and total steps. Measured (seeds 0 / 1, about
    17 s each with one thread): MGM kl/nfe-1 0.83 / 0.87; si kl/nfe-1 8.10 / 8.04, kl/nfe-4 0.94 / 0.97; N(0, I) noise
    1.51. The recipe before it (critic at 1e-4) reached 1.06 / 1.05, and 1.22 / 1.20 without the Fourier features:
    1.08x-1.13x si's four steps, which the second bound (looser than the 0.89x measured) refuses."""
    recipe = {"name": "mgm", "denoiser_steps": 800, "critic_lr": 1e-3, "generator_lr": 1e-4, "critic_features": 64}
    mgm = _moons_run(recipe)
    si = _moons_run({"name": "si"})
    assert mgm["kl/nfe-1"] < si["kl/nfe-1"], (mgm, si)
    assert mgm["kl/nfe-1"] < 1.05 * si["kl/nfe-4"], (mgm, si)


LEARN_MODEL = {"hidden": 128, "depth": 3}
LEARN_TRAIN = {"batch_size": 256, "ema_decays": [0.99], "checkpoint_interval": 10**6, "optimizer": {"lr": 2e-3}}


@pytest.fixture(scope="module")
def checkerboard_teacher(tmp_path_factory) -> tuple[Path, dict[str, float]]:
    """An `si` teacher on the checkerboard (1500 steps, about 6 s) and its own Euler KL at 1 and 8 steps."""
    trainer = trainer_for(
        parse_run_config(
            {
                "data": {"name": "checkerboard"},
                "model": LEARN_MODEL,
                "train": {**LEARN_TRAIN, "steps": 1500},
                "eval": {"metrics": ["kl"], "steps": [1, 8], "num_samples": 10000},
            }
        )
    )
    metrics = trainer.run().metrics
    return save_exported(trainer.export(), tmp_path_factory.mktemp("teacher") / "teacher.pt"), metrics


@pytest.mark.parametrize("strategy", ["t_minus_tau", "s_plus_tau", "uniform"])
def test_itvm_one_step_beats_the_teachers_one_step_euler(checkerboard_teacher, strategy):
    """Measured (seed 0): teacher Euler kl/nfe-1 6.59, kl/nfe-8 0.84; ITVM students after 1000 steps (about 6 s each)
    reach kl/nfe-1 0.87 (t_minus_tau), 0.98 (s_plus_tau), 0.81 (uniform), from 4.23 untrained."""
    path, teacher = checkerboard_teacher
    config = parse_run_config(
        {
            "data": {"name": "checkerboard"},
            "model": LEARN_MODEL,
            "objective": {"name": "itvm", "teacher": {"path": str(path)}, "intermediate_time": strategy},
            "train": {**LEARN_TRAIN, "steps": 1000},
            "eval": {"metrics": ["kl"], "steps": [1], "num_samples": 10000},
        }
    )
    student = trainer_for(config)
    initial = student.run_evaluation().metrics["kl/nfe-1"]
    final = student.run().metrics["kl/nfe-1"]
    assert final < 0.25 * teacher["kl/nfe-1"], (teacher, final)  # one student step beats one teacher Euler step
    assert final < 0.4 * initial, (initial, final)
    assert final < 1.5 * teacher["kl/nfe-8"], (teacher, final)  # and nearly matches eight teacher steps
